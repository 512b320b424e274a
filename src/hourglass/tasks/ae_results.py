"""Final metrics and pictures shared by the whole autoencoder family.

Every report compares the autoencoder with PCA at the same code size on the same split, and, when labels
exist, measures how linearly separable the codes are (a linear probe).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hourglass import metrics, plots
from hourglass.tasks.logs import read_history

MAX_FIT = 4000  # training examples used to fit PCA and the linear probe


@torch.no_grad()
def _batches(task, loader, noisy: bool) -> dict[str, np.ndarray]:
    """Run the model over a loader: inputs, (noisy inputs), reconstructions, codes and labels."""
    task.eval()
    out: dict[str, list] = {"x": [], "noisy": [], "recon": [], "codes": [], "y": []}
    for i, (x, y) in enumerate(loader):
        x = x.to(task.device)
        xin = task.corrupt(x, torch.Generator(device=x.device).manual_seed(10_007 + i)) if noisy else x
        code = task.model.encode(xin)
        out["x"].append(x.cpu())
        out["noisy"].append(xin.cpu())
        out["recon"].append(torch.sigmoid(task.model.decode(code)).cpu())
        out["codes"].append(code.vector.cpu())
        out["y"].append(y)
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def _fit_subset(data: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = data.train_set.tensors
    return x[:MAX_FIT].numpy(), y[:MAX_FIT].numpy()


def evaluate_autoencoder(task, data: Any) -> dict[str, float]:
    """Validation metrics: loss terms, MSE, PSNR, SSIM, PCA at the same size, linear probe, denoising gain."""
    noisy = task.noise != "none"
    val = _batches(task, data.val_dataloader(), noisy)
    x, recon = torch.from_numpy(val["x"]), torch.from_numpy(val["recon"])
    dim = val["codes"].shape[1]
    train_x, train_y = _fit_subset(data)
    n_pix = x[0].numel()
    sse = float(((recon - x) ** 2).flatten(1).sum(1).mean())
    result = {
        "mse": sse / n_pix,
        "sse_per_image": sse,
        "psnr": float(metrics.psnr(recon, x)),
        "ssim": float(metrics.ssim(recon, x)),
        "latent_dim": dim,
    }
    if len(train_x) > dim:  # the baselines fit on training images, which a run evaluated elsewhere may not have
        pca_sse = metrics.pca_baseline(train_x.reshape(len(train_x), -1), val["x"].reshape(len(x), -1), dim) * n_pix
        result.update(pca_sse_per_image=pca_sse, sse_ratio_to_pca=sse / max(pca_sse, 1e-12))
    result.update(_loss_terms(task, data))
    if noisy:
        result["psnr_noisy_input"] = float(metrics.psnr(torch.from_numpy(val["noisy"]), x))
        result["denoising_gain_db"] = result["psnr"] - result["psnr_noisy_input"]
    if len(train_x) and (val["y"] >= 0).all() and (train_y >= 0).all():
        train_codes = _codes(task, train_x)
        result["linear_probe_accuracy"] = metrics.linear_probe(train_codes, train_y, val["codes"], val["y"])
    return result


@torch.no_grad()
def _codes(task, images: np.ndarray, batch: int = 512) -> np.ndarray:
    task.eval()
    parts = [task.model.encode(torch.from_numpy(images[i : i + batch]).to(task.device)).vector.cpu()
             for i in range(0, len(images), batch)]
    return torch.cat(parts).numpy()


@torch.no_grad()
def _loss_terms(task, data: Any) -> dict[str, float]:
    """The task's own validation loss terms (recon, KL, ELBO, MMD...), averaged over examples."""
    task.eval()
    sums: dict[str, float] = {}
    count = 0
    for i, (x, y) in enumerate(data.val_dataloader()):
        loss, logs = task.loss((x.to(task.device), y), "val", i)
        n = len(x)
        for k, v in {"loss": loss, **logs}.items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        count += n
    return {k: v / count for k, v in sums.items() if k not in ("mse", "kl_weight")}


def plot_autoencoder(task, data: Any, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    noisy = task.noise != "none"
    val = _batches(task, data.val_dataloader(), noisy)
    rows, titles = [val["x"][:10]], ["input"]
    if noisy:
        rows, titles = rows + [val["noisy"][:10]], titles + ["noisy input"]
    rows, titles = rows + [val["recon"][:10]], titles + ["reconstruction"]
    paths = [plots.image_grid(rows, titles, out_dir / "reconstructions.png")]
    labels = val["y"] if (val["y"] >= 0).all() else None
    paths.append(plots.code_map(val["codes"], labels, out_dir / "code_map.png"))
    if task.generative:
        paths += _generative_plots(task, val["codes"], out_dir)
    history = read_history(Path(out_dir).parent / "logs")
    if history:
        paths.append(plots.loss_curves(history, out_dir / "loss_curves.png"))
    return paths


@torch.no_grad()
def _generative_plots(task, codes: np.ndarray, out_dir: Path) -> list[Path]:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, codes.shape[1], generator=g).to(task.device)
    samples = task.decode(z).cpu().numpy()
    a, b = torch.from_numpy(codes[:4]), torch.from_numpy(codes[4:8])
    steps = torch.linspace(0, 1, 9).view(1, 9, 1)
    path = (a[:, None] * (1 - steps) + b[:, None] * steps).reshape(-1, codes.shape[1])  # (4*9, D)
    strip = task.decode(path.to(task.device)).cpu().numpy()
    strip = strip.reshape(4, 9, *strip.shape[1:])  # (R, S, C, H, W)
    return [plots.sample_grid(samples, out_dir / "samples.png"),
            plots.interpolation_strip(strip, out_dir / "interpolation.png")]
