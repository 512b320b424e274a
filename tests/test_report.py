"""The HTML report is self-contained, shows metrics, escapes text and tolerates missing files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hourglass import plots
from hourglass.report import caption_from_filename, flatten_metrics, format_value, write_report


def test_helpers():
    nested = {"a": 1, "val": {"loss": 0.5, "x": {"y": 2}}}
    assert flatten_metrics(nested) == {"a": 1, "val/loss": 0.5, "val/x/y": 2}
    assert format_value(0.123456789) == "0.1235"
    assert format_value(12345.678) == "1.235e+04"
    assert format_value(3) == "3"
    assert caption_from_filename(Path("recon_grid.png")) == "Recon grid"


def test_full_report(tmp_path):
    run = tmp_path / "ae-mnist"
    (run / "plots").mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  encoder: {name: conv}\n  note: <b>hi</b>\n")
    metrics = {"val": {"loss": 0.0123456, "psnr": 24.56789}, "epochs": 3}
    (run / "metrics.json").write_text(json.dumps(metrics))
    examples = [
        {"source": "<script>alert(1)</script>", "hypothesis": "a & b"},
        {"source": "x", "reference": "y"},
    ]
    (run / "examples.json").write_text(json.dumps(examples))
    plots.sample_grid(np.zeros((4, 1, 8, 8)), run / "plots" / "recon_grid.png")
    plots.loss_curves({"train/loss": [(0, 1.0), (1, 0.5)]}, run / "plots" / "a_loss.png")

    out = write_report(run)
    assert out == run / "report.html"
    text = out.read_text()
    assert "<title>ae-mnist</title>" in text
    assert "val/loss" in text and "0.01235" in text and "24.57" in text
    assert text.count('<img src="data:image/png;base64,') == 2
    assert text.index("A loss") < text.index("Recon grid")  # plots sorted by name
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "a &amp; b" in text and "reference" in text  # union of example keys
    assert "&lt;b&gt;hi&lt;/b&gt;" in text  # config shown escaped in a <pre>


def test_empty_run_dir_and_title(tmp_path):
    out = write_report(tmp_path, title="My <run>")
    text = out.read_text()
    assert "My &lt;run&gt;" in text
    assert "Metrics" not in text and "data:image" not in text
