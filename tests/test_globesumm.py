"""GlobeSumm sample data, loader, prompts and the summarization pipeline runner."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from workbench.evals.globesumm.data import (
    PROTOCOL,
    GlobeSummError,
    load_events,
    parse_event,
    prompt_all_at_once,
    prompt_protocol_guided,
    prompt_recurrent_start,
    prompt_recurrent_step,
    reports_chronological,
    summarize,
)
from workbench.evals.rouge import tokenize
from workbench.evals.globesumm.summarization import conflict_handling, coverage

# An official-format record: only GlobeSumm's own fields, event date as a number.
OFFICIAL = {
    "date": 20230501,
    "description": "A small plane crashed in a forest.",
    "category": "Disasters and accidents",
    "news": [
        {"lang_abbr": "fr", "lang_full": "French", "date": "20230503", "title": "Titre B",
         "article": "Deuxième article."},
        {"lang_abbr": "en", "lang_full": "English", "date": "20230501", "title": "Title A",
         "article": "First article."},
        {"lang_abbr": "zh", "lang_full": "Chinese", "date": "20230503", "title": "标题C",
         "article": "第三篇文章。", "label_relevant": 1},
    ],
}


@pytest.fixture(scope="module")
def sample():
    return load_events()


def test_sample_has_enough_multilingual_events(sample):
    assert len(sample) >= 8
    for event in sample:
        assert len(event.news) >= 5, event.id
        assert {"en", "fr", "zh"} <= set(event.languages), event.id
        assert len(event.languages) >= 3
        assert len({report.date for report in event.news}) > 1, "chronology must matter"
        assert event.conflicts and event.key_facts and event.reference_summary


def test_sample_articles_are_short(sample):
    for event in sample:
        for report in event.news:
            if report.lang_abbr in ("zh", "ja"):
                assert 60 <= len(report.article) <= 250, (event.id, report.lang_abbr)
            else:
                assert 50 <= len(report.article.split()) <= 150, (event.id, report.lang_abbr)
        # all reports together stay well inside a small model's context
        assert sum(len(tokenize(r.article, r.lang_abbr)) for r in event.news) < 1000


def test_sample_references_cover_facts_and_conflicts(sample):
    # The hand-written references state every key fact and both sides of every conflict.
    for event in sample:
        assert coverage(event.reference_summary, event.key_facts, "en") == 1.0, event.id
        assert conflict_handling(event.reference_summary, event.conflicts, "en") == 1.0, event.id


def test_official_format_loads(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(OFFICIAL, ensure_ascii=False) + "\n\n", encoding="utf-8")
    [event] = load_events(path)
    assert event.date == dt.date(2023, 5, 1)
    assert event.id is None and event.reference_summary is None
    assert event.key_facts == () and event.conflicts == ()
    assert event.languages == ["fr", "en", "zh"]
    ordered = reports_chronological(event)
    assert [r.title for r in ordered] == ["Title A", "Titre B", "标题C"]  # ties keep file order


def test_json_list_and_single_object_load(tmp_path):
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps([OFFICIAL, OFFICIAL]), encoding="utf-8")
    assert len(load_events(as_list)) == 2
    single = tmp_path / "one.json"
    single.write_text(json.dumps(OFFICIAL, indent=2), encoding="utf-8")
    assert len(load_events(single)) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("news"), "missing field"),
        (lambda r: r.update(news=[]), "non-empty list"),
        (lambda r: r["news"][0].pop("article"), "report 1: missing field(s) article"),
        (lambda r: r["news"][1].update(article="  "), "'article' is empty"),
        (lambda r: r.update(date="May 1st"), "not a date"),
        (lambda r: r["news"][0].update(date="2023051"), "not a date"),
        (lambda r: r.update(conflicts=[{"fact": "x", "values": ["1", "1"]}]), "two different"),
        (lambda r: r.update(key_facts="one fact"), "list of non-empty strings"),
    ],
)
def test_bad_records_raise_clear_errors(change, message):
    record = json.loads(json.dumps(OFFICIAL))
    change(record)
    with pytest.raises(GlobeSummError, match=re.escape(message)):
        parse_event(record)


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(GlobeSummError, match="no such file"):
        load_events(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(GlobeSummError, match="empty"):
        load_events(empty)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(OFFICIAL) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(GlobeSummError, match="line 2"):
        load_events(broken)
    assert issubclass(GlobeSummError, ValueError)


def test_prompts_list_reports_in_time_order(sample):
    event = sample[0]
    ordered = reports_chronological(event)
    prompt = prompt_all_at_once(event, "en")
    positions = [prompt.index(r.article) for r in ordered]
    assert positions == sorted(positions)
    assert "in English" in prompt and PROTOCOL not in prompt
    assert prompt_protocol_guided(event, "zh").startswith(PROTOCOL)
    assert "in Chinese" in prompt_protocol_guided(event, "zh")
    start = prompt_recurrent_start(ordered[:2], "fr")
    assert ordered[0].article in start and ordered[1].article in start and "in French" in start
    step = prompt_recurrent_step("SUMMARY-SO-FAR", ordered[2], "en", protocol=True)
    assert step.startswith(PROTOCOL) and "SUMMARY-SO-FAR" in step and ordered[2].article in step
    with pytest.raises(GlobeSummError, match="unknown target language"):
        prompt_all_at_once(event, "xx")
    with pytest.raises(GlobeSummError, match="1 or 2 reports"):
        prompt_recurrent_start(ordered[:3])


class FakeModel:
    """Records prompts; answers S1, S2, ... so the chain of summaries can be followed."""

    def __init__(self):
        self.prompts = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return f" S{len(self.prompts)} \n"


def test_recurrent_pipeline_chains_summaries(sample):
    event = sample[0]
    ordered = reports_chronological(event)
    model = FakeModel()
    run = summarize(event, model, pipeline="recurrent")
    assert len(run.prompts) == len(event.news) - 1 == len(model.prompts)
    assert ordered[0].article in run.prompts[0] and ordered[1].article in run.prompts[0]
    for i, report in enumerate(ordered[2:], start=1):
        assert f"S{i}" in run.prompts[i] and report.article in run.prompts[i]
    assert run.summary == f"S{len(event.news) - 1}" and not run.truncated
    protocol_run = summarize(event, FakeModel(), pipeline="recurrent_protocol")
    assert all(p.startswith(PROTOCOL) for p in protocol_run.prompts)


def test_one_call_pipelines(sample):
    event = sample[1]
    run = summarize(event, FakeModel(), pipeline="all", target_lang="de")
    assert run.prompts == [prompt_all_at_once(event, "de")] and run.summary == "S1"
    run = summarize(event, FakeModel(), pipeline="protocol")
    assert run.prompts == [prompt_protocol_guided(event, "en")]


def test_token_budget_truncates_articles(sample):
    event = sample[0]
    full = prompt_all_at_once(event)
    budget = len(full) // 2  # count_tokens=len: one "token" per character
    run = summarize(event, FakeModel(), pipeline="all", max_prompt_tokens=budget, count_tokens=len)
    assert run.truncated and len(run.prompts[0]) <= budget
    assert len(run.prompts[0]) > budget - 100  # the search uses the budget, not far less
    assert " …" in run.prompts[0]
    recurrent = summarize(
        event, FakeModel(), pipeline="recurrent", max_prompt_tokens=600, count_tokens=len
    )
    assert all(len(p) <= 600 for p in recurrent.prompts)
    with pytest.raises(GlobeSummError, match="does not fit"):
        summarize(event, FakeModel(), pipeline="all", max_prompt_tokens=50, count_tokens=len)


def test_summarize_rejects_bad_requests(sample):
    event = sample[0]
    with pytest.raises(GlobeSummError, match="unknown pipeline"):
        summarize(event, FakeModel(), pipeline="map-reduce")
    with pytest.raises(GlobeSummError, match="count_tokens"):
        summarize(event, FakeModel(), max_prompt_tokens=100)
    with pytest.raises(GlobeSummError, match="unknown target language"):
        summarize(event, FakeModel(), target_lang="klingon")
    with pytest.raises(TypeError, match="must return a string"):
        summarize(event, lambda prompt: None)
