"""Decoding speed of a trained seq2seq run, measured side by side in one process (not a test).

Three ratios, on the first N sentences of a source file (default: Multi30k test_2016_flickr.de):

1. batched beam search (``--batch`` sentences at once) vs the same beam search one sentence at a time
   (goal >= 8x);
2. beam ``--beam`` vs greedy search, both batched (goal <= 2.5x);
3. a Transformer decoder with its key/value cache vs without (``use_cache=False`` re-runs the prefix).

Each measurement runs ``--repeats`` times (one at a time: once) and keeps the fastest (the least disturbed
by other processes). The outputs of the compared variants must be identical; the script says so.

    python bench/seq2seq_decoding.py RUN [--source FILE] [--sentences 200] [--beam 5] [--batch 64] \
        [--threads N] [--precision 32-true|bf16-mixed] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from hourglass.cli.text import load_seq2seq
from hourglass.data.text import iter_lines
from hourglass.precision import PRECISIONS, autocast

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT / ".." / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"


def timed(fn, repeats: int) -> tuple[float, list]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--source", default=str(DEFAULT_SOURCE))
    p.add_argument("--sentences", type=int, default=200)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--precision", choices=PRECISIONS, default="32-true", help="as `hourglass translate --precision`")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = load_seq2seq(args.run)
    task, data = run.task, run.data
    lines = [line.strip() for _, line in zip(range(args.sentences), iter_lines(args.source)) if line.strip()]

    def translate(beam: int, batch: int) -> list[str]:  # batches sorted by length, as `hourglass translate` makes
        return [h[0][0] for h in task.translate(lines, data, beam=beam, batch_size=batch)]

    res: dict = {"run": str(args.run), "sentences": len(lines), "beam": args.beam, "batch": args.batch,
                 "threads": torch.get_num_threads(), "precision": args.precision,
                 "machine": platform.processor() or platform.machine()}
    with torch.no_grad(), autocast(args.precision, task.device):
        t_batched, batched = timed(lambda: translate(args.beam, args.batch), args.repeats)
        t_single, single = timed(lambda: translate(args.beam, 1), 1)  # the slow side: once
        t_greedy, _ = timed(lambda: translate(1, args.batch), args.repeats)
        res.update(beam_batched_s=t_batched, beam_one_at_a_time_s=t_single, greedy_batched_s=t_greedy,
                   batched_speedup=t_single / t_batched, beam_over_greedy=t_batched / t_greedy,
                   batched_equals_single=batched == single)
        if hasattr(task.decoder, "use_cache"):
            task.decoder.use_cache = False
            t_uncached, uncached = timed(lambda: translate(args.beam, args.batch), args.repeats)
            task.decoder.use_cache = True
            res.update(beam_uncached_s=t_uncached, cache_speedup=t_uncached / t_batched,
                       cached_equals_uncached=uncached == batched)
    for key, value in res.items():
        print(f"{key:24s} {value:.3f}" if isinstance(value, float) else f"{key:24s} {value}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
