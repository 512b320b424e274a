"""Sequence-to-sequence: any encoder, a :class:`~hourglass.decoders.base.SequenceDecoder`, token targets.

The task is generic over the SOURCE modality. Translation feeds it token ids, captioning feeds it images; the
task only hands ``batch["source"]`` to ``model.encode`` and never looks inside. Everything text-specific about
the source lives in the data module.

Batches
-------
A batch is a dict::

    {"source": Tensor (B, S) long (token ids, padded) | (B, C, H, W) float (images) | anything model.encode reads,
     "target": Tensor (B, T) long = [bos, y_1, ..., y_n, eos, pad, ...],
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

:class:`~hourglass.data.parallel.ParallelDataModule` is the text implementation.
"""
