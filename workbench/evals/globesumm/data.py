"""GlobeSumm-style events (many news reports, many languages, one event) and summarization prompts.

An event record has GlobeSumm's official fields ``date``, ``description``, ``category`` and
``news`` (reports with ``lang_abbr``, ``lang_full``, ``date``, ``title``, ``article``), so the real
GlobeSumm files load as they are. The project adds optional evaluation fields: ``id``,
``reference_summary``, ``reference_lang`` (language of the reference, key facts and conflicts;
default ``"en"``), ``key_facts`` and ``conflicts`` (``{fact, values, resolution}``).

Three ways to summarize an event are built here as prompts, with no model inside: everything at
once, chronological recurrent summarization (sort reports by time, summarize the first two, then
fold in one report at a time), and protocol-guided prompting (PGP), which tells the model how to
treat redundancy, omission and conflict. :func:`summarize` runs any of them with any
``generate_fn(prompt) -> text``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from babel import Locale, UnknownLocaleError

from workbench.errors import InputError
from workbench.paths import PACKAGE_DATA

__all__ = [
    "SAMPLE_PATH",
    "PIPELINES",
    "PROTOCOL",
    "GlobeSummError",
    "Report",
    "Conflict",
    "Event",
    "SummaryRun",
    "load_events",
    "parse_event",
    "reports_chronological",
    "prompt_all_at_once",
    "prompt_recurrent_start",
    "prompt_recurrent_step",
    "prompt_protocol_guided",
    "summarize",
]

SAMPLE_PATH = PACKAGE_DATA / "globesumm" / "sample.jsonl"

Pipeline = Literal["all", "recurrent", "protocol", "recurrent_protocol"]
PIPELINES: tuple[str, ...] = ("all", "recurrent", "protocol", "recurrent_protocol")

PROTOCOL = """\
Protocol for summarizing several news reports about one event:
1. Redundancy: the reports repeat each other. State each fact once, however many reports give it.
2. Omission: a fact given by only one report still matters. Keep every key fact (who, what, when,
   where, numbers, causes and consequences), whichever report gives it.
3. Conflict: the reports may disagree on numbers, dates, names or causes. Never pick one value
   silently: give the differing values and who reports them (for example "reports differ: 12 vs
   15"), and if a later or official report settles the question, say which value it supports."""

_REPORT_FIELDS = ("lang_abbr", "lang_full", "date", "title", "article")
_EVENT_FIELDS = ("date", "description", "category", "news")


class GlobeSummError(InputError):
    """A GlobeSumm file or record is malformed, or a summarization request cannot be met."""


@dataclass(frozen=True)
class Report:
    """One news article about the event."""

    lang_abbr: str
    lang_full: str
    date: dt.date
    title: str
    article: str


@dataclass(frozen=True)
class Conflict:
    """A fact on which the reports disagree, the values they give, and how a summary settles it."""

    fact: str
    values: tuple[str, ...]
    resolution: str | None = None


@dataclass(frozen=True)
class Event:
    """One news event with its reports (official fields) and optional evaluation fields."""

    date: dt.date
    description: str
    category: str
    news: tuple[Report, ...]
    id: str | None = None
    reference_summary: str | None = None
    reference_lang: str = "en"
    key_facts: tuple[str, ...] = ()
    conflicts: tuple[Conflict, ...] = ()

    @property
    def languages(self) -> list[str]:
        """Distinct report languages, in order of first appearance."""
        return list(dict.fromkeys(report.lang_abbr for report in self.news))


@dataclass
class SummaryRun:
    """What one pipeline did: every prompt sent, every model output, and whether text was cut."""

    pipeline: str
    target_lang: str
    prompts: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    truncated: bool = False

    @property
    def summary(self) -> str:
        """The final summary (the last model output)."""
        return self.outputs[-1]


# ---------------------------------------------------------------------------------------------
# Loading


def load_events(path: str | Path | None = None) -> list[Event]:
    """Events from a GlobeSumm file: JSON Lines, a JSON list of events, or one JSON event.

    With no path, the committed sample (invented events) is loaded.
    """
    path = Path(path) if path is not None else SAMPLE_PATH
    if not path.is_file():
        raise GlobeSummError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise GlobeSummError(f"{path}: not UTF-8 text ({error.reason})") from error
    if not text.strip():
        raise GlobeSummError(f"{path}: the file is empty")
    records = _parse_records(text, path)
    if not records:
        raise GlobeSummError(f"{path}: no events in the file")
    return [parse_event(record, where=f"{path}, event {i}") for i, record in enumerate(records, 1)]


def _parse_records(text: str, path: Path) -> list[Any]:
    if path.suffix != ".jsonl":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            pass  # not one JSON document: read it as JSON Lines below
        else:
            return data if isinstance(data, list) else [data]
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise GlobeSummError(
                f"{path}, line {number}: not valid JSON ({error.msg}); expected one event per line "
                "(JSON Lines) or a single JSON list of events"
            ) from error
    return records


def parse_event(record: Mapping[str, Any], where: str = "event") -> Event:
    """Check one event record and turn it into an :class:`Event`; ``where`` prefixes errors."""
    if not isinstance(record, Mapping):
        raise GlobeSummError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [name for name in _EVENT_FIELDS if name not in record]
    if missing:
        raise GlobeSummError(f"{where}: missing field(s) {', '.join(missing)}")
    news = record["news"]
    if not isinstance(news, list) or not news:
        raise GlobeSummError(f"{where}: 'news' must be a non-empty list of reports")
    conflicts = record.get("conflicts", [])
    if not isinstance(conflicts, list):
        raise GlobeSummError(f"{where}: 'conflicts' must be a list")
    reference = record.get("reference_summary")
    if reference is not None:
        reference = _text(reference, "reference_summary", where)
    return Event(
        date=_date(record["date"], f"{where}, date"),
        description=_text(record["description"], "description", where),
        category=_text(record["category"], "category", where),
        news=tuple(_report(item, f"{where}, report {i}") for i, item in enumerate(news, 1)),
        id=str(record["id"]) if record.get("id") is not None else None,
        reference_summary=reference,
        reference_lang=_text(record.get("reference_lang", "en"), "reference_lang", where),
        key_facts=tuple(_text_list(record.get("key_facts", []), "key_facts", where)),
        conflicts=tuple(
            _conflict(item, f"{where}, conflict {i}") for i, item in enumerate(conflicts, 1)
        ),
    )


def _report(item: Any, where: str) -> Report:
    if not isinstance(item, Mapping):
        raise GlobeSummError(f"{where}: expected a JSON object, got {type(item).__name__}")
    missing = [name for name in _REPORT_FIELDS if name not in item]
    if missing:
        raise GlobeSummError(f"{where}: missing field(s) {', '.join(missing)}")
    article = _text(item["article"], "article", where)
    if not article.strip():
        raise GlobeSummError(f"{where}: 'article' is empty")
    return Report(
        lang_abbr=_text(item["lang_abbr"], "lang_abbr", where),
        lang_full=_text(item["lang_full"], "lang_full", where),
        date=_date(item["date"], f"{where}, date"),
        title=_text(item["title"], "title", where),
        article=article,
    )


def _conflict(item: Any, where: str) -> Conflict:
    if not isinstance(item, Mapping) or "fact" not in item or "values" not in item:
        raise GlobeSummError(f"{where}: expected an object with 'fact', 'values' and 'resolution'")
    values = _text_list(item["values"], "values", where)
    if len(set(values)) < 2:
        raise GlobeSummError(f"{where}: 'values' must hold at least two different values")
    resolution = item.get("resolution")
    return Conflict(
        fact=_text(item["fact"], "fact", where),
        values=tuple(values),
        resolution=_text(resolution, "resolution", where) if resolution is not None else None,
    )


def _text(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str):
        raise GlobeSummError(f"{where}: '{name}' must be a string, got {type(value).__name__}")
    return value


def _text_list(value: Any, name: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) and x.strip() for x in value):
        raise GlobeSummError(f"{where}: '{name}' must be a list of non-empty strings")
    return value


def _date(value: Any, where: str) -> dt.date:
    """GlobeSumm writes dates as ``20230517`` (number or string); ISO ``2023-05-17`` also works."""
    is_text_or_number = isinstance(value, (int, str)) and not isinstance(value, bool)
    text = str(value).strip() if is_text_or_number else ""
    pattern = "%Y%m%d" if text.isdigit() and len(text) == 8 else "%Y-%m-%d"
    try:
        return dt.datetime.strptime(text, pattern).date()
    except ValueError:
        raise GlobeSummError(
            f"{where}: {value!r} is not a date like 20230517 or 2023-05-17"
        ) from None


def reports_chronological(event: Event) -> list[Report]:
    """Reports sorted by date; reports of the same day keep their order in the file."""
    return sorted(event.news, key=lambda report: report.date)


# ---------------------------------------------------------------------------------------------
# Prompts


def _language_name(code: str) -> str:
    try:
        return Locale.parse(code.strip().replace("-", "_")).get_display_name("en")
    except (UnknownLocaleError, ValueError, AttributeError) as error:
        raise GlobeSummError(
            f"unknown target language {code!r}: use an ISO 639 code such as 'en', 'fr' or 'zh'"
        ) from error


def _format_report(report: Report, label: str) -> str:
    heading = f"{label} ({report.lang_full}, {report.date.isoformat()})"
    title = f": {report.title}" if report.title.strip() else ""
    return f"{heading}{title}\n{report.article.strip()}"


def _with_protocol(prompt: str, protocol: bool) -> str:
    return f"{PROTOCOL}\n\n{prompt}" if protocol else prompt


def prompt_all_at_once(event: Event, target_lang: str = "en", protocol: bool = False) -> str:
    """One prompt with every report in chronological order, asking for one summary."""
    language = _language_name(target_lang)
    reports = reports_chronological(event)
    body = "\n\n".join(_format_report(r, f"Report {i}") for i, r in enumerate(reports, 1))
    prompt = (
        f"Below are {len(reports)} news reports about the same event, in several languages, "
        f"in chronological order.\nEvent: {event.description}\n"
        f"Write one concise summary of the event in {language}, using all the reports.\n\n"
        f"{body}\n\nSummary in {language}:"
    )
    return _with_protocol(prompt, protocol)


def prompt_protocol_guided(event: Event, target_lang: str = "en") -> str:
    """The all-at-once prompt preceded by :data:`PROTOCOL` (protocol-guided prompting, PGP)."""
    return prompt_all_at_once(event, target_lang, protocol=True)


def prompt_recurrent_start(
    reports: Sequence[Report], target_lang: str = "en", protocol: bool = False
) -> str:
    """First step of recurrent summarization: summarize the earliest one or two reports."""
    if not 1 <= len(reports) <= 2:
        raise GlobeSummError(f"the first recurrent step takes 1 or 2 reports, got {len(reports)}")
    language = _language_name(target_lang)
    which = "the earliest news report" if len(reports) == 1 else "the two earliest news reports"
    body = "\n\n".join(_format_report(r, f"Report {i}") for i, r in enumerate(reports, 1))
    prompt = (
        f"Below is {which} about an event, possibly in different languages. "
        f"Write one concise summary of it in {language}.\n\n{body}\n\nSummary in {language}:"
    )
    return _with_protocol(prompt, protocol)


def prompt_recurrent_step(
    previous_summary: str, report: Report, target_lang: str = "en", protocol: bool = False
) -> str:
    """A later recurrent step: fold the next report (by date) into the summary so far."""
    language = _language_name(target_lang)
    prompt = (
        "Below is a summary of the earlier news reports about an event, followed by a newer "
        f"report, possibly in another language. Write an updated concise summary in {language} "
        "that keeps the facts of the summary and adds what the new report says.\n\n"
        f"Summary so far:\n{previous_summary.strip()}\n\n"
        f"{_format_report(report, 'New report')}\n\nUpdated summary in {language}:"
    )
    return _with_protocol(prompt, protocol)


# ---------------------------------------------------------------------------------------------
# Running a pipeline


def summarize(
    event: Event,
    generate_fn: Callable[[str], str],
    pipeline: Pipeline = "all",
    target_lang: str = "en",
    max_prompt_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> SummaryRun:
    """Summarize ``event`` with ``generate_fn`` (prompt in, text out) through one pipeline.

    ``"all"`` and ``"protocol"`` make one call; ``"recurrent"`` and ``"recurrent_protocol"`` make
    one call per report after the first (the latter is how GlobeSumm built its references). With
    ``max_prompt_tokens``, articles in each prompt are shortened (each to the same maximum length,
    so the longest lose most) until ``count_tokens(prompt)`` fits; ``count_tokens`` must then be
    the model tokenizer's count, since token counts depend on the model.
    """
    if pipeline not in PIPELINES:
        raise GlobeSummError(f"unknown pipeline {pipeline!r}: choose one of {', '.join(PIPELINES)}")
    if max_prompt_tokens is not None:
        if count_tokens is None:
            raise GlobeSummError("max_prompt_tokens needs count_tokens (the model tokenizer's)")
        if max_prompt_tokens < 1:
            raise GlobeSummError(f"max_prompt_tokens must be positive, got {max_prompt_tokens}")
    _language_name(target_lang)
    run = SummaryRun(pipeline=pipeline, target_lang=target_lang)
    protocol = pipeline in ("protocol", "recurrent_protocol")

    def call(build: Callable[[Sequence[Report]], str], reports: Sequence[Report]) -> str:
        prompt, cut = _fit(build, reports, max_prompt_tokens, count_tokens)
        output = generate_fn(prompt)
        if not isinstance(output, str):
            raise TypeError(f"generate_fn must return a string, got {type(output).__name__}")
        run.prompts.append(prompt)
        run.outputs.append(output.strip())
        run.truncated = run.truncated or cut
        return run.outputs[-1]

    if pipeline in ("all", "protocol"):
        call(
            lambda reports: prompt_all_at_once(
                replace(event, news=tuple(reports)), target_lang, protocol
            ),
            event.news,
        )
        return run
    ordered = reports_chronological(event)
    summary = call(
        lambda reports: prompt_recurrent_start(reports, target_lang, protocol), ordered[:2]
    )
    for report in ordered[2:]:
        summary = call(
            lambda reports, previous=summary: prompt_recurrent_step(
                previous, reports[0], target_lang, protocol
            ),
            [report],
        )
    return run


def _fit(
    build: Callable[[Sequence[Report]], str],
    reports: Sequence[Report],
    budget: int | None,
    count_tokens: Callable[[str], int] | None,
) -> tuple[str, bool]:
    """The prompt for ``reports`` with articles cut to the longest common length that fits."""
    prompt = build(reports)
    if budget is None or count_tokens is None or count_tokens(prompt) <= budget:
        return prompt, False

    def build_capped(cap: int) -> str:
        return build([replace(r, article=_truncate(r.article, cap)) for r in reports])

    if count_tokens(build_capped(0)) > budget:
        raise GlobeSummError(
            f"the prompt does not fit in {budget} tokens even with empty articles: "
            "raise max_prompt_tokens or use a pipeline with shorter prompts"
        )
    fits, too_long = 0, max(len(r.article) for r in reports)
    while too_long - fits > 1:  # binary search on the per-article character cap
        middle = (fits + too_long) // 2
        if count_tokens(build_capped(middle)) <= budget:
            fits = middle
        else:
            too_long = middle
    return build_capped(fits), True


def _truncate(text: str, cap: int) -> str:
    """``text`` cut to at most ``cap`` characters (at a space when there is one), marked with …"""
    if len(text) <= cap:
        return text
    cut = text[:cap]
    space = cut.rfind(" ")
    if space > 0 and not text[cap].isspace():
        cut = cut[:space]
    return f"{cut.rstrip()} …"
