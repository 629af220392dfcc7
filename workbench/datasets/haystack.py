"""Needle-in-a-haystack trials for the retrieval-head probe (Wu et al. 2024, "Retrieval heads").

Data (``workbench/data/haystack/``): ``{lang}.txt`` is essay-like prose written for this project
(en, fr, de: about 2500-3600 words; zh: about 5000 characters), ``needles.jsonl`` holds the same
eight needles in every language (``id`` links the translations). Each needle states an invented
fact that the haystack does not contain, with a question and its short answer.

A trial's prompt is ``[leading special tokens] haystack[:i] + needle + haystack[i:n] + question``.
Token ids of these pieces are computed separately and concatenated, so ``needle_span`` is exact
in token positions of ``prompt_ids`` whatever the tokenizer does at piece boundaries. The cost is
that the ids at the two joins may differ from tokenizing the assembled string (a BPE merge across
a join cannot happen); the needle and the question are therefore encoded right after an anchor
(``.`` or ``。``) that is then removed, which gives them their in-text form for most tokenizers.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.datasets.jsonl import json_objects
from workbench.errors import InputError
from workbench.evals.faithfulness import ends_sentence, rouge, sentence_spans, splits_characters
from workbench.paths import PACKAGE_DATA

__all__ = [
    "DATA_DIR",
    "DEFAULT_DEPTHS",
    "DEFAULT_LENGTHS",
    "DEFAULT_NEEDLES",
    "PROMPT_TEMPLATES",
    "HaystackDataError",
    "Needle",
    "Trial",
    "available_languages",
    "build_trial",
    "load_haystack",
    "load_needles",
    "rouge1_recall",
    "trial_grid",
]

DATA_DIR = PACKAGE_DATA / "haystack"
DEFAULT_LENGTHS = (256, 512, 1024)
DEFAULT_DEPTHS = (0.1, 0.5, 0.9)
DEFAULT_NEEDLES = 3  # the paper's grid uses 3 needles

# The English template is the paper's; the others say the same in the haystack's language.
PROMPT_TEMPLATES = {
    "en": "\nBased on the content of the text, Question: {question}\nAnswer:",
    "fr": "\nD'après le contenu du texte, Question : {question}\nRéponse :",
    "de": "\nAuf Grundlage des Inhalts des Textes, Frage: {question}\nAntwort:",
    "zh": "\n根据文本内容，问题：{question}\n回答：",
}


class HaystackDataError(InputError):
    """Haystack files are missing or malformed, or a request does not fit the haystack."""


@dataclass(frozen=True)
class Needle:
    """A sentence with an invented fact, the question it answers and the short answer."""

    lang: str
    needle: str
    question: str
    answer: str
    id: str = ""


@dataclass(frozen=True)
class Trial:
    """One probe input: ``prompt_ids[needle_span[0]:needle_span[1]]`` are the needle's tokens.

    ``context_tokens`` counts haystack plus needle tokens (not special tokens, not the question),
    as in the reference implementation; ``depth`` is the requested insertion fraction.
    """

    prompt_ids: list[int]
    needle_span: tuple[int, int]
    needle: Needle
    lang: str
    context_tokens: int
    depth: float


def available_languages(data_dir: str | Path | None = None) -> list[str]:
    """Languages that have a haystack file."""
    root = Path(data_dir) if data_dir is not None else DATA_DIR
    return sorted(p.stem for p in root.glob("*.txt"))


def load_haystack(lang: str, data_dir: str | Path | None = None) -> str:
    """The haystack prose of ``lang``."""
    root = Path(data_dir) if data_dir is not None else DATA_DIR
    path = root / f"{lang}.txt"
    if not path.is_file():
        have = ", ".join(available_languages(root)) or "none"
        raise HaystackDataError(f"no haystack for language {lang!r} in {root}; available: {have}")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise HaystackDataError(f"haystack file {path} is empty")
    return text


def load_needles(lang: str, data_dir: str | Path | None = None) -> list[Needle]:
    """The needles of ``lang`` from ``needles.jsonl``, in file order."""
    root = Path(data_dir) if data_dir is not None else DATA_DIR
    path = root / "needles.jsonl"
    if not path.is_file():
        raise HaystackDataError(f"needle file not found: {path}")
    needles: list[Needle] = []
    langs: set[str] = set()
    for lineno, record in json_objects(path, HaystackDataError):
        where = f"{path.name}, line {lineno}"
        for key in ("lang", "needle", "question", "answer"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise HaystackDataError(f"{where}: field '{key}' must be a non-empty string")
        langs.add(record["lang"])
        if record["lang"] == lang:
            needles.append(
                Needle(
                    lang=record["lang"],
                    needle=record["needle"].strip(),
                    question=record["question"].strip(),
                    answer=record["answer"].strip(),
                    id=str(record.get("id", "")),
                )
            )
    if not needles:
        have = ", ".join(sorted(langs)) or "none"
        raise HaystackDataError(f"no needles for language {lang!r} in {path}; available: {have}")
    return needles


@dataclass(frozen=True)
class _Tokenized:
    ids: list[int]
    boundaries: list[int]  # token indices right after a sentence end, ascending


def _tokenize_haystack(tokenizer: Any, text: str) -> _Tokenized:
    """Token ids of the haystack and the token indices where a sentence ends cleanly.

    Uses the fast tokenizer's offset mapping; a sentence end that falls inside a token (a merge
    across it) is not a candidate.
    """
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    except NotImplementedError as err:
        raise HaystackDataError(
            "build_trial needs a fast (Rust-backed) Hugging Face tokenizer: sentence boundaries are "
            "found through its offset mapping"
        ) from err
    ids = list(enc["input_ids"])
    starts = [start for start, _ in enc["offset_mapping"]]
    ends = [end for _, end in enc["offset_mapping"]]
    boundaries = set()
    for s, e in sentence_spans(text):
        if not ends_sentence(text[s:e]):
            continue
        i = bisect_left(starts, e)
        if i > 0 and ends[i - 1] <= e:
            boundaries.add(i)
    return _Tokenized(ids=ids, boundaries=sorted(boundaries))


def _encode_after(tokenizer: Any, anchor: str, piece: str) -> list[int]:
    """Ids of ``piece`` as tokenized after ``anchor``; plain ids if the anchor's ids change."""
    head = tokenizer.encode(anchor, add_special_tokens=False)
    full = tokenizer.encode(anchor + piece, add_special_tokens=False)
    if full[: len(head)] == head and len(full) > len(head):
        return full[len(head) :]
    return tokenizer.encode(piece, add_special_tokens=False)


def _leading_special_ids(tokenizer: Any) -> list[int]:
    """What the tokenizer puts before the text (e.g. BOS); trailing specials (EOS) are dropped."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    with_special = tokenizer.encode("a", add_special_tokens=True)
    for k in range(len(with_special) - len(plain) + 1):
        if with_special[k : k + len(plain)] == plain:
            return with_special[:k]
    return []


def _template(lang: str, template: str | None) -> str:
    if template is None:
        template = PROMPT_TEMPLATES.get(lang, PROMPT_TEMPLATES["en"])
    if "{question}" not in template:
        raise HaystackDataError(f"the prompt template must contain '{{question}}', got {template!r}")
    return template


def _build(
    tokenizer: Any,
    lang: str,
    hay: _Tokenized,
    needle: Needle,
    context_tokens: int,
    depth: float,
    template: str,
    prefix: list[int],
) -> Trial:
    if not 0.0 <= depth <= 1.0:
        raise HaystackDataError(f"depth must be a fraction in [0, 1], got {depth}")
    cjk = splits_characters(lang)
    anchor = "。" if cjk else "."
    needle_ids = _encode_after(tokenizer, anchor, needle.needle if cjk else " " + needle.needle)
    budget = context_tokens - len(needle_ids)
    if budget < 1:
        raise HaystackDataError(
            f"context_tokens={context_tokens} leaves no room for haystack around a "
            f"{len(needle_ids)}-token needle"
        )
    if budget > len(hay.ids):
        raise HaystackDataError(
            f"the {lang} haystack has {len(hay.ids)} tokens under this tokenizer; context_tokens "
            f"can be at most {len(hay.ids) + len(needle_ids)} with this needle"
        )
    target = depth * budget
    candidates = hay.boundaries[: bisect_left(hay.boundaries, budget + 1)]
    if not candidates:
        raise HaystackDataError(
            f"context_tokens={context_tokens} is too short: the first {budget} haystack tokens "
            "contain no sentence end to put the needle after"
        )
    insert = min(candidates, key=lambda i: (abs(i - target), i))
    question_ids = _encode_after(tokenizer, anchor, template.format(question=needle.question))
    start = len(prefix) + insert
    prompt = prefix + hay.ids[:insert] + needle_ids + hay.ids[insert:budget] + question_ids
    return Trial(
        prompt_ids=prompt,
        needle_span=(start, start + len(needle_ids)),
        needle=needle,
        lang=lang,
        context_tokens=context_tokens,
        depth=depth,
    )


def build_trial(
    tokenizer: Any,
    lang: str,
    needle: Needle,
    context_tokens: int,
    depth: float,
    template: str | None = None,
    add_special_tokens: bool = True,
    data_dir: str | Path | None = None,
) -> Trial:
    """One trial: the ``lang`` haystack cut to ``context_tokens`` with ``needle`` at ``depth``.

    ``tokenizer`` is any fast Hugging Face tokenizer. The haystack is cut to ``context_tokens``
    minus the needle's length (the cut may end mid-sentence, as in the reference code, and with
    byte-level tokenizers even inside a character's bytes); the needle goes in right after the
    sentence end nearest to ``depth`` of the cut haystack (ties: the earlier one), so depth 0
    means after the first sentence. ``template`` defaults to the haystack
    language's entry of :data:`PROMPT_TEMPLATES` (English where there is none); pass
    ``PROMPT_TEMPLATES["en"]`` for the paper's English prompt. The needle's language may differ
    from the haystack's. With ``add_special_tokens`` the tokenizer's leading special tokens (BOS)
    start the prompt.
    """
    hay = _tokenize_haystack(tokenizer, load_haystack(lang, data_dir))
    prefix = _leading_special_ids(tokenizer) if add_special_tokens else []
    return _build(tokenizer, lang, hay, needle, context_tokens, depth, _template(lang, template), prefix)


def trial_grid(
    tokenizer: Any,
    lang: str,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    depths: Sequence[float] = DEFAULT_DEPTHS,
    needles: int | None = DEFAULT_NEEDLES,
    template: str | None = None,
    add_special_tokens: bool = True,
    data_dir: str | Path | None = None,
) -> list[Trial]:
    """Trials for every (length, depth, needle), in that nesting order.

    ``needles``: how many of the language's needles to use (the first ones), ``None`` for all.
    The default grid (3 lengths x 3 depths x 3 needles = 27 trials up to 1024 tokens) is sized for
    a CPU; the paper uses 20 lengths x 10 depths x 3 needles.
    """
    pool = load_needles(lang, data_dir)
    if needles is not None:
        if not 1 <= needles <= len(pool):
            raise HaystackDataError(f"needles must be between 1 and {len(pool)} for {lang}, got {needles}")
        pool = pool[:needles]
    hay = _tokenize_haystack(tokenizer, load_haystack(lang, data_dir))
    prefix = _leading_special_ids(tokenizer) if add_special_tokens else []
    chosen = _template(lang, template)
    return [
        _build(tokenizer, lang, hay, needle, length, depth, chosen, prefix)
        for length in lengths
        for depth in depths
        for needle in pool
    ]


def rouge1_recall(answer: str, reference: str, lang: str) -> float:
    """ROUGE-1 recall: the share of ``reference`` tokens that the generated ``answer`` contains.

    The probe keeps a trial when ``rouge1_recall(generation, needle.answer, lang) > 0.5``.
    Tokens come from :func:`workbench.evals.faithfulness.tokenize` (characters for zh/ja), since
    `rouge-score`'s default tokenizer deletes non-Latin text. Recall ignores extra words, so a
    long rambling answer that contains the reference passes.
    """
    return rouge("rouge1", answer, reference, lang).recall
