"""English wording for generated text: number words and indefinite articles.

Shared by the synthetic captions (:mod:`babelrs_core.data.synth.scene`) and the pretraining
instructions (:mod:`babelrs_core.pretrain.instructions`).
"""

from __future__ import annotations

#: Number words from zero to twenty.
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)  # fmt: skip


def number_word(n: int, most: int = len(NUMBER_WORDS) - 1) -> str:
    """``n`` in words from zero up to ``most`` (twenty at most), in digits otherwise."""
    return NUMBER_WORDS[n] if 0 <= n <= min(most, len(NUMBER_WORDS) - 1) else str(n)


def article(noun: str) -> str:
    """The indefinite article of ``noun`` by its first letter: "an" before a vowel, else "a"."""
    return "an" if noun[:1].lower() in "aeiou" else "a"


def with_article(noun: str) -> str:
    """``noun`` after its indefinite article ("an airplane", "a car")."""
    return f"{article(noun)} {noun}"
