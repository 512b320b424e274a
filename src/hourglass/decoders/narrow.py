"""A sequence decoder narrowed to a shortlist of its vocabulary: search over the pieces a target can hold.

A joint vocabulary (one SentencePiece model for German and English, so that names and numbers share pieces) gives
the decoder an output row for every piece of both languages, but English targets use only some of them: on
Multi30k, 2,203 of 4,000. The others never occur as a target, so training gives them no probability beyond
label smoothing's uniform share, yet every search step pays for them in the output layer and its log-softmax,
which are most of a beam-search row's work. A narrowed decoder keeps only the shortlist's rows of its embedding
and output layer (tied or not) and numbers the pieces 0..V'-1 in shortlist order; the search runs on it as on any
decoder, and :class:`Shortlist` maps ids in (bos, eos) and out (the hypotheses). Mathematically it is the same as
setting the other pieces' logits to -inf: the log-softmax renormalizes over the shortlist.

This is the static form of a vocabulary shortlist (Marian's lexical shortlists and CTranslate2's vocabulary map
pick one per sentence from the source words; here one list for the run). A decoder opts in with
``narrow_vocabulary``; the pointer decoders do not, since they copy source ids from the whole vocabulary.

The narrowed decoder is a shallow copy that shares every other module (and its own parameter and hook dicts) with
the original, which is untouched, so a decoder that keeps training is never narrowed behind its back. It is made
for one search and dropped: calling ``.train()``, ``.to()`` or registering a hook on it would reach the shared
modules of the original. A copy costs one gather of V' rows (two when the embedding and output are not tied).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # hourglass.search imports the decoders' base module
    from hourglass.search import Hypotheses

#: A shortlist of two blocks or more is padded with further pieces to a multiple of this: a vocabulary width with a
#: divisor from 32 to 256 keeps the block-maxima argmax and top-k (nn/argmax.py, search._block_topk), which a
#: prime width would lose (they need two blocks: a shorter list does not use them).
MULTIPLE = 32


def shortlist_ids(seen: Sequence[int], vocab_size: int, keep: Sequence[int]) -> Tensor:
    """The sorted ids to keep: ``seen`` (the pieces of the training targets) and ``keep`` (bos, eos), padded with
    the lowest other ids up to a multiple of :data:`MULTIPLE` (at most the whole vocabulary)."""
    chosen = set(seen) | set(keep)
    want = len(chosen) if len(chosen) < 2 * MULTIPLE else min(vocab_size, -(-len(chosen) // MULTIPLE) * MULTIPLE)
    extra = (i for i in range(vocab_size) if i not in chosen)
    while len(chosen) < want:
        chosen.add(next(extra))
    return torch.tensor(sorted(chosen), dtype=torch.long)


def with_modules(root: nn.Module, replacements: dict[str, nn.Module]) -> nn.Module:
    """A shallow copy of ``root`` with the submodules at the dotted paths of ``replacements`` swapped; the copies
    along each path share everything else with the originals, which are not changed."""
    clone = copy.copy(root)
    clone._modules = dict(root._modules)
    nested: dict[str, dict[str, nn.Module]] = {}
    for path, module in replacements.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = module
        else:
            clone._modules[head] = module
    for head, inner in nested.items():
        clone._modules[head] = with_modules(root._modules[head], inner)
    return clone


def narrow_modules(decoder: nn.Module, ids: Tensor, *, embedding: str, output: str) -> nn.Module:
    """``decoder`` with its token embedding (an ``nn.Embedding`` at the path ``embedding``) and output layer (an
    ``nn.Linear`` at ``output``) cut to the rows ``ids`` (V',); a tied pair stays tied. For search only: the new
    weights do not train."""
    emb, out = decoder.get_submodule(embedding), decoder.get_submodule(output)
    ids = ids.to(emb.weight.device)
    with torch.no_grad():
        rows = emb.weight.index_select(0, ids)  # (V', E)
        narrow_emb = nn.Embedding.from_pretrained(rows, freeze=True)
        narrow_out = nn.Linear(out.in_features, ids.numel(), bias=out.bias is not None, device="meta")
        narrow_out.weight = (narrow_emb.weight if out.weight is emb.weight else  # tied: one (V', E) matrix
                             nn.Parameter(out.weight.index_select(0, ids), requires_grad=False))
        if out.bias is not None:
            narrow_out.bias = nn.Parameter(out.bias.index_select(0, ids), requires_grad=False)
    return with_modules(decoder, {embedding: narrow_emb, output: narrow_out})


@dataclass(frozen=True)
class Shortlist:
    """A narrowed decoder and its ids: search with ``decoder`` and ``bos``/``eos`` (narrowed ids), then
    :meth:`widen` the hypotheses back to the vocabulary's ids."""

    decoder: nn.Module
    ids: list[int]  # narrowed id i is vocabulary id ids[i]
    bos: int
    eos: int

    def widen(self, hyps: Hypotheses) -> Hypotheses:
        ids = self.ids
        tokens = [[[ids[t] for t in tokens] for tokens in nbest] for nbest in hyps.tokens]
        return dataclasses.replace(hyps, tokens=tokens)


def narrow(decoder: nn.Module, ids: Tensor, *, bos: int, eos: int) -> Shortlist | None:
    """``decoder`` (a SequenceDecoder) narrowed to ``ids`` (sorted, holding bos and eos), or None when it declines
    (a pointer decoder)."""
    narrowed = decoder.narrow_vocabulary(ids)
    if narrowed is None:
        return None
    listed = ids.tolist()
    return Shortlist(decoder=narrowed, ids=listed, bos=listed.index(bos), eos=listed.index(eos))
