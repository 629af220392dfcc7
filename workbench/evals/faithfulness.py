"""Offline faithfulness metrics for long-form answers grounded in documents (RHIO / GroundBench).

Three signals, from cheapest to most expensive:

* :func:`support_score` - lexical grounding: which answer sentences are made of words that occur in
  the documents. Needs no model, explains itself sentence by sentence (the UI highlights the
  unsupported spans), and catches invented names, numbers and places.
* :func:`rougeL_f` - overlap with a reference answer (longest common subsequence).
* :func:`judge_faithfulness` - an LLM judge behind any OpenAI-compatible endpoint.

All lexical metrics share :func:`tokenize`, which splits Chinese (and every language that
:mod:`workbench.evals.rouge` reads as written without spaces: ja, th, yue...) into single
characters, so it does not depend on a word segmenter. Their common weakness: they compare surface
forms, so they reward copying, miss paraphrase and synonyms, and cannot see a wrong relation
between right words ("A beat B" vs "B beat A") or a negation added to copied words.
"""

from __future__ import annotations

import json
import math
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import regex
from rouge_score import rouge_scorer, scoring
from rouge_score.tokenizers import Tokenizer as _RougeTokenizerBase

from workbench.datasets.faithfulness import Document
from workbench.errors import InputError, WorkbenchError
from workbench.evals import rouge as _rouge

__all__ = [
    "JudgeError",
    "JudgeResult",
    "SentenceSupport",
    "SupportResult",
    "content_tokens",
    "ends_sentence",
    "judge_faithfulness",
    "rouge",
    "rougeL_f",
    "sentence_spans",
    "splits_characters",
    "support_score",
    "tokenize",
]

# Han characters, kana and the other no-space scripts become one token per grapheme; numbers keep their
# separators ("2.4"), as in workbench.evals.rouge; other letters form words.
_NO_SPACE = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}ー"
_CHAR_TOKEN = regex.compile(
    rf"(?=[{_NO_SPACE}])\X|\p{{Nd}}+(?:[.,]\p{{Nd}}+)*|(?:(?![{_NO_SPACE}])[\p{{L}}\p{{M}}])+"
)

# Function words, plus yes/no particles and negations: matching is against the set of all
# document tokens, which nearly always contains "not", so negations cannot be checked this way
# and would only mark a bare "No." as unsupported. Numbers are never removed. General-purpose
# stop-word lists (e.g. the `stop-words` package) are built for retrieval and also drop numbers
# and common content verbs ("added", "10"), which would hide exactly the invented details.
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        """a an the and or but so yet of to in on at by for with from into onto about as than
        then that this these those there here it its is are was were be been being am do does
        did has have had having will would shall should can could may might must i me my we us
        our you your he him his she her they them their who whom whose which what when where
        why how also very just only too s t if because while although though both either each
        every all any some such own same other more most less much many few over under up down
        out off again once yes no not nor""".split()
    ),
    "fr": frozenset(
        """le la les l un une des du de d au aux et ou mais donc or ni car à a en dans sur sous
        par pour avec chez vers entre ce cet cette ces c ça cela ceci se s qui que qu quoi dont
        où il ils elle elles on je j me m te t tu nous vous lui leur leurs son sa ses mon ma mes
        ton ta tes notre nos votre vos y est sont était étaient être été ont avait avaient avoir
        eu fait très plus aussi comme si tout tous toute toutes même oui non ne n pas""".split()
    ),
    "de": frozenset(
        """der die das den dem des ein eine einen einem einer eines und oder aber denn sondern
        doch zu zum zur in im ins an am auf aus bei mit nach von vom vor für über unter um
        durch gegen bis als wie wenn dass ob es er sie ihr ihm ihn ihnen sein seine seiner
        seinen seinem ihre ihrer ihren ihrem wir uns unser ich mich mir du dich dir man sich
        ist sind war waren wird werden wurde wurden hat haben hatte hatten gewesen kann können
        konnte muss müssen soll sollte auch sehr noch schon nur so da dort hier diese dieser
        dieses diesen diesem welche welcher welches ja nein nicht""".split()
    ),
    "es": frozenset(
        """el la los las lo un una unos unas y o pero ni de del a al en con por para sobre entre
        hasta desde que quien cual como cuando donde se su sus le les me te nos os mi mis tu
        tus es son era eran fue fueron ser estar está están ha han había haber muy más también
        ya este esta estos estas ese esa esos esas sí si no""".split()
    ),
    "zh": frozenset("的了是在和与及也都就而或把被这那之其于以为着过吗呢吧啊个些有从到很又还并则即不没"),
    "ja": frozenset("のにはをがでともへやかねよたてだなすましるれいうこそあ"),
}

_SENTENCE_END = regex.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s|$)|[。！？]+[”’」』）]*|\n+")
_ENDS_WITH_SENTENCE_MARK = regex.compile(r"[.!?…。！？][\"'”’»)\]」』）]*$")


def splits_characters(lang: str) -> bool:
    """Whether ``lang`` is tokenized by character (languages written without spaces: zh, ja...).

    Raises :class:`workbench.evals.rouge.UnknownLanguageError` for codes CLDR does not know.
    """
    return _rouge.token_unit(lang) in ("jieba", "char")


def tokenize(text: str, lang: str) -> list[str]:
    """Lower-cased tokens of ``text`` without punctuation.

    Languages written without spaces (``zh``, ``ja``, ``th``... with any region suffix) give one
    token per character, while Latin words and numbers inside them stay whole (``GPU``, ``2.4``);
    other languages use :func:`workbench.evals.rouge.tokenize` (words and numbers). Text is NFKC
    normalised first, so full-width forms match (``２０２４`` -> ``2024``).
    """
    text = unicodedata.normalize("NFKC", text)
    if splits_characters(lang):
        return [t.casefold() for t in _CHAR_TOKEN.findall(text)]
    return [t.casefold() for t in _rouge.tokenize(text, lang)]


def content_tokens(text: str, lang: str) -> list[str]:
    """:func:`tokenize` minus function words of ``lang`` (en, fr, de, es, zh, ja have lists).

    For other languages nothing is removed, so support scores there are somewhat inflated by
    function words that occur in any document.
    """
    stop = _STOPWORDS.get(_rouge.primary_language(lang), frozenset())
    return [t for t in tokenize(text, lang) if t not in stop]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the sentences of ``text``, whitespace trimmed.

    A sentence ends at ``.``, ``!``, ``?`` or ``…`` followed by whitespace (closing quotes and
    brackets stay with the sentence), at ``。！？`` (no space needed), or at a line break.
    Weak spots: abbreviations such as "e.g. " or "Dr. " end a sentence early; a decimal point
    never does (it is not followed by a space). Spans without any letter or digit are dropped.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        _append_trimmed(text, start, m.end(), spans)
        start = m.end()
    _append_trimmed(text, start, len(text), spans)
    return spans


def _append_trimmed(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if any(ch.isalnum() for ch in text[start:end]):
        spans.append((start, end))


def ends_sentence(fragment: str) -> bool:
    """Whether ``fragment`` ends with sentence-final punctuation (used to pick insertion points)."""
    return bool(_ENDS_WITH_SENTENCE_MARK.search(fragment))


class SentenceSupport(NamedTuple):
    """One answer sentence: ``answer[start:end]``, whether it counts as supported, and overlap.

    ``overlap`` is the fraction of the sentence's distinct content tokens found in the documents;
    a sentence with no content token (e.g. "Yes.") gets overlap 1.0 and is not counted in the score.
    """

    start: int
    end: int
    supported: bool
    overlap: float


@dataclass(frozen=True)
class SupportResult:
    """Outcome of :func:`support_score`.

    ``score``: supported / checked sentences, ``nan`` when no sentence has a content token (an
    empty answer makes no claim to check). ``sentences``: every sentence in answer order.
    """

    score: float
    threshold: float
    n_checked: int
    sentences: list[SentenceSupport]

    @property
    def unsupported(self) -> list[SentenceSupport]:
        return [s for s in self.sentences if not s.supported]


DocumentLike = str | Document | Mapping[str, str]


def _document_text(doc: DocumentLike) -> str:
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Document):
        return f"{doc.title}\n{doc.text}"
    if isinstance(doc, Mapping) and isinstance(doc.get("text"), str):
        return f"{doc.get('title') or ''}\n{doc['text']}"
    raise ValueError(
        f"a document must be a string, a Document or a mapping with a 'text' string, got {doc!r:.80}"
    )


def _document_texts(documents: Sequence[DocumentLike]) -> list[str]:
    if isinstance(documents, (str, Mapping, Document)):
        documents = [documents]
    if not documents:
        raise InputError("documents is empty: support and faithfulness need at least one document")
    return [_document_text(d) for d in documents]


def support_score(
    answer: str, documents: Sequence[DocumentLike], lang: str, threshold: float = 0.6
) -> SupportResult:
    """Fraction of answer sentences whose content tokens mostly occur in the documents.

    A sentence is supported when at least ``threshold`` of its distinct content tokens
    (:func:`content_tokens`) appear anywhere in the documents (titles included). For zh/ja the
    tokens are characters, so support there is easier to reach: a sentence recombining common
    characters of the documents can pass. What it measures is lexical grounding, not entailment:
    a copied sentence with a flipped relation or a negation found elsewhere in the documents passes,
    while a faithful paraphrase with new wording may fail. Use it to find invented content (names,
    numbers, places absent from the documents), and an LLM judge for meaning.
    """
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold must be in (0, 1], got {threshold}")
    vocabulary: set[str] = set()
    for text in _document_texts(documents):
        vocabulary.update(tokenize(text, lang))
    sentences: list[SentenceSupport] = []
    checked = supported = 0
    for start, end in sentence_spans(answer):
        tokens = set(content_tokens(answer[start:end], lang))
        if not tokens:
            sentences.append(SentenceSupport(start, end, True, 1.0))
            continue
        overlap = len(tokens & vocabulary) / len(tokens)
        ok = overlap >= threshold
        checked += 1
        supported += ok
        sentences.append(SentenceSupport(start, end, ok, overlap))
    score = supported / checked if checked else math.nan
    return SupportResult(score=score, threshold=threshold, n_checked=checked, sentences=sentences)


class _LangTokenizer(_RougeTokenizerBase):
    """Adapter so `rouge-score` uses :func:`tokenize` (its default drops all non-Latin text)."""

    def __init__(self, lang: str):
        self.lang = lang

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text, self.lang)


def rouge(kind: str, answer: str, reference: str, lang: str) -> scoring.Score:
    """`rouge-score`'s ``kind`` ("rouge1", "rougeL", ...) of ``answer`` against ``reference``.

    Returns its Score tuple (precision, recall, fmeasure), computed on :func:`tokenize` tokens.
    """
    splits_characters(lang)  # fail on an unknown language before scoring
    scorer = rouge_scorer.RougeScorer([kind], tokenizer=_LangTokenizer(lang))
    return scorer.score(reference, answer)[kind]


def rougeL_f(answer: str, reference: str, lang: str) -> float:
    """ROUGE-L F1 between ``answer`` and a reference answer, with :func:`tokenize` tokens.

    Measures how much of the reference's word order the answer reproduces. Weak as a faithfulness
    signal: a faithful answer that chooses other true facts from the documents, or paraphrases,
    scores low; no stemming is applied, so inflections count as different words.
    """
    return rouge("rougeL", answer, reference, lang).fmeasure


class JudgeError(WorkbenchError):
    """The judge endpoint failed or answered something that is not a verdict."""


@dataclass(frozen=True)
class JudgeResult:
    """An LLM judge's verdict: ``rating`` 1-5, ``score`` = (rating - 1) / 4 in [0, 1]."""

    score: float
    rating: int
    rationale: str


_JUDGE_SYSTEM = (
    "You grade the faithfulness of an answer to the documents it was written from. An answer is "
    "faithful when every claim in it is stated in or directly implied by the documents, even where "
    "the documents contradict common knowledge. Claims from outside knowledge are unfaithful even "
    "when they are true. Rate from 1 (mostly unsupported or contradicted) to 5 (every claim "
    'supported). Reply with JSON only: {"score": <1-5>, "rationale": "<one or two sentences naming '
    'unsupported claims>"}'
)


def _judge_prompt(question: str, documents: Sequence[DocumentLike], answer: str) -> str:
    docs = "\n\n".join(f"[{i}] {text.strip()}" for i, text in enumerate(_document_texts(documents), 1))
    return f"Documents:\n{docs}\n\nQuestion: {question}\n\nAnswer to grade:\n{answer}"


def _chat_url(endpoint: str) -> str:
    url = endpoint.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


def _parse_verdict(content: str) -> JudgeResult:
    match = regex.search(r"\{.*\}", content, regex.DOTALL)
    try:
        verdict = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        verdict = None
    if not isinstance(verdict, dict) or "score" not in verdict:
        raise JudgeError(f"judge reply has no JSON object with a 'score': {content[:200]!r}")
    raw = verdict["score"]
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    try:
        rating = int(str(raw).strip())
    except ValueError:
        raise JudgeError(f"judge score must be an integer from 1 to 5, got {raw!r}") from None
    if not 1 <= rating <= 5:
        raise JudgeError(f"judge score must be an integer from 1 to 5, got {raw!r}")
    return JudgeResult(score=(rating - 1) / 4, rating=rating, rationale=str(verdict.get("rationale", "")))


def judge_faithfulness(
    question: str,
    documents: Sequence[DocumentLike],
    answer: str,
    endpoint: str,
    model: str,
    api_key: str | None = None,
    timeout: float = 60.0,
) -> JudgeResult:
    """Ask an LLM behind an OpenAI-compatible chat-completions endpoint to grade faithfulness.

    ``endpoint`` is the API base (``http://host:8000/v1``) or the full ``.../chat/completions``
    URL; ``api_key`` is sent as a Bearer token when given. Temperature 0. The judge sees the
    documents, the question and the answer, and must reply with JSON ``{"score": 1-5,
    "rationale": ...}``. Catches paraphrased and reasoned unfaithfulness that lexical overlap
    misses, but judges are biased towards fluent and long answers, towards their own model family,
    and may themselves fall back on world knowledge; check a sample by hand and report the judge.
    Raises :class:`JudgeError` on transport errors and unusable replies.
    """
    body = {
        "model": model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": _JUDGE_SYSTEM},
            {"role": "user", "content": _judge_prompt(question, documents, answer)},
        ],
    }
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = _chat_url(endpoint)
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")[:300]
        raise JudgeError(f"judge endpoint {url} answered HTTP {err.code}: {detail}") from err
    except urllib.error.URLError as err:
        raise JudgeError(f"cannot reach judge endpoint {url}: {err.reason}") from err
    except json.JSONDecodeError as err:
        raise JudgeError(f"judge endpoint {url} did not return JSON: {err}") from err
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise JudgeError(f"judge reply is not a chat completion: {str(payload)[:200]}") from None
    return _parse_verdict(content or "")
