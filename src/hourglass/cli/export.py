"""``export``: ONNX graphs of a trained image run (hourglass.export)."""
from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("export", help="write ONNX graphs of an image run (encoder, decoder, segmenter or "
                                      "classifier), checked with onnxruntime")
    p.add_argument("run")
    p.add_argument("--output", required=True, help="a directory for the .onnx files and export.json")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from hourglass.export import export
    from hourglass.run import Run

    summary = export(Run.load(args.run), Path(args.output))
    for name, graph in summary["graphs"].items():
        (inp, in_shape), (out, out_shape) = graph["input"], graph["output"]
        print(f"{Path(args.output) / graph['file']}: {inp} {json.dumps(in_shape)} -> {out} {json.dumps(out_shape)}, "
              f"opset {graph['opset']}, differs from PyTorch by {graph['max_relative_diff']:.1e}")
    return 0
