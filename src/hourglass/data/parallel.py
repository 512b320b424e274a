"""Parallel text for sequence-to-sequence: two aligned files, one TSV file or one JSON Lines file, subword-tokenized.

Implements the data-module protocol of :mod:`hourglass.tasks.seq2seq` for text on both sides::

    data:
      name: parallel
      source: train.de.gz        # two aligned files (plain or gzip), line i translates line i ...
      target: train.en.gz
      tsv: null                  # ... or one tab-separated file (columns source_col, target_col; no quoting:
                                 #     every tab separates columns, as in Moses and fairseq TSVs)
      jsonl: null                # ... or one JSON Lines file (.jsonl[.gz]): fields source_field, target_field
      turns_field: null          # set: each JSON line is a conversation, this field its list of turns; every turn
      context_turns: 2           #   after the first is a target, the context_turns before it its source (dialogue);
      respond_as: both           #   first or second: only that speaker's turns are targets
      val_path: val.de.gz        # validation sources (or a TSV or JSON Lines file without val_ref); default: split off
      val_ref: val.en.gz         #   val_fraction of the training pairs (of the conversations, for dialogue).
                                 #   `hourglass evaluate --data --ref` sets these.

Reading (line counts, empty lines, bytes that are not UTF-8) is :mod:`hourglass.data.text`'s job. SentencePiece
tokenizers (:mod:`hourglass.data.tokenizer`) are trained on the training side(s) only: one joint vocabulary
(``joint_vocab``, needed to tie the encoder's and decoder's embeddings) or one per side. They are saved in the
run directory (``tokenizer.model``, or ``source.model`` and ``target.model``) and loaded from there, so that a
trained run never reads its training files again to translate. Beside them, ``output_vocab.json`` lists the
pieces the training targets use, which search keeps to (:mod:`hourglass.data.output_vocab`).

A sentence longer than ``max_length`` pieces is truncated with a warning (a count), never refused. A model with a
position table (Transformer ``max_len``) must hold what this lets through: the encoder reads a source of up to
``max_length`` pieces (no bos or eos), and the decoder reads bos and a target of up to ``max_target_length``
pieces (eos is only a label), so ``model.encoder.max_len >= max_length`` and ``model.decoder.max_len >=
max_target_length + 1``; :meth:`ParallelDataModule.check_model` refuses a smaller model when training starts. A
trained run cuts its sources to what its encoder reads (:meth:`~ParallelDataModule.read_for`: runs trained before
that check). ``max_target_length`` (default: ``max_length``) truncates the training and validation targets alone,
as summarization does to keep teacher forcing affordable (See et al. 2017 trained on the first 100 tokens of each
summary); references stay whole. Training batches hold sentences of similar length under a budget of
``max_tokens`` padded tokens (:class:`~hourglass.data.batching.TokenBatchSampler`).
"""
from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from hourglass._registry import register_dataset
from hourglass.data import output_vocab
from hourglass.data.base import DataModule
from hourglass.data.batching import TokenBatchSampler, collate, pad
from hourglass.data.positions import PositionLimits, positions
from hourglass.data.dialogue import (TURN_SEPARATOR, Speaker, answerable, dialogue_context, dialogue_pairs,
                                     read_conversations, read_dialogues)
from hourglass.data.text import is_jsonl, quote, read_jsonl, read_parallel, read_tsv
from hourglass.data.tokenizer import Tokenizer, VocabTooSmall
from hourglass.errors import ConfigError, DataError
from hourglass.model import DataContext
from hourglass.options import Count, Location, Size

Pairs = list[tuple[str, str]]
JOINT, SOURCE, TARGET = "tokenizer.model", "source.model", "target.model"


class EncodedPairs(Dataset):
    """Token ids of (source, target) pairs; item i is ``(i, source ids, target ids)`` (ids without bos/eos)."""

    def __init__(self, sources: list[list[int]], targets: list[list[int]]) -> None:
        self.sources, self.targets = sources, targets

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[int, list[int], list[int]]:
        return i, self.sources[i], self.targets[i]

    def lengths(self) -> list[int]:
        """Cost in padded tokens: the longer side, the target with its bos and eos."""
        return [max(len(s), len(t) + 2) for s, t in zip(self.sources, self.targets)]


def _cut(seq: list, limit: int, keep_end: bool = False) -> list:
    """The first ``limit`` items (ids, pieces) of ``seq``; the last ones with ``keep_end`` (a dialogue context keeps
    the turn being answered)."""
    return seq[len(seq) - limit:] if keep_end and len(seq) > limit else seq[:limit]


def _are(count: int) -> tuple[str, str, str, str]:
    """The words of the truncation warnings for one sentence or several: ("was", "it", "is", "its") or ..."""
    return ("was", "it", "is", "its") if count == 1 else ("were", "they", "are", "their")


class _WholeEpochs(Sampler[list[int]]):
    """A TokenBatchSampler whose length is always a whole epoch's batch count.

    Lightning reads ``len()`` once, when training starts, as the length of every epoch; when a run resumes in the
    middle of an epoch it also restores how many batches that epoch had done. A length without the skipped
    batches would make every later epoch that much shorter.
    """

    def __init__(self, sampler: TokenBatchSampler) -> None:
        self.sampler = sampler
        skip, sampler.skip_batches = sampler.skip_batches, 0
        self.length = len(sampler)
        sampler.skip_batches = skip

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        return iter(self.sampler)

    def __len__(self) -> int:
        return self.length


@register_dataset("parallel")
class ParallelDataModule(PositionLimits, DataModule):
    """Two aligned files or one TSV file -> subword ids; see the module docstring."""

    def __init__(
        self,
        *,
        source: Optional[Location] = None,
        target: Optional[Location] = None,
        tsv: Optional[Location] = None,
        source_col: Count = 0,
        target_col: Count = 1,
        jsonl: Optional[Location] = None,
        source_field: str = "source",
        target_field: str = "target",
        turns_field: Optional[str] = None,
        context_turns: Size = 2,
        respond_as: Speaker = "both",
        val_path: Optional[Location] = None,
        val_ref: Optional[Location] = None,
        val_fraction: float = 0.05,
        train_limit: Optional[Size] = None,
        vocab: Size = 8000,
        joint_vocab: bool = True,
        tokenizer: Literal["unigram", "bpe"] = "unigram",
        max_length: Size = 128,
        max_target_length: Optional[Size] = None,
        max_tokens: Size = 4096,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        given = [name for name, v in (("data.source/data.target", source or target), ("data.tsv", tsv),
                                      ("data.jsonl", jsonl)) if v]
        if len(given) > 1:
            raise ConfigError(
                f"Set one of data.source and data.target, data.tsv or data.jsonl, not several (data.source={source}, "
                f"data.target={target}, data.tsv={tsv}, data.jsonl={jsonl}). When a recipe sets one, clear it: e.g. "
                "--set data.tsv=FILE data.source=null data.target=null."
            )
        if source_col == target_col:
            raise ConfigError(f"data.source_col and data.target_col are both {source_col}: the source and the target "
                              "must be different columns of the TSV (0 and 1 by default).")
        if val_path is None and not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be between 0 and 1 (got {val_fraction}), or set data.val_path.")
        self.paths = dict(source=source, target=target, tsv=tsv, jsonl=jsonl, val_path=val_path, val_ref=val_ref)
        if turns_field and not jsonl:
            raise ConfigError(f"data.turns_field={turns_field!r} reads conversations from a JSON Lines file, one "
                              "conversation a line: set data.jsonl to that file (and clear data.source, data.target "
                              "and data.tsv), or set data.turns_field to null for parallel text.")
        self.cols, self.fields = (source_col, target_col), (source_field, target_field)
        self.turns_field, self.context_turns, self.respond_as = turns_field, context_turns, respond_as
        self.val_fraction, self.train_limit = val_fraction, train_limit
        self.vocab, self.joint_vocab, self.model_type = vocab, joint_vocab, tokenizer
        self.output_vocab: list[int] | None = None  # the ids the training targets use (data/output_vocab.py)
        self.max_length, self.max_tokens, self.num_workers, self.seed = max_length, max_tokens, num_workers, seed
        # (limit, the option that sets it) for targets: named in the truncation warning
        self.target_limit = (max_target_length, "max_target_length") if max_target_length else (max_length,
                                                                                                "max_length")
        # What is read of each sentence: data.max_length (targets: target_limit), or less for a trained model with
        # fewer positions (read_for).
        self.source_limit, self.target_cut = max_length, self.target_limit[0]
        self._trained = False  # a trained run's data (load_artifacts): its warnings name no option to raise
        self._encoder = None  # the trained encoder that reads fewer positions than max_length (read_for)
        self._cuts: set[str] | None = None  # the sources encode_sources cut while collecting (collect_cuts)
        self.source_tokenizer: Tokenizer | None = None
        self.target_tokenizer: Tokenizer | None = None
        self._pairs: dict[str, Pairs] = {}
        self._sets: dict[str, EncodedPairs] = {}
        self._tmp: str | None = None
        self._resume: tuple[int, int] | None = None

    # -- reading ------------------------------------------------------------------------------------------------
    def read_train(self) -> Pairs:
        """All training pairs as raw text (before a validation split). Generated-text subclasses override this."""
        p = self.paths
        if p["jsonl"]:
            return self._read_jsonl(p["jsonl"])
        if p["tsv"] is None and (p["source"] is None or p["target"] is None):
            raise ConfigError(
                "The parallel data needs its training text: set data.source and data.target (two aligned files, "
                "line i of one translating line i of the other), data.tsv (one tab-separated file) or data.jsonl "
                "(one JSON Lines file)."
            )
        return read_tsv(p["tsv"], *self.cols) if p["tsv"] else read_parallel(p["source"], p["target"])

    def read_val(self) -> Pairs | None:
        """The validation pairs, or None to split them off the training pairs (``val_fraction``)."""
        p = self.paths
        if p["val_ref"] and not p["val_path"]:
            raise ConfigError(f"data.val_ref={p['val_ref']} gives the references of data.val_path, which is not set "
                              "(so the validation pairs would be split off the training text, and val_ref ignored). "
                              "Set data.val_path to the validation sources as well, or remove data.val_ref.")
        if not p["val_path"]:
            return None
        if p["val_ref"]:
            return read_parallel(p["val_path"], p["val_ref"])
        if is_jsonl(p["val_path"]):
            return self._read_jsonl(p["val_path"])
        alone = ("If it holds the sources alone, give their references with --ref REF." if self._trained else
                 "If it holds the validation sources alone, give their references in data.val_ref.")
        return read_tsv(p["val_path"], *self.cols, sources_alone=alone)

    def _read_jsonl(self, path: Location) -> Pairs:
        if self.turns_field:
            return read_dialogues(path, self.turns_field, self.context_turns, self.respond_as)
        return read_jsonl(path, *self.fields)

    def dialogue_source(self, turns: Sequence[str]) -> str:
        """The source line that answers ``turns`` (a conversation so far, oldest first), built as in training."""
        return dialogue_context(turns, self.context_turns)

    def _read(self, split: str) -> Pairs:
        """The pairs of "train" or "val"; a validation file is read without touching the training files."""
        if split not in self._pairs:
            val = self._pairs.get("val") or self.read_val()
            if val is not None and split == "val":
                self._pairs["val"] = val
                return val
            train, val = (self.read_train(), val) if val is not None else self._split_off_validation()
            self._pairs.update(train=train[: self.train_limit] if self.train_limit else train, val=val)
        return self._pairs[split]

    def _split_off_validation(self) -> tuple[Pairs, Pairs]:
        """(train, val): ``val_fraction`` of the training pairs, drawn with ``seed``. Conversations are drawn whole,
        so that no validation turn has its context, or itself, among the training pairs."""
        dialogues, where = bool(self.turns_field), str(self.paths["jsonl"])  # turns_field implies jsonl (__init__)
        units = answerable(read_conversations(where, self.turns_field), self.respond_as, where) if dialogues \
            else self.read_train()
        what = "conversation" if dialogues else "pair"
        if len(units) < 2:
            raise DataError(f"The training text holds {len(units)} {what}: too few to split off a validation set. "
                            f"Add {what}s, or give data.val_path" + ("" if dialogues else " and data.val_ref") + ".")
        order = np.random.default_rng(self.seed).permutation(len(units))
        n_val = max(1, int(round(len(units) * self.val_fraction)))
        val, train = [units[i] for i in order[:n_val]], [units[i] for i in np.sort(order[n_val:])]
        if dialogues:
            return (dialogue_pairs(train, self.context_turns, where, self.respond_as),
                    dialogue_pairs(val, self.context_turns, f"{where} (its validation conversations)",
                                   self.respond_as))
        return train, val

    # -- tokenizers ---------------------------------------------------------------------------------------------
    def _train_tokenizers(self) -> None:
        train = self._read("train")
        self._tmp = self._tmp or tempfile.mkdtemp(prefix="hourglass-tok-")
        # A dialogue's turn separator is one piece: never split, and the same in every context.
        opts = dict(vocab_size=self.vocab, model_type=self.model_type,
                    user_defined_symbols=[TURN_SEPARATOR] if self.turns_field else [])
        if self.joint_vocab:
            lines = [s for s, _ in train] + [t for _, t in train]
            joint = self._train_tokenizer(lines, "both", path_prefix=Path(self._tmp) / "tokenizer", **opts)
            self.source_tokenizer = self.target_tokenizer = joint
        else:
            self.source_tokenizer = self._train_tokenizer([s for s, _ in train], "source",
                                                          path_prefix=Path(self._tmp) / "source", **opts)
            self.target_tokenizer = self._train_tokenizer([t for _, t in train], "target",
                                                          path_prefix=Path(self._tmp) / "target", **opts)

    def _train_tokenizer(self, lines: list[str], side: str, **opts: Any) -> Tokenizer:
        """Tokenizer.train, with a vocabulary too small said in config terms: data.vocab and the side's text."""
        try:
            return Tokenizer.train(lines, **opts)
        except VocabTooSmall as err:
            text = ("the training text (source and target together, data.joint_vocab=true" if side == "both" else
                    f"the training {side} text ({self._where(side)}")
            if side == "both" and self._where("source") != "generated text":
                text += f": {self._where('source')} and {self._where('target')}"
            raise ConfigError(
                f"data.vocab={self.vocab} is too small: {text}) has too many distinct characters for it: the "
                f"vocabulary needs at least {err.needed} entries (every character, and pad, unk, bos and eos). Raise "
                f"data.vocab to {err.needed} or more (a few thousand is usual)."
            ) from None

    def _where(self, side: str) -> str:
        """Where the training text of ``side`` ("source" or "target") is read from, for messages."""
        p, i = self.paths, 0 if side == "source" else 1
        if p["tsv"]:
            return f"column {self.cols[i]} of {p['tsv']}"
        if p["jsonl"]:
            return f"the field {(self.turns_field or self.fields[i])!r} of {p['jsonl']}"
        return str(p[side]) if p[side] else "generated text"

    def setup(self, stage: str | None = None) -> None:
        """Only the tokenizers: the text is read when a split is first needed (a trained run never reads it)."""
        if self.target_tokenizer is None:
            self._train_tokenizers()

    def save_artifacts(self, run_dir: Path) -> None:
        self.setup()
        run_dir = Path(run_dir)
        if self.joint_vocab:
            self.target_tokenizer.save(run_dir / JOINT)
        else:
            self.source_tokenizer.save(run_dir / SOURCE)
            self.target_tokenizer.save(run_dir / TARGET)
        self.output_vocab = output_vocab.seen_pieces(self.encoded("train").targets)
        output_vocab.save(run_dir, self.output_vocab, self.target_tokenizer.vocab_size)

    early_artifacts = True

    def resume_from(self, run_dir: Path) -> None:
        files = [JOINT] if self.joint_vocab else [SOURCE, TARGET]
        if all((Path(run_dir) / f).is_file() for f in files):  # a run from before tokenizers were saved early has none
            self._load_tokenizers(Path(run_dir))

    def load_artifacts(self, run_dir: Path) -> None:
        """The tokenizers of a trained run; a missing one is named (the run cannot read text without it)."""
        run_dir = Path(run_dir)
        for name in [JOINT] if self.joint_vocab else [SOURCE, TARGET]:
            if not (run_dir / name).is_file():
                raise DataError(
                    f"{run_dir / name} is missing: the run {run_dir} cannot read text without the tokenizer it was "
                    "trained with. Restore the file from a copy of the run (a newly trained tokenizer would give "
                    "other pieces, which its weights would not fit)."
                )
        self._load_tokenizers(run_dir)
        self.output_vocab = output_vocab.load(run_dir, self.target_tokenizer.vocab_size)
        self._trained = True

    def _load_tokenizers(self, run_dir: Path) -> None:
        if self.joint_vocab:
            self.source_tokenizer = self.target_tokenizer = Tokenizer.load(run_dir / JOINT)
        else:
            self.source_tokenizer = Tokenizer.load(run_dir / SOURCE)
            self.target_tokenizer = Tokenizer.load(run_dir / TARGET)

    # -- splits ---------------------------------------------------------------------------------------------------
    def _encode(self, pairs: Pairs, split: str) -> EncodedPairs:
        src = [self.source_tokenizer.encode(s) for s, _ in pairs]
        tgt = [self.target_tokenizer.encode(t) for _, t in pairs]
        long = [i for i, s in enumerate(src) if len(s) > self.source_limit]
        if long:
            warnings.warn(self.cut_report(len(long), len(src), self._split_name(split, "sources", pairs[long[0]][0])),
                          UserWarning, stacklevel=3)
        long = [i for i, t in enumerate(tgt) if len(t) > self.target_cut]
        if long:
            warnings.warn(self._target_report(len(long), len(tgt), split, pairs[long[0]][1]), UserWarning,
                          stacklevel=3)
        keep_end = bool(self.turns_field)
        return EncodedPairs([_cut(s, self.source_limit, keep_end) for s in src], [t[: self.target_cut] for t in tgt])

    def _split_name(self, split: str, side: str, first: str) -> str:
        """E.g. "training sources"; for a trained run's validation data (``evaluate``), its file and the first."""
        if not self._trained:
            return f"{split} {side}"
        where = self.paths["val_path"] or "the validation split"
        return f"{side} of {where} (the first: {quote(first, 40)})"

    def _target_report(self, count: int, total: int, split: str, first: str) -> str:
        limit, option = self.target_limit
        were, they, are, their = _are(count)
        if self._trained:  # evaluate: the references are scored whole; only the loss reads the ids
            return (f"{count} of {total} {self._split_name(split, 'references', first)} {were} truncated for the "
                    f"loss and perplexity: {they} {are} longer than the {self.target_cut} pieces the run's decoder "
                    f"reads (BLEU and chrF score {'it' if count == 1 else 'them'} whole).")
        return (f"{count} of {total} {split} targets {were} truncated: {they} {are} longer than data.{option}={limit} "
                f"pieces, so only {their} first {limit} were kept. Raise data.{option} (and, for a Transformer, "
                "model.decoder.max_len to one more) to keep them whole.")

    def cut_report(self, count: int, total: int, what: str) -> str:
        """The warning that ``count`` of ``total`` ``what`` ("input lines (first: line 4)") were longer than the
        sources read: in a trained run's words (it was trained so), or in a training run's (the option to raise)."""
        limit, end = self.source_limit, "last" if self.turns_field else "first"
        were, they, are, their = _are(count)
        head = f"{count} of {total} {what} {were} truncated: {they} {are} longer than"
        if self._trained:
            encoder = f" and {positions('encoder', self._encoder)}" if limit < self.max_length else ""
            return (f"{head} the {limit} pieces this run reads, so only {their} {end} {limit} pieces were read (the "
                    f"run was trained with data.max_length={self.max_length}{encoder}).")
        return (f"{head} data.max_length={limit} pieces, so only {their} {end} {limit} were kept. Raise "
                "data.max_length (and, for a Transformer, model.encoder.max_len to match) to keep them whole.")

    def encoded(self, split: str) -> EncodedPairs:
        """The token ids of "train" or "val" (encoded once)."""
        if split not in self._sets:
            self.setup()
            self._sets[split] = self._encode(self._read(split), "training" if split == "train" else "validation")
        return self._sets[split]

    def context(self) -> DataContext:
        self.setup()
        src, tgt = self.source_tokenizer, self.target_tokenizer
        return DataContext(modality="tokens", encoder={"vocab_size": src.vocab_size, "pad_id": src.pad_id},
                           decoder={"vocab_size": tgt.vocab_size, "pad_id": tgt.pad_id, "shared_vocab": src is tgt})

    def describe(self) -> dict[str, Any]:
        self.setup()
        p = self.paths
        return {"source": p["tsv"] or p["jsonl"] or f"{p['source']} -> {p['target']}",
                "train": len(self.encoded("train")), "val": len(self.encoded("val")),
                "source_vocab": self.source_tokenizer.vocab_size, "target_vocab": self.target_tokenizer.vocab_size,
                "joint_vocab": self.joint_vocab}

    # -- loaders ----------------------------------------------------------------------------------------------------
    def _collate(self, items):
        t = self.target_tokenizer
        return collate(items, pad_id=t.pad_id, bos_id=t.bos_id, eos_id=t.eos_id)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        self._resume = (epoch, batches_done)

    def train_dataloader(self) -> DataLoader:
        train = self.encoded("train")
        sampler = TokenBatchSampler(train.lengths(), max_tokens=self.max_tokens, shuffle=True, seed=self.seed)
        if self._resume is not None:
            sampler.epoch, sampler.skip_batches = self._resume  # set_epoch(same epoch) keeps the skip
            self._resume = None
        batches = _WholeEpochs(sampler)
        return DataLoader(train, batch_sampler=batches, collate_fn=self._collate, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        val = self.encoded("val")
        sampler = TokenBatchSampler(val.lengths(), max_tokens=self.max_tokens, shuffle=False)  # by length: fast search
        return DataLoader(val, batch_sampler=sampler, collate_fn=self._collate, num_workers=self.num_workers)

    # -- the seq2seq protocol (hourglass.tasks.seq2seq) -----------------------------------------------------------
    def _split(self, stage: str) -> Pairs:
        if stage != "val":
            raise ValueError(f'only the "val" split is available, not {stage!r}')
        return self._read("val")

    def references(self, stage: str = "val") -> list[str]:
        return [t for _, t in self._split(stage)]

    def source_text(self, index: int, stage: str = "val") -> str:
        return self._split(stage)[index][0]

    def source_labels(self, index: int, stage: str = "val") -> list[str]:
        return self.item_labels(self.source_text(index, stage))

    def item_labels(self, item: str) -> list[str]:
        return _cut(self.source_tokenizer.pieces(item), self.source_limit, bool(self.turns_field))

    def encode_sources(self, items: Sequence[str]) -> Tensor:
        """Sentences -> (B, S) ids padded with pad_id; longer than ``source_limit``: truncated, with a warning (or
        put in the set of :meth:`collect_cuts`)."""
        self.setup()
        ids = [self.source_tokenizer.encode(s) for s in items]
        long = [item for item, s in zip(items, ids) if len(s) > self.source_limit]
        if long and self._cuts is not None:
            self._cuts.update(long)
        elif long:
            warnings.warn(self.cut_report(len(long), len(items), "sources"), UserWarning, stacklevel=2)
        pad_id = self.source_tokenizer.pad_id
        return pad([_cut(s, self.source_limit, bool(self.turns_field)) or [pad_id] for s in ids], pad_id)

    @contextlib.contextmanager
    def collect_cuts(self) -> Iterator[set[str]]:
        """While open, :meth:`encode_sources` puts the sources it truncates into the set it yields, instead of
        warning: a caller that encodes a stream a buffer at a time (``hourglass translate``) counts them over the
        whole stream, with their lines, and warns once (:meth:`cut_report`); it clears the set as it goes."""
        self._cuts = set()
        try:
            yield self._cuts
        finally:
            self._cuts = None
