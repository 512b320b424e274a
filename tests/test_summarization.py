"""Summarization: JSON Lines data, ROUGE, the task's coverage loss and n-gram blocking, and the bbc-summary recipe."""
from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import pytest

from hourglass.config import validate
from hourglass.data.parallel import ParallelDataModule
from hourglass.data.text import read_jsonl
from hourglass.errors import ConfigError, DataError
from hourglass.tasks.seq2seq import rouge_scores

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbc-summary" / "articles.jsonl.gz"


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_fields_become_one_line_each_and_empty_records_are_skipped_with_a_count(tmp_path):
    rows = [{"article": "First para.\n\nSecond  para.", "summary": "First para.", "title": "A"},
            {"article": "", "summary": "nothing to read"}, {"article": "Only text.", "summary": None}]
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n\n")
    with pytest.warns(UserWarning, match="Skipped 2 of 3"):
        assert read_jsonl(path, "article", "summary") == [("First para. Second para.", "First para.")]
    with pytest.raises(DataError, match="line 2 has no field 'title'"):  # only the first record has one
        read_jsonl(path, "article", "title")


@pytest.mark.parametrize("line, message", [
    ('{"article": "x", "summary": "y"', r"a.jsonl, line 2 is not valid JSON .*one JSON object a line"),
    ('["x", "y"]', r"line 2 holds a JSON list, not an object"),
    ('{"text": "x", "summary": "y"}', r"line 2 has no field 'article'; its fields are 'text', 'summary'.*"
                                      r"data.source_field"),
    ('{"article": ["x"], "summary": "y"}', r"line 2: field 'article' holds a JSON list .*not text"),
    ("[" * 100_000, r"a.jsonl, line 2 nests its JSON too deeply to read"),  # was a RecursionError
])
def test_bad_jsonl_lines_name_the_file_the_line_and_the_fix(tmp_path, line, message):
    path = write(tmp_path / "a.jsonl", ['{"article": "fine", "summary": "ok"}', line])
    with pytest.raises(DataError, match=message):
        read_jsonl(path, "article", "summary")


def test_the_data_module_reads_jsonl_and_refuses_two_sources(tmp_path):
    rows = [json.dumps({"doc": f"the number {i} is here", "sum": f"number {i}"}) for i in range(40)]
    path = write(tmp_path / "train.jsonl", rows)
    data = ParallelDataModule(jsonl=str(path), source_field="doc", target_field="sum", vocab=60, val_fraction=0.1)
    assert len(data.encoded("train")) == 36 and len(data.references("val")) == 4
    assert data.context().decoder["shared_vocab"] is True
    assert ParallelDataModule(jsonl=str(path), source_field="doc", target_field="sum", vocab=60,
                              joint_vocab=False).context().decoder["shared_vocab"] is False
    val = write(tmp_path / "val.jsonl", rows[:3])  # a JSON Lines validation file without a reference file
    data = ParallelDataModule(jsonl=str(path), source_field="doc", target_field="sum", vocab=60, val_path=str(val))
    assert data.references("val") == ["number 0", "number 1", "number 2"]
    with pytest.raises(ConfigError, match="not several"):
        ParallelDataModule(jsonl=str(path), tsv=str(path))


def test_max_target_length_truncates_training_targets_but_not_references(tmp_path):
    rows = [json.dumps({"source": "a b c", "target": " ".join(["word"] * 30)}) for _ in range(20)]
    path = write(tmp_path / "t.jsonl", rows)
    data = ParallelDataModule(jsonl=str(path), vocab=30, max_target_length=5, val_fraction=0.1)
    with pytest.warns(UserWarning, match="data.max_target_length=5"):
        targets = data.encoded("train").targets
    assert max(map(len, targets)) == 5
    assert data.references("val")[0].count("word") == 30


def test_rouge_scores_known_values_and_the_best_of_several_references():
    same = rouge_scores(["the cat sat on the mat"], [["the cat sat on the mat"]])
    assert same == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    half = rouge_scores(["the cat"], [["the cat sat down"]])  # P 1, R 0.5: F1 2/3; bigrams 1 of 1 and 1 of 3
    assert half["rouge1"] == pytest.approx(66.67) and half["rouge2"] == pytest.approx(50.0)
    best = rouge_scores(["a dog"], [["nothing here", "a dog"]])
    assert best["rouge1"] == 100.0


def tiny_summary_config(tmp_path: Path, **task) -> dict:
    rows = [json.dumps({"article": f"report {i} : the team won the match , fans said .", "summary": "the team won"})
            for i in range(24)]
    path = write(tmp_path / "news.jsonl", rows)
    return {
        "name": "tiny-summary",
        "data": {"name": "parallel", "jsonl": str(path), "source_field": "article", "target_field": "summary",
                 "vocab": 60, "val_fraction": 0.25, "max_tokens": 256},
        "model": {"encoder": {"name": "gru", "embed": 16, "hidden": 16},
                  "decoder": {"name": "gru-pointer", "embed": 16, "hidden": 32}},
        "task": {"name": "seq2seq", "beam": 2, "val_beam": 1, "rouge": True, "coverage_loss": 1.0,
                 "no_repeat_ngram": 2, "max_len": 8, "max_len_ratio": None, **task},
        "train": {"max_epochs": 1, "progress": False, "checkpoint_every_n_steps": 10_000, "monitor": "val/rougeL",
                  "mode": "max"},
    }


def test_a_summarization_run_logs_rouge_and_the_coverage_loss(tmp_path):
    from hourglass.training import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_dir = train(validate(tiny_summary_config(tmp_path), "tiny"), out=str(tmp_path / "run"))
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    assert {"rouge1", "rouge2", "rougeL", "bleu"} <= set(metrics["final"])
    assert "val/rougeL" in metrics["best"]
    header = next((Path(run_dir) / "logs").rglob("metrics.csv")).read_text().splitlines()[0]
    assert "val/coverage" in header and "val/rougeL" in header


def test_a_coverage_loss_without_attention_is_refused_when_the_task_is_built(tmp_path):
    from hourglass.training import train

    config = tiny_summary_config(tmp_path)
    config["model"]["decoder"] = {"name": "gru", "embed": 16, "hidden": 32}
    with pytest.raises(ConfigError, match='coverage_loss.*decoder "gru" attends: False'):
        train(validate(config, "tiny"), out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not SHARED.is_file(), reason="needs ../shared/data/bbc-summary")
def test_the_bbc_summary_recipe_trains_a_few_steps_on_real_articles(tmp_path):
    # 24 articles make 3 batches: train.max_steps=2 stops mid-epoch, before any validation, and the recipe's
    # early stopping on val/rougeL must then wait for a validation instead of failing inside Lightning.
    from hourglass import recipebook
    from hourglass.training import train

    config = recipebook.load("bbc-summary", [f"data.jsonl={SHARED}", "data.train_limit=24", "data.val_fraction=0.01",
                                             "data.vocab=1000", "task.max_len=12", "task.beam=2", "task.examples=2",
                                             "train.max_steps=2", "train.progress=false"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_dir = Path(train(config, out=str(tmp_path / "run")))
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert final["sentences"] == 20 and final["rougeL"] >= 0
    example = json.loads((run_dir / "examples.json").read_text())[0]
    assert len(example["source"]) > 300 and "\n" not in example["source"]  # a whole article, on one line
    assert example["reference"] and len(example["reference"]) < len(example["source"])
