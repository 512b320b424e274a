"""Lead baselines for the bbc-summary recipe: the first k sentences of each held-out article as its summary.

Lead-3 is the standard extractive anchor of news summarization (See et al. 2017 report it beside their model);
on BBC News Summary, whose reference summaries are sentences taken from the article, it is strong. The held-out
articles are the recipe's own validation split (the same JSON Lines file, ``val_fraction`` and seed), and ROUGE is
the one ``hourglass evaluate`` reports (:func:`hourglass.tasks.seq2seq.rouge_scores`).

    python bench/bbc_lead.py [--jsonl ../shared/data/bbc-summary/articles.jsonl.gz]

It also prints each baseline's mean length in words and its length ratio (output words / reference words, as
sacrebleu counts them: the ``length_ratio`` that ``hourglass evaluate`` prints), to compare with a model's: ROUGE F1
rises with the length of an output as long as it is shorter than the reference.
"""
from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

from hourglass.data.parallel import ParallelDataModule
from hourglass.tasks.seq2seq import corpus_scores

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / ".." / "shared" / "data" / "bbc-summary" / "articles.jsonl.gz"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")  # a full stop, then a capital: enough for a baseline


def lead(article: str, k: int) -> str:
    return " ".join(_SENTENCE_END.split(article)[:k])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jsonl", default=str(DEFAULT))
    p.add_argument("--val-fraction", type=float, default=0.1, help="as the recipe (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="as the recipe (default 0)")
    p.add_argument("--max-k", type=int, default=7, help="lead-1 to lead-K (default 7)")
    args = p.parse_args()
    data = ParallelDataModule(jsonl=args.jsonl, source_field="article", target_field="summary",
                              val_fraction=args.val_fraction, seed=args.seed)
    references = data.references("val")
    articles = [data.source_text(i) for i in range(len(references))]
    print(f"{len(references)} held-out articles; reference summaries: "
          f"{statistics.mean(len(r.split()) for r in references):.0f} words on average")
    for k in range(1, args.max_k + 1):
        outputs = [lead(a, k) for a in articles]
        scores = corpus_scores(outputs, references, rouge=True)
        words = statistics.mean(len(o.split()) for o in outputs)
        print(f"lead-{k}: ROUGE-1 {scores['rouge1']:.2f}  ROUGE-2 {scores['rouge2']:.2f}  "
              f"ROUGE-L {scores['rougeL']:.2f}  ({words:.0f} words, length ratio {scores['length_ratio']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
