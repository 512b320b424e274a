"""Autoencoder vs PCA on held-out MNIST digits, at the same code size.

For each latent size D, train the ``mnist-ae`` recipe with ``model.bottleneck.dim=D`` through the real
training path (``hourglass.train.train``), then read ``metrics.json`` (``final.sse_per_image`` and
``final.pca_sse_per_image``: squared error summed over the 784 pixels, averaged over the 1,000 held-out
digits). The bench also recomputes both numbers independently from the run directory (``Run.reconstruct`` on
the held-out split; PCA fitted on all 7,000 training digits rather than the first 4,000), so a wrong metric
shows up as a disagreement between columns.

Goal: AE error <= 1/3 of PCA's at D = 32.

    python bench/ae_vs_pca.py            # 3 runs of the recipe (15 epochs each, early stopping)
    python bench/ae_vs_pca.py --quick    # smoke test: D=32 only, 400 digits, 1 epoch (3 steps)
    python bench/ae_vs_pca.py --set task.loss=mse --tag mse   # tune: any recipe override
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from hourglass import metrics, recipebook
from hourglass.run import Run
from hourglass.train import train

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "mnist").resolve()
GOAL = 1 / 3  # AE error / PCA error at D = 32


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test in under a minute (numbers meaningless)")
    p.add_argument("--dims", type=int, nargs="+", default=None, help="latent sizes (default 8 16 32; --quick: 32)")
    p.add_argument("--recipe", default="mnist-ae")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, as `hourglass train --set` (repeatable)")
    p.add_argument("--tag", default="", help="suffix for the run directories and the results file")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench" / "ae_vs_pca")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1; 0: torch's choice). On a busy shared 2-core machine "
                        "two threads per process wait on each other: 1 thread ran a step 2.5x faster here")
    return p.parse_args()


def overrides_for(args: argparse.Namespace, dim: int) -> list[str]:
    # progress=false only keeps the log readable; it changes no number reported here.
    base = [f"data.path={DATA}", f"model.bottleneck.dim={dim}", "train.progress=false"]
    if args.quick:
        base += ["data.limit=400", "train.max_epochs=1"]  # 350 train digits: 3 steps
    return base + args.overrides


@torch.no_grad()
def recheck(run_dir: Path, dim: int) -> dict[str, float]:
    """Held-out errors recomputed from the run directory, independently of ``evaluate``."""
    run = Run.load(run_dir)
    val = run.data.val_set.tensors[0].numpy()  # (N, 1, 28, 28)
    train_x = run.data.train_set.tensors[0].numpy()
    recon = run.reconstruct(val)
    return {
        "ae_sse_recheck": float(((recon - val) ** 2).reshape(len(val), -1).sum(1).mean()),
        "pca_sse_all_train": metrics.pca_error_per_image(train_x, val, dim),
        "n_train": len(train_x),
        "n_val": len(val),
    }


def bench_dim(args: argparse.Namespace, dim: int) -> dict:
    config = recipebook.load(args.recipe, overrides_for(args, dim))
    out = args.runs / f"dim{dim}{'-' + args.tag if args.tag else ''}{'-quick' if args.quick else ''}"
    shutil.rmtree(out, ignore_errors=True)  # this bench's own run directory, from an earlier run
    start = time.time()
    run_dir = train(config, out=str(out))
    wall = time.time() - start
    m = Run.load(run_dir).metrics()
    final = m["final"]
    row = {
        "dim": dim,
        "ae_sse": final["sse_per_image"],
        "pca_sse": final["pca_sse_per_image"],
        "ratio": final["sse_ratio_to_pca"],
        "psnr": final["psnr"],
        "linear_probe": final.get("linear_probe_accuracy"),
        "epochs": m["epochs"],
        "steps": m["steps"],
        "train_seconds": m["train_seconds"],
        "wall_seconds": round(wall, 1),
        "run_dir": str(run_dir),
    }
    row.update(recheck(run_dir, dim))
    return row


def table(rows: list[dict]) -> str:
    head = (f"{'D':>3} | {'AE SSE/img':>10} | {'PCA SSE/img':>11} | {'AE/PCA':>6} | {'PCA(7k) SSE':>11} | "
            f"{'AE recheck':>10} | {'PSNR':>5} | {'probe':>5} | {'epochs':>6} | {'train s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        probe = f"{r['linear_probe']:.3f}" if r["linear_probe"] is not None else "  -  "
        lines.append(
            f"{r['dim']:>3} | {r['ae_sse']:>10.2f} | {r['pca_sse']:>11.2f} | {r['ratio']:>6.3f} | "
            f"{r['pca_sse_all_train']:>11.2f} | {r['ae_sse_recheck']:>10.2f} | {r['psnr']:>5.2f} | {probe:>5} | "
            f"{r['epochs']:>6} | {r['train_seconds']:>7.0f}"
        )
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.dims = args.dims or ([32] if args.quick else [8, 16, 32])
    rows = []
    for dim in args.dims:
        rows.append(bench_dim(args, dim))
        print(f"[ae_vs_pca] D={dim}: AE {rows[-1]['ae_sse']:.2f} vs PCA {rows[-1]['pca_sse']:.2f} "
              f"-> ratio {rows[-1]['ratio']:.3f}", flush=True)
    print()
    print(f"Held-out squared error per image (sum over pixels), recipe {args.recipe} "
          f"{' '.join(args.overrides) or '(as shipped)'}{'  [QUICK: numbers meaningless]' if args.quick else ''}")
    print(table(rows))
    at32 = next((r for r in rows if r["dim"] == 32), None)
    verdict = None
    if at32 is not None:
        verdict = at32["ratio"] <= GOAL
        print(f"\nGoal AE/PCA <= {GOAL:.3f} at D=32: {'MET' if verdict else 'NOT MET'} (ratio {at32['ratio']:.3f})")
    result = {
        "bench": "ae_vs_pca",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "quick": args.quick,
        "recipe": args.recipe,
        "overrides": args.overrides,
        "goal_ratio_at_32": GOAL,
        "goal_met": verdict,
        "rows": rows,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    name = f"ae_vs_pca{'-' + args.tag if args.tag else ''}{'-quick' if args.quick else ''}.json"
    (args.results / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.results / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
