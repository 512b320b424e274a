"""A shuffling sampler that can resume in the middle of an epoch, also under DDP.

Its order depends only on (seed, epoch), and ``resume_at(epoch, samples_done)`` makes the next iteration skip
what an interrupted run already consumed, so a killed-and-resumed run sees exactly the batches of an
uninterrupted one. (Lightning restores loop progress but not a plain sampler's position; torchdata's
StatefulDataLoader would, at the price of another dependency and pickled state.)

Under DDP each process takes its own share of the epoch (:func:`shard`, as torch's DistributedSampler does
without shuffling), and the skip counts that process's own samples, so a resume is exact there too. The
trainer therefore runs with ``use_distributed_sampler=False``: Lightning's wrapper would shard the
already-skipped order again.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

T = TypeVar("T")


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside DDP)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Every ``world``-th item from ``rank`` on, after repeating the first items so that every process gets
    ``ceil(len / world)`` of them (DDP needs the same number of steps everywhere)."""
    items = list(items)
    if world == 1 or not items:
        return items
    padded = items + (items * world)[: -len(items) % world]
    return padded[rank::world]


class ResumableSampler(Sampler[int]):
    def __init__(self, n: int, *, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start; a new epoch starts from its beginning."""
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def resume_at(self, epoch: int, samples_done: int) -> None:
        self.epoch, self._skip = epoch, samples_done

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        skip, self._skip = self._skip, 0
        return iter(shard(order, *rank_and_world())[skip:])

    def __len__(self) -> int:
        return math.ceil(self.n / rank_and_world()[1])
