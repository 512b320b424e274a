"""Attention modules: shapes, masking, precomputed keys, coverage, and errors at build time."""
from __future__ import annotations

import pytest
import torch

from hourglass.attention import AdditiveAttention, make_attention, masked_softmax
from hourglass.errors import ConfigError

KINDS = ["bahdanau", "dot", "general"]


def _inputs(b: int = 3, s: int = 6, d: int = 8, h: int = 8):
    torch.manual_seed(0)
    memory = torch.randn(b, s, d)
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 1:] = False
    return torch.randn(b, h), memory, mask


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_weights_sum_to_one_and_padding_gets_zero(kind: str) -> None:
    query, memory, mask = _inputs()
    attention = make_attention(kind, 8, 8)
    context, weights = attention(query, memory, mask)
    assert context.shape == (3, 8) and weights.shape == (3, 6)
    assert torch.allclose(weights.sum(-1), torch.ones(3))
    assert (weights[~mask] == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_padding_values_do_not_change_the_context(kind: str) -> None:
    query, memory, mask = _inputs()
    attention = make_attention(kind, 8, 8)
    noisy = memory.masked_fill(~mask.unsqueeze(-1), 1e3)
    assert torch.allclose(attention(query, memory, mask)[0], attention(query, noisy, mask)[0], atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_many_queries_equal_one_query_at_a_time(kind: str) -> None:
    _, memory, mask = _inputs()
    queries = torch.randn(3, 4, 8)  # (B, T, H)
    attention = make_attention(kind, 8, 8)
    context, weights = attention(queries, memory, mask)
    assert context.shape == (3, 4, 8) and weights.shape == (3, 4, 6)
    for t in range(4):
        c, w = attention(queries[:, t], memory, mask)
        assert torch.allclose(c, context[:, t], atol=1e-6) and torch.allclose(w, weights[:, t], atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_precomputed_keys_give_the_same_result(kind: str) -> None:
    query, memory, mask = _inputs()
    attention = make_attention(kind, 8, 8)
    keys = attention.keys(memory)
    for a, b in zip(attention(query, memory, mask), attention(query, memory, mask, keys=keys)):
        assert torch.equal(a, b)


def test_query_and_memory_sizes_may_differ_except_for_dot() -> None:
    query, memory, mask = _inputs(d=10, h=4)
    for kind in ("bahdanau", "general"):
        context, _ = make_attention(kind, 4, 10)(query, memory, mask)
        assert context.shape == (3, 10)
    with pytest.raises(ConfigError, match="hidden"):
        make_attention("dot", 4, 10)


def test_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bahdanau"):
        make_attention("luong", 4, 4)  # type: ignore[arg-type]


def test_an_all_padding_row_gives_zero_weights_not_nan() -> None:
    scores = torch.randn(2, 5)
    mask = torch.tensor([[True, True, False, False, False], [False] * 5])
    weights = masked_softmax(scores, mask)
    assert not weights.isnan().any()
    assert weights[1].abs().sum() == 0 and torch.isclose(weights[0].sum(), torch.tensor(1.0))


def test_masked_softmax_is_the_same_with_and_without_autograd_and_keeps_a_tensor_autograd_needs() -> None:
    """Without a gradient the scores are masked in place (they are the caller's scratch); with one, they are
    left as they are, since autograd may need them."""
    scores = torch.randn(2, 3, 5)
    mask = torch.tensor([[True, True, False, True, False], [False] * 5]).unsqueeze(1)  # (2, 1, 5)
    tracked = scores.clone().requires_grad_(True)
    with_grad = masked_softmax(tracked, mask)
    assert torch.equal(tracked.detach(), scores), "the scores autograd keeps must not change"
    with torch.no_grad():
        without = masked_softmax(scores.clone(), mask)
    assert torch.equal(with_grad.detach(), without) and without[1].abs().sum() == 0
    plain = scores.clone()  # autograd on, but nothing to keep: the in-place path
    assert torch.equal(masked_softmax(plain, mask), without)
    with_grad.sum().backward()
    assert torch.equal(masked_softmax(scores.clone(), None), torch.softmax(scores, -1))


def test_gradients_reach_query_and_memory() -> None:
    query, memory, mask = _inputs()
    query.requires_grad_(True)
    memory.requires_grad_(True)
    for kind in KINDS:
        context, _ = make_attention(kind, 8, 8)(query, memory, mask)
        context.sum().backward()
    assert query.grad.abs().sum() > 0 and memory.grad.abs().sum() > 0
    assert (memory.grad[~mask] == 0).all(), "padding must receive no gradient"


def test_coverage_moves_attention_away_from_covered_positions() -> None:
    query, memory, mask = _inputs()
    attention = AdditiveAttention(query_dim=8, memory_dim=8, coverage=True)
    with torch.no_grad():
        attention.coverage_proj.weight.fill_(-1.0)  # (See et al. 2017): covered words score lower
        attention.v.weight.fill_(1.0)
    coverage = torch.zeros(3, 6)
    _, before = attention(query, memory, mask, coverage=coverage)
    coverage[0, 0] = 5.0
    _, after = attention(query, memory, mask, coverage=coverage)
    assert after[0, 0] < before[0, 0]
    with pytest.raises(ValueError, match="coverage"):
        attention(query, memory, mask)


@pytest.mark.parametrize("coverage", [False, True])
def test_additive_weights_equal_the_tanh_formula_with_and_without_grad(coverage: bool) -> None:
    """The sigmoid form gives Bahdanau's weights: softmax_j(v^T tanh(W_q s + W_m m_j [+ w_c cov_j]))."""
    torch.manual_seed(0)
    attention = AdditiveAttention(query_dim=6, memory_dim=5, hidden=7, coverage=coverage)
    query, memory = torch.randn(3, 4, 6), torch.randn(3, 9, 5)
    mask = torch.arange(9) < torch.tensor([9, 5, 1]).unsqueeze(1)  # (3, 9)
    cov = torch.rand(3, 9) if coverage else None
    hidden = attention.query_proj(query).unsqueeze(2) + attention.memory_proj(memory).unsqueeze(1)  # (3, 4, 9, 7)
    if coverage:
        hidden = hidden + attention.coverage_proj(cov.unsqueeze(-1)).unsqueeze(1)
    expected = masked_softmax(attention.v(torch.tanh(hidden)).squeeze(-1), mask.unsqueeze(1))  # (3, 4, 9)
    _, weights = attention(query, memory, mask, coverage=cov)
    with torch.no_grad():
        _, in_place = attention(query, memory, mask, coverage=cov)
    assert torch.allclose(weights, expected, atol=1e-6) and torch.allclose(weights.detach(), in_place, atol=1e-7)


@pytest.mark.parametrize("form", ["sigmoid", "coverage", "factored"])
@pytest.mark.parametrize("seed", range(4))
def test_additive_scores_of_a_sentence_do_not_depend_on_its_batch(monkeypatch, form: str, seed: int) -> None:
    """Without a gradient the score runs in pieces of a few sentences, with a row-by-row dot product: given its
    query and key projections (A a multiple of the vector width), a sentence's scores are the same bits alone,
    in a batch, and whatever the pieces. A matrix product for the dot rounded a row differently with the
    number of rows around it. The same holds for the factored form, whose exponentials are taken whole."""
    import hourglass.attention as attention_module

    torch.manual_seed(seed)
    a, s, t = 32, 9, 5
    coverage = form == "coverage"
    attention = AdditiveAttention(query_dim=6, memory_dim=5, hidden=a, coverage=coverage)
    q, keys = torch.randn(7, t, a), torch.randn(7, s, a)  # the projections 2 W_q s_i and 2 W_m m_j
    cov = torch.rand(7, 1, s, 1) if coverage else None
    if form == "factored":  # as keys() hands them over: [2 W_m m_j ; exp(-2 W_m m_j)]
        keys = torch.cat([keys, torch.exp(-keys)], -1)  # (7, S, 2A)
    with torch.no_grad():
        whole = attention._score_in_pieces(q, keys, cov)  # (7, T, S)
        alone = [attention._score_in_pieces(q[i:i + 1], keys[i:i + 1], None if cov is None else cov[i:i + 1])
                 for i in range(7)]
        monkeypatch.setattr(attention_module, "CHUNK", 2 * t * s * a)  # pieces of two sentences
        pieces = attention._score_in_pieces(q, keys, cov)
    assert torch.equal(whole, torch.cat(alone)) and torch.equal(whole, pieces)
    half_tanh = torch.sigmoid(q.unsqueeze(2) + keys[..., :a].unsqueeze(1)
                              + (0 if cov is None else 2 * attention.coverage_proj(cov))) - 0.5
    assert torch.allclose(whole, attention.v(2 * half_tanh).squeeze(-1), atol=1e-5)  # Bahdanau's score


def test_additive_weights_under_bfloat16_autocast_stay_close_to_float32() -> None:
    """The score carries no offset (such as sum(v)) that bfloat16 would round coarsely."""
    torch.manual_seed(0)
    attention = AdditiveAttention(query_dim=64, memory_dim=32, hidden=64)
    with torch.no_grad():
        attention.v.weight.abs_().mul_(8)  # a large sum(v), as trained models can have
        query, memory, mask = torch.randn(8, 1, 64), torch.randn(8, 20, 32), torch.ones(8, 20, dtype=torch.bool)
        _, reference = attention(query, memory, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, low = attention(query, memory, mask)
    assert low.dtype == torch.bfloat16 and (low.float() - reference).abs().max() < 0.03


def test_additive_keys_carry_their_exponentials_only_where_the_factored_score_is_used() -> None:
    """Without a gradient, float32 keys are [2 W_m m_j ; exp(-2 W_m m_j)], so that a search step takes no
    exponential per (query, source position) pair; with a gradient, under bfloat16, or with coverage they are
    2 W_m m_j alone. Beyond EXP_BOUND the exponential is NaN, the mark that sends a sentence to the sigmoid form."""
    import hourglass.attention as attention_module

    torch.manual_seed(0)
    attention = AdditiveAttention(query_dim=6, memory_dim=5, hidden=16)
    memory = torch.randn(3, 4, 5)
    with torch.no_grad():
        keys = attention.keys(memory)
        assert keys.shape == (3, 4, 32) and torch.equal(keys[..., 16:], torch.exp(-keys[..., :16]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert attention.keys(memory).shape == (3, 4, 16)
        assert AdditiveAttention(query_dim=6, memory_dim=5, hidden=16, coverage=True).keys(memory).shape[-1] == 16
        large = attention.keys(memory * 1e3)
        beyond = large[..., :16].abs() > attention_module.EXP_BOUND
        assert beyond.any() and large[..., 16:][beyond].isnan().all() and not large[..., 16:][~beyond].isnan().any()
    assert attention.keys(memory).shape[-1] == 16  # autograd records it
    assert attention_module.EXP_BOUND < 88  # exp(80) and exp(-80) are finite, normal float32 numbers


def test_factored_additive_weights_equal_the_tanh_formula() -> None:
    """1 / (1 + exp(-q) exp(-k)) is sigmoid(q + k): without a gradient the weights match Bahdanau's formula."""
    torch.manual_seed(1)
    attention = AdditiveAttention(query_dim=6, memory_dim=5, hidden=16)
    query, memory = torch.randn(4, 3, 6), torch.randn(4, 7, 5)
    mask = torch.arange(7) < torch.tensor([7, 5, 2, 1]).unsqueeze(1)  # (4, 7)
    with torch.no_grad():
        assert attention.keys(memory).shape[-1] == 32  # the factored form is the one tested
        hidden = attention.query_proj(query).unsqueeze(2) + attention.memory_proj(memory).unsqueeze(1)
        expected = masked_softmax(attention.v(torch.tanh(hidden)).squeeze(-1), mask.unsqueeze(1))  # (4, 3, 7)
        _, weights = attention(query, memory, mask)
    assert torch.allclose(weights, expected, atol=1e-6)


def test_a_sentence_beyond_the_bound_takes_the_sigmoid_form_and_leaves_the_others_alone() -> None:
    """exp(89) overflows float32: a factored score would give sigmoid(-89 + 80) = 1.2e-4 as exactly 0. So a
    sentence with a query or a key beyond EXP_BOUND is scored in the sigmoid form, right, and the other
    sentences of its batch keep the factored form: their scores are the same bits as alone."""
    from hourglass.attention import _bounded_exp_neg

    torch.manual_seed(0)
    attention = AdditiveAttention(query_dim=2, memory_dim=2, hidden=16)
    k = torch.randn(3, 3, 16)
    k[0] = 80.0  # 2 W_m m, within the bound
    k[2, 1] = -85.0  # beyond it: exp(85) is finite, but the mark sends sentence 2 to the sigmoid form
    q = torch.randn(3, 4, 16)  # T = 4 queries per sentence: the factored form applies
    q[0, 1] = -89.0  # 2 W_q s, beyond the bound
    keys = torch.cat([k, _bounded_exp_neg(k)], -1)  # as keys() hands them over
    with torch.no_grad():
        attention.v.weight.fill_(1.0)
        scores = attention._score_in_pieces(q, keys, None)  # (3, 4, 3)
        alone = attention._score_in_pieces(q[1:2], keys[1:2], None)
        sigmoid_form = attention._pieces(q, k, None, factored=False)
    expected = (2 * torch.sigmoid(torch.tensor(-9.0)) - 1) * 16  # v^T tanh((q + k) / 2), v = 1
    assert torch.allclose(scores[0, 1], expected.expand(3), rtol=1e-6)
    assert torch.equal(scores[0], sigmoid_form[0]) and torch.equal(scores[2], sigmoid_form[2])
    assert torch.equal(scores[1:2], alone) and not scores.isnan().any()


def test_torch_exp_rounds_alike_in_its_vector_and_scalar_code() -> None:
    """The factored additive score takes exp over whole tensors and relies on this: a number's exponential is
    the same bits wherever it sits (a strided input goes through the scalar loop, a contiguous one through the
    vector loop). torch's sigmoid does not have this property (on one AVX2 CPU, about 4% of numbers differed
    between its two loops)."""
    torch.manual_seed(0)
    x = (torch.rand(1 << 21) * 2 - 1) * 80  # the range EXP_BOUND allows
    strided = torch.stack([x, x], 1).reshape(-1)[::2]  # the same numbers, stride 2
    assert torch.equal(torch.exp(strided), torch.exp(x))


@pytest.mark.parametrize("shape", [(2, 3, 0), (0, 3, 4), (2, 0, 4)])  # (B, T, S): no position, sentence, query
def test_additive_attention_takes_empty_inputs_with_and_without_a_gradient(shape: tuple[int, int, int]) -> None:
    b, t, s = shape
    attention = AdditiveAttention(query_dim=6, memory_dim=5, hidden=16)
    query, memory, mask = torch.randn(b, t, 6), torch.randn(b, s, 5), torch.ones(b, s, dtype=torch.bool)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            context, weights = attention(query, memory, mask)
        assert context.shape == (b, t, 5) and weights.shape == (b, t, s)
