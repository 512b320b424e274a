"""The ``hourglass`` command line. Each module in this package adds its subcommands with ``register``."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import warnings

from hourglass.allocator import keep_freed_memory
from hourglass.errors import HourglassError

COMMAND_MODULES = ("core", "images", "vision", "text", "chat", "captions", "export")


def _quiet() -> None:
    """Keep the terminal for the progress bar and our own messages."""
    import lightning  # noqa: F401 - its import sets its loggers to INFO; lower them afterwards
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*does not have many workers.*", ".*number of training batches.*", ".*LeafSpec.*",
                    ".*Checkpoint directory.*exists and is not empty.*", ".*TensorBoard.*", ".*isinstance.*",
                    ".*could not find the monitored key.*"):  # hourglass.training says it plainly (finish)
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.formatwarning = _format_warning


_python_format = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Our own warnings (a truncated sentence, a skipped line) are written for users: "warning: ..." alone, without
    the Python file, line and source that the default format adds; other libraries' keep that format."""
    if f"{os.sep}hourglass{os.sep}" in str(filename):
        return f"warning: {message}\n"
    return _python_format(message, category, filename, lineno, line)


def _interrupted(run: str) -> str:
    if not run:
        return "interrupted"
    if os.path.isfile(os.path.join(run, "checkpoints", "last.safetensors")):
        return f"interrupted: the last checkpoint of {run} is kept; continue with `hourglass train --resume {run}`"
    return f"interrupted before {run} had a checkpoint: nothing to resume; run the same command again to start over"


def parser() -> argparse.ArgumentParser:
    import importlib

    p = argparse.ArgumentParser(prog="hourglass", description="Any encoder, any decoder: train, evaluate, use.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"hourglass.cli.{name}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # large tensors reuse freed memory instead of faulting in fresh pages (hourglass.allocator)
    _quiet()
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HourglassError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(_interrupted(str(stop)), file=sys.stderr)  # hourglass.training.train names the run directory
        return 130
    except BrokenPipeError:  # the reader of stdout stopped early (e.g. `| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # a read-only folder, a full disk, a missing path: the system's refusal, not a bug
        print(f"error: {_path_error(err)}", file=sys.stderr)
        return 2


def _path_error(err: OSError) -> str:
    """A file-system refusal (an --output in a missing, read-only or full place) as one paragraph."""
    why = err.strerror or str(err) or type(err).__name__
    full = err.errno in (errno.ENOSPC, errno.EDQUOT)
    fix = ("Free some space or write somewhere else; files written before are complete (each write is atomic)."
           if full else "For an output (--output, --out), every folder on the way must be a folder (not a file) "
           "that you may write to; for an input, check that it exists.")
    if err.filename is None:  # standard output (e.g. redirected to a full disk), or a write that named no file
        return f"A write failed: {why}. {fix}"
    where = err.filename if err.filename2 is None else f"{err.filename} -> {err.filename2}"
    return f"Cannot use the path {where}: {why}. {fix}"


if __name__ == "__main__":
    sys.exit(main())
