"""estimate_tokens: the tokens recorded for a text when the upstream reports none.

The common byte-level BPE tokenizers (cl100k_base, o200k_base, Llama 3) make about a token
of 4 characters of English, and about a token of each character of Chinese, Japanese,
Korean, Thai or Hindi.
"""

import pytest

from completions.providers.base import estimate_tokens

ENGLISH = (
    "All human beings are born free and equal in dignity and rights. They are endowed with "
    "reason and conscience and should act towards one another in a spirit of brotherhood."
)
CHINESE = "人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心，并应以兄弟关系的精神相对待。"
JAPANESE = "すべての人間は、生まれながらにして自由であり、かつ、尊厳と権利とについて平等である。"
KOREAN = "모든인간은태어날때부터자유로우며그존엄과권리에있어동등하다"
THAI = "มนุษย์ทั้งหลายเกิดมามีอิสระและเสมอภาคกันในเกียรติศักดิ์และสิทธิ"
HINDI = "सभीमनुष्योंकोगौरवऔरअधिकारोंकेमामलेमेंजन्मजातस्वतन्त्रताप्राप्तहै"


def _old_estimate(text):
    return -(-len(text) // 4)


def test_it_counts_a_thousand_chinese_characters_as_a_thousand_tokens_at_least():
    text = (CHINESE * 100)[:1000]

    assert estimate_tokens(text) >= 1000


@pytest.mark.parametrize("text", [JAPANESE, KOREAN, THAI, HINDI], ids=["ja", "ko", "th", "hi"])
def test_it_counts_a_token_a_character_of_scripts_without_latin_letters(text):
    assert estimate_tokens(text * 10) >= len(text) * 10


def test_it_counts_english_at_4_characters_a_token_as_before():
    text = ENGLISH * 20

    assert estimate_tokens(text) == _old_estimate(text)


def test_english_with_a_typographic_apostrophe_and_an_accent_stays_within_a_few_percent():
    text = (ENGLISH * 4).replace("They are", "They’re", 1) + " Coffee at the café."

    assert _old_estimate(text) <= estimate_tokens(text) <= _old_estimate(text) * 1.05


def test_cyrillic_counts_between_english_and_chinese():
    text = "Все люди рождаются свободными и равными в своем достоинстве и правах."

    assert _old_estimate(text) < estimate_tokens(text) < len(text)


def test_a_mixed_text_adds_up_its_parts():
    english = "a" * 400

    assert estimate_tokens(english + CHINESE) == 100 + len(CHINESE)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("a", 1), ("é", 1), ("中", 1), ("😀", 1), ("\ud800", 1), ("ab\udfff", 2)],
)
def test_it_counts_every_nonempty_text_as_a_token_at_least(text, tokens):
    # A lone surrogate (JSON may carry one) is counted, not refused: the provider's encoder
    # refuses it later with its own 400.
    assert estimate_tokens(text) == tokens
