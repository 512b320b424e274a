"""Reading parallel text: plain and gzip, TSV, lazy lines, and one clear DataError for each way data goes wrong."""
from __future__ import annotations

import gzip
import io
import types
import warnings
from pathlib import Path

import pytest

from hourglass.data.text import iter_lines, read_parallel, read_tsv
from hourglass.errors import DataError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "multi30k"


def _write(path: Path, lines: list[str], *, compress: bool = False) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_reads_plain_and_gzip_files(tmp_path) -> None:
    src = _write(tmp_path / "train.de.gz", ["Ein Mann.", "Zwei Hunde spielen."], compress=True)
    tgt = _write(tmp_path / "train.en", ["A man.", "Two dogs play."])
    assert read_parallel(src, tgt) == [("Ein Mann.", "A man."), ("Zwei Hunde spielen.", "Two dogs play.")]


def test_gzip_is_recognized_by_content_not_name(tmp_path) -> None:
    src = _write(tmp_path / "a.txt", ["Grüße"], compress=True)
    tgt = _write(tmp_path / "b.txt", ["Greetings"])
    assert read_parallel(src, tgt) == [("Grüße", "Greetings")]


def test_windows_line_ends_a_byte_order_mark_and_spaces_are_removed(tmp_path) -> None:
    (tmp_path / "s").write_bytes("\ufeffÄrger \r\n  Öl\r\n".encode("utf-8"))
    (tmp_path / "t").write_bytes(b"Trouble\r\nOil\r\n")
    assert read_parallel(tmp_path / "s", tmp_path / "t") == [("Ärger", "Trouble"), ("Öl", "Oil")]


def test_byte_order_marks_of_files_joined_with_cat_are_dropped_on_any_line(tmp_path) -> None:
    part = "\ufeffein Hund\r\n".encode("utf-8")
    (tmp_path / "joined.de").write_bytes(part + part)
    assert list(iter_lines(tmp_path / "joined.de")) == ["ein Hund", "ein Hund"]


def test_utf16_and_cr_only_files_say_what_they_are(tmp_path) -> None:
    (tmp_path / "u16.de").write_bytes("ein Hund\nzwei Katzen\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"u16\.de is UTF-16 text .*iconv -f UTF-16 -t UTF-8"):
        list(iter_lines(tmp_path / "u16.de"))
    (tmp_path / "mac.de").write_bytes(b"ein Hund\rzwei Katzen\rdrei\r")
    with pytest.raises(DataError, match=r"mac\.de, line 1 holds 2 carriage returns .*CR alone"):
        list(iter_lines(tmp_path / "mac.de"))


def test_different_line_counts_name_both_counts_and_the_first_extra_line(tmp_path) -> None:
    src = _write(tmp_path / "s.de", ["eins", "zwei", "drei"])
    tgt = _write(tmp_path / "t.en", ["one", "two"])
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt)
    message = str(err.value)
    assert "has 3 lines" in message and "has 2" in message
    assert "line 3 of" in message and "'drei'" in message


def test_a_lost_blank_line_is_located(tmp_path) -> None:
    src = _write(tmp_path / "s.de", ["eins", "", "zwei", "drei"])
    tgt = _write(tmp_path / "t.en", ["one", "two", "three"])
    with pytest.raises(DataError, match=r"has 4 lines.*has 3.*Line 2 is empty in .*s\.de but not in .*t\.en"):
        read_parallel(src, tgt)


def test_pairs_with_an_empty_side_are_skipped_with_a_count(tmp_path) -> None:
    src = _write(tmp_path / "s", ["eins", "", "drei", "vier", "  "])
    tgt = _write(tmp_path / "t", ["one", "two", "", "four", ""])
    with pytest.warns(UserWarning, match=r"Skipped 3 of 5 line pairs.*first at line 2"):
        pairs = read_parallel(src, tgt)
    assert pairs == [("eins", "one"), ("vier", "four")]


def test_nothing_is_reported_when_nothing_is_skipped(tmp_path) -> None:
    src, tgt = _write(tmp_path / "s", ["eins"]), _write(tmp_path / "t", ["one"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_parallel(src, tgt)


@pytest.mark.parametrize("lines", [[], ["", " "]], ids=["empty-files", "blank-lines"])
def test_an_empty_corpus_is_an_error(tmp_path, lines) -> None:
    src, tgt = _write(tmp_path / "s", lines), _write(tmp_path / "t", lines)
    with pytest.raises(DataError, match="contains no sentence pair"):
        read_parallel(src, tgt)


@pytest.mark.parametrize("compress", [False, True])
def test_undecodable_bytes_name_the_file_and_the_line(tmp_path, compress) -> None:
    raw = "eins\nzwei\n".encode() + "dr\xe9i\n".encode("latin-1")
    (tmp_path / "s").write_bytes(gzip.compress(raw) if compress else raw)
    tgt = _write(tmp_path / "t", ["one", "two", "three"])
    with pytest.raises(DataError, match=r"s, line 3: .* not UTF-8"):
        read_parallel(tmp_path / "s", tgt)


def test_a_missing_file_is_named(tmp_path) -> None:
    tgt = _write(tmp_path / "t", ["one"])
    with pytest.raises(DataError, match=r"missing\.de does not exist"):
        read_parallel(tmp_path / "missing.de", tgt)


def test_a_pipe_is_read_once_and_a_directory_is_named_as_one(tmp_path) -> None:
    """`--input <(cut -f1 pairs.tsv)` gives /dev/fd/N, a pipe: it was refused as "a directory"."""
    import os

    for data, words in ((b"one\ntwo\n", None), (gzip.compress(b"one\n"), "a pipe that carries gzip data")):
        read, write = os.pipe()
        os.write(write, data)
        os.close(write)
        try:
            if words is None:
                assert list(iter_lines(f"/dev/fd/{read}")) == ["one", "two"]
            else:
                with pytest.raises(DataError, match=words):
                    list(iter_lines(f"/dev/fd/{read}"))
        finally:
            os.close(read)
    with pytest.raises(DataError, match="is a directory, not a text file"):
        list(iter_lines(tmp_path))


def test_a_truncated_gzip_file_is_an_error(tmp_path) -> None:
    data = gzip.compress(("Zeile\n" * 5000).encode())
    (tmp_path / "s.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        list(iter_lines(tmp_path / "s.gz"))


def test_a_gzip_file_damaged_in_the_middle_names_the_last_good_line(tmp_path) -> None:
    """zlib's own error (not an OSError) came out of a damaged block as a traceback."""
    lines = [f"Zeile {i} mit etwas Text, der sich nicht wiederholt: {i * 7919 % 10007}" for i in range(4000)]
    data = bytearray(gzip.compress("\n".join(lines).encode()))
    for i in range(len(data) // 2, len(data) // 2 + 40):
        data[i] ^= 0x55
    (tmp_path / "s.gz").write_bytes(bytes(data))
    read = []
    with pytest.raises(DataError, match=r"s.gz: cannot read past line \d+ .*corrupt or truncated.*lines before") as err:
        for line in iter_lines(tmp_path / "s.gz"):
            read.append(line)
    assert f"past line {len(read)} " in str(err.value) and read[:100] == lines[:100]  # the last may be junk


def test_read_tsv_picks_columns(tmp_path) -> None:
    path = _write(tmp_path / "d.tsv", ["id1\tEin Mann.\tA man.", "", "id3\tZwei.\tTwo."])
    with pytest.warns(UserWarning, match="Skipped 1 of 3"):
        assert read_tsv(path, source_col=1, target_col=2) == [("Ein Mann.", "A man."), ("Zwei.", "Two.")]
    with pytest.warns(UserWarning):
        assert read_tsv(path, source_col=2, target_col=1)[0] == ("A man.", "Ein Mann.")


def test_read_tsv_warns_about_lines_whose_columns_are_shifted(tmp_path) -> None:
    path = _write(tmp_path / "d.tsv", ["Ein Mann.\tA man.", "Ein\tHund.\tA dog.", "Zwei.\tTwo.", "Drei.\tThree."])
    with pytest.warns(UserWarning, match=r"most lines have 2 tab-separated columns, but 1 line\(s\) with 3 "
                                         r"\(first: line 2\)"):
        assert len(read_tsv(path)) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a regular file warns of nothing
        read_tsv(_write(tmp_path / "ok.tsv", ["Ein Mann.\tA man.", "Zwei.\tTwo."]))


def test_read_tsv_reports_a_line_with_too_few_columns(tmp_path) -> None:
    path = _write(tmp_path / "d.tsv", ["Ein Mann.\tA man.", "Zwei Männer  Two men."])
    with pytest.raises(DataError, match=r"d\.tsv, line 2: 1 tab-separated column"):
        read_tsv(path)


def test_iter_lines_is_lazy_and_keeps_empty_lines(tmp_path) -> None:
    path = _write(tmp_path / "s.gz", ["eins", "", "drei"], compress=True)
    lines = iter_lines(path)
    assert isinstance(lines, types.GeneratorType)
    assert next(lines) == "eins"
    assert list(lines) == ["", "drei"]


def test_iter_lines_reads_open_text_and_binary_streams() -> None:
    text = io.StringIO("Grüße\r\nzwei\n")
    assert list(iter_lines(text)) == ["Grüße", "zwei"]
    binary = io.BytesIO("Grüße\nzwei".encode())
    assert list(iter_lines(binary)) == ["Grüße", "zwei"]
    with pytest.raises(DataError, match="line 2"):
        list(iter_lines(io.BytesIO(b"ok\n\xff\n")))


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared Multi30k not available")
def test_multi30k_validation_reads_cleanly() -> None:
    pairs = read_parallel(SHARED / "val.de.gz", SHARED / "val.en.gz")
    assert len(pairs) == 1014 and all(s and t for s, t in pairs)
