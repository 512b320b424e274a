"""VAE on held-out MNIST digits: ELBO (nats per image), KL, and linear vs cyclical KL annealing.

Train the ``mnist-vae`` recipe through the real training path (``hourglass.training.train``) once as shipped
(linear annealing) and once with ``task.anneal=cyclical`` (Fu et al. 2019), and read ``metrics.json``
(``final.elbo``, ``final.kl``, ``final.recon``). With ``loss: bce`` on grey-level pixels the "likelihood" is
the Bernoulli cross-entropy of a grey value, not a normalized density, so these nats compare runs of this
recipe with each other, not with the binarized-MNIST literature.

``evaluate`` runs the model in eval mode, where the variational bottleneck returns its mean: its "elbo" is
``-(BCE(decode(mu)) + KL)``, the reconstruction term taken at the posterior mean instead of averaged over
q(z|x). The bench therefore also estimates, from the run directory, the ELBO proper
``E_q[log p(x|z)] - KL`` with K samples of z per digit, and the importance-weighted bound (Burda et al.
2016) with the same K samples, which is tighter: ELBO <= IWAE-K <= log p(x).

    python bench/vae_elbo.py            # 2 runs of the recipe (15 epochs each, early stopping)
    python bench/vae_elbo.py --quick    # smoke test: linear only, 400 digits, 1 epoch (3 steps)
"""
from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F

from _mnist_bench import heading, parser, set_threads, train_fresh, write_results
from hourglass.code import Code
from hourglass.run import Run

LOG_2PI = math.log(2 * math.pi)


def parse_args() -> argparse.Namespace:
    p = parser("vae_elbo", "mnist-vae")
    p.add_argument("--anneal", nargs="+", default=None, choices=["none", "linear", "cyclical"],
                   help="annealing schedules to train (default linear cyclical; --quick: linear)")
    p.add_argument("--samples", type=int, default=10, help="z samples per digit for the ELBO and IWAE estimates")
    args = p.parse_args()
    args.anneal = args.anneal or (["linear"] if args.quick else ["linear", "cyclical"])
    return args


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over the last dim: (..., D) -> (...)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 / logvar.exp()).sum(-1)


@torch.no_grad()
def sampled_bounds(run: Run, samples: int, batch: int = 250) -> dict[str, float]:
    """ELBO with z ~ q(z|x) (K samples) and the IWAE-K bound, nats per held-out image."""
    model = run.task.model.eval()
    x_all = run.data.val_set.tensors[0]
    g = torch.Generator().manual_seed(0)
    elbo, iwae, kl_sum = 0.0, 0.0, 0.0
    for i in range(0, len(x_all), batch):
        x = x_all[i : i + batch]  # (B, 1, 28, 28)
        post = model.encode(x).posterior  # eval mode: deterministic mu and logvar, (B, D) each
        mu, logvar = post.mu, post.logvar
        eps = torch.randn((samples, *mu.shape), generator=g)  # (K, B, D)
        z = mu + eps * (0.5 * logvar).exp()  # (K, B, D)
        logits = model.decode(Code(vector=z.flatten(0, 1)))  # (K*B, 1, 28, 28)
        target = x.expand(samples, *x.shape).flatten(0, 1)
        log_px = -F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)
        log_px = log_px.view(samples, len(x))  # (K, B)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)  # (B,)
        log_w = log_px + log_normal(z, torch.zeros_like(z), torch.zeros_like(z)) - log_normal(z, mu, logvar)
        elbo += float((log_px.mean(0) - kl).sum())
        iwae += float((torch.logsumexp(log_w, 0) - math.log(samples)).sum())
        kl_sum += float(kl.sum())
    n = len(x_all)
    return {"elbo_sampled": elbo / n, "iwae": iwae / n, "kl_recheck": kl_sum / n}


def bench_anneal(args: argparse.Namespace, anneal: str) -> dict:
    run, m, timing = train_fresh(args, anneal, [f"task.anneal={anneal}"])
    final = m["final"]
    task = run.config.task.options()
    row = {
        "anneal": anneal,
        "anneal_steps": task.get("anneal_steps"),
        "beta": task.get("beta"),
        "elbo_at_mean": final["elbo"],
        "kl": final["kl"],
        "recon_at_mean": final["recon"],
        "sse_per_image": final["sse_per_image"],
        "linear_probe": final.get("linear_probe_accuracy"),
        **timing,
        # The KL weight when training stopped: below 1 means the run never trained on the full ELBO.
        "final_kl_weight": kl_weight_at(anneal, m["steps"], task),
    }
    row.update(sampled_bounds(run, args.samples))
    return row


def kl_weight_at(anneal: str, step: int, task: dict) -> float:
    from hourglass.tasks.vae import anneal_weight

    beta = task.get("beta", 1.0)
    return beta * anneal_weight(step, anneal, task.get("anneal_steps", 1000), task.get("anneal_cycles", 4))


def table(rows: list[dict], samples: int) -> str:
    head = (f"{'anneal':>8} | {'ELBO (metrics.json)':>19} | {'ELBO, z~q':>9} | {f'IWAE-{samples}':>8} | {'KL':>6} | "
            f"{'recon':>6} | {'SSE/img':>7} | {'probe':>5} | {'KL w. at end':>12} | {'epochs':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        probe = f"{r['linear_probe']:.3f}" if r["linear_probe"] is not None else "  -  "
        lines.append(
            f"{r['anneal']:>8} | {r['elbo_at_mean']:>19.2f} | {r['elbo_sampled']:>9.2f} | {r['iwae']:>8.2f} | "
            f"{r['kl']:>6.2f} | {r['recon_at_mean']:>6.2f} | {r['sse_per_image']:>7.2f} | {probe:>5} | "
            f"{r['final_kl_weight']:>12.3f} | {r['epochs']:>6}"
        )
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    set_threads(args)
    rows = []
    for anneal in args.anneal:
        rows.append(bench_anneal(args, anneal))
        r = rows[-1]
        print(f"[vae_elbo] {anneal}: ELBO {r['elbo_at_mean']:.2f} (z=mu) / {r['elbo_sampled']:.2f} (z~q), "
              f"KL {r['kl']:.2f}", flush=True)
    print()
    print(heading(args, "Held-out nats per image (1,000 digits)"))
    print(table(rows, args.samples))
    write_results(args, "vae_elbo", rows, samples=args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
