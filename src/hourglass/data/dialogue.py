"""Dialogue as sequence-to-sequence: each turn of a conversation is a target, and the turns before it its source.

A dialogue corpus is a JSON Lines file, one conversation a line, whose ``turns_field`` holds its turns in order
(the speakers alternate, as in DailyDialog or PersonaChat without personas)::

    {"turns": ["Hi, is this seat free?", "Yes, go ahead.", "Thanks. Busy day?", "Very. Exams start Monday."]}

A conversation of n turns gives n - 1 pairs, one per turn after the first; with ``respond_as`` "first" or
"second", only the turns of that speaker are targets (turns 2, 4, ... or 1, 3, ..., counting from 0: the opening
turn never is, as nothing comes before it), so that the model learns to speak as one side while the other side's
turns still make its context. The source of turn i is the ``context_turns`` turns before it, oldest first, joined
by :data:`TURN_SEPARATOR` (Vinyals & Le 2015 and Sordoni et al. 2015 condition a response on the concatenated
context in the same way); the target is turn i. A context longer than ``data.max_length`` pieces keeps its end,
the turn answered. The separator is a user-defined piece of the SentencePiece vocabulary, so it is never split,
and ``hourglass chat`` builds its sources with the same :func:`dialogue_context` as training did.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

from hourglass.data.text import field_text, json_records, keep_nonempty
from hourglass.errors import DataError

#: Joins the turns of a context into one source line; one piece of the tokenizer's vocabulary.
TURN_SEPARATOR = "<turn>"
#: What a live turn's own "<turn>" becomes (:func:`plain_turn`): ordinary pieces, not a turn boundary.
QUOTED_SEPARATOR = "<turn >"


def plain_turn(text: str) -> str:
    """``text`` with any separator in it written as :data:`QUOTED_SEPARATOR`, so that a turn typed in a chat (or
    a reply that the model wrote) cannot pose as a boundary between turns. Training data that holds the
    separator is refused instead (:func:`read_conversations`), since there the user can fix the file."""
    return text.replace(TURN_SEPARATOR, QUOTED_SEPARATOR)


def dialogue_context(turns: Sequence[str], context_turns: int) -> str:
    """The last ``context_turns`` non-empty turns, oldest first, joined by the separator: the source of the next
    turn. An empty turn (a blank line, a null) carries nothing and is left out."""
    kept = [t for t in turns if t][-context_turns:]
    return f" {TURN_SEPARATOR} ".join(kept)


Speaker = Literal["both", "first", "second"]


def read_dialogues(path: str | Path, turns_field: str, context_turns: int, respond_as: Speaker = "both"
                   ) -> list[tuple[str, str]]:
    """(context, response) pairs from a JSON Lines file of conversations; see the module docstring."""
    return dialogue_pairs(read_conversations(path, turns_field), context_turns, str(path), respond_as)


def read_conversations(path: str | Path, turns_field: str) -> list[list[str]]:
    """The turns of each conversation of a JSON Lines file, one conversation a line.

    Errors name the file and line: a line that is not a JSON object, an object without ``turns_field``, a field
    that is not a list of texts, or a turn that holds the separator."""
    example = f'{{"{turns_field}": ["Hi!", "Hello, how are you?"]}}'
    fix = f"Set data.turns_field to the field that holds each conversation's turns, a list of texts such as {example}."
    return [_turns(record, turns_field, where, fix) for where, record in json_records(path, example)]


def dialogue_pairs(conversations: list[list[str]], context_turns: int, where: str, respond_as: Speaker = "both"
                   ) -> list[tuple[str, str]]:
    """Every turn after the first of each conversation (of the ``respond_as`` speaker), with its context. Empty
    turns are skipped as targets, with a count (as empty lines of parallel text are); no pair at all is a
    DataError naming ``where``."""
    return keep_nonempty(((dialogue_context(turns[:i], context_turns), turns[i])
                          for turns in conversations for i in target_turns(len(turns), respond_as)), where)


def target_turns(n: int, respond_as: Speaker) -> range:
    """The indexes of the target turns of a conversation of ``n`` turns."""
    return range(2, n, 2) if respond_as == "first" else range(1, n, 1 if respond_as == "both" else 2)


def answerable(conversations: list[list[str]], respond_as: Speaker, where: str) -> list[list[str]]:
    """The conversations with at least one non-empty target turn, so that a draw of whole conversations (the
    validation split) never comes up without a pair; none at all is a DataError naming ``where``."""
    kept = [c for c in conversations if any(c[i] for i in target_turns(len(c), respond_as))]
    if not kept:
        first = target_turns(3, respond_as).start  # the first target turn
        raise DataError(
            f"No conversation of {where} has a turn to learn: with data.respond_as={respond_as}, a conversation "
            f"needs {first + 1} turns or more" + (" (the first speaker's replies start at the third turn)"
                                                  if first == 2 else "")
            + ". Set data.respond_as=both or second, or check data.turns_field."
        )
    return kept


def _turns(record: dict, field: str, where: str, fix: str) -> list[str]:
    if field not in record:
        raise DataError(f"{where} has no field {field!r}; its fields are {', '.join(map(repr, record)) or 'none'}. "
                        f"{fix}")
    turns = record[field]
    if not isinstance(turns, list):
        raise DataError(f"{where}: field {field!r} holds a JSON {type(turns).__name__}, not a list of turns. {fix}")
    texts = [field_text(turn, f"{field}[{i}]", where, fix) for i, turn in enumerate(turns)]
    for i, text in enumerate(texts):
        if TURN_SEPARATOR in text:
            raise DataError(f"{where}: turn {i} holds {TURN_SEPARATOR!r}, the piece that hourglass puts between the "
                            f"turns of a context, so the model could not tell your text from a turn boundary. "
                            f"Replace it in the data (e.g. with {QUOTED_SEPARATOR!r}).")
    return texts
