"""The parallel-text data module: files and TSV, bad input, tokenizers saved with the run, batches, and the
numbers-words corpus."""
from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import pytest

from hourglass.data.numbers import NumbersDataModule, number_pairs
from hourglass.data.parallel import ParallelDataModule
from hourglass.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "multi30k"

DE = ["Ein Hund läuft.", "Zwei Männer spielen Fußball.", "Eine Frau liest ein Buch.", "Kinder spielen im Park.",
      "Ein Mann fährt Fahrrad.", "Die Katze schläft.", "Ein Mädchen singt.", "Ein Junge springt ins Wasser."]
EN = ["A dog runs.", "Two men play soccer.", "A woman reads a book.", "Children play in the park.",
      "A man rides a bike.", "The cat sleeps.", "A girl sings.", "A boy jumps into the water."]


def write(path: Path, lines: list[str], gz: bool = False) -> str:
    text = "".join(f"{line}\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(text) if gz else text)
    return str(path)


def module(tmp_path: Path, src=DE, tgt=EN, **options) -> ParallelDataModule:
    data = ParallelDataModule(source=write(tmp_path / "train.de.gz", src, gz=True),
                              target=write(tmp_path / "train.en", tgt), vocab=80, val_fraction=0.25, **options)
    data.setup("fit")
    return data


def test_two_files_plain_and_gzip_split_and_batches(tmp_path):
    data = module(tmp_path)
    assert len(data.encoded("train")) == 6 and len(data.references("val")) == 2
    assert sorted(data.references("val") + [t for _, t in data._read("train")]) == sorted(EN)
    batch = next(iter(data.val_dataloader()))
    assert set(batch) == {"source", "target", "index"}
    tok = data.target_tokenizer
    assert (batch["target"][:, 0] == tok.bos_id).all()
    for row, i in zip(batch["target"], batch["index"].tolist()):  # target = [bos ... eos pad...] of example i
        ids = [t for t in row.tolist() if t != tok.pad_id]
        assert ids[-1] == tok.eos_id and tok.decode(ids[1:-1]) == data.references("val")[i]
    ctx = data.context()
    assert ctx.modality == "tokens" and ctx.encoder["vocab_size"] == ctx.decoder["vocab_size"] == tok.vocab_size


def test_tsv_and_separate_vocabularies_round_trip_through_the_run_dir(tmp_path):
    tsv = write(tmp_path / "pairs.tsv", [f"{d}\t{e}" for d, e in zip(DE, EN)])
    data = ParallelDataModule(tsv=tsv, vocab=80, joint_vocab=False, val_fraction=0.25)
    data.setup("fit")
    assert data.source_tokenizer is not data.target_tokenizer
    run = tmp_path / "run"
    run.mkdir()
    data.save_artifacts(run)
    assert (run / "source.model").is_file() and (run / "target.model").is_file()
    again = ParallelDataModule(tsv=str(tmp_path / "moved-away.tsv"), vocab=80, joint_vocab=False)
    again.load_artifacts(run)
    again.setup("fit")  # does not read the (missing) training file
    for d, e in data._read("train"):  # the tokenizers round-trip every training sentence
        assert again.source_tokenizer.decode(again.source_tokenizer.encode(d)) == d
        assert again.target_tokenizer.decode(again.target_tokenizer.encode(e)) == e
    assert again.encode_sources(DE[:2]).tolist() == data.encode_sources(DE[:2]).tolist()


def test_different_line_counts_name_both_counts_and_the_lines(tmp_path):
    data = ParallelDataModule(source=write(tmp_path / "a.de", DE), target=write(tmp_path / "a.en", EN[:-1]))
    with pytest.raises(DataError) as err:
        data.setup("fit")
    text = str(err.value)
    assert "8 lines" in text and "has 7" in text and "line 8" in text and "Wasser" in text


def test_empty_lines_are_skipped_with_a_count(tmp_path):
    src, tgt = DE[:4] + [""] + DE[4:], EN[:4] + ["An empty German line."] + EN[4:]
    with pytest.warns(UserWarning, match=r"Skipped 1 of 9 line pairs"):
        data = module(tmp_path, src, tgt)
    assert len(data._read("train")) + len(data._read("val")) == 8


def test_empty_corpus_and_missing_text_are_refused(tmp_path):
    with pytest.raises(DataError, match="no sentence pair"):
        module(tmp_path, ["", " "], ["", ""])
    with pytest.raises(ConfigError, match="data.source and data.target"):
        ParallelDataModule(source=write(tmp_path / "only.de", DE)).setup("fit")


def test_undecodable_bytes_name_the_file_and_line(tmp_path):
    (tmp_path / "bad.de").write_bytes(b"Ein Hund.\nStra\xdfe in K\xf6ln.\n")
    data = ParallelDataModule(source=str(tmp_path / "bad.de"), target=write(tmp_path / "bad.en", EN[:2]))
    with pytest.raises(DataError, match=r"bad\.de, line 2.*not UTF-8"):
        data.setup("fit")


def test_long_sources_are_truncated_with_a_warning(tmp_path):
    data = module(tmp_path, max_length=6)
    long = " ".join(DE)
    with pytest.warns(UserWarning, match="truncated"):
        source = data.encode_sources([long, "Ein Hund."])
    assert source.shape == (2, 6)
    assert len(data.item_labels(long)) == 6


def test_resume_skips_the_consumed_batches(tmp_path):
    data = module(tmp_path, DE * 8, EN * 8, max_tokens=40)
    full = [b["index"].tolist() for b in data.train_dataloader()]
    data.resume_at(0, 2)
    loader = data.train_dataloader()
    assert [b["index"].tolist() for b in loader] == full[2:]
    assert len(loader) == len(full)  # Lightning takes len() as every epoch's length: a whole epoch's


def test_numbers_words_is_deterministic_and_disjoint():
    a = number_pairs(languages=["en", "de", "fr"], direction="words-to-digits", max_number=999, sizes=(200, 50), seed=3)
    b = number_pairs(languages=["en", "de", "fr"], direction="words-to-digits", max_number=999, sizes=(200, 50), seed=3)
    assert a == b and not set(a[0]) & set(a[1])
    assert ("dreihundertvierundzwanzig", "324") in number_pairs(languages=["de"], direction="words-to-digits",
                                                                 max_number=999, sizes=(1000,), seed=0)[0]
    back = number_pairs(languages=["fr"], direction="digits-to-words", max_number=99, sizes=(100,), seed=0)[0]
    assert ("fr: 90", "quatre-vingt-dix") in back
    with pytest.raises(ConfigError, match="gives only"):
        number_pairs(languages=["en"], direction="words-to-digits", max_number=9, sizes=(8, 8), seed=0)


def test_numbers_data_module(tmp_path):
    data = NumbersDataModule(max_number=99, train_size=150, val_size=20, vocab=60)
    data.setup("fit")
    assert len(data.encoded("train")) == 150 and len(data.references("val")) == 20
    assert all(r.isdigit() for r in data.references("val"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about in generated text
        next(iter(data.train_dataloader()))


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared Multi30k data not available")
def test_tokenizer_round_trips_multi30k_validation():
    data = ParallelDataModule(source=str(SHARED / "val.de.gz"), target=str(SHARED / "val.en.gz"), vocab=2000,
                              val_fraction=0.1)
    data.setup("fit")
    for de, en in data._read("train") + data._read("val"):
        assert data.source_tokenizer.decode(data.source_tokenizer.encode(de)) == de
        assert data.target_tokenizer.decode(data.target_tokenizer.encode(en)) == en
