"""Batches of sentences of similar length under a token budget, and the collate that pads them.

:class:`TokenBatchSampler` follows fairseq's recipe (Ott et al. 2019): sort the examples by length, with ties
broken at random each epoch, cut the sorted list into batches whose padded size ``batch_size * longest``
stays within ``max_tokens``, then shuffle the order of the batches. Sentences of similar length share a batch,
so little compute goes to padding, and a batch of short sentences holds more of them than one of long ones.

The batches depend only on (seed, epoch). Because ties are broken among equal lengths only, the sequence of
lengths being packed, hence the number of batches, is the same in every epoch. ``skip_batches`` makes the next
iteration start after that many batches, for an exact resume in the middle of an epoch; it applies once.
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from hourglass.data.sampler import rank_and_world, shard
from hourglass.errors import ConfigError


class TokenBatchSampler(Sampler[list[int]]):
    """Length-bucketed batches of example indices with at most ``max_tokens`` padded tokens each.

    ``lengths[i]`` is the cost of example i in tokens: the longer of its source and target, counting the bos and
    eos that :func:`collate` adds. Use it as a DataLoader's ``batch_sampler``; Lightning calls ``set_epoch``.
    """

    def __init__(self, lengths: Sequence[int], *, max_tokens: int, shuffle: bool = True, seed: int = 0) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ValueError("lengths must be a non-empty sequence of ints, one per example")
        longest = int(self.lengths.max())
        if longest > max_tokens:
            raise ConfigError(
                f"max_tokens={max_tokens} is smaller than the longest example ({longest} tokens, example "
                f"{int(self.lengths.argmax())}), which could then be in no batch. Raise data.max_tokens to "
                f"{longest} or more, or lower data.max_length so that long sentences are truncated."
            )
        self.max_tokens, self.shuffle, self.seed = max_tokens, shuffle, seed
        self.epoch = 0
        self.skip_batches = 0
        self._count = len(self._pack(np.argsort(self.lengths, kind="stable")))

    def set_epoch(self, epoch: int) -> None:
        """Called at each epoch start. A new epoch starts from its first batch; the same one keeps the skip."""
        if epoch != self.epoch:
            self.skip_batches = 0
        self.epoch = epoch

    def _pack(self, order: np.ndarray) -> list[list[int]]:
        """Cut indices sorted by length into consecutive batches within the token budget."""
        batches, current, longest = [], [], 0
        for i in order.tolist():
            size = int(self.lengths[i])
            if current and (len(current) + 1) * max(longest, size) > self.max_tokens:
                batches.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, size)
        if current:
            batches.append(current)
        return batches

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of ``epoch`` (default: the current one), in order, ignoring ``skip_batches``."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return self._pack(np.argsort(self.lengths, kind="stable"))
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.lengths))
        order = perm[np.argsort(self.lengths[perm], kind="stable")]  # by length, ties in random order
        batches = self._pack(order)
        return [batches[j] for j in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip_batches = self.skip_batches, 0
        return iter(shard(self.batches(), *rank_and_world())[skip:])  # under DDP, this process's share

    def __len__(self) -> int:
        """The number of batches the next iteration yields (in this process)."""
        return max(math.ceil(self._count / rank_and_world()[1]) - self.skip_batches, 0)


class TextExample(NamedTuple):
    """One example: its position in the split, and its source and target ids (without bos and eos)."""

    index: int
    source: Sequence[int]
    target: Sequence[int]


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> Tensor:
    """Lists of ids -> (B, longest) long, padded on the right."""
    out = torch.full((len(sequences), max((len(s) for s in sequences), default=0)), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out


def collate(examples: Sequence[TextExample], *, pad_id: int, bos_id: int, eos_id: int,
            source_eos: bool = False) -> dict[str, Tensor]:
    """(index, source ids, target ids) examples -> the seq2seq batch dict (see ``hourglass.tasks.seq2seq``):

    - ``source`` (B, S) long, padded with ``pad_id``; with ``source_eos``, each source ends with eos;
    - ``target`` (B, T) long: bos, the target ids, eos, then ``pad_id`` (decoder input ``target[:, :-1]``,
      labels ``target[:, 1:]``);
    - ``index`` (B,) long.

    Use ``functools.partial(collate, pad_id=..., bos_id=..., eos_id=...)`` as a DataLoader's ``collate_fn``.
    """
    sources = [[*e.source, eos_id] if source_eos else list(e.source) for e in map(TextExample._make, examples)]
    targets = [[bos_id, *e.target, eos_id] for e in map(TextExample._make, examples)]
    index = torch.tensor([int(e[0]) for e in examples], dtype=torch.long)
    return {"source": pad(sources, pad_id), "target": pad(targets, pad_id), "index": index}
