"""Parallel word lists for the latent-language (English-pivot) lens.

The lens asks, layer by layer, how much probability the model puts on a word in the input
language, in English and in the target language, so it needs the same concept written in
several languages. Three sources, one shape (a ``concept`` column plus one column per
language code, a missing word is NA):

- the committed, hand-checked list ``workbench/data/lexicon/concepts.csv`` and its cloze
  sentences ``cloze.csv`` (conventions in ``workbench/data/lexicon/README.md``);
- names that CLDR (via babel) gives for any locale: months, weekdays, countries, languages;
- a CSV that a user uploads (:func:`parse_word_csv`).
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
from babel import Locale, UnknownLocaleError

from workbench.paths import PACKAGE_DATA

DATA_DIR = PACKAGE_DATA / "lexicon"

# The languages of the committed lists: code -> English name.
LANGUAGES: dict[str, str] = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "ru": "Russian",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
}

BABEL_KINDS = ("months", "weekdays", "countries", "languages")

# CLDR territory codes that name no country: unknown region, unions, pseudo-locales.
_NOT_COUNTRIES = frozenset({"ZZ", "EU", "EZ", "UN", "QO", "XA", "XB"})


class LexiconError(ValueError):
    """A word list, language code or request that cannot be used (message says why)."""


def _locale(code: str) -> Locale:
    """Babel locale for a code such as 'fr', 'pt_BR' or 'zh-Hant'; LexiconError if unknown."""
    if not isinstance(code, str) or not code.strip():
        raise LexiconError(f"A language code must be a non-empty string, got {code!r}.")
    cleaned = code.strip().replace("-", "_")
    try:
        if cleaned.casefold() == "und":  # babel maps 'undetermined' to en_US
            raise UnknownLocaleError(cleaned)
        return Locale.parse(cleaned)
    except (UnknownLocaleError, ValueError) as exc:
        raise LexiconError(
            f"Unknown language code {code!r}: CLDR has no locale of that name "
            "(use codes such as 'fr', 'zh', 'pt_BR')."
        ) from exc


def language_name(code: str, in_lang: str | None = None) -> str:
    """Name of a language as a prompt label: its own name by default ('Français', '中文'),
    else its name in ``in_lang`` ('French' for ``in_lang='en'``). First letter upper-cased."""
    locale = _locale(code)
    name = locale.get_display_name(_locale(in_lang) if in_lang is not None else locale)
    return name[:1].upper() + name[1:]


def _read_committed(filename: str) -> pd.DataFrame:
    return pd.read_csv(DATA_DIR / filename, dtype=str, keep_default_na=False)


def _check_languages(languages: list[str], available: Iterable[str], source: str) -> None:
    available = list(available)
    if not languages:
        raise LexiconError("Give at least one language code.")
    missing = [code for code in languages if code not in available]
    if missing:
        raise LexiconError(
            f"No words for {', '.join(map(repr, missing))} in {source}; "
            f"available: {', '.join(available)}."
        )


def load_concepts(languages: list[str] | None = None) -> pd.DataFrame:
    """The committed concept list: ``concept`` plus the requested language columns (all by default)."""
    df = _read_committed("concepts.csv")
    all_languages = [c for c in df.columns if c != "concept"]
    if languages is None:
        return df
    _check_languages(languages, all_languages, "concepts.csv")
    return df[["concept", *languages]].copy()


def load_cloze(languages: list[str] | None = None) -> pd.DataFrame:
    """Committed cloze sentences (columns concept, lang, sentence, answer); the blank is ``___``
    and the answer is the word of concepts.csv for that language."""
    df = _read_committed("cloze.csv")
    if languages is None:
        return df
    _check_languages(languages, dict.fromkeys(df["lang"]), "cloze.csv")
    return df[df["lang"].isin(languages)].reset_index(drop=True)


def _months(locale: Locale) -> dict:
    # Stand-alone names are the dictionary forms (ru 'январь', not the genitive 'января').
    return dict(locale.months["stand-alone"]["wide"])


def _weekdays(locale: Locale) -> dict:
    return dict(locale.days["stand-alone"]["wide"])


def _countries(locale: Locale) -> dict:
    return {
        code: name
        for code, name in locale.territories.items()
        if len(code) == 2 and code.isalpha() and code not in _NOT_COUNTRIES
    }


def _languages(locale: Locale) -> dict:
    # Two-letter ISO 639-1 codes: the languages a small model is likely to know by name.
    return {
        code: name
        for code, name in locale.languages.items()
        if len(code) == 2 and code.isalpha() and code.islower()
    }


_BABEL_TABLES: dict[str, Callable[[Locale], dict]] = {
    "months": _months,
    "weekdays": _weekdays,
    "countries": _countries,
    "languages": _languages,
}


def babel_word_list(kind: str, languages: list[str]) -> pd.DataFrame:
    """Parallel list of CLDR names for any locales.

    ``kind`` is one of :data:`BABEL_KINDS`. Concepts are English lower-case names for months
    ('january') and weekdays ('monday', the week starting on Monday) and ISO codes for
    countries ('FR') and languages ('de'). Only entries that every locale names are kept.
    """
    if kind not in _BABEL_TABLES:
        raise LexiconError(f"Unknown word-list kind {kind!r}; choose one of {', '.join(BABEL_KINDS)}.")
    if not languages:
        raise LexiconError("Give at least one language code.")
    duplicates = sorted(code for code, n in Counter(languages).items() if n > 1)
    if duplicates:
        raise LexiconError(f"Language code(s) given twice: {', '.join(duplicates)}.")
    table = _BABEL_TABLES[kind]
    names = {code: table(_locale(code)) for code in languages}
    english = table(Locale("en"))
    # Keys: months 1..12, weekdays 0 (Monday)..6, otherwise ISO codes.
    keys = [key for key in sorted(english) if all(key in n for n in names.values())]
    if kind in ("months", "weekdays"):
        concepts = [english[key].lower() for key in keys]
    else:
        concepts = list(keys)
    return pd.DataFrame({"concept": concepts, **{code: [names[code][k] for k in keys] for code in languages}})


def _read_source(source: str | bytes | os.PathLike) -> str:
    """CSV text from text, bytes, or a path (a str without newline that names a file is a path)."""
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and os.path.isfile(source)
    ):
        path = Path(source)
        if not path.is_file():
            raise LexiconError(f"No such word-list file: {str(path)!r}.")
        data = path.read_bytes()
    elif isinstance(source, str):
        return source.removeprefix("\ufeff")
    else:
        raise LexiconError(f"Expected CSV text or a file path, got {type(source).__name__}.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LexiconError("The word list is not UTF-8 text; save the CSV as UTF-8.") from exc


def parse_word_csv(text_or_path: str | bytes | os.PathLike) -> pd.DataFrame:
    """Validate a user's CSV of parallel words and return it in the list shape.

    The first row names one language code per column (e.g. ``en,fr,zh``) and may name a
    ``concept`` column; without one, the concept is the word of the first language. Cells are
    stripped, empty cells become NA, blank rows are skipped. The number of rows that miss a
    word in some language is in ``df.attrs["incomplete_rows"]``.
    """
    text = _read_source(text_or_path)
    try:
        rows = enumerate(csv.reader(io.StringIO(text)), 1)
        lines = [(n, [cell.strip() for cell in row]) for n, row in rows]
    except csv.Error as exc:
        raise LexiconError(f"The word list is not valid CSV: {exc}.") from exc
    lines = [(n, row) for n, row in lines if any(row)]
    if not lines:
        raise LexiconError(
            "The word list is empty: expected a header row of language codes (e.g. en,fr,de) "
            "and one row of words per concept."
        )
    header = lines[0][1]
    concept_col = _check_header(header)
    language_cols = [i for i in range(len(header)) if i != concept_col]

    records = []
    incomplete = 0
    for n, row in lines[1:]:
        if len(row) > len(header):
            raise LexiconError(
                f"Line {n} has {len(row)} cells but the header has {len(header)} columns "
                "(a word containing a comma must be quoted)."
            )
        row = row + [""] * (len(header) - len(row))
        words = {header[i]: row[i] or None for i in language_cols}
        filled = sum(word is not None for word in words.values())
        if filled == 0:
            continue
        incomplete += filled < len(language_cols)
        first = words[header[language_cols[0]]]
        concept = row[concept_col] if concept_col is not None and row[concept_col] else first
        records.append({"concept": concept or f"line {n}", **words, "_line": n})

    if not records:
        raise LexiconError("The word list has a header but no rows of words.")
    df = pd.DataFrame.from_records(records)
    if not (df[[header[i] for i in language_cols]].notna().sum(axis=1) >= 2).any():
        raise LexiconError("No row has words in two languages, so there is no parallel pair to probe.")
    repeated = df[df["concept"].duplicated(keep=False)]
    if len(repeated):
        first = repeated["concept"].iloc[0]
        where = ", ".join(str(n) for n in repeated.loc[repeated["concept"] == first, "_line"])
        raise LexiconError(
            f"Concept {first!r} appears more than once (lines {where}); concepts must be unique "
            "(add a 'concept' column to tell rows apart)."
        )
    df = df.drop(columns="_line")
    df.attrs["incomplete_rows"] = int(incomplete)
    return df


def _check_header(header: list[str]) -> int | None:
    """Validate the header row; return the index of the concept column (None if absent)."""
    for i, name in enumerate(header, 1):
        if not name:
            raise LexiconError(f"Column {i} of the header is empty; name a language code (or 'concept') for every column.")
    concept_cols = [i for i, name in enumerate(header) if name.casefold() == "concept"]
    if len(concept_cols) > 1:
        raise LexiconError("The header has more than one 'concept' column.")
    codes = [name for name in header if name.casefold() != "concept"]
    repeated = sorted({code for code in codes if codes.count(code) > 1})
    if repeated:
        raise LexiconError(f"Language column(s) named twice in the header: {', '.join(repeated)}.")
    unknown = []
    for code in codes:
        try:
            _locale(code)
        except LexiconError:
            unknown.append(code)
    if unknown:
        raise LexiconError(
            f"Unknown language code(s) in the header: {', '.join(map(repr, unknown))}. The first row "
            "must name one language per column (e.g. en,fr,de), optionally with a 'concept' column."
        )
    if len(codes) < 2:
        raise LexiconError(
            f"Need at least two language columns for parallel pairs; the header names {len(codes)} "
            f"({', '.join(codes) or 'none'}). Separate columns with commas."
        )
    return concept_cols[0] if concept_cols else None


def _present(word: object) -> bool:
    return word is not None and not pd.isna(word) and str(word).strip() != ""


def parallel_pairs(df: pd.DataFrame, src: str, tgt: str) -> list[tuple[str, str]]:
    """(source word, target word) for every row that has both; ``src == tgt`` gives repetition pairs."""
    for code in (src, tgt):
        if code not in df.columns or code == "concept":
            languages = [c for c in df.columns if c != "concept"]
            raise LexiconError(f"No language column {code!r}; the list has {', '.join(languages)}.")
    return [(str(a), str(b)) for a, b in zip(df[src], df[tgt]) if _present(a) and _present(b)]
