"""Sequence-to-sequence: any encoder, a :class:`~hourglass.decoders.base.SequenceDecoder`, token targets.

The task is generic over the SOURCE modality. Translation feeds it token ids, captioning feeds it images; the
task only hands ``batch["source"]`` to ``model.encode`` and never looks inside. Everything text-specific about
the source lives in the data module.

Batches
-------
A batch is a dict::

    {"source": Tensor (B, S) long (token ids, padded) | (B, C, H, W) float (images) | anything model.encode reads,
     "target": Tensor (B, T) long = [bos, y_1, ..., y_n, eos, pad, ...] in a Tokenizer's ids (pad = 0),
     "index":  Tensor (B,) long: each example's position in its split (for references and examples)}

The data-module protocol (:class:`Seq2SeqData`)
-----------------------------------------------
On top of :class:`~hourglass.data.base.DataModule` (``context``, ``save_artifacts``, ...), a data module for
this task provides:

- ``target_tokenizer``: a :class:`~hourglass.data.tokenizer.Tokenizer` (``pad_id``, ``bos_id``, ``eos_id``,
  ``vocab_size``, ``decode``, ``pieces``) for the decoder side; ``context().decoder`` holds its ``vocab_size``
  and ``pad_id``.
- ``val_dataloader()``: the validation split, in a fixed order, batches as above.
- ``references(stage="val") -> list[str] | list[list[str]]``: the detokenized reference(s) of every example of
  the split, by ``index``. A list of lists gives several references per example (captioning); they may differ
  in number.
- ``source_text(index, stage="val") -> str``: a human-readable source for ``examples.json`` (the sentence, or
  an image's file name).
- ``source_labels(index, stage="val") -> list[str] | None``: one label per source position (memory column),
  for attention heatmaps; None when the source is not a sequence (an image grid), which skips the heatmaps.
- ``encode_sources(items: Sequence) -> Tensor``: new raw inputs (strings, images) -> a ``source`` batch, as the
  dataloader would make it. Text truncates a source longer than ``data.max_length`` with a warning.
- ``item_labels(item) -> list[str] | None``: :meth:`source_labels` for a new raw input (as ``encode_sources``
  encodes it).
- optional, for data that feeds a model sequences: ``check_model(model)``, called by ``training.train`` before it
  writes anything, refuses a model whose position tables are shorter than what the data lets through (a
  ConfigError), and ``read_for(model)``, called before a trained model reads new data, cuts the data to what the
  model reads.
- optional, for sources that are not sequences: ``draw_attention(index, words, weights (T + 1, S), path,
  stage="val", image=None) -> Path`` draws a hypothesis' attention on the source (an image; Xu et al. 2015).

:class:`~hourglass.data.parallel.ParallelDataModule` is the text implementation.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from hourglass._registry import register_task
from hourglass.limits import MAX_BEAM, MAX_LENGTH_PENALTY
from hourglass.code import Code
from hourglass.config import TrainConfig
from hourglass.data.tokenizer import PAD_ID, Tokenizer
from hourglass.decoders.base import SequenceDecoder
from hourglass.decoders.narrow import narrow, shortlist_ids
from hourglass.errors import ConfigError
from hourglass.model import EncoderDecoder
from hourglass.nn.argmax import argmax
from hourglass.options import Count, Positive, Probability, Size
from hourglass.search import Hypotheses, beam_search, gnmt_penalty, greedy, sample
from hourglass.tasks.base import Task


class Seq2SeqData(Protocol):
    """What :class:`Seq2SeqTask` reads from a data module (see the module docstring)."""

    target_tokenizer: Tokenizer

    def val_dataloader(self) -> Iterable[dict[str, Tensor]]: ...
    def references(self, stage: str = "val") -> list[str] | list[list[str]]: ...
    def source_text(self, index: int, stage: str = "val") -> str: ...
    def source_labels(self, index: int, stage: str = "val") -> list[str] | None: ...
    def encode_sources(self, items: Sequence[Any]) -> Tensor: ...
    def item_labels(self, item: Any) -> list[str] | None: ...


def corpus_scores(hypotheses: list[str], references: list[str] | list[list[str]], *, rouge: bool = False
                  ) -> dict[str, Any]:
    """Corpus BLEU (Papineni et al. 2002) and chrF (Popovic 2015) from sacrebleu on detokenized text, with their
    signatures, the share of exact matches, and BLEU's length ratio (output words / reference words; sacrebleu's
    "ratio", below 1 when outputs are short). ``references`` may hold several per hypothesis (lists). With
    ``rouge``, also ROUGE-1, ROUGE-2 and ROUGE-L F1 (Lin 2004), x100, averaged over hypotheses
    (:func:`rouge_scores`)."""
    from sacrebleu.metrics import BLEU, CHRF

    multi = bool(references) and isinstance(references[0], (list, tuple))
    refs = [list(r) for r in references] if multi else [[r] for r in references]
    width = max((len(r) for r in refs), default=1)
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]  # sacrebleu: one stream per ref
    bleu, chrf = BLEU(), CHRF()
    b, c = bleu.corpus_score(hypotheses, streams), chrf.corpus_score(hypotheses, streams)
    exact = sum(h in r for h, r in zip(hypotheses, refs)) / max(len(hypotheses), 1)
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "exact_match": exact,
            "length_ratio": round(b.sys_len / b.ref_len, 3) if b.ref_len else 0.0,
            **(rouge_scores(hypotheses, refs) if rouge else {}),
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def rouge_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 x100 (Lin 2004) from torchmetrics, lowercased words without stemming,
    averaged over hypotheses; with several references, each hypothesis counts its best one."""
    from torchmetrics.text.rouge import ROUGEScore

    scores = ROUGEScore(rouge_keys=ROUGE_KEYS, accumulate="best")(hypotheses, references)
    return {key: round(float(scores[f"{key}_fmeasure"]) * 100, 2) for key in ROUGE_KEYS}


def smoothed_cross_entropy(logits: Tensor, gold: Tensor, pad_id: int, smoothing: float) -> tuple[Tensor, Tensor]:
    """logits (N, V), gold (N,) -> (label-smoothed cross-entropy, plain NLL), both averaged over non-pad tokens.

    The same numbers as ``F.cross_entropy(..., label_smoothing=smoothing)`` and ``F.cross_entropy(...)``
    (Szegedy et al. 2016: (1 - e) * NLL + e * the mean over the vocabulary of -log p), from one log-softmax
    instead of two: the second pass over (N, V) logits only fed a logged metric.
    """
    logp = torch.log_softmax(logits, -1)  # (N, V)
    nll = F.nll_loss(logp, gold, ignore_index=pad_id)
    if not smoothing:
        return nll, nll
    real = gold != pad_id  # (N,)
    uniform = -(logp.mean(-1) * real).sum() / real.sum().clamp(min=1)
    return (1 - smoothing) * nll + smoothing * uniform, nll


def coverage_penalty(attention: Tensor, real: Tensor) -> Tensor:
    """See et al. (2017), eq. 12: sum_i min(a_i^t, c_i^t), with coverage c^t = sum_{t' < t} a^{t'}, averaged over
    the real target positions. attention (B, T, S); real (B, T) True at non-padding targets."""
    covered = attention.cumsum(1) - attention  # (B, T, S): the attention of the earlier steps
    per_step = torch.minimum(attention, covered).sum(-1)  # (B, T)
    return (per_step * real).sum() / real.sum().clamp(min=1)


@register_task("seq2seq")
class Seq2SeqTask(Task):
    """Teacher-forced training with label smoothing; greedy/beam search (:mod:`hourglass.search`) to generate.

    Options: ``label_smoothing`` (Szegedy et al. 2016); ``teacher_forcing``, the share of gold previous tokens
    fed in training (below 1: scheduled sampling, Bengio et al. 2015, in the two-pass form of Mihaylova & Liu
    2019 that works for any decoder); ``beam``, ``length_penalty`` (GNMT's alpha), ``beam_prune`` (drop beams
    that far, in log-probability, below their sentence's best; None: off; see search.beam_search) and
    ``max_len_ratio`` for final evaluation and translation; ``val_beam`` for the BLEU computed at every
    validation (1 = greedy, 0 = none); ``no_repeat_ngram`` forbids repeating an n-gram of the output in search
    (Paulus et al. 2018; 3 is usual for summaries; 0 = off); ``min_len``, the fewest output tokens before eos
    (summaries: See et al. 2017 use 35; 0 = off; above ``max_len`` it is refused, but a sentence's own, shorter
    limit from ``max_len_ratio`` wins over it, as in :mod:`hourglass.search`); ``coverage_loss``, the
    weight of See et al.'s (2017) coverage loss (:func:`coverage_penalty`; 1.0 in the paper, 0 = off); ``rouge``
    adds ROUGE-1/2/L (summarization) to BLEU and chrF, at validation (``val/rougeL``, ...) and in ``evaluate``;
    ``restrict_output`` makes a trained run's search keep to the pieces its training targets use (the run's
    ``output_vocab.json``; decoders/narrow.py), which with a joint vocabulary saves the other language's share of
    the output layer at every step (False: the whole vocabulary; validation while training always uses it whole).
    Outputs are at most
    ``min(max_len, ceil(max_len_ratio * source length) + max_len_offset)`` tokens; the source length is the
    number of real memory positions (``Code.memory_mask``). A decoder with a position table (Transformer:
    ``model.decoder.max_len`` positions, bos included) caps them at one less than its size.
    """

    decoder_protocol = SequenceDecoder

    def __init__(
        self,
        *,
        model: EncoderDecoder,
        train: TrainConfig,
        seed: int = 0,
        label_smoothing: Probability = 0.1,
        teacher_forcing: float = 1.0,
        beam: int = 5,
        length_penalty: float = 1.0,
        beam_prune: float | None = None,
        val_beam: int = 1,
        no_repeat_ngram: Count = 0,
        min_len: Count = 0,
        coverage_loss: float = 0.0,
        rouge: bool = False,
        max_len: Size = 200,
        max_len_ratio: Positive | None = 2.0,
        max_len_offset: Count = 10,
        examples: int = 20,
        attention_plots: int = 3,
        restrict_output: bool = True,
    ) -> None:
        super().__init__(model=model, train=train, seed=seed)
        if not 0.0 < teacher_forcing <= 1.0:
            raise ConfigError(f"task.teacher_forcing is the share of gold previous tokens fed in training: it must be "
                              f"in (0, 1], got {teacher_forcing}. 1 is plain teacher forcing; 0.75 is typical with "
                              "scheduled sampling.")
        if not (1 <= beam <= MAX_BEAM and 0 <= val_beam <= MAX_BEAM):
            raise ConfigError(f"task.beam must be from 1 to {MAX_BEAM} and task.val_beam from 0 (no BLEU while "
                              f"training) to {MAX_BEAM}; got {beam} and {val_beam}.")
        if not -MAX_LENGTH_PENALTY <= length_penalty <= MAX_LENGTH_PENALTY:  # also refuses nan
            raise ConfigError(f"task.length_penalty is GNMT's alpha: a number from {-MAX_LENGTH_PENALTY:g} to "
                              f"{MAX_LENGTH_PENALTY:g}, got {length_penalty}. 1.0 is usual for translation, up to 2 "
                              "for summaries; 0 switches it off.")
        if beam_prune is not None and not 0 < beam_prune < math.inf:
            raise ConfigError(f"task.beam_prune drops the beams more than that many nats (natural log) below their "
                              f"sentence's best; it must be finite and > 0, or null for no pruning. Got {beam_prune}; "
                              "1.5 is a safe start (bench/RESULTS-seq2seq.md).")
        if coverage_loss < 0 or (coverage_loss and not self.decoder.attends):
            raise ConfigError(f"task.coverage_loss weighs the coverage loss of See et al. (2017), which penalizes "
                              f"attending again to source tokens already covered; it must be >= 0 (got "
                              f"{coverage_loss}) and needs a decoder with attention (decoder "
                              f'"{model.names["decoder"]}" attends: {self.decoder.attends}). Use 0 to switch it off.')
        self.coverage_loss, self.rouge, self.no_repeat_ngram = coverage_loss, rouge, no_repeat_ngram
        self.min_len, self.max_len = min_len, max_len
        clash = self.length_clash("task.min_len", "task.max_len")
        if clash:
            raise ConfigError(clash)
        # Set by `translate --sample` and `chat --sample` (not a config option): sample() keyword arguments and a
        # "seed", used instead of the search; None: greedy or beam search. The generator is made on first use, on
        # the device the model is on then.
        self.sampling: dict[str, Any] | None = None
        self._generator: torch.Generator | None = None
        self.label_smoothing, self.teacher_forcing, self.beam_prune = label_smoothing, teacher_forcing, beam_prune
        self.beam, self.length_penalty, self.val_beam = beam, length_penalty, val_beam
        self.max_len_ratio, self.max_len_offset = max_len_ratio, max_len_offset
        self.n_examples, self.n_attention = examples, attention_plots
        self._val_outputs: dict[int, str] = {}
        self.last_outputs: dict[int, str] = {}  # index -> hypothesis of the last evaluate()
        self.restrict_output = restrict_output
        self._output_ids: Tensor | None = None  # set by read_with: the pieces search keeps to, or None (all)

    @property
    def decoder(self) -> SequenceDecoder:
        return self.model.decoder

    def longest_output(self) -> int:
        """The most tokens an output may have: ``max_len``, or fewer when the decoder's position table (bos
        included) is shorter."""
        inputs = getattr(self.decoder, "max_inputs", None)  # a search feeds bos and then up to max_len tokens
        return self.max_len if inputs is None else min(self.max_len, inputs - 1)

    def length_clash(self, min_name: str, max_name: str, raise_max: str | None = None) -> str | None:
        """Why ``min_len`` can never be met (the message, naming the two settings as given, and ``raise_max``, how
        to raise max_len), or None. A fixed contradiction is refused; a sentence's own limit from
        ``max_len_ratio`` below ``min_len`` is not: it wins (hourglass.search)."""
        cap = self.longest_output()
        if self.min_len <= cap:
            return None
        why = (f"{max_name}={self.max_len}" if cap == self.max_len else
               f"the {cap} output tokens that model.decoder.max_len={cap + 1} allows (bos takes one position)")
        fix = (raise_max or f"raise {max_name}") if cap == self.max_len else "train with a larger model.decoder.max_len"
        return (f"{min_name}={self.min_len} is above {why}: an output ends at its maximum length, so it could never "
                f"be {self.min_len} tokens long. Lower {min_name}, or {fix}.")

    def read_with(self, data: Seq2SeqData) -> None:
        """Before this (trained) model reads new data: let the data cut its sources to what the encoder reads
        (the data's ``read_for``; a run trained before ``check_model`` existed may have fewer positions), and take
        the data's ``output_vocab`` (the ids its training targets use) as the pieces that search keeps to."""
        if hasattr(data, "read_for"):
            data.read_for(self.model)
        seen, tok = getattr(data, "output_vocab", None), data.target_tokenizer
        ids = shortlist_ids(seen, tok.vocab_size, (tok.bos_id, tok.eos_id)) if self.restrict_output and seen else None
        self._output_ids = ids if ids is not None and len(ids) < tok.vocab_size else None  # None: the whole one

    # -- training -----------------------------------------------------------------------------------------------
    def _sampled_inputs(self, inputs: Tensor, state: Any, pad_id: int) -> Tensor:
        """Scheduled sampling, two-pass (Mihaylova & Liu 2019): predict with gold inputs, then replace each gold
        input after bos by the previous position's prediction with probability 1 - teacher_forcing."""
        with torch.no_grad():
            logits, _ = self.decoder(inputs, state)  # (B, T, V)
        predicted = torch.cat([inputs[:, :1], argmax(logits)[:, :-1]], 1)  # (B, T): bos, then predictions
        swap = torch.rand(inputs.shape, device=inputs.device) >= self.teacher_forcing
        swap[:, 0] = False
        return torch.where(swap & (inputs != pad_id), predicted, inputs)

    def loss(self, batch: dict[str, Tensor], stage: str) -> tuple[Tensor, dict[str, Tensor]]:
        target = batch["target"]  # (B, T+1) = [bos, y..., eos, pad...]
        pad_id = PAD_ID
        inputs, labels = target[:, :-1], target[:, 1:]  # (B, T) each
        state = self.decoder.init_state(self.model.encode(batch["source"]))
        if stage == "train" and self.teacher_forcing < 1.0:
            inputs = self._sampled_inputs(inputs, state, pad_id)
        logits, attention = self.decoder(inputs, state)  # (B, T, V), (B, T, S) or None
        flat, gold = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
        loss, nll = smoothed_cross_entropy(flat, gold, pad_id, self.label_smoothing)
        real, nll = gold != pad_id, nll.detach()
        with torch.no_grad():
            accuracy = (argmax(flat)[real] == gold[real]).float().mean()
        logs = {"nll": nll, "ppl": nll.exp(), "token_accuracy": accuracy}
        if self.coverage_loss:
            coverage = coverage_penalty(attention, real.view(labels.shape))
            loss, logs["coverage"] = loss + self.coverage_loss * coverage, coverage.detach()
        return loss, logs

    def progress_metrics(self) -> tuple[str, ...]:
        return ("bleu",)

    # -- generation ---------------------------------------------------------------------------------------------
    def _limits(self, code: Code, max_len_ratio: float | None) -> int | Tensor:
        cap = self.longest_output()
        if max_len_ratio is None or code.memory_mask is None:
            return cap
        length = code.memory_mask.flatten(1).sum(1).float()  # (B,) real source positions
        # Capped before the cast: a huge ratio (1e20) cast to long wrapped to a negative limit and empty outputs.
        limit = torch.ceil(length * max_len_ratio).clamp(max=float(cap)).long() + self.max_len_offset
        return limit.clamp(max=cap)

    @torch.no_grad()
    def generate(self, source: Tensor, tokenizer: Tokenizer, *, beam: int | None = None, nbest: int = 1,
                 max_len_ratio: Any = ..., length_penalty: float | None = None, attention: bool = True,
                 shortlist: bool = True) -> Hypotheses:
        """A source batch -> hypotheses (token ids; ``tokenizer`` gives bos and eos). beam 1 is greedy search;
        with ``self.sampling`` set, one sample per source, with the minimum length and n-gram blocking (``beam``,
        ``nbest``, the length penalty and pruning are then not used). ``attention=False``: no attention maps
        (``Hypotheses.attention`` all None), which saves the search from keeping them. Greedy and beam scores are
        both divided by the length penalty, so beam 1 answers the same scores on either path. ``shortlist``: search
        over the pieces of the last :meth:`read_with`'s ``output_vocab`` when there is one (False: all of them)."""
        beam = self.beam if beam is None else beam
        ratio = self.max_len_ratio if max_len_ratio is ... else max_len_ratio
        code = self.model.encode(source.to(self.device))
        limit = self._limits(code, ratio)
        decoder, bos, eos = self.decoder, tokenizer.bos_id, tokenizer.eos_id
        use = shortlist and self._output_ids is not None
        short = narrow(decoder, self._output_ids, bos=bos, eos=eos) if use else None
        if short is not None:  # None also when the decoder declines (a pointer decoder)
            decoder, bos, eos = short.decoder, short.bos, short.eos
        hyps = self._search(decoder, code, limit, bos, eos, beam, nbest, length_penalty, attention)
        return hyps if short is None else short.widen(hyps)

    def _search(self, decoder: SequenceDecoder, code: Code, limit: int | Tensor, bos: int, eos: int, beam: int,
                nbest: int, length_penalty: float | None, attention: bool) -> Hypotheses:
        """:meth:`generate`'s search on ``decoder`` (the model's, or one narrowed to the output vocabulary)."""
        ids = dict(bos=bos, eos=eos, max_len=limit, min_len=self.min_len, attention=attention)
        if self.sampling is not None:
            options = {k: v for k, v in self.sampling.items() if k != "seed"}
            if self._generator is None or self._generator.device != self.device:
                self._generator = torch.Generator(device=self.device).manual_seed(self.sampling.get("seed", 0))
            return sample(decoder, code, **ids, **options, no_repeat_ngram=self.no_repeat_ngram,
                          generator=self._generator)
        alpha = self.length_penalty if length_penalty is None else length_penalty
        if beam == 1 and nbest == 1 and not self.no_repeat_ngram:
            found = greedy(decoder, code, **ids)
            scores = [[s / gnmt_penalty(len(t[0]) + 1, alpha)] for t, (s,) in zip(found.tokens, found.scores)]
            return dataclasses.replace(found, scores=scores)
        return beam_search(decoder, code, beam=beam, nbest=nbest, length_penalty=alpha, prune=self.beam_prune,
                           no_repeat_ngram=self.no_repeat_ngram, **ids)

    def translate(self, items: Sequence[Any], data: Seq2SeqData, *, beam: int | None = None, nbest: int = 1,
                  max_len_ratio: Any = ..., batch_size: int | None = None) -> list[list[tuple[str, float]]]:
        """Raw inputs (sentences, images) -> for each, ``nbest`` (text, score) pairs, best first, in input order.

        With ``batch_size``, the inputs are decoded that many at a time, token sources sorted by length first
        (as fairseq and Marian do): a batch of similar lengths pads little, so the encoder, the attention and the
        search's steps follow each batch's own lengths. A sentence gets the same output in any batch (up to float
        rounding; sampling's random draws do depend on the batch). An empty or blank sentence is answered with
        ``nbest`` empty texts scored 0, without decoding, as ``hourglass translate`` answers an empty line.
        """
        real = [i for i, item in enumerate(items) if not (isinstance(item, str) and not item.strip())]
        results: list[list[tuple[str, float]]] = [[("", 0.0)] * nbest for _ in items]
        if not real:
            return results
        self.read_with(data)
        source = data.encode_sources([items[i] for i in real])  # (B, S) token ids, or a batch of images
        decode = data.target_tokenizer.decode
        pad_id = getattr(getattr(data, "source_tokenizer", None), "pad_id", PAD_ID)  # what encode_sources pads with
        for rows, part in _length_batches(source, batch_size or len(real), pad_id):
            hyps = self.generate(part, data.target_tokenizer, beam=beam, nbest=nbest, max_len_ratio=max_len_ratio,
                                 attention=False)  # text only: no attention maps to keep
            for row, ts, ss in zip(rows, hyps.tokens, hyps.scores):
                results[real[row]] = [(decode(t), s) for t, s in zip(ts, ss)]
        return results

    # -- validation: loss and BLEU --------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_outputs = {}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        data = getattr(self.trainer, "datamodule", None)
        if self.val_beam and hasattr(data, "references"):
            hyps = self.generate(batch["source"], data.target_tokenizer, beam=self.val_beam, attention=False,
                                 shortlist=False)  # the whole vocabulary, as the model trains on it
            decode = data.target_tokenizer.decode
            for i, tokens in zip(batch["index"].tolist(), hyps.best()):
                self._val_outputs[i] = decode(tokens)

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        references = self.trainer.datamodule.references("val")
        order = sorted(self._val_outputs)  # a sanity check sees a few batches only: score those
        scores = corpus_scores([self._val_outputs[i] for i in order], [references[i] for i in order],
                               rouge=self.rouge)
        for key in ("bleu", "chrf", "exact_match", *(ROUGE_KEYS if self.rouge else ())):
            self.log(f"val/{key}", float(scores[key]), prog_bar=key == "bleu")

    # -- results ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, data: Seq2SeqData) -> dict[str, Any]:
        """Beam search (``beam``) over the validation split: BLEU, chrF, exact match, loss and perplexity."""
        was_training = self.training
        self.eval()
        self.read_with(data)
        outputs, losses, nlls, tokens = {}, 0.0, 0.0, 0
        decode = data.target_tokenizer.decode
        for batch in data.val_dataloader():
            batch = {k: v.to(self.device) for k, v in batch.items()}
            loss, logs = self.loss(batch, "val")
            n = int((batch["target"][:, 1:] != PAD_ID).sum())
            losses, nlls, tokens = losses + float(loss) * n, nlls + float(logs["nll"]) * n, tokens + n
            hyps = self.generate(batch["source"], data.target_tokenizer, attention=False)
            outputs.update({i: decode(t) for i, t in zip(batch["index"].tolist(), hyps.best())})
        self.train(was_training)
        self.last_outputs = outputs
        references = data.references("val")
        order = sorted(outputs)
        scores = corpus_scores([outputs[i] for i in order], [references[i] for i in order], rouge=self.rouge)
        nll = nlls / max(tokens, 1)
        return {**scores, "loss": losses / max(tokens, 1), "nll": nll, "ppl": math.exp(min(nll, 50.0)),
                "sentences": len(order), **self.search_options()}

    def search_options(self) -> dict[str, Any]:
        """The options of the search that made the outputs: beam, length penalty and length limit, and any option
        that is on (so that a score printed by ``evaluate`` says how it was decoded)."""
        extra = {"beam_prune": self.beam_prune, "min_len": self.min_len, "no_repeat_ngram": self.no_repeat_ngram,
                 "output_vocab": None if self._output_ids is None else len(self._output_ids)}  # pieces searched
        return {"beam": self.beam, "length_penalty": self.length_penalty, "max_len": self.max_len,
                **{k: v for k, v in extra.items() if v}}

    def plots(self, data: Seq2SeqData, out_dir: Path) -> list[Path]:
        """Loss curves, attention heatmaps of the first validation sentences, and ``examples.json`` (beside
        ``out_dir``, in the run directory) with sources, references and the last evaluate()'s outputs."""
        from hourglass import plots
        from hourglass.tasks.logs import read_history

        out_dir = Path(out_dir)
        paths = []
        history = read_history(out_dir.parent / "logs")
        if history:
            paths.append(plots.loss_curves(history, out_dir / "loss_curves.png"))
        paths += self.attention_plots(data, out_dir)
        self.write_examples(data, out_dir.parent / "examples.json")
        return paths

    def write_examples(self, data: Seq2SeqData, path: Path) -> Path:
        references = data.references("val")
        rows = []
        for i in sorted(self.last_outputs)[: self.n_examples]:
            ref = references[i]
            rows.append({"source": data.source_text(i, "val"),
                         "reference": " | ".join(ref) if isinstance(ref, (list, tuple)) else ref,
                         "output": self.last_outputs[i]})
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    @torch.no_grad()
    def attention_plots(self, data: Seq2SeqData, out_dir: Path) -> list[Path]:
        """Heatmaps for the first ``attention_plots`` examples of the first validation batch (text sources)."""
        if not self.n_attention:
            return []
        batch = next(iter(data.val_dataloader()))
        index, source = batch["index"][: self.n_attention], batch["source"][: self.n_attention]
        labels = [data.source_labels(int(i), "val") for i in index]
        draw = getattr(data, "draw_attention", None)  # images: on the image (Xu et al. 2015; data/captions.py)
        if any(lab is None for lab in labels) and draw is None:
            return []  # not a sequence, and the data cannot draw its source
        hyps = self.generate(source, data.target_tokenizer)
        if any(lab is None for lab in labels):
            tok = data.target_tokenizer
            return [draw(i, [tok.decode([t]) or "?" for t in hyps.tokens[k][0]], hyps.attention[k].float().numpy(),
                         out_dir / f"attention_{i}.png") for k, i in enumerate(index.tolist())
                    if hyps.attention[k] is not None]
        paths = []
        for k, (i, lab) in enumerate(zip(index.tolist(), labels)):
            path = self.attention_figure(hyps, k, lab, data.target_tokenizer, out_dir / f"attention_{i}.png")
            paths += [path] if path else []
        return paths

    @staticmethod
    def attention_figure(hyps: Hypotheses, k: int, source_labels: list[str], tokenizer: Tokenizer,
                         path: Path) -> Path | None:
        """The attention of hypothesis ``k`` (its rows: output pieces, then eos) as a heatmap, or None."""
        from hourglass import plots

        weights = hyps.attention[k]
        if weights is None:
            return None  # a decoder without attention
        # A piece that decodes to nothing alone is the word-start marker "▁" of SentencePiece
        target = [tokenizer.decode([t]).replace(" ", "") or "▁" for t in hyps.tokens[k][0]] + ["</s>"]
        return plots.attention_map(weights[:, : len(source_labels)].float().numpy(), source_labels, target, path)


def _length_batches(source: Tensor, size: int, pad_id: int = PAD_ID) -> Iterator[tuple[list[int], Tensor]]:
    """(rows, source[rows]) in batches of ``size``. Token ids (B, S) go shortest first, each batch cut to its
    longest sentence (padding is on the right); other sources (images) keep their order."""
    if source.dtype != torch.long or source.dim() != 2:
        for start in range(0, source.shape[0], size):
            yield list(range(start, min(start + size, source.shape[0]))), source[start : start + size]
        return
    lengths = (source != pad_id).sum(1)  # (B,)
    order = lengths.argsort(stable=True)
    for start in range(0, order.numel(), size):
        rows = order[start : start + size]
        width = max(1, int(lengths[rows].max()))
        yield rows.tolist(), source[rows, :width]


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Group an iterable lazily into lists of at most ``size`` (for batched translation of a stream)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
