"""Autoencoder vs PCA on held-out MNIST digits, at the same code size.

For each latent size D, train the ``mnist-ae`` recipe with ``model.bottleneck.dim=D`` through the real
training path (``hourglass.training.train``), then read ``metrics.json`` (``final.sse_per_image`` and
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
import sys

import torch

from _mnist_bench import heading, parser, set_threads, train_fresh, write_results
from hourglass import metrics
from hourglass.run import Run

GOAL = 1 / 3  # AE error / PCA error at D = 32


def parse_args() -> argparse.Namespace:
    p = parser("ae_vs_pca", "mnist-ae")
    p.add_argument("--dims", type=int, nargs="+", default=None, help="latent sizes (default 8 16 32; --quick: 32)")
    return p.parse_args()


@torch.no_grad()
def recheck(run: Run, dim: int) -> dict[str, float]:
    """Held-out errors recomputed from the run directory, independently of ``evaluate``."""
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
    run, m, timing = train_fresh(args, f"dim{dim}", [f"model.bottleneck.dim={dim}"])
    final = m["final"]
    row = {
        "dim": dim,
        "ae_sse": final["sse_per_image"],
        "pca_sse": final["pca_sse_per_image"],
        "ratio": final["sse_ratio_to_pca"],
        "psnr": final["psnr"],
        "linear_probe": final.get("linear_probe_accuracy"),
        **timing,
    }
    row.update(recheck(run, dim))
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
    set_threads(args)
    args.dims = args.dims or ([32] if args.quick else [8, 16, 32])
    rows = []
    for dim in args.dims:
        rows.append(bench_dim(args, dim))
        print(f"[ae_vs_pca] D={dim}: AE {rows[-1]['ae_sse']:.2f} vs PCA {rows[-1]['pca_sse']:.2f} "
              f"-> ratio {rows[-1]['ratio']:.3f}", flush=True)
    print()
    print(heading(args, "Held-out squared error per image (sum over pixels)"))
    print(table(rows))
    at32 = next((r for r in rows if r["dim"] == 32), None)
    verdict = None
    if at32 is not None:
        verdict = at32["ratio"] <= GOAL
        print(f"\nGoal AE/PCA <= {GOAL:.3f} at D=32: {'MET' if verdict else 'NOT MET'} (ratio {at32['ratio']:.3f})")
    write_results(args, "ae_vs_pca", rows, goal_ratio_at_32=GOAL, goal_met=verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
