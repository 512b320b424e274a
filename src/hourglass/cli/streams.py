"""Standard input and output for the commands that stream text through them (translate, chat).

A shell can start a program with a stream closed (``<&-``, ``>&-``); Python then has None for it. A command that
needs the stream says so in one paragraph before it loads a model, rather than failing on the first line.
"""
from __future__ import annotations

import sys
from typing import IO

from hourglass.errors import HourglassError


def standard_input(command: str) -> IO[bytes]:
    """sys.stdin's bytes, or an error that says how to give the lines otherwise."""
    if sys.stdin is None:
        raise HourglassError(
            f"Standard input is closed (the shell started hourglass with `<&-`), and `hourglass {command}` reads "
            "its lines from it when --input is not given. Pipe the lines in (`... | hourglass "
            f"{command} RUN`), redirect a file (`< lines.txt`), or give --input FILE."
        )
    return sys.stdin.buffer


def standard_output(command: str) -> IO[str]:
    """sys.stdout, or an error: the results would have nowhere to go."""
    if sys.stdout is None:
        raise HourglassError(
            f"Standard output is closed (the shell started hourglass with `>&-`), and `hourglass {command}` writes "
            "its results there, so they would be lost. Redirect it to a file instead (`> results.txt`)."
        )
    return sys.stdout
