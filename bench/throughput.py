"""Training throughput: hourglass (Lightning, the real ``train`` path) vs a plain PyTorch loop, same model.

Both sides train the ``mnist-ae`` recipe's model (built by the same builder from the same seed) on the same
7,000 digits, in the same batches of 128 (the data module's own sampler), with the same optimizer (Adam, the
recipe's lr) and the same loss (Bernoulli log-likelihood summed over pixels, averaged over the batch). They
run in one process, interleaved, alternating which goes first: rounds of [ours, plain], [plain, ours], ...

"ours" is ``hourglass.training.train(config)`` itself, with everything the recipe switches on: the Rich
progress bar, logging to CSV and TensorBoard every ``trainer.log_every_n_steps`` (10), the ``last``
checkpoint every 100 steps and the ``best`` one after each validation, early stopping, and the validation
epoch at the end of each training epoch. The bench changes only three things around it, none timed: it adds
a timing callback, wraps the checkpoint IO, the loggers, the progress bar and ``Task.log`` with stopwatches
(to attribute the time), and trains with ``report=False``: the final metrics, PCA, plots and report come after
training and are not timed.

Each side runs WARMUP + STEPS optimizer steps; the clock covers the STEPS after the warm-up (model build,
Lightning's set-up, the sanity validation and the first steps are excluded). With the defaults (10 + 100
steps = exactly 2 epochs of 55 steps) the window holds one validation epoch and one ``last`` checkpoint,
the proportions of a real run. Two ratios are reported: images/s of ours over plain for everything in the
window, and for training alone (the validation epoch's time taken out, since the plain loop validates
nothing). Goal: ours/plain >= 0.97.

    python bench/throughput.py             # 3 rounds, ~10 min on 2 idle cores
    python bench/throughput.py --quick     # smoke test: 400 digits, 1 round of 1 + 5 steps
    python bench/throughput.py --set train.progress=false --set trainer.log_every_n_steps=50  # configured
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

import hourglass.training as hg_train
from hourglass import recipebook

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "mnist").resolve()
GOAL = 0.97
STEP, VAL, LOG = "step: forward, backward, optimizer", "validation epoch", "Task.log (self.log calls)"
OTHER = "other (data loading, Lightning loops and hooks)"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test in under a minute (numbers meaningless)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; --quick: 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10; --quick: 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 100; --quick: 5)")
    p.add_argument("--recipe", default="mnist-ae")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override for the hourglass side only, as `hourglass train --set` (repeatable)")
    p.add_argument("--tag", default="", help="suffix for the results file")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench" / "throughput")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1; 0: torch's choice). On a busy shared 2-core machine "
                        "two threads per process wait on each other: 1 thread ran a step 2.5x faster here")
    args = p.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 10)
    args.steps = args.steps or (5 if args.quick else 100)
    return args


def load_config(args: argparse.Namespace, extra: list[str] = ()):
    total = args.warmup + args.steps
    # max_epochs high so that max_steps ends the run. Keep warmup + steps a whole number of epochs: a run
    # that stops mid-epoch skips the last validation and EarlyStopping then raises (see RESULTS).
    base = [f"data.path={DATA}", f"train.max_steps={total}", "train.max_epochs=1000"]
    if args.quick:
        base += ["data.limit=400"]  # 350 training digits: 3 steps per epoch
    return recipebook.load(args.recipe, base + list(extra))


# -- stopwatches ------------------------------------------------------------------------------------------
class Clock:
    """Accumulates seconds per label, only while ``armed`` (inside the timed window)."""

    def __init__(self) -> None:
        self.armed = False
        self.seconds: dict[str, float] = defaultdict(float)  # wall clock
        self.cpu: dict[str, float] = defaultdict(float)  # this process's CPU time, all threads
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, label: str, fn):
        def timed(*a, **k):
            if not self.armed:
                return fn(*a, **k)
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[label] += time.perf_counter() - t
                self.cpu[label] += time.process_time() - c
                self.calls[label] += 1
        return timed


class Window(L.Callback):
    """Times steps WARMUP+1 .. WARMUP+STEPS and what happens around them; first in the callback list."""

    def __init__(self, clock: Clock, warmup: int, steps: int) -> None:
        self.clock, self.warmup, self.steps = clock, warmup, steps
        self.start = self.end = self.cpu_start = self.cpu_end = None
        self._t_batch = self._t_val = self._c_batch = self._c_val = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        """Stopwatches around Task.log, the checkpoint IO, the loggers and the progress bar."""
        clock = self.clock
        pl_module.log = clock.wrap(LOG, pl_module.log)
        io = trainer.strategy.checkpoint_io
        io.save_checkpoint = clock.wrap("checkpoint saves", io.save_checkpoint)
        for lg in trainer.loggers:
            lg.log_metrics = clock.wrap("loggers (CSV + TensorBoard)", lg.log_metrics)
            lg.save = clock.wrap("loggers (CSV + TensorBoard)", lg.save)
        bar = trainer.progress_bar_callback
        if bar is not None:
            for name in ("on_train_batch_start", "on_train_batch_end", "on_validation_batch_start",
                         "on_validation_batch_end", "on_validation_start", "on_validation_end",
                         "on_train_epoch_start", "on_train_epoch_end"):
                setattr(bar, name, clock.wrap("progress bar", getattr(bar, name)))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start, self.cpu_start, self.clock.armed = time.perf_counter(), time.process_time(), True
        self._t_batch, self._c_batch = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if self.clock.armed:
            self.clock.seconds[STEP] += now - self._t_batch
            self.clock.cpu[STEP] += cpu - self._c_batch
        if trainer.global_step == self.warmup + self.steps and self.clock.armed:
            self.end, self.cpu_end, self.clock.armed = now, cpu, False

    def on_validation_start(self, trainer, pl_module) -> None:
        self._t_val, self._c_val = time.perf_counter(), time.process_time()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.clock.armed:
            self.clock.seconds[VAL] += time.perf_counter() - self._t_val
            self.clock.cpu[VAL] += time.process_time() - self._c_val
            self.clock.calls[VAL] += 1


def run_ours(args: argparse.Namespace, round_no: int) -> dict:
    """One run of ``hourglass.training.train`` with stopwatches; returns the timed window's numbers."""
    config = load_config(args, args.overrides)
    clock = Clock()
    window = Window(clock, args.warmup, args.steps)
    out = args.runs / f"ours-round{round_no}"
    shutil.rmtree(out, ignore_errors=True)  # a scratch run directory owned by this bench
    hg_train.train(config, out=str(out), callbacks=[window], report=False)  # report: after the timed window
    if window.start is None or window.end is None:
        raise RuntimeError("the timed window never closed: fewer steps ran than warmup + steps")
    total, cpu_total = window.end - window.start, window.cpu_end - window.cpu_start
    parts, cpu_parts = dict(clock.seconds), dict(clock.cpu)
    for p, t in ((parts, total), (cpu_parts, cpu_total)):
        p[STEP] -= p.get(LOG, 0.0)  # self.log runs inside the step: report it separately, not twice
        p[OTHER] = t - sum(p.values())
    return {"seconds": total, "cpu_seconds": cpu_total, "images": args.steps * config.data.options()["batch_size"],
            "parts": parts, "cpu_parts": cpu_parts, "calls": dict(clock.calls)}


def run_plain(args: argparse.Namespace) -> dict:
    """The same model, data, batches, optimizer and loss in a hand-written loop."""
    config = load_config(args)
    L.seed_everything(config.seed, verbose=False)
    data = hg_train.build_data(config)
    data.setup("fit")
    model = hg_train.build_task(config, data).model  # the same builder the hourglass side uses
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    step, start, cpu_start, t_data, c_data = 0, None, None, 0.0, 0.0
    total_steps = args.warmup + args.steps
    while step < total_steps:
        batches = iter(data.train_dataloader())
        while step < total_steps:
            t, c = time.perf_counter(), time.process_time()
            try:
                x, _ = next(batches)
            except StopIteration:
                break
            if step == args.warmup:
                start, cpu_start, t_data, c_data = t, c, 0.0, 0.0
            t_data += time.perf_counter() - t
            c_data += time.process_time() - c
            logits = model(x)  # (B, 1, 28, 28)
            loss = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    total, cpu_total = time.perf_counter() - start, time.process_time() - cpu_start
    return {"seconds": total, "cpu_seconds": cpu_total, "images": args.steps * config.data.options()["batch_size"],
            "parts": {"data loading": t_data, STEP: total - t_data},
            "cpu_parts": {"data loading": c_data, STEP: cpu_total - c_data}}


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, plain = [], []
    for r in range(args.rounds):
        order = ("ours", "plain") if r % 2 == 0 else ("plain", "ours")
        for side in order:
            res = run_ours(args, r) if side == "ours" else run_plain(args)
            (ours if side == "ours" else plain).append(res)
            print(f"[throughput] round {r + 1} {side:5}: {res['images'] / res['seconds']:7.1f} images/s "
                  f"({res['seconds']:.1f} s wall, {res['cpu_seconds']:.1f} s CPU for {args.steps} steps)", flush=True)
    result = summarize(args, ours, plain)
    print_report(args, result)
    args.results.mkdir(parents=True, exist_ok=True)
    name = f"throughput{'-' + args.tag if args.tag else ''}{'-quick' if args.quick else ''}.json"
    (args.results / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.results / name}")
    return 0


def summarize(args, ours: list[dict], plain: list[dict]) -> dict:
    """Per round: images/s on the wall clock and per CPU-second, everything and training only (no validation)."""
    rows = []
    for i, (o, p) in enumerate(zip(ours, plain)):
        row = {"round": i + 1}
        for clock, total, parts in (("wall", "seconds", "parts"), ("cpu", "cpu_seconds", "cpu_parts")):
            o_all = o["images"] / o[total]
            o_train = o["images"] / (o[total] - o[parts].get(VAL, 0.0))
            p_all = p["images"] / p[total]
            row.update({f"{clock}_ours": o_all, f"{clock}_ours_train_only": o_train, f"{clock}_plain": p_all,
                        f"{clock}_ratio": o_all / p_all, f"{clock}_ratio_train_only": o_train / p_all})
        rows.append(row)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "round"}

    def ms_per_step(runs: list[dict], parts: str) -> dict[str, float]:
        labels = sorted({k for r in runs for k in r[parts]})
        return {k: statistics.median(r[parts].get(k, 0.0) for r in runs) / args.steps * 1e3 for k in labels}

    return {
        "bench": "throughput",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "quick": args.quick, "recipe": args.recipe, "overrides": args.overrides,
        "warmup_steps": args.warmup, "timed_steps": args.steps, "rounds": rows, "median": med, "goal": GOAL,
        "goal_met": {k: med[k] >= GOAL for k in med if "ratio" in k},
        "ms_per_step": {"ours_wall": ms_per_step(ours, "parts"), "ours_cpu": ms_per_step(ours, "cpu_parts"),
                        "plain_wall": ms_per_step(plain, "parts"), "plain_cpu": ms_per_step(plain, "cpu_parts")},
        "ours_calls_in_window": ours[0]["calls"],
        "threads": torch.get_num_threads(), "torch": torch.__version__, "lightning": L.__version__,
        "python": platform.python_version(),
    }


def print_report(args, res: dict) -> None:
    print(f"\nTraining throughput, recipe {args.recipe} {' '.join(args.overrides) or '(as shipped)'}: "
          f"{args.steps} timed steps (batch 128) after {args.warmup} warm-up, {len(res['rounds'])} interleaved "
          f"round(s), {res['threads']} torch thread(s){'  [QUICK: numbers meaningless]' if args.quick else ''}")
    for clock, unit in (("wall", "images/s, wall clock"), ("cpu", "images per CPU-second of this process")):
        print(f"\n{unit}")
        head = (f"{'round':>6} | {'ours':>8} | {'ours, no val.':>13} | {'plain':>8} | {'ours/plain':>10} | "
                f"{'no val./plain':>13}")
        print(head + "\n" + "-" * len(head))
        for r in res["rounds"] + [dict(res["median"], round="median")]:
            print(f"{r['round']:>6} | {r[clock + '_ours']:>8.1f} | {r[clock + '_ours_train_only']:>13.1f} | "
                  f"{r[clock + '_plain']:>8.1f} | {r[clock + '_ratio']:>10.3f} | {r[clock + '_ratio_train_only']:>13.3f}")
    print("\nWhere the time goes (median ms per timed step; validation and checkpoints spread over the steps):")
    print(f"  {'':<56} {'wall':>8} {'CPU':>8}")
    ms = res["ms_per_step"]
    for side in ("ours", "plain"):
        for k, v in sorted(ms[f"{side}_wall"].items(), key=lambda kv: -kv[1]):
            print(f"  {side:<5} {k:<50} {v:8.1f} {ms[f'{side}_cpu'].get(k, 0.0):8.1f}")
    print(f"  calls inside the window (round 1): {res['ours_calls_in_window']}")
    med = res["median"]
    print(f"\nGoal ours/plain >= {GOAL}: wall {med['wall_ratio']:.3f} (training only {med['wall_ratio_train_only']:.3f}); "
          f"CPU {med['cpu_ratio']:.3f} (training only {med['cpu_ratio_train_only']:.3f})")


if __name__ == "__main__":
    sys.exit(main())
