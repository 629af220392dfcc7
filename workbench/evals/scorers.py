"""Scorers for generated answers: multiple choice, extractive QA, continuations, summaries.

All scorers compare text after the same normalization (`normalize_text`): Unicode NFKC (so
full-width "（Ａ）" reads as "(a)"), lowercase, punctuation turned into spaces, whitespace collapsed,
and spaces between characters of scripts written without spaces (CJK, kana, Hangul, Thai ...)
removed. Matches in space-delimited scripts must start and end at word boundaries ("dog" is not
found in "dogs", "8" not in "18"); in CJK text any substring counts, because words are not
delimited there.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import cache

DEFAULT_LABELS: tuple[str, ...] = tuple("ABCDEFGHIJ")

# Unicode character-name prefixes of scripts that do not put spaces between words.
_UNSPACED_SCRIPTS = (
    "CJK", "HIRAGANA", "KATAKANA", "HALFWIDTH KATAKANA", "HANGUL", "THAI", "LAO", "KHMER",
    "MYANMAR", "TIBETAN", "IDEOGRAPHIC", "BOPOMOFO",
)

# Articles dropped before exact match / F1, as in the SQuAD and MLQA evaluation scripts.
_ARTICLES = {
    "en": {"a", "an", "the"},
    "fr": {"le", "la", "les", "l", "un", "une", "des", "du"},
    "de": {"der", "die", "das", "den", "dem", "des", "ein", "eine", "einen", "einem", "einer", "eines"},
    "es": {"el", "la", "los", "las", "un", "una", "unos", "unas"},
}


def is_unspaced_char(ch: str) -> bool:
    """True for a character of a script written without spaces between words."""
    if ch.isspace() or ord(ch) < 0x0E00:
        return False
    return unicodedata.name(ch, "").startswith(_UNSPACED_SCRIPTS)


def normalize_text(text: str) -> str:
    """Canonical form for comparing answers across scripts (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = " ".join(text.split())
    chars = list(text)
    kept = [
        ch for i, ch in enumerate(chars)
        if not (ch == " " and 0 < i < len(chars) - 1
                and is_unspaced_char(chars[i - 1]) and is_unspaced_char(chars[i + 1]))
    ]
    return "".join(kept)


def _is_boundary(left: str, right: str) -> bool:
    """Whether the edge between characters `left` and `right` ('' at either end of the text) is a
    word boundary: next to a space, the text's end, a non-alphanumeric symbol, or any character of
    an unspaced script."""
    if not left or not right or " " in (left, right):
        return True
    if is_unspaced_char(left) or is_unspaced_char(right):
        return True
    return not (left.isalnum() and right.isalnum())


def _char(text: str, i: int) -> str:
    return text[i] if 0 <= i < len(text) else ""


def find_spans(haystack: str, needle: str) -> list[tuple[int, int]]:
    """(start, end) of each occurrence of `needle` in `haystack` at word boundaries.

    Both strings must already be normalized. An empty needle never matches.
    """
    spans: list[tuple[int, int]] = []
    if not needle:
        return spans
    start = haystack.find(needle)
    while start != -1:
        end = start + len(needle)
        if (_is_boundary(_char(haystack, start - 1), haystack[start])
                and _is_boundary(haystack[end - 1], _char(haystack, end))):
            spans.append((start, end))
        start = haystack.find(needle, start + 1)
    return spans


def _as_list(golds: str | Sequence[str]) -> list[str]:
    return [golds] if isinstance(golds, str) else list(golds)


def score_extractive(output: str, golds: str | Sequence[str]) -> bool:
    """True if any normalized gold answer occurs in the normalized output (word-bounded)."""
    out = normalize_text(output)
    return any(find_spans(out, normalize_text(g)) for g in _as_list(golds))


def score_continuation(output: str, gold: str | Sequence[str]) -> bool:
    """True if the normalized output starts with a normalized gold (ending on a word boundary).

    Used for answer-probability items scored by greedy generation, e.g. " Paris" after
    "The capital of France is".
    """
    out = normalize_text(output)
    for g in _as_list(gold):
        g_norm = normalize_text(g)
        if g_norm and out.startswith(g_norm) and _is_boundary(g_norm[-1], _char(out, len(g_norm))):
            return True
    return False


def _label_patterns(label: str) -> list[re.Pattern[str]]:
    """Regexes that name `label` as an answer: "(B)", "B)", "B.", or a bare "B" as the whole reply."""
    k = re.escape(label)
    return [
        re.compile(rf"\({k}\)", re.IGNORECASE),
        re.compile(rf"(?<![\w(]){k}\)", re.IGNORECASE),
        re.compile(rf"(?<![\w.]){k}\.(?!\w)"),
        re.compile(rf"^\s*{k}\s*(?:[:,;\n]|$)"),
    ]


def mentioned_choices(
    output: str,
    choices: Sequence[str | Sequence[str]],
    labels: Sequence[str] = DEFAULT_LABELS,
) -> set[int]:
    """Indices of the options an output names, by label pattern or by option text.

    Each choice is a string or a list of acceptable texts (e.g. the option in the prompt's language
    and in English). An option text found only inside a longer option's text (e.g. "neutral" inside
    "not neutral") does not count.
    """
    if len(labels) < len(choices):
        raise ValueError(f"{len(choices)} choices but only {len(labels)} labels {list(labels)}")
    raw = unicodedata.normalize("NFKC", output)
    named = {
        i for i, lab in enumerate(labels[: len(choices)])
        if any(p.search(raw) for p in _label_patterns(lab))
    }
    out = normalize_text(output)
    spans: list[tuple[int, int, int]] = []
    for i, choice in enumerate(choices):
        for text in _as_list(choice):
            spans += [(s, e, i) for s, e in find_spans(out, normalize_text(text))]
    for s, e, i in spans:
        inside_longer = any(s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, _ in spans)
        if not inside_longer:
            named.add(i)
    return named


def score_multiple_choice(
    output: str,
    choices: Sequence[str | Sequence[str]],
    label: int,
    labels: Sequence[str] = DEFAULT_LABELS,
) -> bool:
    """True if the output names exactly one option and it is option `label`.

    An option is named by its label ("(A)", "A)", "A.", or a bare "A" as the whole reply) or by its
    text. Outputs that name two or more different options are wrong, so listing every option
    cannot score.
    """
    if not 0 <= label < len(choices):
        raise ValueError(f"label {label} is out of range for {len(choices)} choices")
    return mentioned_choices(output, choices, labels) == {label}


def _qa_tokens(text: str, lang: str | None) -> list[str]:
    """Tokens for QA F1: words for spaced scripts, single characters for unspaced ones (MLQA's
    mixed segmentation), articles of `lang` dropped."""
    tokens: list[str] = []
    for word in normalize_text(text).split(" "):
        piece = ""
        for ch in word:
            if is_unspaced_char(ch):
                if piece:
                    tokens.append(piece)
                    piece = ""
                tokens.append(ch)
            else:
                piece += ch
        if piece:
            tokens.append(piece)
    articles = _ARTICLES.get(lang or "", set())
    return [t for t in tokens if t not in articles]


def exact_match(prediction: str, golds: str | Sequence[str], lang: str | None = None) -> bool:
    """SQuAD-style exact match: normalized prediction equals a normalized gold (articles dropped)."""
    pred = _qa_tokens(prediction, lang)
    return any(pred == _qa_tokens(g, lang) for g in _as_list(golds))


def f1_score(prediction: str, golds: str | Sequence[str], lang: str | None = None) -> float:
    """SQuAD-style token F1, maximized over golds; CJK text is compared character by character."""
    pred = _qa_tokens(prediction, lang)
    best = 0.0
    for gold in _as_list(golds):
        ref = _qa_tokens(gold, lang)
        if not pred or not ref:
            best = max(best, float(pred == ref))
            continue
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


class _MixedTokenizer:
    """rouge-score tokenizer: the QA tokenization, so CJK summaries are scored per character
    (rouge-score's default tokenizer deletes every non-ASCII character)."""

    def tokenize(self, text: str) -> list[str]:
        return _qa_tokens(text, None)


@cache
def _rouge():
    from rouge_score import rouge_scorer  # imported on first use: it loads nltk (seconds)

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_MixedTokenizer())


def rouge_scores(output: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures of a summary against one reference, for any script."""
    scores = _rouge().score(reference, output)
    return {name: s.fmeasure for name, s in scores.items()}
