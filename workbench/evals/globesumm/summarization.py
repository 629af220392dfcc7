"""Multi-document summary metrics: redundancy, omission (fact coverage) and conflict handling.

These are the three hurdles GlobeSumm names for summarizing many reports of one event. All of them
are lexical and work on the tokens of :func:`workbench.evals.rouge.tokenize`, so they run for any
language, offline, and with no model; they are transparent proxies, not judgments of meaning (a
fact paraphrased with other words, or "twelve" for "12", is not matched).

Definitions
-----------
- **redundancy**: the share of the summary's token n-grams that repeat an earlier n-gram of the
  same summary (0 = nothing repeated). **near-duplicate sentences**: the share of sentences whose
  ROUGE-1 F against some earlier sentence reaches a threshold.
- **coverage**: the share of key facts the summary covers. A fact is covered when more than half
  (``threshold``) of its distinct content tokens occur in the summary; **omission** is
  ``1 - coverage``.
- **conflict handling**: the share of conflicts the summary handles. A conflict is handled when
  the summary mentions at least two of the conflicting values (so the reader sees the
  disagreement), or covers the stated resolution like a key fact together with every conflicting
  value the resolution names. Giving one side alone does not count. A value is mentioned when more
  than half of its distinguishing tokens (those not shared by every value: "12" in "12 dead" vs
  "15 dead") occur in the summary.

Content tokens drop a short list of function words (articles, prepositions, pronouns,
auxiliaries) for English, French, German, Spanish and Chinese, and hiragana-only tokens for
Japanese; other languages keep every token. The stop-word lists on PyPI were not used because
they also drop numbers and words such as "first", "million", "opened" or "May", which carry the
facts measured here.
"""

from __future__ import annotations

from collections.abc import Sequence

import regex

from workbench.evals.globesumm.data import Conflict, Event
from workbench.errors import InputError
from workbench.evals.rouge import primary_language, rouge, token_unit, tokenize

__all__ = [
    "redundancy",
    "near_duplicate_sentences",
    "content_tokens",
    "covered_facts",
    "coverage",
    "handled_conflicts",
    "conflict_handling",
    "score_summary",
]

_FUNCTION_WORDS = {
    "en": """a an the and or but nor of in on at to for from by with as into onto about after
        before over under than that this these those which who whom whose what is are was were
        be been being has have had do does did it its they their them he his him she her we our
        you your i my me will would shall should can could might must there also so if then per""",
    "fr": """le la les l un une des du de d et ou mais à au aux en dans sur par pour avec que
        qui qu ce cet cette ces son sa ses leur leurs il elle ils elles est sont était a ont été
        se s y""",
    "de": """der die das den dem des ein eine einen einem einer eines und oder aber in im an am auf
        aus bei mit nach von vom zu zum zur für über um als dass ist sind war waren hat haben wurde
        wurden wird werden es er sie sich auch""",
    "es": """el la los las un una unos unas y o pero de del a al en con por para sobre que se su
        sus es son fue fueron ha han lo le les como entre""",
    "zh": "的 了 在 是 和 与 及 有 被 将 对 从 也 都 而 于 其 这 那 等 之",
}
_STOP = {lang: frozenset(words.split()) for lang, words in _FUNCTION_WORDS.items()}
_HIRAGANA_ONLY = regex.compile(r"^[\p{Hiragana}ー]+$")
_SENTENCE_END = regex.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n+")


def content_tokens(text: str, lang: str) -> list[str]:
    """Tokens of ``text`` without function words (see the module notes)."""
    tokens = tokenize(text, lang)
    if primary_language(lang) == "ja":
        return [t for t in tokens if not _HIRAGANA_ONLY.match(t)]
    stop = _STOP.get(primary_language(lang), frozenset())
    return [t for t in tokens if t not in stop]


def redundancy(summary: str, lang: str, n: int | None = None) -> float:
    """Share of token n-grams that repeat an earlier n-gram in ``summary`` (0 when too short).

    ``n`` defaults to 3 for word tokens and 6 for character tokens (Japanese, Thai...), where a
    token carries less than a word.
    """
    if n is None:
        n = 6 if token_unit(lang) == "char" else 3
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    tokens = tokenize(summary, lang)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text) if part and part.strip()]


def near_duplicate_sentences(summary: str, lang: str, threshold: float = 0.7) -> float:
    """Share of sentences whose ROUGE-1 F with an earlier sentence is at least ``threshold``."""
    sentences = [s for s in _sentences(summary) if tokenize(s, lang)]
    if not sentences:
        return 0.0
    duplicates = sum(
        any(rouge(sentence, earlier, lang)["rouge1"] >= threshold for earlier in sentences[:i])
        for i, sentence in enumerate(sentences)
    )
    return duplicates / len(sentences)


def _share_present(needed: set[str], present: set[str]) -> float:
    return len(needed & present) / len(needed)


def _content_set(text: str, lang: str, what: str) -> set[str]:
    tokens = set(content_tokens(text, lang))
    if not tokens:
        raise InputError(f"{what} {text!r} has no content words to look for")
    return tokens


def covered_facts(
    summary: str, key_facts: Sequence[str], lang: str, threshold: float = 0.5
) -> list[bool]:
    """For each key fact: does the summary hold more than ``threshold`` of its content tokens?"""
    present = set(tokenize(summary, lang))
    return [
        _share_present(_content_set(fact, lang, "key fact"), present) > threshold
        for fact in key_facts
    ]


def coverage(summary: str, key_facts: Sequence[str], lang: str, threshold: float = 0.5) -> float:
    """Share of ``key_facts`` covered by ``summary``; omission is ``1 - coverage``."""
    if not key_facts:
        raise InputError("coverage needs at least one key fact")
    flags = covered_facts(summary, key_facts, lang, threshold)
    return sum(flags) / len(flags)


def handled_conflicts(
    summary: str, conflicts: Sequence[Conflict], lang: str, threshold: float = 0.5
) -> list[bool]:
    """For each conflict: does the summary give two of its values, or its resolution?"""
    present = set(tokenize(summary, lang))
    return [_handled(conflict, present, lang, threshold) for conflict in conflicts]


def _handled(conflict: Conflict, present: set[str], lang: str, threshold: float) -> bool:
    value_tokens = [set(tokenize(value, lang)) for value in conflict.values]
    shared = set.intersection(*value_tokens)
    mentioned = []
    for value, tokens in zip(conflict.values, value_tokens):
        distinguishing = tokens - shared
        if not distinguishing:
            raise InputError(
                f"conflict on {conflict.fact!r}: value {value!r} has no word that tells it apart "
                "from the other values"
            )
        mentioned.append((distinguishing, _share_present(distinguishing, present) > threshold))
    if sum(flag for _, flag in mentioned) >= 2:
        return True
    if conflict.resolution is None:
        return False
    resolution = _content_set(conflict.resolution, lang, "resolution")
    # A resolution that names values counts only with those values: "the later count of 15
    # supersedes 12" is not handled by a summary that says "15" alone.
    named_values_given = all(flag for tokens, flag in mentioned if tokens <= resolution)
    return _share_present(resolution, present) > threshold and named_values_given


def conflict_handling(
    summary: str, conflicts: Sequence[Conflict], lang: str, threshold: float = 0.5
) -> float:
    """Share of ``conflicts`` the summary handles (see the module notes)."""
    if not conflicts:
        raise InputError("conflict_handling needs at least one conflict")
    flags = handled_conflicts(summary, conflicts, lang, threshold)
    return sum(flags) / len(flags)


def score_summary(summary: str, event: Event, lang: str) -> dict[str, float]:
    """Every metric the event supports for ``summary`` (written in ``lang``).

    Always: ``redundancy`` and ``near_duplicate_sentences``. With a reference summary: ``rouge1``,
    ``rouge2``, ``rougeL``; with key facts: ``coverage`` and ``omission``; with conflicts:
    ``conflict_handling``. The reference, key facts and conflicts are in ``event.reference_lang``,
    so ``lang`` must match it when the event has any of them.
    """
    has_references = bool(event.reference_summary or event.key_facts or event.conflicts)
    if has_references and primary_language(lang) != primary_language(event.reference_lang):
        raise InputError(
            f"the event's reference, key facts and conflicts are in {event.reference_lang!r}, "
            f"the summary in {lang!r}: score a summary written in {event.reference_lang!r}"
        )
    scores = {
        "redundancy": redundancy(summary, lang),
        "near_duplicate_sentences": near_duplicate_sentences(summary, lang),
    }
    if event.reference_summary:
        scores.update(rouge(summary, event.reference_summary, lang))
    if event.key_facts:
        scores["coverage"] = coverage(summary, event.key_facts, lang)
        scores["omission"] = 1.0 - scores["coverage"]
    if event.conflicts:
        scores["conflict_handling"] = conflict_handling(summary, event.conflicts, lang)
    return scores
