"""Number words and articles of generated text (captions, instructions)."""

from __future__ import annotations

from babelrs_core.english import article, number_word, with_article


def test_number_words_up_to_a_limit_then_digits() -> None:
    assert [number_word(n) for n in (0, 1, 12, 13, 20, 21, -1)] == [
        "zero", "one", "twelve", "thirteen", "twenty", "21", "-1",
    ]  # fmt: skip
    assert number_word(12, most=12) == "twelve" and number_word(13, most=12) == "13"


def test_articles_by_first_letter() -> None:
    assert [article(w) for w in ("airplane", "Ship", "ice", "")] == ["an", "a", "an", "an"]
    assert with_article("storage tank") == "a storage tank"
