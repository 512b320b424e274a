"""One self-contained HTML report per run directory.

``write_report(run_dir)`` reads what a run left behind, all of it optional:

    run_dir/config.yaml     shown verbatim as the model summary
    run_dir/metrics.json    flat or nested dict of numbers -> a table
    run_dir/examples.json   list of dicts (translations, captions) -> a table
    run_dir/plots/*.png     embedded as base64 data URIs

and writes ``run_dir/report.html``. Pictures are inlined so that the single file
can be mailed or attached to an issue. All text goes through ``html.escape``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["caption_from_filename", "flatten_metrics", "format_value", "write_report"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; }
pre { background: #f5f5f5; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { text-align: center; font-size: 0.9em; color: #555; }
"""


# ---------------------------------------------------------------- pure helpers


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"val": {"loss": 1.0}} -> {"val/loss": 1.0}; order is kept."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name))
        else:
            flat[name] = value
    return flat


def format_value(value: Any) -> str:
    """Floats to 4 significant digits; everything else as ``str``."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(value) if math.isnan(value) or math.isinf(value) else f"{value:.4g}"
    return str(value)


def caption_from_filename(path: Path) -> str:
    """"recon_grid.png" -> "Recon grid"."""
    words = path.stem.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


# ---------------------------------------------------------------- sections


def _read_json(path: Path) -> Any | None:
    """Parsed JSON, or None when the file is missing."""
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _table(columns: Iterable[str], rows: Iterable[Iterable[Any]], numeric: bool = False) -> str:
    """An HTML table; every cell is escaped. ``numeric`` right-aligns all but column 0."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if numeric and i > 0 else ""
            cells.append(f"<td{cls}>{html.escape(format_value(cell))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _header(run_dir: Path, title: str) -> str:
    """Title plus the config (model summary) when ``config.yaml`` exists."""
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>Run directory: <code>{html.escape(str(run_dir))}</code></p>"]  # fmt: skip
    config = run_dir / "config.yaml"
    if config.is_file():
        text = config.read_text(encoding="utf-8")
        parts.append(f"<h2>Configuration</h2><pre>{html.escape(text)}</pre>")
    return "\n".join(parts)


def _metrics_section(run_dir: Path) -> str:
    metrics = _read_json(run_dir / "metrics.json")
    if not metrics:
        return ""
    if not isinstance(metrics, Mapping):
        raise ValueError(f"{run_dir / 'metrics.json'} must hold a JSON object")
    rows = flatten_metrics(metrics).items()
    return "<h2>Metrics</h2>\n" + _table(["metric", "value"], rows, numeric=True)


def _examples_section(run_dir: Path) -> str:
    examples = _read_json(run_dir / "examples.json")
    if not examples:
        return ""
    if not isinstance(examples, list) or not all(isinstance(e, Mapping) for e in examples):
        raise ValueError(f"{run_dir / 'examples.json'} must hold a list of objects")
    columns: list[str] = []  # union of keys, in first-seen order
    for example in examples:
        columns.extend(k for k in example if k not in columns)
    rows = ([example.get(c, "") for c in columns] for example in examples)
    return "<h2>Examples</h2>\n" + _table(columns, rows)


def _plots_section(run_dir: Path) -> str:
    plots = sorted((run_dir / "plots").glob("*.png")) if (run_dir / "plots").is_dir() else []
    if not plots:
        return ""
    figures = []
    for png in plots:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        caption = html.escape(caption_from_filename(png))
        figures.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return "<h2>Plots</h2>\n" + "\n".join(figures)


# ---------------------------------------------------------------- entry point


def write_report(run_dir: Path, *, title: str | None = None) -> Path:
    """Write ``run_dir/report.html`` and return its path.

    Every input file is optional; a run directory with none of them still gets a
    report with just its header.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    title = title if title is not None else (run_dir.resolve().name or str(run_dir))
    sections = [
        _header(run_dir, title),
        _metrics_section(run_dir),
        _examples_section(run_dir),
        _plots_section(run_dir),
    ]
    body = "\n".join(s for s in sections if s)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
    out = run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
