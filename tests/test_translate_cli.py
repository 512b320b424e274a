"""`hourglass translate`, `evaluate --data --ref` and `attention` on a trained reverse-or-copy run."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hourglass.cli import main
from test_seq2seq import reverse_or_copy, trained_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return trained_run(tmp_path_factory, "rnn")  # shared with test_seq2seq in one session


def translate(monkeypatch, capsys, run_dir: Path, stdin: str, *args: str) -> tuple[int, str]:
    """``hourglass translate`` in this process (a subprocess costs seconds of imports): (status, stdout)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8")), encoding="utf-8"))
    capsys.readouterr()
    status = main(["translate", str(run_dir), *args])
    return status, capsys.readouterr().out


def test_translate_stdin_keeps_order_and_empty_lines_and_truncates_long_ones(run_dir, monkeypatch, capsys):
    long = "R " + " ".join("abcdef" * 5)  # 31 pieces, beyond data.max_length=12: truncated with a warning
    with pytest.warns(UserWarning, match="truncated"):
        status, out = translate(monkeypatch, capsys, run_dir, f"R a b c\n\nC f e\n{long}\nR d e\n", "--beam", "3")
    lines = out.split("\n")
    assert status == 0 and lines[:3] == ["c b a", "", "f e"] and lines[4] == "e d" and len(lines) == 6


def test_length_sorted_batches_give_the_same_outputs_in_input_order(run_dir):
    """Sentences of mixed lengths, decoded 2 at a time shortest first, come back in input order, each as it is
    decoded alone (padding and batch company do not change an output)."""
    from hourglass.cli.text import load_seq2seq

    run = load_seq2seq(str(run_dir))
    lines = ["R a b c d e", "C f", "R d e", "C a b c d", "R f e d", ""]
    alone = [run.task.translate([line], run.data, beam=3)[0][0] for line in lines]
    batched = [h[0] for h in run.task.translate(lines, run.data, beam=3, batch_size=2)]
    assert [text for text, _ in batched] == [text for text, _ in alone]
    assert [score for _, score in batched] == pytest.approx([score for _, score in alone], rel=1e-5)
    assert [text for text, _ in alone[:3]] == ["e d c b a", "f", "e d"]


def test_python_translate_answers_a_blank_sentence_as_the_cli_does(run_dir):
    """``task.translate([""])`` decoded the empty source into some sentence, where the CLI writes an empty line."""
    from hourglass.cli.text import load_seq2seq

    run = load_seq2seq(str(run_dir))
    got = run.task.translate(["  ", "R a b", ""], run.data, beam=3, nbest=2)
    assert got[0] == got[2] == [("", 0.0), ("", 0.0)] and got[1][0][0] == "b a" and len(got[1]) == 2
    assert run.task.translate([""], run.data) == [[("", 0.0)]] and run.task.translate([], run.data) == []


def test_translate_buffer_sorts_but_writes_in_input_order(run_dir, monkeypatch, capsys):
    text = "R a b c d e\nC f\nR d e\nC a b c d\n"
    status, out = translate(monkeypatch, capsys, run_dir, text, "--batch", "2", "--buffer", "4")
    assert status == 0 and out.splitlines() == ["e d c b a", "f", "e d", "a b c d"]


def test_translate_input_dash_is_stdin_and_a_missing_file_is_named(run_dir, tmp_path, monkeypatch, capsys):
    assert translate(monkeypatch, capsys, run_dir, "R a b c\n", "--input", "-") == (0, "c b a\n")
    assert main(["translate", str(run_dir), "--input", str(tmp_path / "nosuch.de")]) == 2
    assert f"The text file {tmp_path / 'nosuch.de'} does not exist" in capsys.readouterr().err


def test_translate_empty_stdin_is_empty_output(run_dir, monkeypatch, capsys):
    assert translate(monkeypatch, capsys, run_dir, "") == (0, "")


@pytest.mark.parametrize("stream, shell", [("stdin", "<&-"), ("stdout", ">&-")])
def test_a_closed_standard_stream_is_one_paragraph_before_the_model_loads(stream, shell, tmp_path, monkeypatch,
                                                                         capsys):
    """A shell that closes a stream gives Python None for it: a translation would fail on its first line."""
    monkeypatch.setattr(sys, stream, None)
    assert main(["translate", str(tmp_path / "no-run-needed")]) == 2  # said before the run is read
    err = capsys.readouterr().err
    assert f"Standard {'input' if stream == 'stdin' else 'output'} is closed" in err and shell in err
    assert "--input FILE" in err if stream == "stdin" else "> results.txt" in err


def test_translate_input_file_and_nbest(run_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "in.txt").write_text("C a b\nR a b\n", encoding="utf-8")
    status, out = translate(monkeypatch, capsys, run_dir, "", "--input", str(tmp_path / "in.txt"), "--nbest", "2",
                            "--beam", "4")
    rows = [line.split("\t") for line in out.splitlines()]
    assert status == 0 and [(r[0], r[1]) for r in rows] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    assert rows[0][3] == "a b" and rows[2][3] == "b a" and float(rows[0][2]) >= float(rows[1][2])


def test_translate_streams_before_stdin_closes(run_dir):
    """The first translation arrives while stdin is still open: the reader does not wait for the end."""
    proc = subprocess.Popen([sys.executable, "-m", "hourglass", "translate", str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        proc.stdin.write("R a b c\n")
        proc.stdin.flush()
        first = []
        reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=120)
        assert first == ["c b a\n"], proc.stderr.read() if proc.poll() is not None else "no output yet"
        assert proc.poll() is None  # still running: stdin is open
        proc.stdin.write("C d e\n")
        proc.stdin.close()
        assert proc.stdout.read() == "d e\n"
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()


@pytest.mark.parametrize("argv, words", [
    (["translate", "RUN", "--max-len-ratio", "-1"], "'-1' is not a finite number greater than 0"),
    (["translate", "RUN", "--max-len-ratio", "nan"], "'nan' is not a finite number greater than 0"),
    (["translate", "RUN", "--batch", "0"], "'0' is not a count"),
    (["translate", "RUN", "--buffer", "-1"], "'-1' is not a count"),
    (["translate", "RUN", "--nbest", "0"], "'0' is not a count"),
    (["attention", "RUN", "ein Satz", "--output", "a.png", "--beam", "0"], "'0' is not a count"),
    (["caption", "RUN", "x.png", "--batch", "0"], "'0' is not a count"),
])
def test_decoding_options_out_of_range_are_refused_before_loading(argv, words, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and words in capsys.readouterr().err


def test_chunks_are_lazy():
    """available_batches never reads far ahead of what it has translated (a large input is not loaded)."""
    from hourglass.cli.text import available_batches

    pulled = []

    def lines():
        for i in range(10_000):
            pulled.append(i)
            yield f"line {i}"

    batches = available_batches(lines(), 4)
    first = next(batches)
    assert 1 <= len(first) <= 4 and first[0] == "line 0"
    assert len(pulled) <= 4 * 4  # the batch, the bounded queue (2 batches) and one line in flight


def test_evaluate_with_data_and_ref(run_dir, tmp_path, capsys):
    pairs = reverse_or_copy(60, seed=99)
    (tmp_path / "test.src").write_text("".join(f"{s}\n" for s, _ in pairs), encoding="utf-8")
    (tmp_path / "test.ref").write_text("".join(f"{t}\n" for _, t in pairs), encoding="utf-8")
    assert main(["evaluate", str(run_dir), "--data", str(tmp_path / "test.src"), "--ref", str(tmp_path / "test.ref"),
                 "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["sentences"] == 60 and metrics["bleu"] > 90 and metrics["chrf"] > 90
    assert metrics["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert main(["evaluate", str(run_dir), "--json"]) == 0  # the validation split
    assert json.loads(capsys.readouterr().out)["exact_match"] >= 0.99


def test_evaluate_data_without_ref_never_borrows_the_runs_validation_references(run_dir, tmp_path, capsys):
    """A run validated on two files (val_path, val_ref), given source lines alone, as many as its validation
    split: they must not be scored against its references (they were, in silence, when the counts matched)."""
    import shutil

    import yaml

    pairs = reverse_or_copy(40, seed=98)
    for name, side in (("val.src", 0), ("val.ref", 1), ("other.src", 0)):
        (tmp_path / name).write_text("".join(f"{p[side]}\n" for p in pairs), encoding="utf-8")
    run = shutil.copytree(run_dir, tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"].pop("val_fraction", None)
    config["data"].update(val_path=str(tmp_path / "val.src"), val_ref=str(tmp_path / "val.ref"))
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["evaluate", str(run), "--json"]) == 0  # its own validation split, with its references
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(tmp_path / "other.src"), "--json"]) != 0
    captured = capsys.readouterr()
    assert captured.out == "" and "--ref" in captured.err and "other.src" in captured.err


def test_bf16_decoding_gives_the_same_outputs(run_dir, monkeypatch, capsys):
    """--precision bf16-mixed runs the matrix products in bfloat16 (the logits are bfloat16); outputs stay."""
    import torch

    from hourglass.cli.text import load_seq2seq
    from hourglass.precision import autocast

    run = load_seq2seq(str(run_dir))
    with torch.no_grad(), autocast("bf16-mixed", run.task.device):
        source = run.data.encode_sources(["R a b c d", "C e f"])
        logits, _, _ = run.task.decoder.step(torch.tensor([1, 1]),
                                             run.task.decoder.init_state(run.task.model.encode(source)))
        hyps = run.task.generate(source, run.data.target_tokenizer, beam=3)
    assert logits.dtype == torch.bfloat16 and [run.data.target_tokenizer.decode(t) for t in hyps.best()] == \
        ["d c b a", "e f"]
    text = "R a b c\nC f e\n"
    assert translate(monkeypatch, capsys, run_dir, text, "--precision", "bf16-mixed") == \
        translate(monkeypatch, capsys, run_dir, text) == (0, "c b a\nf e\n")
    assert main(["evaluate", str(run_dir), "--json", "--precision", "bf16-mixed"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["precision"] == "bf16-mixed" and metrics["exact_match"] >= 0.99


def test_beam_prune_from_the_cli_keeps_the_answers_and_refuses_bad_values(run_dir, monkeypatch, capsys):
    import hourglass.tasks.seq2seq as seq2seq_module

    seen, search = [], seq2seq_module.beam_search
    monkeypatch.setattr(seq2seq_module, "beam_search", lambda *a, **kw: (seen.append(kw["prune"]), search(*a, **kw))[1])
    status, out = translate(monkeypatch, capsys, run_dir, "R a b c\nC f e d\n", "--beam", "4", "--beam-prune", "1.5")
    assert status == 0 and out.splitlines() == ["c b a", "f e d"] and seen == [1.5]
    assert main(["evaluate", str(run_dir), "--json", "--beam-prune", "1.5"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["beam_prune"] == 1.5 and metrics["exact_match"] >= 0.99
    for bad in ("0", "nan", "inf"):
        assert main(["translate", str(run_dir), "--beam-prune", bad]) == 2
        assert f"--beam-prune is a margin in nats and must be a finite number > 0 (got {float(bad)})" in \
            capsys.readouterr().err


def test_search_options_from_the_cli_override_the_run_and_evaluate_reports_them(run_dir, monkeypatch, capsys):
    status, out = translate(monkeypatch, capsys, run_dir, "R a b c\nC f e d\n", "--min-len", "6")
    assert status == 0 and [len(line.split()) for line in out.splitlines()] == [6, 6]  # held back past c b a
    assert out.startswith("c b a") and translate(monkeypatch, capsys, run_dir, "R a b c\n", "--min-len", "0") == \
        (0, "c b a\n")
    assert translate(monkeypatch, capsys, run_dir, "R a b c\n", "--max-len", "2") == (0, "c b\n")
    assert main(["evaluate", str(run_dir), "--json", "--beam", "2", "--length-penalty", "0.5", "--min-len", "1",
                 "--no-repeat-ngram", "3", "--max-len", "30"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {k: metrics[k] for k in ("beam", "length_penalty", "max_len", "min_len", "no_repeat_ngram")} == \
        {"beam": 2, "length_penalty": 0.5, "max_len": 30, "min_len": 1, "no_repeat_ngram": 3}
    for bad in ("nan", "1000", "-1e308"):  # 1000 overflowed the penalty, -1e308 divided by zero
        assert main(["translate", str(run_dir), f"--length-penalty={bad}"]) == 2
        assert f"--length-penalty is GNMT's alpha, a number from -10 to 10 (got {float(bad)})" in \
            capsys.readouterr().err
    # A huge ratio is no limit at all (task.max_len still holds); cast to long it had wrapped to a negative one.
    assert translate(monkeypatch, capsys, run_dir, "R a b c\n", "--max-len-ratio", "1e20") == (0, "c b a\n")
    with pytest.raises(SystemExit):
        main(["translate", str(run_dir), "--min-len", "-1"])
    assert "'-1' is not a whole number: give 0 or more" in capsys.readouterr().err


def test_attention_map(run_dir, tmp_path, capsys):
    out = tmp_path / "att.png"
    assert main(["attention", str(run_dir), "R a b c", "--output", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and capsys.readouterr().out.strip() == "c b a"


@pytest.mark.parametrize("command, work", [("encode", "encode images"), ("reconstruct", "reconstruct images")])
def test_image_commands_refuse_a_text_run_before_reading_anything(run_dir, tmp_path, capsys, command, work):
    """They looked up the images' shape in the run's data and failed with a KeyError on a text run."""
    images = tmp_path / "images.npy"
    images.write_bytes(b"not read")  # the refusal comes first: the file is neither read nor replaced
    output = tmp_path / ("codes.npy" if command == "encode" else "r.png")
    assert main([command, str(run_dir), "--data", str(images), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert f"reads tokens, not images, so it cannot {work}" in err and "hourglass translate" in err
    assert not output.exists() and images.read_bytes() == b"not read"


def test_translate_refuses_a_run_that_is_not_seq2seq(tmp_path, tiny_config, capsys):
    from hourglass.config import save_config
    from hourglass.training import build_data, build_task
    from hourglass.weights import save_weights

    config = tiny_config()
    data = build_data(config)
    data.setup("fit")
    task = build_task(config, data)
    save_config(config, tmp_path / "config.yaml")
    save_weights(task.model, tmp_path / "model.safetensors", {"config": config.to_dict()})
    assert main(["translate", str(tmp_path)]) == 2
    assert "not a sequence-to-sequence one, so it cannot translate" in capsys.readouterr().err
    assert main(["caption", str(tmp_path), str(tmp_path / "x.png")]) == 2  # it said "cannot translate" too
    assert "not a sequence-to-sequence one, so it cannot caption images" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--precision", "bf16-mixed"]) == 2  # an autoencoder: not a search
    assert "--precision bf16-mixed applies to sequence-to-sequence runs" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--beam-prune", "1.5"]) == 2
    assert "--beam-prune applies to sequence-to-sequence runs" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--beam", "4", "--min-len", "3"]) == 2
    assert "--beam, --min-len apply to sequence-to-sequence runs" in capsys.readouterr().err


def test_length_batches_sort_trim_and_keep_other_sources_in_order():
    import torch

    from hourglass.tasks.seq2seq import _length_batches

    pad = 7  # not 0: the data module's own pad id is what counts
    source = torch.tensor([[1, 2, 3, pad], [4, pad, pad, pad], [5, 6, 3, 2], [8, 9, pad, pad]])
    batches = [(rows, part.tolist()) for rows, part in _length_batches(source, 2, pad)]
    assert batches == [([1, 3], [[4, pad], [8, 9]]), ([0, 2], [[1, 2, 3, pad], [5, 6, 3, 2]])]
    images = torch.zeros(3, 1, 4, 4)
    assert [rows for rows, _ in _length_batches(images, 2)] == [[0, 1], [2]]


def test_beam_1_scores_are_length_normalized_on_the_greedy_path_too(run_dir):
    """generate() sends beam 1 to greedy search, whose sums it divides by the length penalty as beam search
    does: the same scores as beam search with beam 1."""
    import torch

    from hourglass.cli.text import load_seq2seq
    from hourglass.search import beam_search

    run = load_seq2seq(str(run_dir))
    task, tok = run.task, run.data.target_tokenizer
    task.length_penalty = 1.0
    source = run.data.encode_sources(["R a b c d", "C e f", "R f"])
    found = task.generate(source, tok, beam=1)
    with torch.no_grad():
        code = task.model.encode(source)
        beam1 = beam_search(task.decoder, code, beam=1, bos=tok.bos_id, eos=tok.eos_id,
                            max_len=task._limits(code, task.max_len_ratio), length_penalty=1.0)
    assert found.tokens == beam1.tokens and found.scores == beam1.scores
