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
trained run never reads its training files again to translate.

A sentence longer than ``max_length`` pieces is truncated with a warning (a count), never refused: the encoder's
and decoder's ``max_len`` must be at least ``max_length`` + 2 (bos and eos). ``max_target_length`` (default:
``max_length``) truncates the training and validation targets alone, as summarization does to keep teacher forcing
affordable (See et al. 2017 trained on the first 100 tokens of each summary); references stay whole. Training
batches hold sentences of similar length under a budget of ``max_tokens`` padded tokens (:class:`~hourglass.data.batching.TokenBatchSampler`).
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from hourglass._registry import register_dataset
from hourglass.data.base import DataModule
from hourglass.data.batching import TokenBatchSampler, collate, pad
from hourglass.data.dialogue import (TURN_SEPARATOR, Speaker, answerable, dialogue_context, dialogue_pairs,
                                     read_conversations, read_dialogues)
from hourglass.data.text import is_jsonl, read_jsonl, read_parallel, read_tsv
from hourglass.data.tokenizer import Tokenizer
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


def _truncate(seqs: list[list[int]], limit: int, what: str, option: str = "max_length", keep_end: bool = False
              ) -> list[list[int]]:
    """The first ``limit`` ids of each sequence (the last ones with ``keep_end``: a dialogue context keeps the
    turn being answered), with one warning that counts the truncated ones."""
    long = sum(len(s) > limit for s in seqs)
    if long:
        warnings.warn(f"{long} {what} longer than data.{option}={limit} pieces were truncated to it. Raise "
                      f"data.{option} (and the model's max_len) to keep them whole.", UserWarning, stacklevel=3)
    return [s[len(s) - limit:] if keep_end and len(s) > limit else s[:limit] for s in seqs]


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
class ParallelDataModule(DataModule):
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
        self.max_length, self.max_tokens, self.num_workers, self.seed = max_length, max_tokens, num_workers, seed
        # (limit, the option that sets it) for targets: named in the truncation warning
        self.target_limit = (max_target_length, "max_target_length") if max_target_length else (max_length,
                                                                                                "max_length")
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
        if not p["val_path"]:
            return None
        if p["val_ref"]:
            return read_parallel(p["val_path"], p["val_ref"])
        if is_jsonl(p["val_path"]):
            return self._read_jsonl(p["val_path"])
        return read_tsv(p["val_path"], *self.cols)

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
            joint = Tokenizer.train(lines, path_prefix=Path(self._tmp) / "tokenizer", **opts)
            self.source_tokenizer = self.target_tokenizer = joint
        else:
            self.source_tokenizer = Tokenizer.train([s for s, _ in train], path_prefix=Path(self._tmp) / "source", **opts)
            self.target_tokenizer = Tokenizer.train([t for _, t in train], path_prefix=Path(self._tmp) / "target", **opts)

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

    early_artifacts = True

    def resume_from(self, run_dir: Path) -> None:
        files = [JOINT] if self.joint_vocab else [SOURCE, TARGET]
        if all((Path(run_dir) / f).is_file() for f in files):  # a run from before tokenizers were saved early has none
            self.load_artifacts(run_dir)

    def load_artifacts(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        if self.joint_vocab:
            self.source_tokenizer = self.target_tokenizer = Tokenizer.load(run_dir / JOINT)
        else:
            self.source_tokenizer = Tokenizer.load(run_dir / SOURCE)
            self.target_tokenizer = Tokenizer.load(run_dir / TARGET)

    # -- splits ---------------------------------------------------------------------------------------------------
    def _encode(self, pairs: Pairs, split: str) -> EncodedPairs:
        src = _truncate([self.source_tokenizer.encode(s) for s, _ in pairs], self.max_length, f"{split} sources",
                        keep_end=bool(self.turns_field))
        limit, option = self.target_limit
        tgt = _truncate([self.target_tokenizer.encode(t) for _, t in pairs], limit, f"{split} targets", option)
        return EncodedPairs(src, tgt)

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
                "train": len(self.encoded("train")), "val": len(self.encoded("val")), "source_vocab": self.source_tokenizer.vocab_size,
                "target_vocab": self.target_tokenizer.vocab_size, "joint_vocab": self.joint_vocab}

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
        return self.source_tokenizer.pieces(item)[: self.max_length]

    def encode_sources(self, items: Sequence[str]) -> Tensor:
        """Sentences -> (B, S) ids padded with pad_id; longer than max_length: truncated, with a warning."""
        self.setup()
        ids = _truncate([self.source_tokenizer.encode(s) for s in items], self.max_length, "source sentence(s)",
                        keep_end=bool(self.turns_field))
        return pad([s or [self.source_tokenizer.pad_id] for s in ids], self.source_tokenizer.pad_id)
