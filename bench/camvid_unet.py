"""CamVid segmentation: train the ``camvid-unet`` recipe (or read a finished run) and report val mIoU and time.

It runs the real CLI, ``hourglass train RECIPE --out RUN``, in a child process, so the numbers are those a
user gets, and prints the exact command. The target (issue): mIoU >= 0.55 on the 101 validation images at
180x240 within one CPU-hour on 2 cores.

Threads: on a 2-core machine that other jobs share, two torch threads per process wait on each other at
every parallel region; we measured a training step at 1.6 s with one thread and 6-14 s with two while other
jobs ran (see bench/RESULTS-segmentation.md). ``--threads`` (default 1) sets OMP_NUM_THREADS for the child.

    python bench/camvid_unet.py                              # train (about an hour), then report
    python bench/camvid_unet.py --run runs/bench/camvid-unet  # report on a finished run only
    python bench/camvid_unet.py --recipe camvid-segnet --set train.max_epochs=5
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.55


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="camvid-unet")
    p.add_argument("--run", type=Path, help="report on this finished run directory instead of training")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/bench/RECIPE)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for training (default 1, see above)")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    run = args.run
    command = None
    wall = cpu = None
    if run is None:
        run = args.out or ROOT / "runs" / "bench" / args.recipe
        cmd = ["hourglass", "train", args.recipe, "--out", str(run)]
        if args.overrides:
            cmd += ["--set", *args.overrides]
        command = f"OMP_NUM_THREADS={args.threads} " + shlex.join(cmd)
        print(f"[camvid] {command}", flush=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        start = time.time()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
        wall = time.time() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = usage.ru_utime + usage.ru_stime  # what the machine's other jobs left us, in CPU seconds
    report(Path(run), command, wall, cpu)
    return 0


def report(run: Path, command: str | None, wall: float | None, cpu: float | None = None) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    final = metrics["final"]
    print(f"\nCamVid val ({final.get('images')} images), run {run}")
    if command:
        print(f"command         {command}")
    print(f"val mIoU        {final['miou']:.4f}   (goal >= {GOAL}: {'MET' if final['miou'] >= GOAL else 'NOT MET'})")
    print(f"pixel accuracy  {final['pixel_accuracy']:.4f}")
    print(f"class accuracy  {final['class_accuracy']:.4f}")
    for key, value in final.items():
        if key.startswith("iou/"):
            print(f"  {key[4:]:<12}  {'-' if value is None else f'{value:.4f}'}")
    print(f"epochs          {metrics['epochs']} ({metrics['steps']} steps)")
    print(f"train seconds   {metrics['train_seconds']:.0f} (Lightning fit)")
    if wall is not None:
        print(f"wall seconds    {wall:.0f} (whole command: loading, training, final metrics, plots, report)")
    if cpu is not None:
        print(f"CPU seconds     {cpu:.0f} (user + system of the training process; {cpu / wall:.2f} cores on average)")
    print(f"parameters      {metrics['parameters']:,}")
    out = {"run": str(run), "command": command, "wall_seconds": wall, "cpu_seconds": cpu, **metrics}
    (run / "bench-camvid.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
