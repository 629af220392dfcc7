"""GroundBench-style faithfulness items: a question, retrieved documents and a grounded long answer.

The committed sample (``workbench/data/faithfulness/sample.jsonl``) is original text written for
this project in English, French, Chinese and German, from three kinds of source: ``encyclopedia``,
``news`` and ``forum`` (how-to and forum answers). Places, firms and people in news and forum items
are invented, so a model cannot answer them from memory. Items flagged
``contradicts_common_belief`` have documents that correct a widespread misconception (accurately):
an answer that repeats the misconception came from the model's memory, not the documents.

One JSON object per line::

    {"id": str, "lang": str, "source_kind": str, "question": str,
     "documents": [{"title": str, "text": str}, ...], "answer": str,
     "contradicts_common_belief": bool (optional, default false)}

``answer`` is a reference answer that uses only the documents. Other keys are ignored, so files
with extra metadata load as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from workbench.datasets.jsonl import json_objects
from workbench.errors import InputError
from workbench.paths import PACKAGE_DATA

__all__ = [
    "DEFAULT_PATH",
    "SOURCE_KINDS",
    "Document",
    "FaithItem",
    "FaithfulnessDataError",
    "load_faithfulness",
    "parse_item",
]

DEFAULT_PATH = PACKAGE_DATA / "faithfulness" / "sample.jsonl"
SOURCE_KINDS = ("encyclopedia", "news", "forum")
_REQUIRED_TEXT = ("id", "lang", "source_kind", "question", "answer")


class FaithfulnessDataError(InputError):
    """A faithfulness data file or record does not have the documented shape."""


@dataclass(frozen=True)
class Document:
    title: str
    text: str


@dataclass(frozen=True)
class FaithItem:
    id: str
    lang: str
    source_kind: str
    question: str
    documents: tuple[Document, ...]
    answer: str
    contradicts_common_belief: bool = False


def _document(raw: object, where: str) -> Document:
    if not isinstance(raw, Mapping):
        raise FaithfulnessDataError(f"{where}: a document must be an object with 'title' and 'text'")
    title, text = raw.get("title"), raw.get("text")
    if not isinstance(title, str):
        raise FaithfulnessDataError(f"{where}: document 'title' must be a string, got {title!r:.40}")
    if not isinstance(text, str) or not text.strip():
        raise FaithfulnessDataError(f"{where}: document 'text' must be a non-empty string")
    return Document(title=title, text=text)


def parse_item(record: object, where: str = "record") -> FaithItem:
    """Validate one decoded record; ``where`` (e.g. ``file.jsonl:12``) prefixes error messages."""
    if not isinstance(record, Mapping):
        raise FaithfulnessDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in _REQUIRED_TEXT:
        if key not in record:
            raise FaithfulnessDataError(f"{where}: missing field '{key}'")
        value = record[key]
        if not isinstance(value, str) or not value.strip():
            raise FaithfulnessDataError(f"{where}: field '{key}' must be a non-empty string")
    documents = record.get("documents")
    if not isinstance(documents, list) or not documents:
        raise FaithfulnessDataError(f"{where}: field 'documents' must be a non-empty list")
    flag = record.get("contradicts_common_belief", False)
    if not isinstance(flag, bool):
        raise FaithfulnessDataError(f"{where}: 'contradicts_common_belief' must be true or false")
    return FaithItem(
        id=record["id"],
        lang=record["lang"],
        source_kind=record["source_kind"],
        question=record["question"],
        documents=tuple(_document(d, f"{where}: documents[{i}]") for i, d in enumerate(documents)),
        answer=record["answer"],
        contradicts_common_belief=flag,
    )


def load_faithfulness(
    path: str | Path | None = None, langs: str | Iterable[str] | None = None
) -> list[FaithItem]:
    """Items of a JSON-lines file (default: the committed sample), optionally only ``langs``.

    Blank lines are skipped. Raises :class:`FaithfulnessDataError` naming file and line for bad
    JSON, missing or mistyped fields and duplicate ids, for an empty file, and for a requested
    language the file does not have.
    """
    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.is_file():
        raise FileNotFoundError(f"faithfulness data file not found: {path}")
    items: list[FaithItem] = []
    seen: set[str] = set()
    for lineno, record in json_objects(path, FaithfulnessDataError):
        where = f"{path.name}, line {lineno}"
        item = parse_item(record, where)
        if item.id in seen:
            raise FaithfulnessDataError(f"{where}: duplicate id '{item.id}'")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise FaithfulnessDataError(f"{path}: no records (the file is empty)")
    if langs is None:
        return items
    wanted = [langs] if isinstance(langs, str) else list(langs)
    present = sorted({item.lang for item in items})
    missing = [lang for lang in wanted if lang not in present]
    if missing:
        raise FaithfulnessDataError(
            f"{path.name} has no items in {', '.join(missing)}; languages present: {', '.join(present)}"
        )
    return [item for item in items if item.lang in wanted]
