"""Does unsupervised pretraining help when labels are few? The whole story in one script.

1. pretrain: the mnist-ae recipe (a conv autoencoder) on MNIST's 7,000 training images; it never reads a label;
2. probe: the mnist-pretrain-probe recipe: its encoder and bottleneck frozen, a linear head trained on 100
   labelled digits (10 per class) from those 7,000, features cached; probe-mlp: the same with a 128-unit head;
3. scratch: the same network, every weight trainable, trained from random weights on the same 100 digits;
4. finetune: the same network started from the pretrained weights, every weight trainable;
5. random: the probe protocol on a frozen *random* encoder (is it the pretraining, or the frozen protocol?).

All are scored on the same 1,000 held-out digits. No stage trains on them, and no label of theirs chooses
anything: the classifiers' checkpoints are chosen by training loss; only the autoencoder's early stopping watches
its reconstruction loss on those images, as the mnist-ae recipe does. Stages 2-5 run once per seed (weights and
batch order change; the 100 digits do not).

    python bench/pretrain_probe.py [--out runs/bench-probe] [--seeds 0 1 2] [--pretrain-epochs 15] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from hourglass import recipebook
from hourglass.training import train

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
TRAIN_ALL = ["model.freeze_encoder=false", "train.cache_features=false"]
NAMES = {"probe": "pretrained AE encoder, frozen + linear head (cached features)",
         "probe-mlp": "pretrained AE encoder, frozen + MLP head [128] (cached features)",
         "scratch": "same network from scratch, all weights trained",
         "finetune": "same network from the pretrained weights, all weights trained",
         "random": "random encoder, frozen + linear head (control)"}


def variants(pre: Path) -> dict[str, list[str]]:
    """Overrides of the mnist-pretrain-probe recipe for each row of the table."""
    return {"probe": [f"model.pretrained_encoder={pre}"],
            "probe-mlp": [f"model.pretrained_encoder={pre}", "model.decoder.hidden=[128]"],
            "scratch": ["model.pretrained_encoder=null", *TRAIN_ALL],
            "finetune": [f"model.pretrained_encoder={pre}", *TRAIN_ALL],
            "random": ["model.pretrained_encoder=null"]}  # still frozen, still cached


def final(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def stage(recipe: str, overrides: list[str], out: Path, reuse: bool) -> Path:
    if reuse and (out / "metrics.json").is_file():
        return out
    config = recipebook.load(recipe, ["train.progress=false", f"data.path={MNIST}", *overrides])
    start = time.perf_counter()
    run = train(config, out=str(out))
    print(f"{out.name}: {time.perf_counter() - start:.0f} s, {final(run)['final']}", flush=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-probe"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--reuse", action="store_true", help="keep runs that already finished under --out")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pre = stage("mnist-ae", [f"train.max_epochs={args.pretrain_epochs}"], args.out / "pretrain", args.reuse)
    rows: dict[str, list[dict]] = {name: [] for name in NAMES}
    for seed in args.seeds:
        for name, extra in variants(pre).items():
            run = stage("mnist-pretrain-probe", [f"seed={seed}", *extra], args.out / f"{name}-seed{seed}", args.reuse)
            m = final(run)
            trainable = m["parameters"] if name in ("scratch", "finetune") else _head_parameters(run)
            rows[name].append({"accuracy": m["final"]["accuracy"], "seconds": m["train_seconds"],
                               "trainable": trainable, "train_examples": m["final"]["train_examples"]})
    table = report(rows, final(pre), args)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    (args.out / "results.md").write_text(table)
    print(table)


def _head_parameters(run: Path) -> int:
    """The head's weights: all that trains when the encoder and bottleneck are frozen."""
    from safetensors import safe_open

    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("decoder."))


def report(rows: dict[str, list[dict]], pre: dict, args) -> str:
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads; seeds {args.seeds}; "
             f"pretraining: mnist-ae, {pre['epochs']} epochs, {pre['train_seconds']:.0f} s, "
             f"val mse {pre['final']['mse']:.4f}",
             "", "| model | trainable params | labelled digits | held-out accuracy (mean ± sd) | per seed | train s |",
             "|---|---|---|---|---|---|"]
    for key, runs in rows.items():
        acc = [r["accuracy"] for r in runs]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        lines.append(f"| {NAMES[key]} | {runs[0]['trainable']:,} | {runs[0]['train_examples']} | "
                     f"{statistics.mean(acc):.4f} ± {sd:.4f} | {', '.join(f'{a:.4f}' for a in acc)} | "
                     f"{statistics.mean(r['seconds'] for r in runs):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
