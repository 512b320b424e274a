"""Bad input to the seq2seq commands, each answered with one clear paragraph (exit 2) or a warning, never a
traceback and never a lost line: bytes that are not UTF-8 on the command line, a model with fewer positions than
the data lets through (refused at training; cut short in a run trained before that check), the truncation
warning over a whole stream, a vocabulary too small, a run without its tokenizer, validation files, empty and
damaged corpora, and min_len above max_len.

The runs here are not trained: a run directory is written from a freshly built model (config, tokenizer and
weights), which is all that translate, evaluate and attention read. Their outputs are noise, but every line
gets one.
"""
from __future__ import annotations

import gzip
import io
import sys
import warnings
from pathlib import Path

import pytest

from hourglass.cli import main
from hourglass.config import validate
from hourglass.data.parallel import ParallelDataModule
from hourglass.data.text import read_parallel, read_tsv
from hourglass.data.tokenizer import Tokenizer
from hourglass.errors import ConfigError, DataError

SOURCES = ["ein Hund", "eine Katze", "der Mann", "die Frau", "ein Haus", "ein Baum"]
TARGETS = ["a dog", "a cat", "the man", "the woman", "a house", "a tree"]
LONG = " ".join(["ein Hund eine Katze der Mann die Frau"] * 4)  # about 30 pieces: beyond the runs' 10 positions


def write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return str(path)


def config(tmp_path: Path, *, max_length: int = 30, positions: int = 10, **task):
    """A tiny Transformer config on SOURCES/TARGETS: data.max_length and both models' max_len."""
    small = {"name": "transformer", "d_model": 16, "heads": 2, "layers": 1, "ff": 16, "max_len": positions}
    return validate({
        "name": "tiny-tf",
        "data": {"name": "parallel", "source": write(tmp_path / "train.de", SOURCES * 2),
                 "target": write(tmp_path / "train.en", TARGETS * 2), "vocab": 60, "max_length": max_length,
                 "val_fraction": 0.25},
        "model": {"encoder": small, "decoder": small},
        "task": {"name": "seq2seq", "beam": 2, **task},
        "train": {"max_steps": 1, "progress": False},
    }, "tiny-tf")


def untrained_run(tmp_path: Path, **options) -> Path:
    """A run directory as training writes it, from a model built without the check of its positions: a run
    trained before check_model existed."""
    from hourglass.config import save_config
    from hourglass.training import build_data, build_task
    from hourglass.weights import save_weights

    cfg = config(tmp_path, **options)
    data = build_data(cfg)
    data.setup("fit")
    task = build_task(cfg, data)
    run = tmp_path / "run"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    data.save_artifacts(run)
    save_weights(task.model, run / "model.safetensors", {"config": cfg.to_dict()})
    return run


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> Path:
    """data.max_length=30, but Transformer encoder and decoder of 10 positions."""
    return untrained_run(tmp_path_factory.mktemp("old"))


def translate(monkeypatch, run: Path, lines: list[str], *args: str) -> tuple[int, str]:
    """``hourglass translate RUN`` on ``lines`` given on stdin, in this process: (status, stdout)."""
    stdin = io.TextIOWrapper(io.BytesIO("".join(f"{x}\n" for x in lines).encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    return main(["translate", str(run), *args]), out.getvalue()


def cut_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "truncated" in str(w.message)]


# -- 1. bytes that are not UTF-8 on the command line ---------------------------------------------------------------
def test_attention_names_bytes_that_are_not_utf8_on_the_command_line(old_run, tmp_path, capsys):
    """Python decodes argv with surrogateescape: b"caf\\xe9" arrives as "caf\\udce9", which SentencePiece refused
    with a RuntimeError traceback."""
    output = tmp_path / "a.png"
    assert main(["attention", str(old_run), "caf\udce9", "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and not output.exists()
    assert r"b'\xe9' at character 4" in err and "not UTF-8" in err and "LANG=C.UTF-8" in err


def test_a_tokenizer_refuses_lone_surrogates_in_words(old_run):
    tok = Tokenizer.load(old_run / "tokenizer.model")
    for call in (tok.encode, tok.pieces):
        with pytest.raises(DataError, match=r"not UTF-8 \(b'\\xe9' at character 4\)"):
            call("caf\udce9")


# -- 2. positions: refused at training, cut short in an older run --------------------------------------------------
def test_training_refuses_a_model_with_fewer_positions_than_the_data_lets_through(tmp_path, capsys):
    import yaml

    cfg = config(tmp_path, max_length=12, positions=8)
    (tmp_path / "tf.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["train", str(tmp_path / "tf.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.max_length=12 ") and "Traceback" not in err
    assert "model.encoder.max_len=8 (a source needs 12)" in err
    assert "model.decoder.max_len=8 (a target needs 13 with bos)" in err
    assert "Raise model.encoder.max_len to 12 and model.decoder.max_len to 13, or lower data.max_length to 7" in err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_the_position_check_knows_the_exact_need_of_each_side(tmp_path):
    """The encoder reads a source (no bos or eos); the decoder reads bos and the target (eos is a label)."""
    from hourglass.training import build_data, build_task

    for positions, fits in ((12, False), (13, True)):
        cfg = config(tmp_path, max_length=12, positions=positions)
        data = build_data(cfg)
        data.setup("fit")
        model = build_task(cfg, data).model
        if fits:
            data.check_model(model)
        else:
            with pytest.raises(ConfigError, match=r"^data\.max_length=12 .* model\.decoder\.max_len=12 \(a target "
                                                  r"needs 13 with bos\)\. Raise model\.decoder\.max_len to 13, or "
                                                  r"lower data\.max_length to 11\.$"):
                data.check_model(model)
    data = ParallelDataModule(source=str(tmp_path / "train.de"), target=str(tmp_path / "train.en"), vocab=60,
                              max_length=12, max_target_length=4)
    data.setup("fit")
    data.check_model(model)  # 13 positions: sources of 12, and bos + targets of 4
    data.max_length = 14
    with pytest.raises(ConfigError, match=r"model\.encoder\.max_len=13 \(a source needs 14\)\. Raise "
                                          r"model\.encoder\.max_len to 14, or lower data\.max_length to 13\.$"):
        data.check_model(model)


def test_an_older_run_cuts_long_sources_to_its_positions_and_loses_no_line(old_run, tmp_path, monkeypatch):
    """The run lets 30 pieces through and reads 10: a long line failed the whole buffer (out.txt was empty)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        status, out = translate(monkeypatch, old_run, ["ein Hund", LONG, "", "der Mann"], "--beam", "1")
    assert status == 0 and len(out.split("\n")) == 5 and out.split("\n")[2] == ""
    assert all(len(line.split()) <= 9 for line in out.split("\n"))  # the decoder's 10 positions: bos and 9
    assert cut_warnings(record) == [
        "1 of 4 input lines (first: line 2) was truncated: it is longer than the 10 pieces this run reads, so only "
        "its first 10 pieces were read (the run was trained with data.max_length=30 and model.encoder.max_len=10)."]


def test_evaluate_and_attention_on_an_older_run_cut_long_sources(old_run, tmp_path, capsys):
    source = write(tmp_path / "long.de", ["ein Hund", LONG])
    ref = write(tmp_path / "long.en", ["a dog", " ".join(["a dog a cat the man the woman"] * 4)])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert main(["evaluate", str(old_run), "--data", source, "--ref", ref]) == 0
        assert main(["attention", str(old_run), LONG, "--output", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").is_file()
    said = cut_warnings(record)
    assert f"1 of 2 sources of {source} (the first: 'ein Hund eine Katze" in said[0] and "validation" not in said[0]
    assert "only its first 10 pieces were read" in said[0]
    assert any("references" in s and "BLEU and chrF score it whole" in s for s in said)
    assert said[-1].startswith("1 of 1 sources was truncated: it is longer than the 10 pieces this run reads")


# -- 3. the truncation warning counts a whole stream --------------------------------------------------------------
def test_translate_counts_truncated_lines_over_the_whole_input_and_warns_once(old_run, monkeypatch):
    """Each buffer warned for its own lines, and Python dropped the repeats: 3 long lines were reported as 1."""
    lines = ["ein Hund", LONG, "der Mann", LONG, "ein Haus", LONG + " ein Baum"]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")  # Python's own filter, which drops a repeated text
        status, out = translate(monkeypatch, old_run, lines, "--batch", "1", "--buffer", "1", "--beam", "1")
    assert status == 0 and len(out.split("\n")) == 7
    said = cut_warnings(record)
    assert len(said) == 1 and said[0].startswith("3 of 6 input lines (first: line 2) were truncated: they are longer "
                                                 "than the 10 pieces this run reads")
    assert "Raise" not in said[0]  # nothing to raise in a trained run


def test_the_stream_warning_comes_also_when_an_error_ends_the_stream(old_run, tmp_path, capsys):
    data = gzip.compress("".join(f"{line}\n" for line in [LONG] + SOURCES * 400).encode())
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert main(["translate", str(old_run), "--input", str(tmp_path / "cut.gz"), "--beam", "1"]) == 2
    out, err = capsys.readouterr()
    assert out.count("\n") > 1  # the lines before the damage were written
    assert "cannot read past line" in err and len(cut_warnings(record)) == 1
    assert "(first: line 1)" in cut_warnings(record)[0]


# -- 4. a vocabulary too small --------------------------------------------------------------------------------------
def test_a_vocabulary_too_small_names_data_vocab_and_the_side(tmp_path):
    src = write(tmp_path / "train.de", ["aaa bbb", "ab ba"] * 3)  # few characters
    tgt = write(tmp_path / "train.en", ["the quick brown fox jumps over a lazy dog", "xyz"] * 3)
    for joint, words in ((False, "the training target text (" + tgt + ")"),
                         (True, f"the training text (source and target together, data.joint_vocab=true: {src} and")):
        data = ParallelDataModule(source=src, target=tgt, vocab=12, joint_vocab=joint, val_fraction=0.2)
        with pytest.raises(ConfigError) as err:
            data.setup("fit")
        said = str(err.value)
        assert said.startswith("data.vocab=12 is too small: " + words) and "Raise data.vocab to " in said
        assert "character_coverage" not in said and "vocab_size" not in said


def test_the_tokenizer_api_names_its_own_arguments(tmp_path):
    with pytest.raises(ConfigError, match=r"vocab_size=10 is too small.*Raise the vocab_size argument to \d+ .*"
                                          r"character_coverage argument") as err:
        Tokenizer.train(["the quick brown fox jumps"], vocab_size=10, path_prefix=tmp_path / "t")
    assert err.value.needed > 10 and "data.vocab" not in str(err.value)


# -- 5. a run without its tokenizer ---------------------------------------------------------------------------------
def test_a_run_without_its_tokenizer_says_to_restore_it(old_run, tmp_path, monkeypatch, capsys):
    import shutil

    run = shutil.copytree(old_run, tmp_path / "notok")
    (run / "tokenizer.model").unlink()
    status, out = translate(monkeypatch, run, ["ein Hund"])
    err = capsys.readouterr().err
    assert status == 2 and out == ""
    assert f"{run / 'tokenizer.model'} is missing: the run {run} cannot read text without the tokenizer" in err
    assert "Restore the file from a copy of the run" in err and "Tokenizer.train" not in err


# -- 6. validation files --------------------------------------------------------------------------------------------
def test_val_ref_without_val_path_is_refused(tmp_path):
    src, tgt = write(tmp_path / "s.de", SOURCES), write(tmp_path / "t.en", TARGETS)
    data = ParallelDataModule(source=src, target=tgt, val_ref=tgt, vocab=60)
    with pytest.raises(ConfigError, match=r"^data\.val_ref=.*t\.en gives the references of data\.val_path, which is "
                                          r"not set.*Set data\.val_path .* or remove data\.val_ref\.$"):
        data.setup("fit")


def test_a_validation_file_of_sources_alone_names_the_option_that_gives_references(old_run, tmp_path, capsys):
    src, tgt = write(tmp_path / "s.de", SOURCES), write(tmp_path / "t.en", TARGETS)
    data = ParallelDataModule(source=src, target=tgt, val_path=src, vocab=60)
    with pytest.raises(DataError, match="give their references in data.val_ref") as err:
        data.setup("fit")
    assert "--ref" not in str(err.value)
    assert main(["evaluate", str(old_run), "--data", src]) == 2  # evaluate: the command's own flag
    err = capsys.readouterr().err
    assert "give their references with --ref REF" in err and "data.val_ref" not in err


# -- 7. attention on a run that is not seq2seq ---------------------------------------------------------------------
def test_attention_on_a_run_that_is_not_seq2seq_says_what_it_cannot_do(tmp_path, tiny_config, capsys):
    from hourglass.config import save_config
    from hourglass.training import build_data, build_task
    from hourglass.weights import save_weights

    cfg = tiny_config()
    data = build_data(cfg)
    data.setup("fit")
    save_config(cfg, tmp_path / "config.yaml")
    save_weights(build_task(cfg, data).model, tmp_path / "model.safetensors", {"config": cfg.to_dict()})
    assert main(["attention", str(tmp_path), "hi", "--output", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "so it cannot draw an attention map" in err and "cannot translate" not in err


# -- 8. empty and damaged corpora ----------------------------------------------------------------------------------
def test_an_empty_corpus_says_the_files_are_empty(tmp_path):
    empty = [write(tmp_path / name, []) for name in ("e.de", "e.en")]
    with pytest.raises(DataError, match=r"e\.de / .*e\.en contains no sentence pair: both files are empty\."):
        read_parallel(*empty)
    with pytest.raises(DataError, match=r"e\.de contains no sentence pair: the file is empty\."):
        read_tsv(empty[0])
    blank = [write(tmp_path / name, ["", " "]) for name in ("b.de", "b.en")]
    with pytest.raises(DataError, match="its 2 lines are each empty on one side or both"):
        read_parallel(*blank)


def test_a_gzip_file_damaged_at_its_start_says_no_line_was_read(tmp_path, capsys):
    data = bytearray(gzip.compress(b"ein Hund\n" * 100))
    data[2] = 99  # an unknown compression method, in the header
    (tmp_path / "bad.de.gz").write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        read_parallel(tmp_path / "bad.de.gz", write(tmp_path / "t.en", TARGETS))
    said = str(err.value)
    assert "bad.de.gz: cannot read its first line" in said and "No line of it was read" in said
    assert "line 0" not in said and "0 lines" not in said


# -- 9. min_len above max_len -----------------------------------------------------------------------------------------
def test_min_len_above_max_len_is_refused_at_training_and_on_the_command_line(old_run, tmp_path, monkeypatch,
                                                                                 capsys):
    from hourglass.training import build_data, build_task

    cfg = config(tmp_path, max_length=8, min_len=50, max_len=5)
    data = build_data(cfg)
    data.setup("fit")
    with pytest.raises(ConfigError, match=r"^task\.min_len=50 is above task\.max_len=5: .* Lower task\.min_len, or "
                                          r"raise task\.max_len\.$"):
        build_task(cfg, data)
    cfg = config(tmp_path, max_length=8, min_len=12)  # the decoder's 10 positions hold 9 output tokens
    with pytest.raises(ConfigError, match=r"task\.min_len=12 is above the 9 output tokens that "
                                          r"model\.decoder\.max_len=10 allows"):
        build_task(cfg, data)
    build_task(config(tmp_path, max_length=8, min_len=5, max_len_ratio=0.1), data)  # a sentence's limit wins
    status, out = translate(monkeypatch, old_run, ["ein Hund"], "--min-len", "1000", "--max-len", "5")
    err = capsys.readouterr().err
    assert status == 2 and out == "" and "--min-len=1000 is above --max-len=5" in err and "raise --max-len" in err
    status, _ = translate(monkeypatch, old_run, ["ein Hund"], "--min-len", "12")
    err = capsys.readouterr().err
    assert status == 2 and "--min-len=12 is above the 9 output tokens that model.decoder.max_len=10 allows" in err
    status, out = translate(monkeypatch, old_run, ["ein Hund"], "--min-len", "9", "--beam", "1")
    assert status == 0 and out.count("\n") == 1  # 9: the most the decoder holds, and the least asked for
