"""The feature cache's speed-up per epoch, measured side by side in one process.

The same frozen-encoder classifier (mnist-pretrain-probe's network: conv [32, 64, 128] -> plain 32 -> linear
head) is trained on MNIST's 7,000 training digits for a few epochs twice: through the frozen encoder, and from
the cache (train.cache_features). An epoch is timed from its training start to the end of its validation
(1,000 digits); the cache's one-off build is reported apart. Speed does not depend on the weights, so the
encoder is frozen at its random initialization unless --pretrained names a run.

    python bench/feature_cache.py [--epochs 3] [--pretrained runs/mnist-ae] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from hourglass import recipebook
from hourglass.training import build_data, build_task

ROOT = Path(__file__).resolve().parents[1]


class EpochTimer(L.Callback):
    """Seconds from each training epoch's start to the end of the validation that follows it."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.seconds.append(time.perf_counter() - self._start)


def run(cache: bool, args, out: Path) -> dict:
    overrides = ["train.progress=false", f"train.max_epochs={args.epochs}", f"train.cache_features={cache}",
                 "data.train_limit=null", "data.batch_size=128", "trainer.check_val_every_n_epoch=1",
                 f"data.path={ROOT.parent / 'shared' / 'data' / 'mnist'}"]
    overrides += [f"model.pretrained_encoder={args.pretrained}"] if args.pretrained else \
        ["model.pretrained_encoder=null"]
    config = recipebook.load("mnist-pretrain-probe", overrides)
    L.seed_everything(config.seed, verbose=False)
    data = build_data(config)
    data.setup("fit")
    task = build_task(config, data)
    fit_data, build_s = data, 0.0
    if cache:
        from hourglass.features import cached_data

        fit_data = cached_data(config, task, data, out)
        start = time.perf_counter()
        fit_data.setup("fit")  # computes and writes the cache once
        build_s = time.perf_counter() - start
    timer = EpochTimer()
    trainer = L.Trainer(max_epochs=args.epochs, callbacks=[timer], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        accelerator="cpu", devices=1)
    trainer.fit(task, datamodule=fit_data)
    return {"epochs": timer.seconds, "build": build_s, "val_accuracy": task.evaluate(data)["accuracy"],
            "train_examples": len(data.train_set)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pretrained", default=None, help="a mnist-ae run directory (default: random frozen encoder)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        live = run(False, args, Path(tmp) / "live")
        cached = run(True, args, Path(tmp) / "cached")
        size = (Path(tmp) / "cached" / "feature_cache.safetensors").stat().st_size
    # The first epoch carries one-off costs (allocator warm-up); the median of the epochs is reported.
    t_live, t_cached = statistics.median(live["epochs"]), statistics.median(cached["epochs"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MNIST {live['train_examples']} train / "
          "1000 val digits; conv [32,64,128] -> plain 32 (frozen) -> linear head")
    print(f"| mode | epoch seconds (median of {args.epochs}) | per-epoch times | one-off cache build | val accuracy |")
    print("|---|---|---|---|---|")
    for name, r, t in (("through the frozen encoder", live, t_live), ("feature cache", cached, t_cached)):
        times = ", ".join(f"{s:.2f}" for s in r["epochs"])
        print(f"| {name} | {t:.3f} | {times} | {r['build']:.2f} s | {r['val_accuracy']:.4f} |")
    print(f"speed-up per epoch: {t_live / t_cached:.1f}x; cache file {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
