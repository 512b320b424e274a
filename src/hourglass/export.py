"""ONNX export of a trained image run: the graphs a deployment needs, each checked against PyTorch.

Which graphs a run gets (float32 throughout; the batch axis is dynamic, C, H and W are the training size):

- every image run: ``encoder.onnx``, ``images`` (N, C, H, W) in [0, 1] -> ``code`` (N, D), the code vector that
  ``hourglass encode`` writes (a VAE's posterior mean);
- autoencoder, denoising, vae and wae runs: ``decoder.onnx``, ``code`` (N, D) -> ``images`` (N, C, H, W) in [0, 1];
- segmentation runs: ``segmenter.onnx``, ``images`` -> ``logits`` (N, K, H, W) (argmax over K is the mask);
- classification runs: ``classifier.onnx``, ``images`` -> ``logits`` (N, K).

Sequence-to-sequence runs (translation, summaries, captions) are refused: their decoder runs one step at a time
inside a search in Python, which one ONNX graph does not hold.

The export is PyTorch's own (``torch.onnx.export`` with ``dynamo=True``), and onnxruntime runs every graph on
the run's first validation images, batch sizes 1 and 8 (the dynamic axis), before anything is written; the
largest difference from PyTorch is recorded in ``export.json`` with the inputs, outputs and opset. A failing
graph stops the export before any file is written; then each file is written atomically (:mod:`hourglass.io`),
and the graphs that an earlier export into the same folder listed and this one does not write are removed.
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from hourglass.errors import DataError, HourglassError
from hourglass.io import atomic_write, atomic_write_json

#: Graphs whose outputs differ from PyTorch's by more than this (relative to the output's largest magnitude, at
#: least 1) are refused: float32 kernels differ by about 1e-6; a wrong graph differs by far more.
TOLERANCE = 1e-3
_EXTRA = "pip install -e '.[export]' (onnx, onnxscript and onnxruntime)"


@dataclass(frozen=True)
class Graph:
    """One exported function: its file stem, input and output names, the module, and an example input."""

    name: str
    inputs: str
    outputs: str
    module: nn.Module
    example: Tensor


class _Call(nn.Module):
    """``fn(x)`` as a module (``torch.onnx.export`` exports modules); ``owner`` holds the weights."""

    def __init__(self, owner: nn.Module, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.owner, self.fn = owner, fn
        self.train(owner.training)  # a new module starts in training mode; torch.onnx warns about that

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def graphs(run) -> list[Graph]:
    """The graphs of ``run`` (a :class:`hourglass.run.Run`), with the run's first validation images as examples."""
    from hourglass.tasks.seq2seq import Seq2SeqTask

    task, model, path = run.task, run.task.model, run.path
    if isinstance(task, Seq2SeqTask) or run.data.context().encoder.get("input_shape") is None:
        raise HourglassError(
            f'The run {path} is of task "{run.config.task.name}": ONNX export covers image autoencoders, '
            "segmentation and classification. A sequence-to-sequence decoder runs "
            "step by step inside a search, which one graph does not hold: use the run itself (`hourglass "
            "translate`, `caption`) or its weights, model.safetensors."
        )
    images = _examples(run)  # (8, C, H, W)
    found = [Graph("encoder", "images", "code", _Call(model, lambda x: model.encode(x).vector), images)]
    if hasattr(task, "reconstruct"):
        code = found[0].module(images)
        found.append(Graph("decoder", "code", "images", _Call(model, task.decode), code))
    elif hasattr(task, "segment"):
        found.append(Graph("segmenter", "images", "logits", _Call(model, lambda x: model(x)), images))
    elif hasattr(task, "logits"):
        found.append(Graph("classifier", "images", "logits", _Call(model, task.logits), images))
    return found


def _examples(run, n: int = 8) -> Tensor:
    """The first ``n`` validation images, repeated when there are fewer, or uniform noise of the run's input
    shape when its data has moved away (seeded): (n, C, H, W)."""
    try:
        x = next(iter(run.data.val_dataloader()))[0][:n].float()
    except DataError:
        shape = run.data.context().encoder["input_shape"]
        return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))
    return x.repeat((n + len(x) - 1) // len(x), 1, 1, 1)[:n]


def export(run, out_dir: Path) -> dict[str, Any]:
    """Write the graphs of ``run`` to ``out_dir`` (``<name>.onnx`` and ``export.json``); returns what
    export.json holds."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise HourglassError(f"--output {out_dir} is a file; give a directory for the .onnx files.")
    run.task.eval()
    with torch.no_grad():
        found = graphs(run)  # refuses a run it cannot export before asking for the optional packages
    onnx, ort = _libraries()
    done: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for graph in found:
            staged = Path(tmp) / f"{graph.name}.onnx"
            _export(graph, staged, run.path)
            done[graph.name] = _check(graph, staged, ort, onnx, run.path)
        stale = _listed(out_dir) - {g["file"] for g in done.values()}
        for name in done:  # only once every graph has passed
            data = (Path(tmp) / f"{name}.onnx").read_bytes()
            atomic_write(out_dir / f"{name}.onnx", lambda t, data=data: Path(t).write_bytes(data))
    summary = {"run": str(run.path), "task": run.config.task.name, "graphs": done, "torch": torch.__version__}
    atomic_write_json(out_dir / "export.json", summary)
    for file in stale:  # an earlier export's graphs that this run does not have (a VAE's decoder.onnx)
        (out_dir / file).unlink(missing_ok=True)
    return summary


def _listed(out_dir: Path) -> set[str]:
    """The .onnx files that an earlier export.json in ``out_dir`` lists (none when there is none, or it is not
    one of ours)."""
    try:
        earlier = json.loads((out_dir / "export.json").read_text(encoding="utf-8"))
        files = [g["file"] for g in earlier["graphs"].values()]
        return {f for f in files if Path(f).name == f and f.endswith(".onnx")}  # a bare name: never outside out_dir
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def _libraries():
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401 - torch.onnx's exporter needs it
    except ImportError as err:
        raise HourglassError(f"ONNX export needs the optional package {err.name}: {_EXTRA}.") from None
    # Its registry names torchvision's operators at the first export, with a warning each when torchvision is
    # missing (hourglass never uses them).
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    return onnx, onnxruntime


def _export(graph: Graph, path: Path, run: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    try:
        torch.onnx.export(graph.module, (graph.example,), str(path), dynamo=True, external_data=False,
                          input_names=[graph.inputs], output_names=[graph.outputs],
                          dynamic_shapes=({0: batch},), verbose=False)
    except Exception as err:  # torch.export's errors are long; their first line names the operator
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HourglassError(
            f"PyTorch could not export the {graph.name} of {run} to ONNX ({type(err).__name__}: {first}). Nothing "
            "was written; the run itself and its weights (model.safetensors) are unaffected."
        ) from None


def _check(graph: Graph, path: Path, ort, onnx, run: Path) -> dict[str, Any]:
    """Run ``path`` with onnxruntime at batch 1 and 8 and compare with PyTorch; the export.json entry."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in (graph.example[:1], graph.example):
        want = graph.module(x).numpy()
        got = session.run([graph.outputs], {graph.inputs: x.numpy()})[0]
        if got.shape != want.shape:
            raise HourglassError(f"The exported {graph.name} of {run} gave shape {got.shape} where PyTorch gives "
                                 f"{want.shape}; nothing was written. Please report this with the run's config.")
        worst = max(worst, float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max())))
    if not worst <= TOLERANCE:
        raise HourglassError(f"The exported {graph.name} of {run} differs from PyTorch by {worst:.3g} (relative), "
                             f"more than {TOLERANCE}; nothing was written. Please report this with the run's config.")
    proto = onnx.load(str(path))
    return {"file": f"{graph.name}.onnx", "input": [graph.inputs, ["N", *graph.example.shape[1:]]],
            "output": [graph.outputs, ["N", *want.shape[1:]]], "opset": _opset(proto), "max_relative_diff": worst}


def _opset(proto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
