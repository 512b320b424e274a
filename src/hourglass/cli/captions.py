"""``caption``: caption image files with a trained captioning run; and the image side of ``attention``.

A captioning run is a seq2seq run whose data reads images (``data.context().modality == "image"``, e.g. the
mnist-captions recipe or ``data.name=captions``). Images are decoded and resized to the run's training shape by
the data module (:meth:`~hourglass.data.captions.CaptionDataModule.encode_sources`), so any size works.

There is one ``attention`` command (registered with the text commands in :mod:`hourglass.cli.text`): it routes
image runs to :func:`image_attention`, which draws where the decoder looked for each word over the image
(Xu et al. 2015, fig. 2).
"""
from __future__ import annotations

import sys
from pathlib import Path

from hourglass.cli.args import BEAM, count
from hourglass.errors import HourglassError


def register(sub) -> None:
    p = sub.add_parser("caption", help="caption image files with a trained captioning run, one line per image")
    p.add_argument("run", help="the run directory")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size; resized like the training data)")
    p.add_argument("--beam", type=BEAM, help="beam size (default: the run's task.beam; 1 = greedy)")
    p.add_argument("--names", action="store_true", help="print IMAGE<TAB>CAPTION instead of the caption alone")
    p.add_argument("--batch", type=count, default=32, help="most images captioned together (default 32)")
    p.set_defaults(func=cmd_caption)


def load_captioner(path: str):
    """``Run.load(path)``, refusing a run that is not sequence-to-sequence or does not read images."""
    from hourglass.cli.text import load_seq2seq

    run = load_seq2seq(path, "caption images")
    if run.data.context().modality != "image":
        raise HourglassError(
            f'The run {path} reads {run.data.context().modality}, not images, so it cannot caption. Use `hourglass '
            "translate` for text runs, or give the directory of a captioning run (e.g. `hourglass train "
            "mnist-captions`)."
        )
    return run


def _check_beam(beam: int | None) -> None:
    if beam is not None and beam < 1:
        raise HourglassError(f"--beam must be 1 or more (got {beam}).")


def cmd_caption(args) -> int:
    from hourglass.tasks.seq2seq import chunks

    run = load_captioner(args.run)
    for batch in chunks(args.images, args.batch):
        for image, hyps in zip(batch, run.task.translate(batch, run.data, beam=args.beam)):
            print(f"{image}\t{hyps[0][0]}" if args.names else hyps[0][0], flush=True)
    return 0


def image_attention(run, image: str, output: Path, *, beam: int | None = None) -> Path:
    """Caption ``image`` with ``run`` and draw each word's attention over it into ``output`` (a PNG).

    Prints the caption on stdout and the picture's path on stderr, as the text ``attention`` does."""
    _check_beam(beam)
    task, data = run.task, run.data
    source = data.encode_sources([image])  # (1, C, H, W), resized like the training data
    hyps = task.generate(source, data.target_tokenizer, beam=beam)
    weights = hyps.attention[0]  # (T + 1, S): one row per word, then eos
    if weights is None:
        raise HourglassError(
            f'The decoder of {run.path} ("{run.config.model.decoder.name}") has no attention to draw. Train a model '
            "with an attention decoder (gru-attention, lstm-attention or transformer)."
        )
    tok = data.target_tokenizer
    words = [tok.decode([t]) or "?" for t in hyps.tokens[0][0]]
    path = data.draw_attention(0, words, weights.float().numpy(), Path(output), image=source[0].numpy())
    print(tok.decode(hyps.tokens[0][0]))
    print(path, file=sys.stderr)
    return path
