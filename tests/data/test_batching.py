"""Token-budget batches: every example once, within budget, bucketed by length, reproducible, resumable."""
from __future__ import annotations

import functools

import pytest
import torch
from torch.utils.data import DataLoader

from hourglass.data.batching import TextExample, TokenBatchSampler, collate
from hourglass.errors import ConfigError


def _lengths(n: int = 500, seed: int = 0) -> list[int]:
    return torch.randint(1, 40, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_every_example_once_and_every_batch_within_the_budget() -> None:
    lengths = _lengths()
    sampler = TokenBatchSampler(lengths, max_tokens=200, seed=0)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert all(len(b) * max(lengths[i] for i in b) <= 200 for b in batches)
        assert len(batches) == len(sampler)


def test_batches_are_length_buckets() -> None:
    lengths = _lengths()
    batches = TokenBatchSampler(lengths, max_tokens=200, seed=3).batches()
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:])), "length ranges must not overlap"
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.1 * sum(lengths), "sorting by length should leave little padding"


def test_order_depends_only_on_seed_and_epoch() -> None:
    lengths = _lengths()
    a, b = TokenBatchSampler(lengths, max_tokens=200, seed=1), TokenBatchSampler(lengths, max_tokens=200, seed=1)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    assert a.batches(epoch=4) != a.batches(epoch=5)
    assert a.batches(epoch=4) != TokenBatchSampler(lengths, max_tokens=200, seed=2).batches(epoch=4)
    assert len({len(a.batches(epoch=e)) for e in range(5)}) == 1, "the batch count must not change by epoch"


def test_without_shuffle_batches_follow_length_order() -> None:
    lengths = [5, 1, 3, 1, 4]
    batches = TokenBatchSampler(lengths, max_tokens=8, shuffle=False).batches()
    assert batches == [[1, 3], [2, 4], [0]]  # 3 x 3 > 8 closes the first batch; 2 x 4 fits


def test_skipping_batches_resumes_an_epoch_exactly() -> None:
    lengths = _lengths()
    full = TokenBatchSampler(lengths, max_tokens=150, seed=7)
    full.set_epoch(2)
    expected = list(full)
    resumed = TokenBatchSampler(lengths, max_tokens=150, seed=7)  # a fresh process after a kill
    resumed.set_epoch(2)
    resumed.skip_batches = 5
    resumed.set_epoch(2)  # Lightning calls set_epoch again at the epoch start: the skip must survive it
    assert len(resumed) == len(expected) - 5
    assert list(resumed) == expected[5:]
    assert list(resumed) == expected, "the skip applies once"
    resumed.skip_batches = 5
    resumed.set_epoch(3)
    assert resumed.skip_batches == 0 and len(list(resumed)) == len(expected), "a new epoch starts at its beginning"


def test_an_example_longer_than_the_budget_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"max_tokens=10 is smaller than the longest example \(12 tokens"):
        TokenBatchSampler([3, 12, 4], max_tokens=10)


def test_collate_pads_and_frames_targets() -> None:
    batch = collate([TextExample(7, [5, 6, 7], [8]), (9, [5], [8, 9, 10])], pad_id=0, bos_id=2, eos_id=3)
    assert batch["source"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["target"].tolist() == [[2, 8, 3, 0, 0], [2, 8, 9, 10, 3]]
    assert batch["index"].tolist() == [7, 9]
    assert batch["source"].dtype == batch["target"].dtype == torch.long
    with_eos = collate([(0, [5, 6], [8])], pad_id=0, bos_id=2, eos_id=3, source_eos=True)
    assert with_eos["source"].tolist() == [[5, 6, 3]]


def test_a_dataloader_with_the_sampler_and_collate() -> None:
    g = torch.Generator().manual_seed(0)
    examples = [TextExample(i, torch.randint(4, 20, (n,), generator=g).tolist(), [4] * (n // 2 + 1))
                for i, n in enumerate(_lengths(100))]
    lengths = [max(len(e.source), len(e.target) + 2) for e in examples]
    loader = DataLoader(examples, batch_sampler=TokenBatchSampler(lengths, max_tokens=128, seed=0),
                        collate_fn=functools.partial(collate, pad_id=0, bos_id=2, eos_id=3))
    seen = []
    for batch in loader:
        assert batch["source"].numel() <= 128 and batch["target"].numel() <= 128
        assert (batch["target"][:, 0] == 2).all()
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(100))


@pytest.mark.parametrize("n, world", [(10, 4), (12, 3), (7, 1)])
def test_shards_split_an_epoch_evenly_over_processes(n: int, world: int) -> None:
    from hourglass.data.sampler import shard

    parts = [shard(list(range(n)), rank, world) for rank in range(world)]
    assert {len(p) for p in parts} == {-(-n // world)}  # the same step count in every process
    assert set().union(*parts) == set(range(n))  # every example, the padding repeating the first ones


def test_under_ddp_each_process_resumes_exactly_its_own_share(monkeypatch) -> None:
    import hourglass.data.batching as batching
    import hourglass.data.sampler as sampler_module
    from hourglass.data.sampler import ResumableSampler

    lengths = _lengths(300)
    for rank in (0, 1):
        for module in (sampler_module, batching):
            monkeypatch.setattr(module, "rank_and_world", lambda rank=rank: (rank, 2))
        images = ResumableSampler(101, seed=3)
        images.set_epoch(2)
        full = list(images)
        assert len(images) == len(full) == 51
        images.resume_at(2, 20)  # this process had consumed 20 of its samples
        assert list(images) == full[20:]
        text = TokenBatchSampler(lengths, max_tokens=200, seed=1)
        text.set_epoch(1)
        batches = list(text)
        assert len(batches) == -(-len(text.batches()) // 2)
        text.skip_batches = 3
        assert list(text) == batches[3:]
    monkeypatch.undo()
    whole = ResumableSampler(101, seed=3)
    whole.set_epoch(2)
    order = list(whole)
    assert full == (order + order[:1])[1::2]  # rank 1's share of the one-process order
