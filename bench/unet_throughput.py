"""U-Net training throughput: hourglass (Lightning, the real ``train`` path) vs a plain PyTorch loop.

Both sides train the ``camvid-unet`` recipe's model (built by the same builder from the same seed) on the same
CamVid images, in the same batches (the data module's own sampler and paired augmentation), with the same
optimizer (AdamW, the recipe's lr and weight decay, its warm-up + cosine schedule), the same loss (the task's
cross-entropy + Dice) and the same bfloat16 autocast. They run in one process, interleaved, alternating which
goes first: rounds of [ours, plain], [plain, ours], ...

"ours" is ``hourglass.training.train(config)`` with everything the recipe switches on (progress bar, CSV and
TensorBoard logging, ``last`` checkpoints, the ``best`` checkpoint and early stopping after each validation,
the validation epoch). The bench only adds a timing callback and trains with ``report=False`` (the final
metrics, plots and report come after training).

Each side runs WARMUP + STEPS optimizer steps; the clock covers the STEPS after the warm-up. The default
window (46 steps = one epoch of 367 images in batches of 8) holds one validation epoch on the "ours" side;
two ratios are reported: everything, and training alone (the validation epoch taken out, as the plain loop
validates nothing). Goal: ours/plain >= 0.97.

Each window is timed twice: wall clock, and the process's CPU time (``time.process_time``: every thread of
the process, user + system). On a machine that other jobs share, the wall-clock ratio mostly measures how
busy the machine was during each side's few minutes (we saw 0.67 to 1.18 across three rounds); the CPU-time
ratio, images per CPU-second, does not depend on what else runs and is the number to judge overhead by.

    python bench/unet_throughput.py            # 3 rounds, ~10 min with one thread
    python bench/unet_throughput.py --quick    # smoke test: 1 round of 1 + 3 steps on 24 images
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

import hourglass.training as hg_train
from hourglass import recipebook
from hourglass.tasks.schedule import configure

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.97


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test (numbers meaningless)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; --quick: 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 4; --quick: 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 46, one epoch; --quick: 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both sides (default 1)")
    p.add_argument("--recipe", default="camvid-unet")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override for both sides, as `hourglass train --set` (repeatable)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench" / "unet_throughput")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 4)
    args.steps = args.steps or (2 if args.quick else 46)
    return args


def load_config(args: argparse.Namespace):
    # max_epochs high so that max_steps ends the run; warmup + steps a whole number of epochs (a run that
    # stops mid-epoch skips its last validation). No max_time: the clock must not stop either side.
    base = [f"train.max_steps={args.warmup + args.steps}", "train.max_epochs=1000", "trainer.max_time=null"]
    if args.quick:
        base += ["data.limit=24", "data.batch_size=8"]  # 3 steps per epoch
    return recipebook.load(args.recipe, base + list(args.overrides))


def clocks() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process)."""
    return time.perf_counter(), time.process_time()


class Window(L.Callback):
    """Times steps WARMUP+1 .. WARMUP+STEPS, and the validation epochs inside that window (wall and CPU)."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.start = self.end = None
        self.validation = [0.0, 0.0]
        self._t_val = (0.0, 0.0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and self.start is None:
            self.start = clocks()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup + self.steps and self.end is None:
            self.end = clocks()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._t_val = clocks()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.start is not None and self.end is None:
            now = clocks()
            self.validation = [v + n - t for v, n, t in zip(self.validation, now, self._t_val)]


def run_ours(args: argparse.Namespace, round_no: int) -> dict:
    config = load_config(args)
    window = Window(args.warmup, args.steps)
    hg_train.train(config, out=str(args.runs / f"ours-round{round_no}"), callbacks=[window], report=False)
    if window.start is None or window.end is None:
        raise RuntimeError("the timed window never closed: fewer steps ran than warmup + steps")
    return {"seconds": window.end[0] - window.start[0], "cpu": window.end[1] - window.start[1],
            "validation": window.validation[0], "validation_cpu": window.validation[1],
            "images": args.steps * config.data.options()["batch_size"]}


def run_plain(args: argparse.Namespace) -> dict:
    """The same model, data, batches, optimizer, schedule, loss and autocast in a hand-written loop."""
    config = load_config(args)
    L.seed_everything(config.seed, verbose=False)
    data = hg_train.build_data(config)
    data.setup("fit")
    task = hg_train.build_task(config, data)  # the same builder; its objective is the same loss
    task.bind(data)
    model = task.model.train()
    total_steps = args.warmup + args.steps
    opt_cfg = configure(model, config.train, total_steps)
    opt = opt_cfg["optimizer"] if isinstance(opt_cfg, dict) else opt_cfg
    sched = opt_cfg["lr_scheduler"]["scheduler"] if isinstance(opt_cfg, dict) else None
    bf16 = str(config.trainer.precision).startswith("bf16")
    step, start = 0, None
    while step < total_steps:
        for x, mask in data.train_dataloader():
            if step == args.warmup:
                start = clocks()
            # Forward pass and loss inside autocast, as PyTorch's AMP recipe writes it and as Lightning's
            # bf16-mixed runs ``training_step`` (autocast keeps the loss's softmax in float32).
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)  # (B, K, H, W)
                loss, _ = task.objective(logits, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            if step == total_steps:
                break
    end = clocks()
    return {"seconds": end[0] - start[0], "cpu": end[1] - start[1], "validation": 0.0, "validation_cpu": 0.0,
            "images": args.steps * config.data.options()["batch_size"]}


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    ours, plain, rows = [], [], []
    for r in range(args.rounds):
        order = ("ours", "plain") if r % 2 == 0 else ("plain", "ours")
        for side in order:
            res = run_ours(args, r) if side == "ours" else run_plain(args)
            (ours if side == "ours" else plain).append(res)
            print(f"[unet-throughput] round {r + 1} {side:5}: {res['images'] / res['seconds']:6.2f} images/s, "
                  f"{res['images'] / res['cpu']:6.2f} images/CPU-s ({res['seconds']:.1f} s wall, {res['cpu']:.1f} s CPU "
                  f"for {args.steps} steps; validation {res['validation']:.1f} s wall, {res['validation_cpu']:.1f} s CPU)",
                  flush=True)
    for i, (o, p) in enumerate(zip(ours, plain)):
        row = {"round": i + 1}
        for clock, val, unit in (("seconds", "validation", "images_per_s"), ("cpu", "validation_cpu", "images_per_cpu_s")):
            o_all, p_all = o["images"] / o[clock], p["images"] / p[clock]
            o_train = o["images"] / (o[clock] - o[val])
            row.update({f"ours_{unit}": o_all, f"ours_train_only_{unit}": o_train, f"plain_{unit}": p_all,
                        f"ratio_{unit}": o_all / p_all, f"ratio_train_only_{unit}": o_train / p_all})
        rows.append(row)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "round"}  # each column's median
    result = {
        "bench": "unet_throughput", "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "quick": args.quick, "recipe": args.recipe, "overrides": args.overrides, "warmup_steps": args.warmup,
        "timed_steps": args.steps, "rounds": rows, "median": med, "goal": GOAL,
        "goal_met_train_only_cpu": med["ratio_train_only_images_per_cpu_s"] >= GOAL,
        "goal_met_all_cpu": med["ratio_images_per_cpu_s"] >= GOAL,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "lightning": L.__version__,
        "python": platform.python_version(),
    }
    print(f"\nU-Net training throughput, recipe {args.recipe}: {args.steps} timed steps after {args.warmup} warm-up, "
          f"{args.rounds} interleaved round(s), {args.threads} thread(s){'  [QUICK]' if args.quick else ''}")
    for unit, label in (("images_per_cpu_s", "images per CPU-second"), ("images_per_s", "images per wall second")):
        print(f"\n{label}")
        print(f"{'round':>6} | {'ours':>8} | {'ours train-only':>15} | {'plain':>8} | {'ratio':>6} | {'ratio train-only':>16}")
        for r in rows + [dict(med, round="median")]:
            print(f"{r['round']:>6} | {r[f'ours_{unit}']:>8.3f} | {r[f'ours_train_only_{unit}']:>15.3f} | "
                  f"{r[f'plain_{unit}']:>8.3f} | {r[f'ratio_{unit}']:>6.3f} | {r[f'ratio_train_only_{unit}']:>16.3f}")
    print(f"\nGoal ours/plain >= {GOAL} (CPU time): training only "
          f"{'MET' if result['goal_met_train_only_cpu'] else 'NOT MET'} ({med['ratio_train_only_images_per_cpu_s']:.3f}); "
          f"with our validation epoch {med['ratio_images_per_cpu_s']:.3f}. Wall clock: "
          f"{med['ratio_train_only_images_per_s']:.3f} / {med['ratio_images_per_s']:.3f}")
    args.results.mkdir(parents=True, exist_ok=True)
    name = f"unet_throughput{'-quick' if args.quick else ''}.json"
    (args.results / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.results / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
