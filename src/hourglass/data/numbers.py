"""Numbers and their names, a parallel corpus that needs no files: "dreihundertvierundzwanzig" <-> "324".

``num2words`` spells every number in each of ``languages``; a seeded permutation of all (number, language)
pairs gives disjoint validation and training sets, so the model is scored on numbers it never saw. The
direction is ``words-to-digits`` (the source is the spelled-out number) or ``digits-to-words`` (the source is
``"de: 324"``, the language first, so that one model writes every language). The same seed gives the same
corpus on every machine.

It is the text recipe of the README and the smoke test of :mod:`hourglass.tasks.seq2seq`: small enough to
train to more than 95% exact match in a few minutes on a CPU, yet it needs attention, subwords (German
compounds) and reordering (French "quatre-vingt-dix", English "and").
"""
from __future__ import annotations

from functools import cached_property
from typing import Literal, Optional

import numpy as np
from num2words import num2words

from hourglass._registry import register_dataset
from hourglass.data.parallel import Pairs, ParallelDataModule
from hourglass.errors import ConfigError
from hourglass.options import Size

Direction = Literal["words-to-digits", "digits-to-words"]


def spell(number: int, lang: str) -> str:
    """324, "de" -> "dreihundertvierundzwanzig"."""
    try:
        return num2words(number, lang=lang)
    except NotImplementedError:
        raise ConfigError(f'num2words cannot spell numbers in language "{lang}". Use codes such as en, de, fr, es, '
                          "it, nl, pt.") from None


def number_pairs(*, languages: list[str], direction: Direction, max_number: int, sizes: tuple[int, ...],
                 seed: int) -> list[Pairs]:
    """Disjoint sets of (source, target) pairs, one per entry of ``sizes``, drawn from 0..max_number x languages."""
    total = (max_number + 1) * len(languages)
    if sum(sizes) > total:
        raise ConfigError(f"{sum(sizes)} examples were asked for, but 0..{max_number} in {len(languages)} "
                          f"language(s) gives only {total}. Raise data.max_number or lower the sizes.")
    order = np.random.default_rng(seed).permutation(total)
    out, start = [], 0
    for size in sizes:
        pairs = []
        for k in order[start : start + size].tolist():
            number, lang = divmod(k, len(languages))
            words, digits = spell(number, languages[lang]), str(number)
            pairs.append((words, digits) if direction == "words-to-digits" else (f"{languages[lang]}: {digits}", words))
        out.append(pairs)
        start += size
    return out


@register_dataset("numbers-words")
class NumbersDataModule(ParallelDataModule):
    """Generated number names; every other option is :class:`ParallelDataModule`'s."""

    def __init__(
        self,
        *,
        languages: list[str] = ("en", "de", "fr"),  # type: ignore[assignment]
        direction: Direction = "words-to-digits",
        max_number: int = 9999,
        train_size: Size = 20000,
        val_size: Size = 500,
        train_limit: Optional[Size] = None,
        vocab: Size = 500,
        joint_vocab: bool = True,
        tokenizer: Literal["unigram", "bpe"] = "unigram",
        max_length: Size = 64,
        max_tokens: Size = 2048,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(train_limit=train_limit, vocab=vocab, joint_vocab=joint_vocab, tokenizer=tokenizer,
                         max_length=max_length, max_tokens=max_tokens, num_workers=num_workers, seed=seed)
        if not languages:
            raise ConfigError("data.languages is empty: give at least one language code, e.g. [en, de, fr].")
        self.languages, self.direction, self.max_number = list(languages), direction, max_number
        self.sizes = (train_size, val_size)
        side = ("words", "digits") if direction == "words-to-digits" else ("digits", "words")
        self.paths.update(source=f"numbers 0..{max_number} as {side[0]} ({', '.join(self.languages)})", target=side[1])

    @cached_property
    def _generated(self) -> tuple[Pairs, Pairs]:
        train, val = number_pairs(languages=self.languages, direction=self.direction, max_number=self.max_number,
                                  sizes=self.sizes, seed=self.seed)
        return train, val

    def read_train(self) -> Pairs:
        return self._generated[0]

    def read_val(self) -> Pairs:
        return self._generated[1]
