"""Transfer learning: pretrained encoders from runs and files, freezing, the feature cache and the classifier."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hourglass import recipebook
from hourglass.errors import CheckpointError, ConfigError
from hourglass.features import CACHE_FILE, cached_data
from hourglass.pretrained import load_parts
from hourglass.run import Run
from hourglass.training import build_data, build_task, train

TINY = ["train.max_epochs=1", "train.progress=false", "data.limit=200", "data.batch_size=32",
        "model.encoder.channels=[4,8]", "model.bottleneck.dim=4", "model.decoder.channels=[8,4]"]


def probe(source: Path, *extra: str):
    """A classifier head on the frozen encoder of ``source``, on the same tiny digits."""
    head = ["model.bottleneck={name: none}", "model.decoder={name: classifier, norm: true}",
            "task={name: classification}", f"model.pretrained_encoder={source}", "model.freeze_encoder=true",
            "train.max_epochs=4", "train.lr=0.02"]
    return recipebook.load("digits-ae", TINY + head + list(extra))


def part(state: dict, name: str) -> dict:
    return {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}


def task_for(config):
    data = build_data(config)
    data.setup("fit")
    return build_task(config, data), data


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory) -> Path:
    return train(recipebook.load("digits-ae", TINY), out=str(tmp_path_factory.mktemp("runs") / "ae"))


@pytest.fixture(scope="module")
def probes(ae_run: Path, tmp_path_factory) -> dict[str, Path]:
    """The same frozen-encoder probe trained through the encoder and from the feature cache."""
    out = tmp_path_factory.mktemp("probes")
    return {"live": train(probe(ae_run), out=str(out / "live")),
            "cached": train(probe(ae_run, "train.cache_features=true"), out=str(out / "cached"))}


def test_encoder_loads_from_a_run_directory_and_bottleneck_only_when_asked(ae_run: Path) -> None:
    saved = load_file(str(ae_run / "model.safetensors"))
    plain = "model.bottleneck={name: plain, dim: 4}"
    task, _ = task_for(probe(ae_run, plain))
    for k, v in task.model.encoder.state_dict().items():
        assert torch.equal(v, saved[f"encoder.{k}"]), k
    assert not torch.equal(task.model.bottleneck.proj.weight, saved["bottleneck.proj.weight"])
    task, _ = task_for(probe(ae_run, plain, "model.pretrained_parts=[encoder,bottleneck]"))
    assert torch.equal(task.model.bottleneck.proj.weight, saved["bottleneck.proj.weight"])
    assert not any(p.requires_grad for p in task.model.bottleneck.parameters())  # frozen with the encoder


@pytest.mark.parametrize("prefixed", [True, False])
def test_encoder_loads_from_a_bare_safetensors_file(ae_run: Path, tmp_path: Path, prefixed: bool) -> None:
    encoder = part(load_file(str(ae_run / "model.safetensors")), "encoder")
    file = tmp_path / "encoder.safetensors"
    save_file({f"encoder.{k}" if prefixed else k: v for k, v in encoder.items()}, str(file))
    task, _ = task_for(recipebook.load("digits-ae", TINY))
    load_parts(task.model, file, ("encoder",))
    for k, v in task.model.encoder.state_dict().items():
        assert torch.equal(v, encoder[k]), k
    if not prefixed:
        with pytest.raises(CheckpointError, match="no bottleneck weights"):
            load_parts(task.model, file, ("encoder", "bottleneck"))


def test_mismatched_shapes_are_refused_listing_the_tensors(ae_run: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        task_for(probe(ae_run, "model.encoder.channels=[4,16]"))
    message = str(err.value)
    assert "encoder.stages.1.0.0.weight: file (8, 4, 3, 3) vs model (16, 4, 3, 3)" in message
    assert '"conv" {"channels": [4, 8]}' in message  # names what the source was trained with


def test_pickled_files_are_never_opened(tmp_path: Path) -> None:
    file = tmp_path / "encoder.pt"
    file.write_bytes(b"\x80\x04not really")
    task, _ = task_for(recipebook.load("digits-ae", TINY))
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_parts(task.model, file, ("encoder",))


def test_frozen_encoder_stays_bit_identical_while_the_head_learns(ae_run: Path, probes: dict) -> None:
    source = part(load_file(str(ae_run / "model.safetensors")), "encoder")
    trained = load_file(str(probes["live"] / "model.safetensors"))
    for k, v in part(trained, "encoder").items():  # weights and BatchNorm running statistics alike
        assert torch.equal(v, source[k]), k
    torch.manual_seed(0)
    fresh, _ = task_for(probe(ae_run))
    head = part(trained, "decoder")
    assert any(not torch.equal(v, head[k]) for k, v in fresh.model.decoder.state_dict().items())


def test_feature_cache_trains_the_same_head_and_writes_its_file(probes: dict) -> None:
    assert (probes["cached"] / CACHE_FILE).is_file()
    assert not (probes["live"] / CACHE_FILE).exists()
    live = load_file(str(probes["live"] / "model.safetensors"))
    cached = load_file(str(probes["cached"] / "model.safetensors"))
    for k in live:
        torch.testing.assert_close(cached[k], live[k], atol=1e-4, rtol=1e-4, msg=k)
    acc = [json.loads((probes[r] / "metrics.json").read_text())["final"]["accuracy"] for r in ("live", "cached")]
    assert acc[0] == pytest.approx(acc[1], abs=0.01)


def test_classifier_on_frozen_features_beats_chance(probes: dict) -> None:
    final = json.loads((probes["live"] / "metrics.json").read_text())["final"]
    assert final["accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert (probes["live"] / "plots" / "confusion_matrix.png").is_file()


def test_a_probe_run_reloads_without_its_pretrained_source(probes: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "moved"
    run_dir.mkdir()
    for name in ("config.yaml", "model.safetensors"):
        (run_dir / name).write_bytes((probes["live"] / name).read_bytes())
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(text.replace("pretrained_encoder: ", "pretrained_encoder: /gone"))
    saved = json.loads((probes["live"] / "metrics.json").read_text())["final"]
    assert Run.load(run_dir).evaluate()["accuracy"] == pytest.approx(saved["accuracy"])


def test_a_probe_run_encodes_but_refuses_to_reconstruct_or_score_unlabelled_data(probes: dict, tmp_path: Path,
                                                                                capsys) -> None:
    from hourglass.cli import main

    images = (np.random.default_rng(0).random((6, 8, 8)) * 255).astype(np.uint8)
    np.save(tmp_path / "x.npy", images)  # no labels
    run, x = str(probes["live"]), str(tmp_path / "x.npy")
    assert main(["encode", run, "--data", x, "--output", str(tmp_path / "c.npy")]) == 0
    assert np.load(tmp_path / "c.npy").shape[0] == 6
    capsys.readouterr()
    assert main(["reconstruct", run, "--data", x, "--output", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert 'of task "classification"; reconstruct needs an autoencoder run' in err and not (tmp_path / "r.png").exists()
    assert main(["evaluate", run, "--data", x, "--json"]) == 2
    assert "has no labels, so a classifier cannot be scored" in capsys.readouterr().err
    np.savez(tmp_path / "y.npz", images=images, labels=np.array([0, 1, 2, 3, 4, 12]))  # 12: no such digit
    assert main(["evaluate", run, "--data", str(tmp_path / "y.npz"), "--json"]) == 2
    err = capsys.readouterr().err
    assert "has labels up to 12, but the classifier knows 10 classes (ids 0 to 9)" in err and "Traceback" not in err


def test_the_cache_refuses_what_it_would_get_wrong(ae_run: Path, tmp_path: Path) -> None:
    config = probe(ae_run, "model.freeze_encoder=false")
    task, data = task_for(config)
    with pytest.raises(ConfigError, match="model.freeze_encoder=true"):
        cached_data(config, task, data, tmp_path)
    config = recipebook.load("digits-ae", TINY + [f"model.pretrained_encoder={ae_run}", "model.freeze_encoder=true"])
    task, data = task_for(config)
    with pytest.raises(ConfigError, match='task "autoencoder"'):
        cached_data(config, task, data, tmp_path)


def test_train_limit_keeps_a_balanced_labelled_subset() -> None:
    from hourglass.data.images import labelled_subset

    labels = np.repeat(np.arange(10), 50)[np.random.default_rng(0).permutation(500)]
    index = np.random.default_rng(1).permutation(500)
    chosen = labelled_subset(labels, index, 100)
    assert len(set(chosen)) == 100 and np.bincount(labels[chosen]).tolist() == [10] * 10
    assert labelled_subset(labels, index, None) is index


def test_cached_token_codes_match_the_encoder_whatever_the_padding() -> None:
    """Memories of different lengths are padded into the cache and trimmed back; RNN states keep their layout."""
    from torch.nn.utils.rnn import pad_sequence
    from torch.utils.data import DataLoader

    from hourglass.config import Component, ModelConfig
    from hourglass.features import _take, compute_codes, kept_fields
    from hourglass.model import DataContext, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(encoder=Component(name="lstm", hidden=8, embed=4, layers=2),
                      decoder=Component(name="lstm-attention", hidden=8, embed=4))
    model = build_model(cfg, DataContext(modality="tokens", encoder={"vocab_size": 20, "pad_id": 0},
                                         decoder={"vocab_size": 20, "pad_id": 0}))
    model.freeze(("encoder",))
    sentences = [torch.randint(1, 20, (n,)) for n in (3, 9, 5, 2, 7, 4)]

    def collate(items):
        return pad_sequence([s for s, _ in items], batch_first=True), torch.tensor([y for _, y in items])

    loader = DataLoader([(s, i) for i, s in enumerate(sentences)], batch_size=4, collate_fn=collate)
    codes = compute_codes(model, loader, kept_fields(model) + ("state",), "cpu")
    index = torch.tensor([3, 0, 5])
    cached = _take(codes, index)
    tokens, _ = collate([(sentences[i], 0) for i in index])
    direct = model.encoder(tokens)
    assert cached.memory.shape == direct.memory.shape == (3, 4, 16)  # trimmed to the batch's longest
    torch.testing.assert_close(cached.memory, direct.memory)
    assert torch.equal(cached.memory_mask, direct.memory_mask)
    for got, want in zip(cached.state, direct.state):  # (h, c), each (layers * dirs, B, H)
        torch.testing.assert_close(got, want)
