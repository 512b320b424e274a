"""Dialogue: conversations become (context, reply) pairs, validation is split by conversation, the turn
separator is one piece, and `hourglass chat` keeps the conversation (its own replies included) as training did."""
from __future__ import annotations

import io
import json
import random
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from hourglass.cli import main
from hourglass.cli.chat import chat
from hourglass.config import validate
from hourglass.data.dialogue import TURN_SEPARATOR, read_dialogues
from hourglass.data.parallel import ParallelDataModule
from hourglass.errors import ConfigError, DataError

SEP = f" {TURN_SEPARATOR} "


def write(path: Path, conversations: list) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in conversations), encoding="utf-8")
    return path


def test_each_turn_after_the_first_is_a_target_with_the_turns_before_it_as_source(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"turns": ["hi", "hello", "how are you", "fine"]}, {"turns": ["bye"]}])
    assert read_dialogues(path, "turns", 2) == [("hi", "hello"), ("hi" + SEP + "hello", "how are you"),
                                                ("hello" + SEP + "how are you", "fine")]
    assert read_dialogues(path, "turns", 1)[2] == ("how are you", "fine")
    assert read_dialogues(path, "turns", 5, "second") == [("hi", "hello"), ("hi" + SEP + "hello" + SEP + "how are you",
                                                                           "fine")]
    assert read_dialogues(path, "turns", 2, "first") == [("hi" + SEP + "hello", "how are you")]


def test_empty_turns_are_skipped_with_a_count_and_left_out_of_contexts(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"turns": ["a  b", None, "c", ""]}, {"turns": ["d", "e"]}])
    with pytest.warns(UserWarning, match="Skipped 2 of 4"):
        assert read_dialogues(path, "turns", 2) == [("a b", "c"), ("d", "e")]


@pytest.mark.parametrize("line, message", [
    ('{"turns": ["x", "y"]', r"d.jsonl, line 2 is not valid JSON"),
    ('{"dialog": ["x", "y"]}', r"line 2 has no field 'turns'; its fields are 'dialog'.*data.turns_field"),
    ('{"turns": "x y"}', r"line 2: field 'turns' holds a JSON str, not a list of turns"),
    ('{"turns": ["x", 3]}', r"line 2: field 'turns\[1\]' holds a JSON int .*not text"),
    ('{"turns": ["x <turn> y", "z"]}', r"line 2: turn 0 holds '<turn>'"),
])
def test_bad_conversations_name_the_file_the_line_and_the_fix(tmp_path, line, message):
    path = tmp_path / "d.jsonl"
    path.write_text('{"turns": ["fine", "ok"]}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_dialogues(path, "turns", 2)


def test_respond_as_first_needs_three_turns_and_the_split_draws_only_conversations_with_a_target(tmp_path):
    short = [{"turns": [f"q{i}", f"a{i}"]} for i in range(30)]
    path = write(tmp_path / "d.jsonl", short)
    with pytest.raises(DataError, match="respond_as=first, a conversation needs 3 turns or more"):
        ParallelDataModule(jsonl=str(path), turns_field="turns", respond_as="first", vocab=60)._read("val")
    mixed = write(tmp_path / "m.jsonl", short + [{"turns": [f"x{i}", f"y{i}", f"z{i}"]} for i in range(10)])
    for seed in range(4):  # any draw: the 2-turn conversations, which have no first-speaker reply, are not drawn
        data = ParallelDataModule(jsonl=str(mixed), turns_field="turns", respond_as="first", val_fraction=0.05,
                                  seed=seed)
        assert len(data._read("val")) == 1 and len(data._read("train")) == 9


def test_a_long_context_keeps_the_turn_it_answers(tmp_path):
    conversations = [{"turns": ["one two three four five six seven eight", "nine ten"]} for _ in range(20)]
    data = ParallelDataModule(jsonl=str(write(tmp_path / "d.jsonl", conversations)), turns_field="turns",
                              vocab=40, max_length=4)
    with pytest.warns(UserWarning, match="truncated"):
        ids = data.encode_sources([data.dialogue_source(["one two three four five six", "seven eight"])])
    kept = data.source_tokenizer.decode(ids[0].tolist())  # 4 pieces: the end of the newest turn
    assert ids.shape == (1, 4) and len(kept) >= 4 and "seven eight".endswith(kept)


def test_turns_field_needs_a_jsonl_file(tmp_path):
    with pytest.raises(ConfigError, match="data.turns_field='turns' reads conversations from a JSON Lines file"):
        ParallelDataModule(tsv=str(tmp_path / "x.tsv"), turns_field="turns")


def test_validation_takes_whole_conversations_and_the_separator_is_one_piece(tmp_path):
    conversations = [{"turns": [f"c{i} says hi", f"c{i} hello", f"c{i} bye"]} for i in range(40)]
    data = ParallelDataModule(jsonl=str(write(tmp_path / "d.jsonl", conversations)), turns_field="turns",
                              val_fraction=0.1, vocab=80)
    owner = lambda text: {w for w in text.split() if w.startswith("c")}  # noqa: E731 - the conversation ids
    val = {c for s, t in data._read("val") for c in owner(s) | owner(t)}
    train = {c for s, t in data._read("train") for c in owner(s) | owner(t)}
    assert len(val) == 4 and not val & train and len(data.references("val")) == 8
    data.setup()
    assert TURN_SEPARATOR in data.source_tokenizer.pieces("c1 hello" + SEP + "c1 bye")
    assert data.dialogue_source(["one", "two", "", "three"]) == "two" + SEP + "three"


def _chat_run(tmp_path, reply) -> tuple[SimpleNamespace, list[str]]:
    """A run whose model answers ``reply(n)`` to the n-th source, and the list of the sources it was given."""
    data = ParallelDataModule(jsonl=str(tmp_path / "unused.jsonl"), turns_field="turns", context_turns=3)
    sources = []

    def translate(items, _data):
        sources.append(items[0])
        return [[(reply(len(sources)), 0.0)]]

    return SimpleNamespace(data=data, task=SimpleNamespace(translate=translate)), sources


def test_chat_answers_each_line_from_the_conversation_so_far_and_an_empty_line_starts_anew(tmp_path):
    run, sources = _chat_run(tmp_path, lambda n: f"r{n}")
    out = io.StringIO()
    assert chat(run, iter(["hi\n", " how   are you \n", "\n", "again\n", "more\n"]), out) == 5
    assert out.getvalue() == "r1\nr2\n\nr3\nr4\n"
    assert sources == ["hi", SEP.join(["hi", "r1", "how are you"]), "again", SEP.join(["again", "r3", "more"])]


def test_chat_keeps_a_typed_or_generated_separator_as_text_not_as_a_turn_boundary(tmp_path):
    run, sources = _chat_run(tmp_path, lambda n: f"bot{TURN_SEPARATOR}reply")
    out = io.StringIO()
    chat(run, iter([f"a {TURN_SEPARATOR} b\n", "c\n"]), out)
    assert out.getvalue() == "bot<turn >reply\n" * 2  # printed as the history holds it (was the raw <turn>)
    assert sources[0] == "a <turn > b" and sources[0].count(TURN_SEPARATOR) == 0
    assert sources[1] == SEP.join(["a <turn > b", "bot<turn >reply", "c"])  # two boundaries for three turns


# -- a trained dialogue run -------------------------------------------------------------------------------------
def reply_to(user: list[str], previous: list[str] | None) -> list[str]:
    """The bot's rule: the user's turn reversed, then the first word of its own previous reply (if any); with
    2 turns of context the bot must read its own last reply to answer."""
    return user[::-1] + (previous[:1] if previous else [])


def conversations(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        turns, previous = [], None
        for _ in range(rng.randint(2, 3)):
            user = [rng.choice("abcdef") for _ in range(rng.randint(2, 4))]
            previous = reply_to(user, previous)
            turns += [" ".join(user), " ".join(previous)]
        out.append({"turns": turns})
    return out


@pytest.fixture(scope="module")
def dialogue_run(tmp_path_factory) -> Path:
    from hourglass.training import train

    root = tmp_path_factory.mktemp("dialogue")
    path = write(root / "chats.jsonl", conversations(1200, seed=0))
    config = validate({
        "name": "tiny-dialogue",
        "data": {"name": "parallel", "jsonl": str(path), "turns_field": "turns", "context_turns": 2,
                 "respond_as": "second", "val_fraction": 0.1, "vocab": 40, "max_tokens": 1024, "max_length": 16},
        "model": {"encoder": {"name": "gru", "embed": 32, "hidden": 64},
                  "decoder": {"name": "gru-attention", "embed": 32, "hidden": 64, "input_feeding": False}},
        "task": {"name": "seq2seq", "beam": 1, "val_beam": 0, "label_smoothing": 0.0, "examples": 3},
        "train": {"max_epochs": 16, "lr": 0.01, "scheduler": "cosine", "warmup_steps": 20, "gradient_clip": 1.0,
                  "progress": False, "checkpoint_every_n_steps": 10_000},
    }, "tiny dialogue")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Path(train(config, out=str(root / "run")))


def test_a_dialogue_run_learns_replies_that_depend_on_its_own_last_turn(dialogue_run):
    final = json.loads((dialogue_run / "metrics.json").read_text())["final"]
    assert final["exact_match"] >= 0.95, final


def test_hourglass_chat_talks_with_the_run_and_refuses_a_run_without_conversations(dialogue_run, monkeypatch,
                                                                                     capsys, tmp_path):
    turns = "a b c\nd e\n\nf a\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(turns.encode()), encoding="utf-8"))
    capsys.readouterr()
    assert main(["chat", str(dialogue_run)]) == 0
    # "e d c": "d e" reversed, then "c", the first word of the run's own reply "c b a".
    assert capsys.readouterr().out.splitlines() == ["c b a", "e d c", "", "a f"]
    (tmp_path / "turns.txt").write_text(turns, encoding="utf-8")
    assert main(["chat", str(dialogue_run), "--input", str(tmp_path / "turns.txt"), "--beam", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == ["c b a", "e d c", "", "a f"]


def test_chat_samples_reproducibly_and_refuses_sampling_settings_without_sample(dialogue_run, tmp_path, capsys):
    turns = tmp_path / "turns.txt"
    turns.write_text("a b c\nd e\n", encoding="utf-8")
    base = ["chat", str(dialogue_run), "--input", str(turns)]
    outputs = []
    hot = ["--temperature", "3", "--seed", "1"]
    for extra in (["--temperature", "0.01"], hot, hot, ["--temperature", "3", "--top-k", "1"]):
        capsys.readouterr()
        assert main([*base, "--sample", *extra]) == 0
        outputs.append(capsys.readouterr().out.splitlines())
    assert outputs[0] == ["c b a", "e d c"] == outputs[3]  # a cold sample, and top-k 1, are the greedy output
    assert outputs[1] == outputs[2]  # the same seed draws the same replies
    assert main([*base, "--top-k", "5"]) == 2
    assert "--top-k set how to sample; add --sample" in capsys.readouterr().err
    assert main([*base, "--sample", "--top-p", "1.5"]) == 2
    assert "--top-p is a probability mass, at most 1 (got 1.5)" in capsys.readouterr().err
    assert main(["translate", str(dialogue_run), "--sample", "--nbest", "2"]) == 2
    assert "--sample draws one output per line" in capsys.readouterr().err
    assert main([*base, "--seed", "3"]) == 2
    assert "--seed set how to sample; add --sample" in capsys.readouterr().err
    assert main([*base, "--sample", "--beam", "2", "--length-penalty", "1"]) == 2
    assert "--beam, --length-penalty set the beam search, which --sample replaces" in capsys.readouterr().err


def test_chat_refuses_a_run_trained_on_sentence_pairs(tmp_path_factory, capsys):
    from test_seq2seq import trained_run

    assert main(["chat", str(trained_run(tmp_path_factory, "rnn"))]) == 2
    assert "was trained on sentence pairs, not on conversations" in capsys.readouterr().err
