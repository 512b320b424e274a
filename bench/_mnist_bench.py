"""What the MNIST recipe benches share (ae_vs_pca, denoising, vae_elbo): their common options, one fresh
training run of a recipe through ``hourglass.training.train``, and the results file."""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from hourglass import recipebook
from hourglass.run import Run
from hourglass.training import train

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "mnist").resolve()


def parser(bench: str, recipe: str) -> argparse.ArgumentParser:
    """An argument parser with the options every MNIST bench has; the caller adds its own."""
    main = sys.modules["__main__"]
    p = argparse.ArgumentParser(description=(main.__doc__ or bench).splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test in under a minute (numbers meaningless)")
    p.add_argument("--recipe", default=recipe)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, as `hourglass train --set` (repeatable)")
    p.add_argument("--tag", default="", help="suffix for the run directories and the results file")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench" / bench)
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1; 0: torch's choice). On a busy shared 2-core machine "
                        "two threads per process wait on each other: 1 thread ran a step 2.5x faster here")
    return p


def set_threads(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def suffix(args: argparse.Namespace) -> str:
    return f"{'-' + args.tag if args.tag else ''}{'-quick' if args.quick else ''}"


def train_fresh(args: argparse.Namespace, name: str, overrides: list[str]) -> tuple[Run, dict, dict]:
    """Train the recipe with ``overrides`` (then the user's ``--set``) into ``args.runs / name``, replacing
    this bench's earlier run there. Returns the run, its metrics.json and the row fields every bench reports."""
    # progress=false only keeps the log readable; it changes no number reported here.
    base = [f"data.path={DATA}", "train.progress=false", *overrides]
    if args.quick:
        base += ["data.limit=400", "train.max_epochs=1"]  # 350 train digits: 3 steps
    config = recipebook.load(args.recipe, base + args.overrides)
    out = args.runs / f"{name}{suffix(args)}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    run_dir = train(config, out=str(out))
    wall = time.time() - start
    run = Run.load(run_dir)
    m = run.metrics()
    timing = {"epochs": m["epochs"], "steps": m["steps"], "train_seconds": m["train_seconds"],
              "wall_seconds": round(wall, 1), "run_dir": str(run_dir)}
    return run, m, timing


def heading(args: argparse.Namespace, what: str) -> str:
    return (f"{what}, recipe {args.recipe} {' '.join(args.overrides) or '(as shipped)'}"
            f"{'  [QUICK: numbers meaningless]' if args.quick else ''}")


def write_results(args: argparse.Namespace, bench: str, rows: list[dict], **extra) -> None:
    """bench/results/BENCH[-TAG][-quick].json: the command, the settings, the rows and the software."""
    result = {
        "bench": bench,
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "quick": args.quick,
        "recipe": args.recipe,
        "overrides": args.overrides,
        **extra,
        "rows": rows,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{bench}{suffix(args)}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
