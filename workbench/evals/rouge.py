"""ROUGE-1/2/L for any language, with a tokenizer chosen by language code.

rouge-score's default tokenizer keeps only ``[a-z0-9]``, so Chinese, Japanese, Greek or Russian
text scores 0 against itself. Here the same ROUGE computation runs on tokens that fit the script:

- Chinese (``zh``, ``yue``: languages written in Han script): words from jieba;
- other languages written without spaces between words (``ja``, ``th``, ``lo``, ``km``, ``my``):
  one token per character (grapheme) of those scripts, so ROUGE-2 counts character bigrams;
- every other language: words (runs of letters and combining marks) and numbers, where a number
  keeps its decimal or thousands separators (``2.4``, ``1,200``) so figures match as a whole.

Tokens are lower-cased and punctuation is dropped. There is no stemming: Porter stemming is
English-only and would make scores incomparable across languages.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import jieba
import regex
from babel import Locale, UnknownLocaleError
from babel.core import get_global
from rouge_score import rouge_scorer, tokenizers

from workbench.errors import InputError

__all__ = [
    "UnknownLanguageError",
    "primary_language",
    "token_unit",
    "tokenize",
    "rouge",
    "ROUGE_TYPES",
]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

TokenUnit = Literal["jieba", "char", "word"]

# CLDR script codes: Han is segmented by jieba; these others put no spaces between words and
# have no segmenter installed here, so they are split into characters.
_HAN_SCRIPTS = frozenset({"Hans", "Hant"})
_CHAR_SCRIPTS = frozenset({"Jpan", "Thai", "Laoo", "Khmr", "Mymr"})
_NO_SPACE_SCRIPTS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
_NUMBER = r"\p{Nd}+(?:[.,]\p{Nd}+)*"
_WORD_PATTERN = regex.compile(rf"{_NUMBER}|[\p{{L}}\p{{M}}]+")
_CHAR_PATTERN = regex.compile(
    rf"(?=[{_NO_SPACE_SCRIPTS}ー])\X|{_NUMBER}|(?:(?![{_NO_SPACE_SCRIPTS}ー])[\p{{L}}\p{{M}}])+"
)
_HAS_CONTENT = regex.compile(r"[\p{L}\p{N}]")


class UnknownLanguageError(InputError):
    """The language code is not one CLDR knows (e.g. ``"xx"`` or ``"english"``)."""


def primary_language(lang: str) -> str:
    """The language subtag of a code, lower-cased: ``"zh_TW"`` and ``"zh-Hant"`` give ``"zh"``."""
    return lang.strip().replace("_", "-").split("-")[0].lower()


@lru_cache(maxsize=None)
def token_unit(lang: str) -> TokenUnit:
    """How text in ``lang`` (an ISO 639 code, optionally with region: ``zh-CN``) is tokenized.

    The decision follows the language's usual script in CLDR, so e.g. Cantonese (``yue``) is
    segmented like Chinese.
    """
    try:
        language = Locale.parse(primary_language(lang)).language
    except (UnknownLocaleError, ValueError) as error:
        raise UnknownLanguageError(
            f"unknown language code {lang!r}: use an ISO 639 code such as 'en', 'zh' or 'ja'"
        ) from error
    parts = get_global("likely_subtags").get(language, "").split("_")  # e.g. "yue_Hant_HK"
    script = parts[1] if len(parts) == 3 else ""
    if script in _HAN_SCRIPTS:
        return "jieba"
    if script in _CHAR_SCRIPTS:
        return "char"
    return "word"


def tokenize(text: str, lang: str) -> list[str]:
    """Lower-cased content tokens of ``text`` (punctuation and whitespace dropped)."""
    unit = token_unit(lang)
    if unit == "jieba":
        return [token.lower() for token in jieba.lcut(text) if _HAS_CONTENT.search(token)]
    pattern = _CHAR_PATTERN if unit == "char" else _WORD_PATTERN
    return [token.lower() for token in pattern.findall(text)]


class _LanguageTokenizer(tokenizers.Tokenizer):
    """Adapter so rouge-score runs on :func:`tokenize` for one language."""

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text, self.lang)


@lru_cache(maxsize=None)
def _scorer(lang: str) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=_LanguageTokenizer(lang))


def rouge(prediction: str, reference: str, lang: str) -> dict[str, float]:
    """F-measures ``{"rouge1", "rouge2", "rougeL"}`` of ``prediction`` against ``reference``.

    Both texts are in ``lang``; an empty side scores 0.
    """
    token_unit(lang)  # fail on an unknown language before any scoring
    scores = _scorer(lang).score(reference, prediction)
    return {name: float(scores[name].fmeasure) for name in ROUGE_TYPES}
