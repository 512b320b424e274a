"""Reading parallel text: two aligned files (line i translates line i), one tab-separated file, or one JSON Lines
file whose objects hold the source and the target in two fields (articles and their summaries).

Files are UTF-8, plain or gzip-compressed (recognized by their first bytes, not their name). Lines lose their
line terminator and surrounding whitespace; a UTF-8 byte-order mark at the start is dropped.

Empty lines: a pair with an empty side carries nothing to learn, so it is skipped, and the number of skipped
pairs is reported with :func:`warnings.warn` (a ``UserWarning`` naming the files, the count and the first such
line), so that the return value stays a plain list of pairs. Everything else that is wrong raises a
:class:`~hourglass.errors.DataError` that names the file and the line: a missing file, bytes that are not UTF-8,
files with different line counts, a TSV line with too few columns, a JSON line that is not an object with the
two fields as text, or no pair at all.
"""
from __future__ import annotations

import gzip
import io
import json
import warnings
import zlib
from pathlib import Path
from typing import IO, Iterable, Iterator

from hourglass.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"


def _open_binary(path: Path) -> IO[bytes]:
    if not path.exists():
        raise DataError(f"The text file {path} does not exist. Check the path (in the data config, or given to "
                        f"the command); relative paths are resolved from the working directory, here {Path.cwd()}.")
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a text file. Give the path of a file.")
    if not path.is_file():  # a pipe (`--input <(cut -f1 pairs.tsv)`, /dev/stdin): it can be read only once
        stream = path.open("rb")
        if stream.peek(2)[:2] == _GZIP_MAGIC:
            stream.close()
            raise DataError(f"{path} is a pipe that carries gzip data. Decompress it in the pipe (e.g. "
                            "`<(zcat file.gz)`), or give the .gz file's own path.")
        return stream
    with path.open("rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else path.open("rb")


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _decode(raw: bytes, name: str, number: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if number == 1 and raw.startswith(_UTF16_BOMS):
            raise DataError(f"{name} is UTF-16 text (it starts with a UTF-16 byte-order mark). Convert it to UTF-8, "
                            "for example with `iconv -f UTF-16 -t UTF-8`.") from None
        raise DataError(
            f"{name}, line {number}: bytes {raw[err.start:err.start + 4]!r} at column {err.start + 1} are not "
            f"UTF-8. Convert the file to UTF-8 (for example `iconv -f latin1 -t utf-8` for Latin-1 text), or "
            f"remove the line."
        ) from None
    return _line(text, name, number)


def _line(text: str, name: str, number: int) -> str:
    """A line without its terminator or a byte-order mark (files joined with `cat` carry one on any line)."""
    text = text.removeprefix("\ufeff").rstrip("\r\n")
    if text.count("\r") > 1:
        raise DataError(f"{name}, line {number} holds {text.count(chr(13))} carriage returns (CR): the file seems to "
                        "end its lines with CR alone (old Mac style). Convert it to LF or CRLF line endings, for "
                        "example with `tr '\\r' '\\n'`.")
    return text


def _iter_binary(stream: IO[bytes], name: str) -> Iterator[str]:
    number = 0
    try:
        for number, raw in enumerate(stream, start=1):
            yield _decode(raw, name, number)
    except (gzip.BadGzipFile, EOFError, OSError, zlib.error) as err:  # zlib.error: a damaged block mid-file
        raise _damaged(name, number, err) from None


def _damaged(name: str, number: int, err: Exception) -> DataError:
    """A gzip file that stops being readable after ``number`` lines."""
    fix = "The gzip file is corrupt or truncated; download or compress it again."
    if number == 0:
        return DataError(f"{name}: cannot read its first line ({err}). {fix} No line of it was read.")
    lines = "line" if number == 1 else f"{number} lines"
    return DataError(f"{name}: cannot read past line {number} ({err}). {fix} The {lines} before the damage were "
                     "read: a command that streams its output (translate, chat) has written their results; one "
                     "that reads the whole file first (train, evaluate) has used none of them.")


def _iter_text(stream: IO[str], name: str) -> Iterator[str]:
    number = 0
    try:
        for number, line in enumerate(stream, start=1):
            yield _line(line, name, number)
    except UnicodeDecodeError:
        raise DataError(f"{name}, line {number + 1}: the bytes are not valid in the stream's encoding. Give "
                        f"UTF-8 text (for example, set PYTHONIOENCODING=utf-8 for standard input).") from None


def iter_lines(source: str | Path | IO) -> Iterator[str]:
    """Yield the lines of a path (plain or gzip) or an open file (text or binary) lazily, without terminators.

    Lines are not stripped, and empty lines are kept: a streaming caller needs one output per input line.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        with _open_binary(path) as stream:
            yield from _iter_binary(stream, str(path))
    elif isinstance(source, io.TextIOBase):
        yield from _iter_text(source, getattr(source, "name", "<stream>"))
    else:
        yield from _iter_binary(source, str(getattr(source, "name", "<stream>")))


def undecodable(text: str) -> tuple[int, bytes] | None:
    """(1-based character position, the bytes) of the first run of bytes in ``text`` that were not UTF-8, or
    None. Python keeps such bytes of command-line arguments as lone surrogates (surrogateescape), which
    SentencePiece refuses with an unreadable error."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start:err.end]
        try:
            return err.start + 1, bad.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that no byte became (made in Python, e.g. "\ud800")
            return err.start + 1, bad.encode("utf-8", "surrogatepass")
    return None


def quote(line: str, width: int = 60) -> str:
    return repr(line if len(line) <= width else line[:width] + "...")


def _count_mismatch(source: list[str], target: list[str], names: tuple[str, str]) -> DataError:
    """Explain different line counts: the counts, and where the files probably fell out of step."""
    n, m = len(source), len(target)
    text = (f"{names[0]} has {n} lines but {names[1]} has {m}; a parallel corpus needs exactly one target line "
            f"for each source line.")
    blank = next((i for i in range(min(n, m)) if (source[i].strip() == "") != (target[i].strip() == "")), None)
    if blank is not None:
        empty, full = (0, 1) if source[blank].strip() == "" else (1, 0)
        line = (source, target)[full][blank]
        text += (f" Line {blank + 1} is empty in {names[empty]} but not in {names[full]} ({quote(line)}): a "
                 f"blank line was probably added or lost there.")
    else:
        longer, lines = (names[0], source) if n > m else (names[1], target)
        extra = min(n, m)  # the index of the first line that has no partner
        text += f" The first line beyond the shorter file is line {extra + 1} of {longer}: {quote(lines[extra])}."
    return DataError(text + " Fix the files so that line i of one is the translation of line i of the other.")


def keep_nonempty(pairs: Iterable[tuple[str, str]], where: str, empty: str = "it holds no pair at all"
                  ) -> list[tuple[str, str]]:
    """Strip both sides, drop pairs with an empty side (with one warning), refuse an empty corpus; ``empty`` says
    what it means that ``pairs`` held nothing at all."""
    kept, skipped, first, total = [], 0, 0, 0
    for total, (src, tgt) in enumerate(pairs, start=1):
        src, tgt = src.strip(), tgt.strip()
        if src and tgt:
            kept.append((src, tgt))
        else:
            skipped += 1
            first = first or total
    if not kept:
        why = empty if total == 0 else f"its {total} line{'s' if total > 1 else ''} are each empty on one side or both"
        raise DataError(f"{where} contains no sentence pair: {why}. Check that the paths point to the right files.")
    if skipped:
        warnings.warn(f"Skipped {skipped} of {total} line pairs of {where} that are empty on one side or both "
                      f"(the first at line {first}).", UserWarning, stacklevel=3)
    return kept


def read_parallel(source_path: str | Path, target_path: str | Path) -> list[tuple[str, str]]:
    """Read two aligned files into (source, target) pairs; see the module docstring for errors and warnings."""
    source, target = list(iter_lines(source_path)), list(iter_lines(target_path))
    if len(source) != len(target):
        raise _count_mismatch(source, target, (str(source_path), str(target_path)))
    return keep_nonempty(zip(source, target), f"{source_path} / {target_path}", "both files are empty")


#: The fix :func:`read_tsv` gives for a line with too few columns that may be a file of sources alone.
SOURCES_ALONE = ("If this is a file of source sentences alone, give their references as a second file (`hourglass "
                 "evaluate RUN --data SRC --ref REF`, or data.source and data.target).")


def read_tsv(path: str | Path, source_col: int = 0, target_col: int = 1, sources_alone: str = SOURCES_ALONE
             ) -> list[tuple[str, str]]:
    """Read (source, target) pairs from tab-separated columns ``source_col`` and ``target_col`` (0-based).
    ``sources_alone`` ends the error for a line with too few columns: where to give the references when the
    file holds the sources alone (the caller knows the option that does it)."""
    need = max(source_col, target_col) + 1
    widths: dict[int, list[int]] = {}  # column count -> [lines with it, its first line]

    def pairs() -> Iterator[tuple[str, str]]:
        for number, line in enumerate(iter_lines(path), start=1):
            if not line.strip():
                yield "", ""
                continue
            fields = line.split("\t")
            widths.setdefault(len(fields), [0, number])[0] += 1
            if len(fields) < need:
                raise DataError(
                    f"{path}, line {number}: {len(fields)} tab-separated column(s), but source_col={source_col} "
                    f"and target_col={target_col} need {need}: {quote(line)}. Check that the columns are "
                    f"separated by tabs (not spaces), or change source_col/target_col. {sources_alone}"
                )
            yield fields[source_col], fields[target_col]

    kept = keep_nonempty(pairs(), str(path), "the file is empty")
    if len(widths) > 1:  # e.g. a tab inside one sentence shifts the columns of its line
        usual = max(widths, key=lambda w: widths[w][0])
        odd = sorted((w, *widths[w]) for w in widths if w != usual)
        detail = "; ".join(f"{n} line(s) with {w} (first: line {first})" for w, n, first in odd[:3])
        warnings.warn(f"{path}: most lines have {usual} tab-separated columns, but {detail}. A tab inside a "
                      f"sentence shifts its line's columns (TSVs have no quoting); check those lines.", UserWarning,
                      stacklevel=2)
    return kept


#: File names read as JSON Lines (``data.jsonl``, or a JSON Lines validation file).
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")


def is_jsonl(path: str | Path) -> bool:
    return str(path).lower().endswith(JSONL_SUFFIXES)


def read_jsonl(path: str | Path, source_field: str, target_field: str) -> list[tuple[str, str]]:
    """Read (source, target) pairs from two fields of a JSON Lines file, one JSON object a line.

    Whitespace in a field, paragraph breaks included, becomes single spaces: a source is one line to the
    tokenizer and to ``hourglass translate``. Blank lines are ignored; a null or empty field skips its record (a
    count is reported, as for empty lines of text files)."""
    fields = (source_field, target_field)
    fix = "Set data.source_field and data.target_field to the fields that hold the source and the target."

    def pairs() -> Iterator[tuple[str, str]]:
        for where, record in json_records(path, "{" + ", ".join(f'"{f}": "..."' for f in fields) + "}"):
            missing = [f for f in fields if f not in record]
            if missing:
                raise DataError(f"{where} has no field {' or '.join(map(repr, missing))}; its fields are "
                                f"{', '.join(map(repr, record)) or 'none'}. {fix}")
            yield tuple(field_text(record[f], f, where, fix) for f in fields)

    return keep_nonempty(pairs(), str(path), "the file holds no JSON line")


def json_records(path: str | Path, example: str) -> Iterator[tuple[str, dict]]:
    """(where, object) for each non-blank line of a JSON Lines file; ``where`` names the file and line. A line
    that is not a JSON object is a DataError that shows ``example``, an object of the expected form."""
    for number, line in enumerate(iter_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where} is not valid JSON ({err.msg} at column {err.colno}). A JSON Lines file "
                            f"holds one JSON object a line, such as {example}.") from None
        except RecursionError:  # Python's parser recurses once per level of [ or {
            raise DataError(f"{where} nests its JSON too deeply to read (thousands of levels of [ or {{). A JSON "
                            f"Lines file holds one flat object a line, such as {example}.") from None
        if not isinstance(record, dict):
            raise DataError(f"{where} holds a JSON {type(record).__name__}, not an object. Each line must be "
                            f"one object such as {example}.")
        yield where, record


def field_text(value: object, field: str, where: str, fix: str) -> str:
    """A JSON value that must be text (or null: "") -> its words joined by single spaces; ``fix`` ends the error."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} holds a JSON {type(value).__name__} ({quote(str(value))}), not "
                        f"text. {fix}")
    return " ".join(value.split())
