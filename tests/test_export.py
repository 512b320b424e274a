"""`hourglass export`: ONNX graphs of image runs, run with onnxruntime against the run's own PyTorch outputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hourglass.cli import main
from hourglass.run import Run
from hourglass.training import train
from test_segmentation import seg_config, write_squares

ort = pytest.importorskip("onnxruntime", reason="the optional [export] extra is not installed")
pytest.importorskip("onnxscript", reason="the optional [export] extra is not installed")


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _export(run: Path, out: Path, capsys) -> dict:
    assert main(["export", str(run), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "export.json").read_text())
    assert all(str(out / g["file"]) in printed for g in summary["graphs"].values())
    return summary


def test_an_autoencoder_exports_an_encoder_and_a_decoder_that_match_pytorch(tiny_config, tmp_path, capsys) -> None:
    config = tiny_config("digits-ae", "train.max_epochs=1", "task.name=vae", "model.bottleneck.name=variational")
    run_dir = train(config, out=str(tmp_path / "vae"))
    summary = _export(run_dir, tmp_path / "onnx", capsys)
    assert set(summary["graphs"]) == {"encoder", "decoder"} and summary["task"] == "vae"
    assert summary["graphs"]["encoder"]["input"] == ["images", ["N", 1, 8, 8]]
    run = Run.load(run_dir)
    images = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)  # a batch size never exported
    codes = _session(tmp_path / "onnx" / "encoder.onnx").run(["code"], {"images": images})[0]
    np.testing.assert_allclose(codes, run.encode(images), atol=1e-5)  # the posterior mean, as `encode` writes
    decoded = _session(tmp_path / "onnx" / "decoder.onnx").run(["images"], {"code": codes})[0]
    np.testing.assert_allclose(decoded, run.decode(codes), atol=1e-5)
    assert decoded.shape == (5, 1, 8, 8) and 0 <= decoded.min() and decoded.max() <= 1


def test_a_segmentation_run_exports_its_logits(tmp_path) -> None:
    write_squares(tmp_path / "train", 8, seed=0)
    write_squares(tmp_path / "val", 4, seed=1)
    run_dir = train(seg_config(tmp_path / "train", tmp_path / "val", max_epochs=1), out=str(tmp_path / "seg"))
    run = Run.load(run_dir)
    summary = run.export_onnx(tmp_path / "onnx")  # the Python face of `hourglass export`
    assert summary == json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert set(summary["graphs"]) == {"encoder", "segmenter"}
    x = next(iter(run.data.val_dataloader()))[0][:3]
    logits = _session(tmp_path / "onnx" / "segmenter.onnx").run(["logits"], {"images": x.numpy()})[0]
    with torch.no_grad():
        want = run.task.model(x).numpy()
    assert logits.shape == want.shape and logits.shape[1] == 2
    np.testing.assert_allclose(logits, want, atol=1e-4)
    assert summary["graphs"]["segmenter"]["max_relative_diff"] < 1e-4


def test_a_seq2seq_run_is_refused_and_nothing_is_written(tmp_path_factory, tmp_path, capsys) -> None:
    from test_seq2seq import trained_run

    run = trained_run(tmp_path_factory, "rnn")
    assert main(["export", str(run), "--output", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err
    assert 'is of task "seq2seq": ONNX export covers image autoencoders' in err and "model.safetensors" in err
    assert not (tmp_path / "onnx").exists()


def test_an_output_that_is_a_file_is_refused(tiny_config, tmp_path, capsys) -> None:
    run = train(tiny_config("digits-ae", "train.max_steps=1"), out=str(tmp_path / "ae"))
    (tmp_path / "taken").write_text("mine")
    assert main(["export", str(run), "--output", str(tmp_path / "taken")]) == 2
    assert "is a file; give a directory" in capsys.readouterr().err and (tmp_path / "taken").read_text() == "mine"


def test_a_classifier_exports_its_logits(tiny_config, tmp_path) -> None:
    config = tiny_config("digits-ae", "train.max_epochs=1", "model.bottleneck={name: none}",
                         "model.decoder={name: classifier}", "task={name: classification}")
    run = Run.load(train(config, out=str(tmp_path / "cls")))
    (tmp_path / "onnx").mkdir()  # an earlier export of an autoencoder into the same folder, and a file of the user's
    (tmp_path / "onnx" / "export.json").write_text(json.dumps({"graphs": {"decoder": {"file": "decoder.onnx"}}}))
    (tmp_path / "onnx" / "decoder.onnx").write_bytes(b"old")
    (tmp_path / "onnx" / "notes.onnx").write_bytes(b"mine")
    summary = run.export_onnx(tmp_path / "onnx")
    assert not (tmp_path / "onnx" / "decoder.onnx").exists()  # not this run's: it would pass for one
    assert (tmp_path / "onnx" / "notes.onnx").read_bytes() == b"mine"
    assert set(summary["graphs"]) == {"encoder", "classifier"}
    assert summary["graphs"]["classifier"]["output"] == ["logits", ["N", 10]]
    images = np.random.default_rng(1).random((3, 1, 8, 8), dtype=np.float32)
    logits = _session(tmp_path / "onnx" / "classifier.onnx").run(["logits"], {"images": images})[0]
    with torch.no_grad():
        np.testing.assert_allclose(logits, run.task.logits(torch.from_numpy(images)).numpy(), atol=1e-5)
