"""``chat``: talk with a dialogue run (a seq2seq run trained on conversations, ``data.turns_field``).

Each line read (from stdin or ``--input``) is the user's turn; the reply is written as one line and flushed at
once, so a person at a terminal, or a program on a pipe, gets each answer before it writes the next turn. The
conversation so far, the replies included, makes the source of the next reply, exactly as in training
(:func:`hourglass.data.dialogue.dialogue_context`, the run's ``data.context_turns``). An empty line ends the
conversation and starts a new one (and is answered with an empty line), so that one file can hold many. A turn
that holds the ``<turn>`` separator keeps it as plain text (``<turn >``), never as a boundary between turns.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Iterator

from hourglass.cli.streams import standard_input, standard_output
from hourglass.cli.text import (add_sampling_options, add_search_options, load_seq2seq, set_sampling,
                                set_search_options)
from hourglass.data.dialogue import plain_turn
from hourglass.errors import HourglassError
from hourglass.precision import add_precision, autocast


def register(sub) -> None:
    p = sub.add_parser("chat", help="talk with a dialogue run: each line is your turn, each reply one line")
    p.add_argument("run", help="the directory of a run trained on conversations (data.turns_field)")
    p.add_argument("--input", metavar="FILE", help="read the turns from this file (plain or .gz) instead of stdin")
    add_search_options(p)
    add_sampling_options(p)
    add_precision(p)
    p.set_defaults(func=cmd_chat)


def load_dialogue(path: str):
    """A seq2seq run trained on conversations; a clear error for any other run."""
    run = load_seq2seq(path, "chat")
    if not getattr(run.data, "turns_field", None):
        raise HourglassError(
            f"The run {path} was trained on sentence pairs, not on conversations, so it has no notion of the turns "
            "before a reply. Use `hourglass translate` with it, or train a dialogue run: data.jsonl=FILE with "
            "data.turns_field=FIELD, where each line of FILE holds one conversation as a list of turns."
        )
    return run


def chat(run, turns: Iterator[str], out: IO[str], *, prompt: IO[str] | None = None) -> int:
    """Answer each turn of ``turns`` with one line of ``out``; returns the number of turns read."""
    def ask() -> None:
        if prompt:
            prompt.write("you> ")
            prompt.flush()

    history: list[str] = []
    count = 0
    ask()
    for count, line in enumerate(turns, start=1):
        turn = plain_turn(" ".join(line.split()))
        if not turn:  # a new conversation
            history = []
            out.write("\n")
        else:
            history.append(turn)
            source = run.data.dialogue_source(history)
            # A separator that the model writes is text, in the history and on screen alike.
            reply = plain_turn(run.task.translate([source], run.data)[0][0][0])
            history.append(reply)
            out.write(reply + "\n")
        out.flush()
        ask()
    return count


def cmd_chat(args) -> int:
    from hourglass.data.text import iter_lines

    stdin = args.input in (None, "-")
    out, source = standard_output(args.command), standard_input(args.command) if stdin else None
    run = load_dialogue(args.run)
    set_search_options(run, args)
    set_sampling(run, args)
    turns = iter_lines(source) if stdin else iter_lines(Path(args.input))
    interactive = stdin and sys.stdin.isatty()
    with autocast(args.precision, run.task.device):
        chat(run, turns, out, prompt=sys.stderr if interactive else None)
    return 0
