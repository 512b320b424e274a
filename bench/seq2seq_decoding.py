"""Decoding speed of a trained seq2seq run, measured side by side in one process (not a test).

The ratios, on the first N sentences of a source file (default: Multi30k test_2016_flickr.de):

1. batched beam search (``--batch`` sentences at once) vs the same beam search one sentence at a time
   (goal >= 8x);
2. beam ``--beam`` vs greedy search, both batched (goal <= 2.5x);
3. a Transformer decoder with its key/value cache vs without (``use_cache=False`` re-runs the prefix);
4. with ``--prune NATS``: beam ``--beam`` with beam pruning (``task.beam_prune``) vs greedy, batched;
5. with ``--sweep 32,64,...``: beam ``--beam`` and greedy, batched, at each of those batch sizes (sentences), and
   their ratio at each. Greedy keeps gaining from larger batches after beam search has stopped gaining (K times
   the rows), so the ratio at one shared batch size depends on that size.
6. for a run with ``output_vocab.json`` (the pieces its training targets use, which search keeps to by default):
   beam and greedy over the whole vocabulary too (``task.restrict_output = False``), batched, their ratio, and how
   many beam outputs the shortlist changed.

The variants run in rounds, each once per round (``--repeats`` rounds), and each keeps its fastest time: a noisy
spell of a shared machine then slows every variant alike, and the fastest run is the least disturbed. The outputs
of the compared variants must be identical; the script says so. Every round's time is in the JSON too
(``rounds_s``).

Then ``--pairs`` pairs of beam and greedy search run back to back (beam first in one pair, greedy first in the
next), and each pair gives a ratio: their median and range show how far the machine's noise moves the ratio of
item 2, which compares two fastest times that may come from different rounds, minutes apart.

    python bench/seq2seq_decoding.py RUN [--source FILE] [--sentences 1000] [--beam 5] [--batch 128] \
        [--threads N] [--precision 32-true|bf16-mixed] [--prune NATS] [--sweep 32,64,128] [--pairs 5] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from hourglass.allocator import keep_freed_memory
from hourglass.cli.text import load_seq2seq
from hourglass.data.text import iter_lines
from hourglass.precision import PRECISIONS, autocast

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT / ".." / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"


def timed(fn: Callable[[], list]) -> tuple[float, list]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def interleaved(variants: dict[str, Callable[[], list]], repeats: int
                ) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Run each variant once per round, ``repeats`` rounds, so that a noisy spell of the machine hits every
    variant alike; every round's time of each variant, and its outputs."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, list] = {}
    for _ in range(repeats):
        for name, fn in variants.items():
            seconds, outputs[name] = timed(fn)
            times[name].append(seconds)
    return times, outputs


def paired_ratios(first: Callable[[], list], second: Callable[[], list], pairs: int) -> list[float]:
    """``pairs`` ratios time(first) / time(second), the two run back to back, in alternating order so that a
    machine that speeds up or slows down within a pair favours neither."""
    ratios = []
    for i in range(pairs):
        if i % 2 == 0:
            a, b = timed(first)[0], timed(second)[0]
        else:
            b, a = timed(second)[0], timed(first)[0]
        ratios.append(a / b)
    return ratios


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--source", default=str(DEFAULT_SOURCE))
    p.add_argument("--sentences", type=int, default=1000, help="the first N lines of --source (default 1000)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--batch", type=int, default=128, help="sentences per batch (default 128, as `hourglass translate`)")
    p.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--precision", choices=PRECISIONS, default="32-true", help="as `hourglass translate --precision`")
    p.add_argument("--prune", type=float, help="also time beam search with this task.beam_prune (nats)")
    p.add_argument("--sweep", type=lambda text: [int(x) for x in text.split(",")], default=[],
                   help="also time beam and greedy, batched, at each of these batch sizes, e.g. 32,64,128,256,640 "
                        "(a size equal to --batch is timed again: the two rows show the machine's noise)")
    p.add_argument("--pairs", type=int, default=5,
                   help="pairs of beam and greedy search run back to back, for the spread of their ratio (default 5)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    # As the `hourglass` command does when it starts; HOURGLASS_KEEP_FREED_MEMORY=0 measures glibc's defaults.
    kept = keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = load_seq2seq(args.run)
    task, data = run.task, run.data
    task.beam_prune = None  # the plain variants search without pruning, whatever the run's config says
    lines = [line.strip() for _, line in zip(range(args.sentences), iter_lines(args.source)) if line.strip()]

    def translate(beam: int, batch: int) -> list[str]:  # batches sorted by length, as `hourglass translate` makes
        return [h[0][0] for h in task.translate(lines, data, beam=beam, batch_size=batch)]

    res: dict = {"run": str(args.run), "sentences": len(lines), "beam": args.beam, "batch": args.batch,
                 "threads": torch.get_num_threads(), "precision": args.precision,
                 "machine": platform.processor() or platform.machine(),
                 "cpu_model": cpu_model(),  # ratios differ by CPU (bench/RESULTS-seq2seq.md)
                 "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # AVX2 or AVX512: timings differ
                 "keep_freed_memory": kept}

    def setting(owner: object, name: str, value: object, beam: int = args.beam) -> Callable[[], list[str]]:
        """A variant: ``translate`` at ``args.batch`` with ``owner.name`` set to ``value``, then set back."""
        def run() -> list[str]:
            before = getattr(owner, name)
            setattr(owner, name, value)
            try:
                return translate(beam, args.batch)
            finally:
                setattr(owner, name, before)
        return run

    variants = {"beam_batched": lambda: translate(args.beam, args.batch),
                "beam_one_at_a_time": lambda: translate(args.beam, 1),
                "greedy_batched": lambda: translate(1, args.batch)}
    for size in args.sweep:
        variants[f"sweep_beam_{size}"] = lambda size=size: translate(args.beam, size)
        variants[f"sweep_greedy_{size}"] = lambda size=size: translate(1, size)
    if hasattr(task.decoder, "use_cache"):
        variants["beam_uncached"] = setting(task.decoder, "use_cache", False)
    shortlist = getattr(data, "output_vocab", None) is not None and task.restrict_output
    if shortlist:  # task.translate's read_with takes restrict_output anew at every call
        variants["beam_whole_vocab"] = setting(task, "restrict_output", False)
        variants["greedy_whole_vocab"] = setting(task, "restrict_output", False, beam=1)
    if args.prune is not None:
        variants["beam_pruned_batched"] = setting(task, "beam_prune", args.prune)
        res["prune"] = args.prune
    with torch.no_grad(), autocast(args.precision, task.device):
        translate(args.beam, args.batch)  # warm-up: first-call allocations and lazy initialisation
        rounds, out = interleaved(variants, args.repeats)
        pairs = paired_ratios(variants["beam_batched"], variants["greedy_batched"], args.pairs)
    t = {name: min(seconds) for name, seconds in rounds.items()}
    res.update({f"{name}_s": seconds for name, seconds in t.items() if not name.startswith("sweep_")})
    res.update(batched_speedup=t["beam_one_at_a_time"] / t["beam_batched"],
               beam_over_greedy=t["beam_batched"] / t["greedy_batched"],
               batched_equals_single=out["beam_batched"] == out["beam_one_at_a_time"])
    if "beam_pruned_batched" in t:
        res.update(pruned_over_greedy=t["beam_pruned_batched"] / t["greedy_batched"],
                   pruned_changed=sum(a != b for a, b in zip(out["beam_pruned_batched"], out["beam_batched"])))
    if shortlist:
        res.update(output_vocab=len(data.output_vocab), vocab=data.target_tokenizer.vocab_size,
                   whole_vocab_beam_over_greedy=t["beam_whole_vocab"] / t["greedy_whole_vocab"],
                   shortlist_speedup_beam=t["beam_whole_vocab"] / t["beam_batched"],
                   shortlist_speedup_greedy=t["greedy_whole_vocab"] / t["greedy_batched"],
                   shortlist_changed_beam=sum(a != b for a, b in zip(out["beam_whole_vocab"], out["beam_batched"])),
                   shortlist_changed_greedy=sum(a != b for a, b in zip(out["greedy_whole_vocab"],
                                                                       out["greedy_batched"])))
    if "beam_uncached" in t:
        res.update(cache_speedup=t["beam_uncached"] / t["beam_batched"],
                   cached_equals_uncached=out["beam_uncached"] == out["beam_batched"])
    if pairs:
        res.update(beam_over_greedy_pair_median=statistics.median(pairs), beam_over_greedy_pair_min=min(pairs),
                   beam_over_greedy_pair_max=max(pairs))
    for key, value in res.items():
        print(f"{key:24s} {value:.3f}" if isinstance(value, float) else f"{key:24s} {value}")
    res.update(rounds_s=rounds, beam_over_greedy_pairs=pairs)
    if args.sweep:
        res["sweep"] = {size: {"beam_s": t[f"sweep_beam_{size}"], "greedy_s": t[f"sweep_greedy_{size}"],
                               "beam_over_greedy": t[f"sweep_beam_{size}"] / t[f"sweep_greedy_{size}"],
                               "same_beam_outputs": out[f"sweep_beam_{size}"] == out["beam_batched"],
                               "same_greedy_outputs": out[f"sweep_greedy_{size}"] == out["greedy_batched"]}
                        for size in args.sweep}
        for size, row in res["sweep"].items():
            print(f"batch {size:<18d} beam {row['beam_s']:.3f} s, greedy {row['greedy_s']:.3f} s, "
                  f"ratio {row['beam_over_greedy']:.3f}, same outputs {row['same_beam_outputs']}/"
                  f"{row['same_greedy_outputs']}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
