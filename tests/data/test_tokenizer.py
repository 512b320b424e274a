"""SentencePiece tokenizer: exact round trips on German and English, fixed special ids, save and load, errors."""
from __future__ import annotations

import pytest

from hourglass.data.tokenizer import Tokenizer
from hourglass.errors import ConfigError, DataError

GERMAN = [
    "Zwei junge, weiße Männer sind im Freien in der Nähe vieler Büsche.",
    "Mehrere Männer mit Schutzhelmen bedienen ein Antriebsradsystem.",
    "Ein kleines Mädchen klettert in ein Spielhaus aus Holz.",
    "Ein Mann in einem blauen Hemd steht auf einer Leiter und putzt ein Fenster.",
    "Zwei Männer stehen am Herd und bereiten Essen zu.",
    "Ein Mann in grün hält eine Gitarre, während der andere Mann sein Hemd ansieht.",
    "Ein Mann lächelt einen ausgestopften Löwen an.",
    "Ein schickes Mädchen spricht mit dem Handy während sie langsam die Straße entlangschwebt.",
    "Eine Frau mit einer großen Geldbörse geht an einem Tor vorbei.",
    "Jungen tanzen mitten in der Nacht auf Pfosten.",
    "„Größer“, sagt er – und öffnet die Tür; 3 Äpfel, 12 Öfen, 1 Übung!",
]
ENGLISH = [
    "Two young, White males are outside near many bushes.",
    "Several men in hard hats are operating a giant pulley system.",
    "A little girl climbing into a wooden playhouse.",
    "A man in a blue shirt is standing on a ladder cleaning a window.",
    "Two men are at the stove preparing food.",
    "A man in green holds a guitar while the other man observes his shirt.",
    "A man is smiling at a stuffed lion.",
    "A trendy girl talking on her cellphone while gliding slowly down the street.",
    "A woman with a large purse is walking by a gate.",
    "Boys dancing on poles in the middle of the night.",
    "\"It's 5 o'clock\" (roughly) - isn't it? Yes: 100% sure; e-mail me @ 9.",
]


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def joint(request, tmp_path_factory) -> Tokenizer:
    lines = (line for line in GERMAN + ENGLISH)  # a one-shot iterator, as when streaming a file
    prefix = tmp_path_factory.mktemp("spm") / f"joint-{request.param}"
    return Tokenizer.train(lines, vocab_size=200, model_type=request.param, path_prefix=prefix)


def test_round_trip_is_exact_for_german_and_english(joint: Tokenizer) -> None:
    for line in GERMAN + ENGLISH:
        ids = joint.encode(line)
        assert ids and all(isinstance(i, int) for i in ids)
        assert joint.decode(ids) == line
    unseen = "Ein Mädchen und zwei Männer lächeln, während sie Essen zubereiten."  # new words, known letters
    assert joint.decode(joint.encode(unseen)) == unseen


def test_special_ids_are_fixed_and_dropped_when_decoding(joint: Tokenizer) -> None:
    assert (joint.pad_id, joint.unk_id, joint.bos_id, joint.eos_id) == (0, 1, 2, 3)
    ids = joint.encode("Ein Mann.")
    assert joint.decode([joint.bos_id, *ids, joint.eos_id, joint.pad_id, joint.pad_id]) == "Ein Mann."
    assert not {0, 2, 3} & set(joint.encode("Zwei Männer"))


def test_a_small_corpus_gets_a_smaller_vocabulary_instead_of_an_error(joint: Tokenizer) -> None:
    assert 50 < joint.vocab_size <= 200
    assert max(max(joint.encode(line)) for line in GERMAN + ENGLISH) < joint.vocab_size


def test_unseen_characters_become_unk(joint: Tokenizer) -> None:
    assert joint.unk_id in joint.encode("Ωμέγα")


def test_pieces_show_the_segmentation(joint: Tokenizer) -> None:
    pieces = joint.pieces("Zwei Männer")
    assert "".join(pieces).replace("▁", " ").strip() == "Zwei Männer"


def test_load_gives_the_same_tokenizer(joint: Tokenizer) -> None:
    again = Tokenizer.load(joint.path)
    assert again.vocab_size == joint.vocab_size
    assert all(again.encode(line) == joint.encode(line) for line in GERMAN + ENGLISH)


def test_separate_vocabularies_are_two_tokenizers(tmp_path) -> None:
    de = Tokenizer.train(GERMAN, vocab_size=120, path_prefix=tmp_path / "de")
    en = Tokenizer.train(ENGLISH, vocab_size=120, path_prefix=tmp_path / "en")
    assert de.path != en.path
    assert de.decode(de.encode(GERMAN[0])) == GERMAN[0] and en.decode(en.encode(ENGLISH[0])) == ENGLISH[0]


def test_a_vocabulary_smaller_than_the_alphabet_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="vocab_size=10 is too small"):
        Tokenizer.train(GERMAN, vocab_size=10, path_prefix=tmp_path / "tiny")


def test_empty_training_text_is_a_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="no non-empty line"):
        Tokenizer.train(["", "   "], vocab_size=100, path_prefix=tmp_path / "empty")


def test_loading_a_missing_or_wrong_file_is_a_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        Tokenizer.load(tmp_path / "nothing.model")
    (tmp_path / "junk.model").write_text("not a model")
    with pytest.raises(DataError, match="not a SentencePiece model"):
        Tokenizer.load(tmp_path / "junk.model")


def test_lines_longer_than_sentencepieces_default_limit_are_learned(tmp_path):
    # SentencePiece skips lines over 4,192 bytes unless told otherwise: a corpus of whole articles would lose
    # every article, and characters found only in them would decode as unk.
    article = " ".join(f"word{i % 50}" for i in range(1000)) + " Zürich"  # about 7,000 bytes
    tok = Tokenizer.train([article] * 3 + ["a short line"], vocab_size=80, path_prefix=tmp_path / "long")
    assert tok.decode(tok.encode("Zürich word7")) == "Zürich word7"


def test_a_saved_tokenizer_changed_or_cut_short_is_named_not_loaded_as_a_smaller_vocabulary(joint, tmp_path) -> None:
    """A truncated .model file can still parse (as fewer pieces); the run's weights would then be blamed."""
    saved = tmp_path / "tokenizer.model"
    joint.save(saved)
    again = Tokenizer.load(saved)
    assert again.vocab_size == joint.vocab_size and again.encode("Ein Hund läuft.") == joint.encode("Ein Hund läuft.")
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"tokenizer.model (is not the tokenizer this run was trained with|is not a "
                                        r"SentencePiece model).*(copy of the run)"):
        Tokenizer.load(saved)
    saved.write_bytes(data)
    (tmp_path / "tokenizer.model.json").write_text('{"pieces": 3}', encoding="utf-8")
    with pytest.raises(DataError, match='tokenizer.model.json: the field "sha256"'):
        Tokenizer.load(saved)
    (tmp_path / "tokenizer.model.json").unlink()
    assert Tokenizer.load(saved).vocab_size == joint.vocab_size  # no record (a user's own file): loads as it is


def test_a_file_that_is_not_a_sentencepiece_model_says_so(tmp_path) -> None:
    (tmp_path / "spm.vocab").write_text("a\t0\nb\t-1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"spm.vocab is not a SentencePiece model.*not \.vocab"):
        Tokenizer.load(tmp_path / "spm.vocab")
    (tmp_path / "garbage.model").write_bytes(b"\x00\xff" * 50)
    with pytest.raises(DataError, match=r"garbage.model is not a SentencePiece model.*damaged"):
        Tokenizer.load(tmp_path / "garbage.model")


def test_training_where_a_saved_tokenizer_and_its_record_are_is_not_refused(joint, tmp_path) -> None:
    joint.save(tmp_path / "tokenizer.model")  # and tokenizer.model.json
    again = Tokenizer.train(["ganz andere Wörter hier", "und noch mehr davon"] * 20, vocab_size=30,
                            path_prefix=tmp_path / "tokenizer")
    assert again.vocab_size <= 30 and again.decode(again.encode("ganz andere")) == "ganz andere"
