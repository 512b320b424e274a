"""Subword tokenization with SentencePiece (Kudo & Richardson 2018).

``Tokenizer.train`` learns a unigram-LM (Kudo 2018) or BPE (Sennrich et al. 2016) vocabulary from any iterable of
lines and writes ``<path_prefix>.model``; ``Tokenizer.load`` reads it back. Special ids are fixed for every model:
pad = 0, unk = 1, bos = 2, eos = 3. Whether source and target share a vocabulary is the caller's choice: train
one Tokenizer on both sides, or one per side.

Detokenization is exact: ``decode(encode(s)) == s`` for text whose characters were seen in training, with single
spaces and no leading or trailing space. That is why the default normalization is "identity": SentencePiece's
usual "nmt_nfkc" rewrites some characters (``…`` becomes ``...``), which would change outputs scored against
untokenized references. Characters never seen in training become unk and decode as `` ⁇ ``.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

import sentencepiece as spm

from hourglass.data.text import undecodable
from hourglass.errors import ConfigError, DataError
from hourglass.io import atomic_write, atomic_write_json

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
#: The longest line (bytes) the trainer reads; SentencePiece's default of 4,192 would silently skip whole news
#: articles (summarization sources).
_LONGEST = 1 << 20


class Tokenizer:
    """A trained SentencePiece model: ``encode(str) -> list[int]`` and ``decode(list[int]) -> str``."""

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, processor: spm.SentencePieceProcessor, *, path: Path) -> None:
        self._sp = processor
        self.path = path

    @classmethod
    def train(
        cls,
        lines: Iterable[str],
        *,
        vocab_size: int,
        path_prefix: str | Path,
        model_type: Literal["unigram", "bpe"] = "unigram",
        character_coverage: float = 1.0,
        normalization: Literal["identity", "nmt_nfkc", "nfkc"] = "identity",
        user_defined_symbols: Sequence[str] = (),
    ) -> "Tokenizer":
        """Learn a vocabulary of about ``vocab_size`` pieces from ``lines`` and save ``<path_prefix>.model``.

        ``vocab_size`` is an upper bound (``hard_vocab_limit=False``), so a small corpus gives a smaller
        vocabulary instead of an error. It must still leave room for every character and the 4 special ids.
        ``user_defined_symbols`` are pieces kept whole wherever they occur (a dialogue's turn separator).
        """
        prefix = Path(path_prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        counted = _Counted(lines)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(counted), model_prefix=str(prefix), vocab_size=vocab_size,
                model_type=model_type, hard_vocab_limit=False, character_coverage=character_coverage,
                normalization_rule_name=normalization, pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID,
                eos_id=EOS_ID, minloglevel=2, max_sentence_length=_LONGEST,
                user_defined_symbols=list(user_defined_symbols),
            )
        except RuntimeError as err:
            if counted.nonempty == 0:
                raise DataError(f"Cannot train a tokenizer at {prefix}: the training text has no non-empty "
                                "line. Check the training files.") from None
            raise _explain(err, vocab_size) from None
        return cls.load(prefix.with_name(prefix.name + ".model"), check=False)  # a record there is not this model's

    @classmethod
    def load(cls, path: str | Path, *, check: bool = True) -> "Tokenizer":
        """Read a ``.model`` file written by :meth:`train`, or by :meth:`save` (whose record it then checks, unless
        ``check`` is False)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"Tokenizer model {path} does not exist. Train one first (Tokenizer.train), or give "
                            "the path of the .model file saved in the run directory.")
        data = path.read_bytes()
        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(data)
        except (OSError, RuntimeError) as err:
            fix = ("Give the .model file, not .vocab." if path.suffix == ".vocab" else
                   "The file is damaged or is something else; restore it from a copy of the run (or of the model).")
            raise DataError(f"{path} is not a SentencePiece model ({err}). {fix}") from None
        if check:
            _check_record(path, data, processor.GetPieceSize())
        return cls(processor, path=path)

    def save(self, path: str | Path) -> None:
        """Copy the model file to ``path`` (a run directory's), atomically, with a record beside it
        (``<name>.json``: its piece count and SHA-256) that :meth:`load` checks. A file changed or cut short (a copy
        that stopped early) would otherwise still load, as a smaller vocabulary, and the run's weights would be
        blamed for not fitting it."""
        path, data = Path(path), self.path.read_bytes()
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
        atomic_write_json(_record_path(path), {"pieces": self.vocab_size, "sha256": hashlib.sha256(data).hexdigest()})

    @property
    def vocab_size(self) -> int:
        return self._sp.GetPieceSize()

    def encode(self, text: str) -> list[int]:
        """A line of text -> piece ids, without bos and eos."""
        try:
            return self._sp.EncodeAsIds(text)
        except RuntimeError:  # SentencePiece's only words for a lone surrogate: "Unable to cast ..."
            raise _not_text(text) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Piece ids -> text. pad, bos and eos are dropped."""
        return self._sp.DecodeIds([int(i) for i in ids])

    def pieces(self, text: str) -> list[str]:
        """A line of text -> its pieces as strings (for inspection; ``▁`` marks a preceding space)."""
        try:
            return self._sp.EncodeAsPieces(text)
        except RuntimeError:
            raise _not_text(text) from None


class _Counted:
    """Iterate ``lines`` once, counting the non-empty ones (to explain a failure on an empty corpus)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines, self.nonempty = lines, 0

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            if line.strip():
                self.nonempty += 1
            yield line


def _not_text(text: object) -> Exception:
    """The error for a string SentencePiece refused: bytes that are not UTF-8 (lone surrogates, which Python's
    surrogateescape leaves in command-line arguments and file names), or something that is not a string."""
    bad = undecodable(text) if isinstance(text, str) else None
    if bad is None:
        return TypeError(f"Tokenizer.encode takes a string, got {type(text).__name__}")
    position, raw = bad
    return DataError(f"The text holds bytes that are not UTF-8 ({raw!r} at character {position}), which a tokenizer "
                     "cannot read. Give UTF-8 text (decode bytes with .decode('utf-8'), not surrogateescape).")


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _check_record(path: Path, data: bytes, pieces: int) -> None:
    """The model file's bytes against the record that :meth:`Tokenizer.save` wrote beside it (when there is one:
    a tokenizer of the user's own, or of a run from before the record, has none)."""
    record = _record_path(path)
    if not record.is_file():
        return
    from hourglass.data.base import read_artifact  # data.base imports lightning: only for a run's tokenizer

    saved = read_artifact(record, {"pieces": (lambda v: isinstance(v, int) and v > 0, "a positive whole number"),
                                   "sha256": (lambda v: isinstance(v, str), "a hexadecimal string")})
    if hashlib.sha256(data).hexdigest() != saved["sha256"]:
        raise DataError(
            f"{path} is not the tokenizer this run was trained with: its checksum differs from the one recorded in "
            f"{record}, and it has {pieces} pieces where the record says {saved['pieces']}. It was changed or cut "
            "short (a copy that stopped early?). Restore it from a complete copy of the run: a tokenizer trained "
            "again would not give the same pieces, so the run's weights would not fit it."
        )


class VocabTooSmall(ConfigError):
    """``vocab_size`` leaves no room for every character of the training text; ``needed`` is the least that does.
    The message names the argument of :meth:`Tokenizer.train`; a caller that set it from a config (the parallel
    data's ``data.vocab``) says so in its own words."""

    def __init__(self, message: str, *, vocab_size: int, needed: int) -> None:
        super().__init__(message)
        self.vocab_size, self.needed = vocab_size, needed


def _explain(err: RuntimeError, vocab_size: int) -> Exception:
    """Turn SentencePiece's internal check failures into one user-facing paragraph."""
    found = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(err))
    if found:
        need = int(found.group(2))
        return VocabTooSmall(
            f"Tokenizer.train: vocab_size={vocab_size} is too small: the training text has {need - 4} distinct "
            f"characters, and with the 4 special ids (pad, unk, bos, eos) the vocabulary needs at least {need} "
            f"entries. Raise the vocab_size argument to {need} or more (a few thousand is usual), or lower the "
            "character_coverage argument (below 1.0) so that rare characters become unk.",
            vocab_size=vocab_size, needed=need)
    return DataError(f"SentencePiece could not train a tokenizer: {err}")
