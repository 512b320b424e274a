"""Image captioning: MNIST strips, captions files, a tiny model trained end to end, the shared beam engine, the
``caption`` and ``attention`` commands, and one clear paragraph for each bad input."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hourglass import recipebook
from hourglass._registry import DECODERS, ENCODERS, load_components
from hourglass.cli import main
from hourglass.data.captions import (CaptionsDataModule, grid_of, load_caption_set, read_captions,
                                     read_image_files)
from hourglass.data.mnist_captions import (DIGIT_NAMES, MnistCaptionsDataModule, caption_of, render_strips,
                                           split_digits)
from hourglass.errors import DataError
from hourglass.search import beam_search, greedy


def _fake_digits(n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """n distinct 28x28 "digits" (random images) with labels 0..9."""
    rng = np.random.default_rng(0)
    return rng.random((n, 28, 28)).astype(np.float32), np.arange(n) % 10


# ---------------------------------------------------------------- MNIST strips

def test_strips_render_deterministically_and_captions_name_the_digits() -> None:
    digits, labels = _fake_digits()
    pool = np.arange(10, 50)
    a = render_strips(digits, labels, pool, count=30, min_digits=1, max_digits=5, seed=3)
    b = render_strips(digits, labels, pool, count=30, min_digits=1, max_digits=5, seed=3)
    c = render_strips(digits, labels, pool, count=30, min_digits=1, max_digits=5, seed=4)
    assert a.images.shape == (30, 1, 28, 140) and a.images.dtype == np.float32
    assert np.array_equal(a.images, b.images) and a.captions == b.captions and a.digits == b.digits
    assert a.digits != c.digits
    assert {len(d) for d in a.digits} == {1, 2, 3, 4, 5}
    for image, caption, drawn in zip(a.images, a.captions, a.digits):
        assert caption == " ".join(DIGIT_NAMES[labels[d]] for d in drawn)
        assert set(drawn) <= set(pool.tolist()) and len(set(drawn)) == len(drawn)
        for j, d in enumerate(drawn):  # each digit in its 28-pixel cell, left to right
            assert np.array_equal(image[0, :, 28 * j : 28 * (j + 1)], digits[d])
        assert not image[0, :, 28 * len(drawn):].any()  # shorter strips are padded with black
    assert caption_of([7, 2, 9]) == "seven two nine"


def test_train_and_val_strips_use_disjoint_source_digits(mnist_dir: Path) -> None:
    train, val = split_digits(8000, val_fraction=0.125, seed=0)
    assert len(val) == 1000 and len(train) == 7000 and not set(train) & set(val)
    data = MnistCaptionsDataModule(path=str(mnist_dir), train_size=300, val_size=100, max_digits=3)
    data.setup()
    used = {split: {d for s in data.strips[split].digits for d in s} for split in ("train", "val")}
    assert used["train"] and used["val"] and not used["train"] & used["val"]
    assert data.context().encoder["input_shape"] == (1, 28, 84)
    # The references are the captions of the strips, one per validation example, by index.
    assert data.references("val") == [[c] for c in data.strips["val"].captions]


# ---------------------------------------------------------------- a folder of images + a captions file

def _folder(tmp_path: Path, n: int = 6, size: tuple[int, int] = (12, 16)) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_tsv_and_json_captions_with_several_per_image(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    tsv = tmp_path / "captions.tsv"
    tsv.write_text("im0.png\ta red  square\nim0.png#1\tsomething red\n\nim1.png\ta blue one\n", encoding="utf-8")
    assert read_captions(tsv) == {"im0.png": ["a red square", "something red"], "im1.png": ["a blue one"]}
    js = tmp_path / "captions.json"
    js.write_text(json.dumps({"im2.png": ["one", "two"], "im3.png": "three"}))
    assert read_captions(js) == {"im2.png": ["one", "two"], "im3.png": ["three"]}
    caps = load_caption_set(folder, tsv)
    assert caps.images.shape == (2, 3, 12, 16) and caps.names == ["im0.png", "im1.png"]
    assert caps.references == [["a red square", "something red"], ["a blue one"]]


def test_captions_data_module_splits_images_not_captions(tmp_path: Path) -> None:
    folder = _folder(tmp_path, n=10)
    lines = [f"im{i}.png\tpicture {i} {word}" for i in range(10) for word in ("alpha", "beta")]
    (tmp_path / "c.tsv").write_text("\n".join(lines), encoding="utf-8")
    data = CaptionsDataModule(images=str(folder), captions=str(tmp_path / "c.tsv"), val_fraction=0.2, vocab=40,
                              resize=[8, 8], channels=1, batch_size=4)
    data.setup()
    assert len(data.sets["val"]) == 2 and len(data.sets["train"]) == 8
    assert not set(data.sets["val"].names) & set(data.sets["train"].names)
    assert all(len(r) == 2 for r in data.references("val"))  # every caption is a reference for BLEU
    batch = next(iter(data.train_dataloader()))
    assert batch["source"].shape == (4, 1, 8, 8) and batch["target"][:, 0].eq(data.target_tokenizer.bos_id).all()
    assert len(data.train_dataloader().dataset) == 16  # one training example per (image, caption) pair
    assert data.context().decoder["vocab_size"] == data.target_tokenizer.vocab_size


def _one_paragraph(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and len(text) > 40
    return text


def test_pad_fit_keeps_a_short_strip_as_rendered_where_stretch_would_widen_it(tmp_path: Path) -> None:
    strip = np.zeros((28, 56), np.uint8)  # two cells of a 28 x 140 model's strip
    strip[4:24, 8:20], strip[4:24, 36:48] = 255, 200
    Image.fromarray(strip).save(tmp_path / "short.png")
    Image.fromarray(strip).resize((112, 56)).save(tmp_path / "short-2x.png")
    padded = read_image_files([tmp_path / "short.png"], resize=(28, 140), channels=1, fit="pad")  # (1, 1, 28, 140)
    np.testing.assert_allclose(padded[0, 0, :, :56], strip / 255.0, atol=1e-6)  # same height: pixels kept
    assert padded[0, 0, :, 56:].max() == 0  # the empty cells, black as rendered
    doubled = read_image_files([tmp_path / "short-2x.png"], resize=(28, 140), channels=1, fit="pad")
    assert doubled[0, 0, :, 56:].max() == 0 and np.abs(doubled - padded).mean() < 0.05
    stretched = read_image_files([tmp_path / "short.png"], resize=(28, 140), channels=1)
    assert stretched[0, 0, :, 100:].max() > 0.5  # stretch (the default for photos) widens the digits instead
    assert MnistCaptionsDataModule.fit == "pad"


def test_captions_naming_missing_images_lists_them(tmp_path: Path) -> None:
    folder = _folder(tmp_path, n=2)
    tsv = tmp_path / "c.tsv"
    tsv.write_text("im0.png\tfine\ngone.png\tlost\nim1.png\tfine\nalso-gone.jpg\tlost too\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_caption_set(folder, tsv)
    text = _one_paragraph(err)
    assert "2 image(s)" in text and "gone.png" in text and "also-gone.jpg" in text and str(folder) in text


def test_unreadable_images_are_listed(tmp_path: Path) -> None:
    folder = _folder(tmp_path, n=2)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.jpg").write_text("hello")
    tsv = tmp_path / "c.tsv"
    tsv.write_text("im0.png\tok\nbroken.png\tbad\nnotes.jpg\tbad\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_caption_set(folder, tsv)
    text = _one_paragraph(err)
    assert "2 image(s) cannot be read" in text and "broken.png" in text and "notes.jpg" in text


@pytest.mark.parametrize("content, expected", [
    ("", "is empty"),
    ("\n  \n", "is empty"),
    ("im0.png a caption without a tab\n", "no tab"),
    ("im0.png\t   \n", "holds no caption"),
    ('{"im0.png": 3}', "neither a caption nor a list"),
    ('{"im0.png": ["ok", ', "not valid JSON"),
])
def test_bad_captions_files(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "c.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_captions(path)
    assert expected in _one_paragraph(err)


def test_bad_captions_through_the_cli_exit_2(tmp_path: Path, capsys) -> None:
    folder = _folder(tmp_path, n=1)
    (tmp_path / "c.tsv").write_text("", encoding="utf-8")
    argv = ["train", "mnist-captions", "--set", "data={name: captions, images: " + str(folder) + ", captions: "
            + str(tmp_path / "c.tsv") + "}", "train.progress=false"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "is empty" in err and "\n" not in err


# ---------------------------------------------------------------- the shared search engine on image codes

@torch.no_grad()
def test_beam_1_equals_greedy_on_a_conv_and_gru_attention_model() -> None:
    load_components()
    torch.manual_seed(0)
    encoder = ENCODERS.get("conv")(input_shape=(1, 28, 56), channels=[8, 16, 16], blocks=0).double().eval()
    decoder = DECODERS.get("gru-attention")(code=encoder.spec, vocab_size=14, pad_id=0, embed=16,
                                            hidden=24).double().eval()
    code = encoder(torch.rand(5, 1, 28, 56, dtype=torch.float64))
    g = greedy(decoder, code, bos=2, eos=3, max_len=8)
    b = beam_search(decoder, code, beam=1, bos=2, eos=3, max_len=8)
    assert g.tokens == b.tokens and g.scores == b.scores
    for x, y in zip(g.attention, b.attention):
        assert x.shape[1] == encoder.grid[0] * encoder.grid[1] and torch.allclose(x, y)
    wide = beam_search(decoder, code, beam=4, bos=2, eos=3, max_len=8, nbest=4)
    assert all(s == sorted(s, reverse=True) for s in wide.scores)
    assert grid_of(code.memory.shape[1], 28, 56) == encoder.grid


def test_conv_positions_let_attention_tell_cells_apart() -> None:
    """On a blank image every interior grid cell has the same features: only positions make them differ."""
    load_components()
    blank = torch.zeros(1, 1, 32, 64)
    for positions in (False, True):
        torch.manual_seed(0)
        encoder = ENCODERS.get("conv")(input_shape=(1, 32, 64), channels=[4, 8, 8, 8], positions=positions).eval()
        with torch.no_grad():
            code = encoder(blank)
        inner = code.memory.view(4, 8, -1)[1:-1, 1:-1].reshape(-1, 8)  # (cells away from the padded borders, C)
        assert len(torch.unique(inner.round(decimals=5), dim=0)) == (len(inner) if positions else 1)
        assert code.vector.shape == (1, 8 * 4 * 8)  # the pooled code and the feature maps are unchanged


# ---------------------------------------------------------------- a tiny model, trained end to end

# About 300 steps of a small CNN (4 stages: a coarse grid, which attention aligns with quickly) and a small GRU.
TINY = ["train.progress=false", "data.train_size=2400", "data.val_size=100", "data.max_digits=2",
        "data.batch_size=32", "model.encoder.channels=[8,16,32,32]", "model.decoder.embed=16",
        "model.decoder.hidden=48", "train.max_epochs=4", "train.lr=0.003", "train.warmup_steps=0", "task.beam=2", "task.label_smoothing=0.0"]


@pytest.fixture(scope="module")
def tiny_run(mnist_dir: Path, tmp_path_factory) -> Path:
    from hourglass.training import train

    config = recipebook.load("mnist-captions", [f"data.path={mnist_dir}", *TINY])
    # One thread: batches this small gain nothing from two, and on a busy machine two threads spin and wait on
    # each other (ten times the CPU time, measured). Restored for the tests that follow.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(config, out=str(tmp_path_factory.mktemp("captions") / "run"))
    finally:
        torch.set_num_threads(threads)


def test_tiny_captioner_learns_and_reports(tiny_run: Path) -> None:
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    # Chance: a strip holds 1 or 2 of 10 digits, so a fixed guess is exactly right for about 5% of strips.
    assert metrics["final"]["exact_match"] > 0.25, metrics["final"]
    losses = [float(r.split(",")[2]) for r in (tiny_run / "logs" / "metrics.csv").read_text().splitlines()[1:]
              if r.split(",")[2]]
    assert losses[-1] < 0.6 * losses[0]
    examples = json.loads((tiny_run / "examples.json").read_text())
    assert examples and {"source", "reference", "output"} <= set(examples[0])
    assert list((tiny_run / "plots").glob("attention_*.png"))  # attention drawn over the strips
    assert "Examples" in (tiny_run / "report.html").read_text()


def _strip_png(mnist_dir: Path, path: Path) -> str:
    data = MnistCaptionsDataModule(path=str(mnist_dir), train_size=10, val_size=10, max_digits=2)
    data.setup()
    Image.fromarray((data.sets["val"].images[0, 0] * 255).astype(np.uint8)).resize((112, 56)).save(path)
    return data.sets["val"].references[0][0]


def test_caption_and_attention_commands(tiny_run: Path, mnist_dir: Path, tmp_path: Path, capsys) -> None:
    image = tmp_path / "strip.png"
    _strip_png(mnist_dir, image)  # twice the training size: resized like the training data
    assert main(["caption", str(tiny_run), str(image), str(image), "--beam", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and set(lines[0].split()) <= set(DIGIT_NAMES)
    out = tmp_path / "attention.png"
    assert main(["attention", str(tiny_run), str(image), "--output", str(out)]) == 0
    assert out.stat().st_size > 1000 and Image.open(out).size[0] > 100
    assert main(["caption", str(tiny_run), str(tmp_path / "missing.png")]) == 2
    err = capsys.readouterr().err
    assert "missing.png" in err and "give the paths of image files" in err and "captions" not in err


@pytest.mark.parametrize("command", ["translate", "summarize"])
def test_text_commands_send_a_captioning_run_to_caption(command: str, tiny_run: Path, monkeypatch, capsys) -> None:
    """They read stdin lines as image paths and said the "image(s) cannot be read", to remove their captions."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"ein Hund\n")))
    assert main([command, str(tiny_run)]) == 2
    err = capsys.readouterr().err
    assert f"captions images, and `{command}` reads text lines" in err and f"hourglass caption {tiny_run} IMAGE" in err


def test_a_captioning_run_captions_after_its_training_images_moved_away(tmp_path: Path, capsys) -> None:
    """Run.load read every training image to learn the image shape; the run now stores it (captions.json)."""
    import shutil

    from hourglass.training import train

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    words = ["red", "blue", "green", "square", "circle", "big", "small"]
    lines = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(tmp_path / "images" / f"im{i}.png")
        lines.append(f"im{i}.png\t{words[i % 3]} {words[3 + i % 2]} {words[5 + i % 2]}")
    (tmp_path / "c.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = (f"{{name: captions, images: {tmp_path / 'images'}, captions: {tmp_path / 'c.tsv'}, vocab: 24, "
            "batch_size: 4}")
    config = recipebook.load("mnist-captions", [f"data={data}", "model.encoder.channels=[4,8]", "model.decoder.embed=8",
                                                "model.decoder.hidden=16", "train.max_steps=2", "train.progress=false"])
    run = train(config, out=str(tmp_path / "run"))
    assert json.loads((run / "captions.json").read_text()) == {"input_shape": [3, 12, 16]}
    moved = shutil.move(str(tmp_path / "images"), str(tmp_path / "moved"))
    capsys.readouterr()
    assert main(["caption", str(run), str(Path(moved) / "im0.png"), "--names"]) == 0
    assert capsys.readouterr().out.startswith(str(Path(moved) / "im0.png") + "\t")
    assert main(["evaluate", str(run), "--data", moved, "--ref", str(tmp_path / "c.tsv"), "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["bleu"] <= 100
