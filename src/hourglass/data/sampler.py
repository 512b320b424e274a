"""A shuffling sampler that can resume in the middle of an epoch.

Its order depends only on (seed, epoch), and ``resume_at(epoch, samples_done)`` makes the next iteration skip
what an interrupted run already consumed, so a killed-and-resumed run sees exactly the batches of an
uninterrupted one. (Lightning restores loop progress but not a plain sampler's position; torchdata's
StatefulDataLoader would, at the price of another dependency and pickled state.)
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


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
        return iter(order[skip:])

    def __len__(self) -> int:
        return self.n
