"""Write ``output_vocab.json`` into a seq2seq run trained before runs saved it (not a test).

A run trained now saves the list of pieces its training targets use (hourglass/data/output_vocab.py), which search
then keeps to. An older run decodes over its whole vocabulary; this reads its training targets again (the paths in
its config.yaml) with its own tokenizer and writes the same file training would have.

    python bench/add_output_vocab.py RUN
"""
from __future__ import annotations

import argparse

from hourglass.cli.text import load_seq2seq
from hourglass.data import output_vocab


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    args = p.parse_args()
    data = load_seq2seq(args.run).data
    ids = output_vocab.seen_pieces(data.encoded("train").targets)
    output_vocab.save(args.run, ids, data.target_tokenizer.vocab_size)
    print(f"{args.run}: {len(ids)} of {data.target_tokenizer.vocab_size} pieces occur in the training targets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
