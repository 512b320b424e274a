"""Denoising autoencoder on held-out MNIST digits: PSNR of the noisy input vs PSNR of the denoised output.

For each Gaussian noise level sigma, train the ``mnist-dae`` recipe with ``task.noise_level=sigma`` through the
real training path (``hourglass.training.train``) and read ``metrics.json``: ``final.psnr_noisy_input``,
``final.psnr`` (of the reconstruction from the noisy input, against the clean digit) and
``final.denoising_gain_db``. These are pooled PSNRs (one mean squared error over all held-out pixels), the
noise drawn with the fixed per-batch seeds that validation uses. Noise is clipped to [0, 1], so the noisy
input is cleaner than an unclipped sigma would give (20 log10(1/sigma): 10.5 dB at 0.3, 6.0 dB at 0.5).

The bench recomputes both PSNRs from the run directory (``Run.reconstruct`` on inputs corrupted here, with
the same seeds), adds the mean of per-image PSNRs, and, for scale, a Gaussian blur of the noisy input
(sigma 1 pixel), the simplest denoiser there is.

    python bench/denoising.py            # 2 runs of the recipe (15 epochs each, early stopping)
    python bench/denoising.py --quick    # smoke test: sigma 0.5 only, 400 digits, 1 epoch (3 steps)
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from _mnist_bench import heading, parser, set_threads, train_fresh, write_results
from hourglass.noise import corrupt
from hourglass.run import Run

VAL_SEED = 10_007  # the seed of validation batch i is VAL_SEED + i (tasks/autoencoder.py, ae_results.py)


def parse_args() -> argparse.Namespace:
    p = parser("denoising", "mnist-dae")
    p.add_argument("--sigmas", type=float, nargs="+", default=None, help="noise levels (default 0.3 0.5)")
    args = p.parse_args()
    args.sigmas = args.sigmas or ([0.5] if args.quick else [0.3, 0.5])
    return args


def psnr_db(mse: np.ndarray | float) -> np.ndarray | float:
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-12))


@torch.no_grad()
def recheck(run: Run, sigma: float) -> dict[str, float]:
    """PSNRs recomputed from the run directory with the validation noise seeds, pooled and per image."""
    clean = run.data.val_set.tensors[0]  # (N, 1, 28, 28)
    batch = run.config.data.options()["batch_size"]
    noisy = torch.cat([corrupt(clean[i : i + batch], "gaussian", sigma,
                               torch.Generator().manual_seed(VAL_SEED + k))
                       for k, i in enumerate(range(0, len(clean), batch))])
    clean, noisy = clean.numpy(), noisy.numpy()
    denoised = run.reconstruct(noisy)
    blurred = np.stack([gaussian_filter(img, sigma=(0, 1, 1)) for img in noisy])
    out = {}
    for name, img in (("noisy", noisy), ("denoised", denoised), ("blur", blurred)):
        per_image = ((img - clean) ** 2).reshape(len(clean), -1).mean(1)  # (N,)
        out[f"psnr_{name}_pooled"] = float(psnr_db(per_image.mean()))
        out[f"psnr_{name}_mean_per_image"] = float(psnr_db(per_image).mean())
    return out


def bench_sigma(args: argparse.Namespace, sigma: float) -> dict:
    run, m, timing = train_fresh(args, f"sigma{sigma}", ["task.noise=gaussian", f"task.noise_level={sigma}"])
    final = m["final"]
    row = {
        "sigma": sigma,
        "psnr_noisy_input": final["psnr_noisy_input"],
        "psnr_denoised": final["psnr"],
        "gain_db": final["denoising_gain_db"],
        "ssim_denoised": final["ssim"],
        **timing,
    }
    row.update(recheck(run, sigma))
    return row


def table(rows: list[dict]) -> str:
    head = (f"{'sigma':>5} | {'PSNR noisy':>10} | {'PSNR denoised':>13} | {'gain dB':>7} | {'recheck noisy/den.':>18} | "
            f"{'per-image noisy/den.':>20} | {'blur 1px':>8} | {'SSIM':>5} | {'epochs':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['sigma']:>5.2f} | {r['psnr_noisy_input']:>10.2f} | {r['psnr_denoised']:>13.2f} | {r['gain_db']:>7.2f} | "
            f"{r['psnr_noisy_pooled']:>8.2f} / {r['psnr_denoised_pooled']:>7.2f} | "
            f"{r['psnr_noisy_mean_per_image']:>9.2f} / {r['psnr_denoised_mean_per_image']:>8.2f} | "
            f"{r['psnr_blur_pooled']:>8.2f} | {r['ssim_denoised']:>5.3f} | {r['epochs']:>6}"
        )
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    set_threads(args)
    rows = []
    for sigma in args.sigmas:
        rows.append(bench_sigma(args, sigma))
        r = rows[-1]
        print(f"[denoising] sigma={sigma}: {r['psnr_noisy_input']:.2f} dB -> {r['psnr_denoised']:.2f} dB "
              f"(gain {r['gain_db']:.2f} dB)", flush=True)
    print()
    print(heading(args, "Held-out PSNR (dB, pooled over 1,000 digits unless marked)"))
    print(table(rows))
    write_results(args, "denoising", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
