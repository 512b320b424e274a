"""``translate`` and ``attention``: use a trained sequence-to-sequence run on new text.

``translate`` streams: a reader thread takes lines from stdin (or ``--input``) into a bounded queue, and each
batch holds the lines that have arrived, up to ``--batch`` of them. A large file is therefore never loaded at
once, and an interactive producer that writes one line and waits for its translation gets it at once (a batch
does not wait to fill up). The lines that have arrived, up to ``--buffer`` of them, are sorted by length into
batches of ``--batch`` (less padding; fairseq's ``--buffer-size``). Output: one line per input line, in the
input order; an empty input line gives an empty output line. With ``--nbest N``, N lines per input line:
``LINE<TAB>RANK<TAB>SCORE<TAB>TEXT``.
"""
from __future__ import annotations

import math
import queue
import sys
import threading
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Iterator

from hourglass.cli.args import BEAM, count, file_ending, positive, seed, whole
from hourglass.cli.streams import standard_input, standard_output
from hourglass.errors import HourglassError
from hourglass.limits import MAX_LENGTH_PENALTY
from hourglass.precision import add_precision, autocast

_END = object()


def register(sub) -> None:
    # Two parsers, not an alias, so that each one's --help names itself.
    for name, what in (("translate", "translate lines"), ("summarize", "summarize articles, one a line,")):
        _register_translate(sub, name, f"{what} from stdin or --input with a trained seq2seq run")

    p = sub.add_parser("attention", help="draw the attention map of one translation (or image caption) as a PNG")
    p.add_argument("run")
    p.add_argument("sentence", help="the sentence to translate, or an image file for a captioning run")
    p.add_argument("--output", required=True, type=file_ending(".png"), metavar="FILE.png")
    p.add_argument("--beam", type=BEAM, help="beam size (default: the run's task.beam)")
    p.set_defaults(func=cmd_attention)


def _register_translate(sub, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help)
    p.add_argument("run", help="the run directory")
    p.add_argument("--input", metavar="FILE", help="read this file (plain or .gz) instead of stdin (- for stdin)")
    p.add_argument("--nbest", type=BEAM, default=1, help="hypotheses per line (<= beam)")
    p.add_argument("--max-len-ratio", type=positive, help="longest output, in source lengths (default: the run's)")
    add_search_options(p)
    add_sampling_options(p)
    p.add_argument("--batch", type=count, default=128, help="most lines translated together (default 128)")
    p.add_argument("--buffer", type=count, default=1024,
                   help="most lines read ahead and sorted by length into batches (default 1024)")
    add_precision(p)
    p.set_defaults(func=cmd_translate)


def add_search_options(p) -> None:
    """The search options that ``translate`` and ``evaluate`` share; each overrides the run's task option."""
    p.add_argument("--beam", type=BEAM, help="beam size (default: the run's task.beam; 1 = greedy)")
    p.add_argument("--length-penalty", type=float, metavar="ALPHA",
                   help="GNMT length penalty alpha of beam search; higher favours longer outputs (default: the "
                        "run's task.length_penalty)")
    p.add_argument("--max-len", type=count, metavar="N",
                   help="the most tokens of an output (default: the run's task.max_len; the per-source limit of "
                        "task.max_len_ratio still holds below it)")
    p.add_argument("--min-len", type=whole, metavar="N",
                   help="write at least N tokens before ending an output (summaries; default: the run's "
                        "task.min_len, usually 0)")
    p.add_argument("--no-repeat-ngram", type=whole, metavar="N",
                   help="never repeat an n-gram of N tokens in an output (3 is usual for summaries; 0: off; default: "
                        "the run's task.no_repeat_ngram, usually off)")
    p.add_argument("--beam-prune", type=float, metavar="NATS",
                   help="drop beams more than NATS (natural log) below their sentence's best, for speed; 1.5 keeps "
                        "BLEU on Multi30k (default: the run's task.beam_prune, usually off)")


def add_sampling_options(p) -> None:
    """``--sample`` and its settings: ancestral sampling instead of the search (varied outputs, e.g. replies)."""
    p.add_argument("--sample", action="store_true",
                   help="sample each output from the model instead of searching for the most likely one")
    p.add_argument("--temperature", type=positive, help="with --sample: divide the logits by T (default 1.0)")
    p.add_argument("--top-k", type=whole, help="with --sample: draw from the K most likely tokens (default 0: all)")
    p.add_argument("--top-p", type=positive, metavar="P",
                   help="with --sample: draw from the fewest tokens whose probability sums to P (nucleus sampling, "
                        "Holtzman et al. 2020; 0.9 is usual; default 1.0: all)")
    p.add_argument("--seed", type=seed, help="with --sample: the random seed (default 0)")


def set_sampling(run, args) -> None:
    """Switch the run's task to sampling when ``--sample`` is given; refuse its settings without it."""
    settings = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed}
    given = [_flag(k) for k, v in settings.items() if v is not None]
    if not args.sample:
        if given:
            raise HourglassError(f"{', '.join(given)} set how to sample; add --sample to sample (without it the "
                                 "output comes from the search, --beam).")
        return
    searching = [flag for flag in ("beam", "length_penalty", "beam_prune") if getattr(args, flag) is not None]
    if searching:
        flags = ", ".join(map(_flag, searching))
        raise HourglassError(f"{flags} set the beam search, which --sample replaces: a sample is drawn token by "
                             "token. Leave them out (--min-len and --no-repeat-ngram apply to samples too).")
    if args.top_p is not None and args.top_p > 1:
        raise HourglassError(f"--top-p is a probability mass, at most 1 (got {args.top_p}); 0.9 is usual.")
    if getattr(args, "nbest", 1) > 1:
        raise HourglassError("--nbest lists the best hypotheses of a beam search; --sample draws one output per "
                             "line. Leave one of them out.")
    run.task.sampling = {k: v for k, v in settings.items() if v is not None}


def _flag(option: str) -> str:
    """An argparse destination -> the flag that sets it: "top_k" -> "--top-k"."""
    return "--" + option.replace("_", "-")


#: The search options: each argparse destination is the name of the task option it overrides.
_SEARCH_OPTIONS = ("beam", "length_penalty", "max_len", "min_len", "no_repeat_ngram", "beam_prune")


def set_search_options(run, args) -> None:
    """Put the search options given on the command line over the run's task options, with a clear error for a
    run that does not search or a value out of range; the run directory is not changed."""
    given = {flag: getattr(args, flag) for flag in _SEARCH_OPTIONS if getattr(args, flag, None) is not None}
    if not given:
        return
    flags = ", ".join(map(_flag, given))
    if not hasattr(run.task, "beam_prune"):
        verb, them = ("applies", "it") if len(given) == 1 else ("apply", "them")
        raise HourglassError(f'{flags} {verb} to sequence-to-sequence runs (translation, summarization, captioning), '
                             f'whose outputs come from a search; {run.path} is a run of task '
                             f'"{run.config.task.name}". Leave {them} out.')
    prune = given.get("beam_prune")
    if prune is not None and not 0 < prune < math.inf:  # also refuses nan
        raise HourglassError(f"--beam-prune is a margin in nats and must be a finite number > 0 (got {prune}); "
                             "leave it out for a plain beam search.")
    alpha = given.get("length_penalty")
    if alpha is not None and not -MAX_LENGTH_PENALTY <= alpha <= MAX_LENGTH_PENALTY:  # also refuses nan
        raise HourglassError(f"--length-penalty is GNMT's alpha, a number from {-MAX_LENGTH_PENALTY:g} to "
                             f"{MAX_LENGTH_PENALTY:g} (got {alpha}); 1.0 is usual, up to 2 for summaries.")
    for flag, value in given.items():
        setattr(run.task, flag, value)
    if "min_len" in given or "max_len" in given:  # a clash of the run's own options was refused when it trained
        names = [_flag(k) if k in given else f"the run's task.{k}" for k in ("min_len", "max_len")]
        clash = run.task.length_clash(*names, raise_max="raise --max-len")
        if clash:
            raise HourglassError(clash)


def load_seq2seq(path: str, use: str = "translate"):
    """``Run.load(path)``, refusing a run whose task is not sequence-to-sequence; ``use`` names the command's
    work in that refusal."""
    from hourglass.run import Run
    from hourglass.tasks.seq2seq import Seq2SeqTask

    run = Run.load(path)
    if not isinstance(run.task, Seq2SeqTask):
        raise HourglassError(
            f'The run {path} is of task "{run.config.task.name}", not a sequence-to-sequence one, so it cannot '
            f"{use}. Give the directory of a seq2seq run (e.g. one trained with `hourglass train numbers-words` "
            "or `hourglass train multi30k-transformer`)."
        )
    return run


def argument_text(text: str, what: str) -> str:
    """``text``, a command-line argument, when it is UTF-8; else an error naming the bytes. Python decodes the
    arguments with surrogateescape, so bytes that are not UTF-8 in the terminal's encoding reach us as lone
    surrogates, which SentencePiece refuses with an unreadable error."""
    from hourglass.data.text import undecodable

    bad = undecodable(text)
    if bad is not None:
        position, raw = bad
        raise HourglassError(f"{what} holds bytes that are not UTF-8 ({raw!r} at character {position}). Give UTF-8 "
                             "text: check the terminal's encoding (e.g. LANG=C.UTF-8 in its environment, or its "
                             "character-encoding setting), or convert the text with iconv.")
    return text


def _read_ahead(lines: Iterator[str], size: int) -> queue.Queue:
    """A reader thread that puts ``lines`` (then _END, or the exception that stopped it) into a bounded queue."""
    q: queue.Queue = queue.Queue(maxsize=size)

    def pump() -> None:
        try:
            for line in lines:
                q.put(line)
            q.put(_END)
        except BaseException as err:  # handed to the main thread, which raises it
            q.put(err)

    threading.Thread(target=pump, daemon=True).start()
    return q


def available_batches(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    """Batches of at most ``size`` lines: wait for one line, then take only what has already arrived."""
    q = _read_ahead(lines, 2 * size)
    while True:
        item = q.get()
        batch = []
        while item is not _END and not isinstance(item, BaseException):
            batch.append(item)
            if len(batch) == size:
                break
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
        if batch:
            yield batch
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item


class LongLines:
    """The input lines whose source the run cut short, counted over a whole stream and reported in one warning
    when it ends (also when an error ends it). A warning per buffer counted each buffer alone, and Python drops a
    warning whose text repeats."""

    def __init__(self, data) -> None:
        self.data, self.lines, self.long, self.first = data, 0, 0, 0
        self._stack, self._cut = ExitStack(), set()

    def __enter__(self) -> "LongLines":
        collect = getattr(self.data, "collect_cuts", None)  # text data; images are never cut
        if collect is not None:
            self._cut = self._stack.enter_context(collect())  # the sources cut short, as texts
        return self

    def add(self, texts: list[str]) -> None:
        """The next lines of the stream, after the data encoded them."""
        for number, text in enumerate(texts, start=self.lines + 1):
            if text in self._cut:
                self.long, self.first = self.long + 1, self.first or number
        self.lines += len(texts)
        self._cut.clear()

    def __exit__(self, *stopped) -> None:
        self._stack.close()
        if self.long:
            what = f"input line{'s' if self.lines > 1 else ''} (first: line {self.first})"
            warnings.warn(self.data.cut_report(self.long, self.lines, what), UserWarning, stacklevel=2)


def translate_stream(run, lines: Iterator[str], out: IO[str], *, beam: int | None, nbest: int,
                     max_len_ratio: float | None, batch: int, buffer: int | None = None) -> int:
    """Translate ``lines`` a buffer at a time (the lines that have arrived, up to ``buffer``; sorted into batches
    of ``batch``), writing and flushing each buffer in input order; returns the number of lines. Lines cut short
    (longer than the run reads) are counted over the whole stream and reported once at its end."""
    task, data = run.task, run.data
    ratio = task.max_len_ratio if max_len_ratio is None else max_len_ratio
    done = 0
    with LongLines(data) as long:
        for chunk in available_batches(lines, max(batch, buffer or batch)):
            texts = [line.strip() for line in chunk]  # an empty line is answered with an empty line (task.translate)
            results = task.translate(texts, data, beam=beam, nbest=nbest, max_len_ratio=ratio, batch_size=batch)
            long.add(texts)
            for i, hyps in enumerate(results):
                if nbest == 1:
                    out.write(hyps[0][0] + "\n")
                else:
                    for rank, (text, score) in enumerate(hyps, start=1):
                        out.write(f"{done + i + 1}\t{rank}\t{score:.4f}\t{text}\n")
            out.flush()
            done += len(texts)
    return done


def cmd_translate(args) -> int:
    from hourglass.data.text import iter_lines

    if args.beam is not None and args.nbest > args.beam:
        raise HourglassError(f"--nbest must be at most the beam size (got --nbest {args.nbest}, --beam {args.beam}).")
    stdin = args.input in (None, "-")  # `--input -` is standard input, as for most tools
    # Before the model loads: a closed stream is said at once.
    out, source = standard_output(args.command), standard_input(args.command) if stdin else None
    run = load_seq2seq(args.run)
    if run.data.context().modality == "image":
        raise HourglassError(
            f"The run {args.run} captions images, and `{args.command}` reads text lines. Caption image files with "
            f"`hourglass caption {args.run} IMAGE...`."
        )
    set_search_options(run, args)
    set_sampling(run, args)
    beam = max(run.task.beam, args.nbest)  # an n-best list needs a beam at least that wide
    lines = iter_lines(source) if stdin else iter_lines(Path(args.input))
    with autocast(args.precision, run.task.device):
        translate_stream(run, lines, out, beam=beam, nbest=args.nbest, max_len_ratio=args.max_len_ratio,
                         batch=args.batch, buffer=args.buffer)
    return 0


def cmd_attention(args) -> int:
    run = load_seq2seq(args.run, "draw an attention map")
    task, data = run.task, run.data
    if data.context().modality == "image":  # a captioning run: the attention is drawn over the image
        from hourglass.cli.captions import image_attention

        image_attention(run, args.sentence, Path(args.output), beam=args.beam)
        return 0
    sentence = argument_text(args.sentence.strip(), "The sentence")
    if not sentence:
        raise HourglassError("The sentence is empty: give the text to translate in quotes.")
    task.read_with(data)  # a long sentence is cut to what the run reads, with a warning
    labels = data.item_labels(sentence)
    if labels is None:
        raise HourglassError(f"The run {args.run} does not read text, so its attention has no words to show.")
    hyps = task.generate(data.encode_sources([sentence]), data.target_tokenizer, beam=args.beam)
    path = task.attention_figure(hyps, 0, labels, data.target_tokenizer, Path(args.output))
    if path is None:
        raise HourglassError(
            f'The decoder of {args.run} ("{run.config.model.decoder.name}") has no attention to draw. Train a model '
            "with an attention decoder (gru-attention, lstm-attention or transformer)."
        )
    print(data.target_tokenizer.decode(hyps.tokens[0][0]))
    print(path, file=sys.stderr)
    return 0
