"""nn.argmax: the same indices as torch.argmax, ties, infinities and NaN included, in every shape it is given."""
import pytest
import torch

from hourglass.nn.argmax import argmax, block_size


@pytest.mark.parametrize("shape", [(7, 4000), (3, 5, 4000), (1, 64), (2, 1000)])
def test_equals_torch_argmax_on_random_rows(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(argmax(x), x.argmax(-1))


def test_ties_give_the_first_index_as_torch_does():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 3, (64, 4000), generator=g).float()  # every row has its maximum hundreds of times
    x[5] = 0.0  # a row that is all one value: index 0
    x[6, 3999] = 9.0  # the maximum in the last block only
    assert torch.equal(argmax(x), x.argmax(-1))
    assert argmax(x)[5] == 0 and argmax(x)[6] == 3999


def test_infinities_and_nan_as_torch():
    x = torch.randn(4, 4000)
    x[0] = float("-inf")  # a row with no allowed token
    x[1, 17] = float("inf")
    x[2, 2500], x[2, 3000] = float("nan"), float("nan")  # torch's argmax answers the first NaN
    x[3, 2001] = float("inf")
    x[3, 2002] = float("nan")
    assert torch.equal(argmax(x), x.argmax(-1))
    assert argmax(x)[:3].tolist() == [0, 17, 2500]


def test_non_contiguous_and_no_block_size():
    x = torch.randn(4000, 6).t()  # (6, 4000), not contiguous
    assert torch.equal(argmax(x), x.argmax(-1))
    y = torch.randn(5, 4001)  # 4001 = 4001 (prime): no block size, torch's argmax
    assert block_size(4001, 2) is None
    assert torch.equal(argmax(y), y.argmax(-1))
    assert argmax(torch.zeros(0, 4000)).shape == (0,)


def test_block_size_prefers_multiples_of_16_and_enough_blocks():
    assert block_size(4000) == 160  # 250 and 200 divide 4000 too, but are not multiples of 16
    assert block_size(4000, 30) == 80  # 160 leaves 25 blocks; 125 and 100 are not multiples of 16
    assert block_size(100) == 100  # no multiple of 16 divides it: the largest divisor
    assert block_size(100, 3) is None  # 50 leaves 2 blocks only


def test_nan_and_inf_in_different_blocks_and_low_precision():
    x = torch.randn(3, 4000)
    x[0, 100], x[0, 3900] = float("inf"), float("nan")  # the NaN wins, in a later block
    x[1, 3900], x[1, 100] = float("inf"), float("nan")  # the NaN wins, in an earlier block
    x[2, 50], x[2, 3950] = float("inf"), float("inf")  # two infinities: the first
    assert argmax(x).tolist() == x.argmax(-1).tolist() == [3900, 100, 50]
    for dtype in (torch.bfloat16, torch.float16):  # autocast logits; ties are frequent at this precision
        y = torch.randn(16, 4000, generator=torch.Generator().manual_seed(2)).to(dtype)
        assert torch.equal(argmax(y), y.argmax(-1))


def test_a_slice_of_the_time_axis_as_scheduled_sampling_takes_it():
    logits = torch.randn(4, 7, 4000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(argmax(logits[:, :-1]), logits[:, :-1].argmax(-1))
    assert torch.equal(argmax(logits)[:, :-1], logits[:, :-1].argmax(-1))
