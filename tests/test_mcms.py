"""GlobeSumm MCMS on a model: the pipelines run end to end through greedy decoding, the metrics are
the summarization module's, runs are cached, and bad requests are explained."""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import AutoTokenizer

import workbench
from workbench import engine
from workbench.evals.globesumm.data import GlobeSummError, parse_event, summarize
from workbench.errors import InputError
from workbench.evals.globesumm import mcms
from workbench.evals.bootstrap import bootstrap_ci
from workbench.evals.globesumm.mcms import clean_output, run_mcms
from workbench.evals.globesumm.summarization import score_summary

RECORD = {
    "id": "mill-fire", "date": 20240105, "description": "A fire at the old mill in Tarvin.",
    "category": "Disasters and accidents",
    "news": [
        {"lang_abbr": "fr", "lang_full": "French", "date": "20240106", "title": "Incendie",
         "article": "Le moulin de Tarvin a brûlé. Trois personnes ont été blessées."},
        {"lang_abbr": "en", "lang_full": "English", "date": "20240105", "title": "Mill fire",
         "article": "A fire destroyed the old mill in Tarvin. Two people were hurt."},
        {"lang_abbr": "en", "lang_full": "English", "date": "20240107", "title": "Cause",
         "article": "Police said a faulty heater started the fire."},
    ],
    "reference_summary": "A fire destroyed the old mill in Tarvin; reports differ on the injured, "
                         "two vs three. Police said a faulty heater started it.",
    "key_facts": ["fire destroyed the old mill in Tarvin", "a faulty heater started the fire"],
    "conflicts": [{"fact": "people hurt", "values": ["two hurt", "three hurt"]}],
}
CHAT = "{% for m in messages %}<bos>user says {{ m['content'] }} end{% endfor %} model says"


@pytest.fixture(scope="module")
def events():
    second = dict(RECORD, id="mill-fire-2", news=RECORD["news"][:2])
    return [parse_event(RECORD), parse_event(second)]


@pytest.fixture(scope="module")
def long_tiny(tiny_folders, tmp_path_factory):
    """The tiny Gemma 3 with a 2048-token context (RoPE: no weight depends on it), so the
    protocol prompt fits, and a chat template."""
    folder = tmp_path_factory.mktemp("long") / "gemma3"
    shutil.copytree(tiny_folders["gemma3"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = 2048
    (folder / "config.json").write_text(json.dumps(config))
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = CHAT
    tok.save_pretrained(folder)
    return workbench.load(str(folder))


def _reference_run(handle, event, pipeline, budget, new_tokens=4):
    def generate(prompt):
        return clean_output(engine.generate_greedy(handle, prompt, max_new_tokens=new_tokens).text)

    return summarize(event, generate, pipeline, "en", budget, lambda text: len(handle.encode(text)))


def test_pipelines_run_end_to_end_with_the_summarization_metrics(long_tiny, events):
    seen = []
    result = run_mcms(long_tiny, events, max_new_tokens=4, use_cache=False,
                      progress=lambda f, m: seen.append((f, m)))
    assert result.max_prompt_tokens == 2048 - 4
    frame = result.to_frame()
    assert list(frame["pipeline"]) == ["all", "recurrent", "protocol"] * 2
    assert list(frame["calls"]) == [1, 2, 1, 1, 1, 1]  # recurrent: first two reports, then one more
    for run, row in zip(result.runs, result.rows):
        event = events[0] if row["event"] == "mill-fire" else events[1]
        expected = _reference_run(long_tiny, event, row["pipeline"], result.max_prompt_tokens)
        assert run.prompts == expected.prompts and run.outputs == expected.outputs
        assert row["summary"] == expected.summary
        scores = score_summary(expected.summary, event, "en")
        assert {k: row[k] for k in scores} == scores
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(seen) == 7 + 1
    assert "mill-fire: chronological recurrent (call 2/7)" in seen[1][1]
    table = result.summary().set_index(["pipeline", "metric"])
    for metric in mcms.METRICS:
        values = frame[frame["pipeline"] == "recurrent"][metric].tolist()
        mean, low, high = bootstrap_ci(values)
        assert table.loc[("recurrent", metric), ["score", "ci_low", "ci_high"]].tolist() == [mean, low, high]
    assert set(result.summaries("mill-fire")) == {"reference", "all", "recurrent", "protocol"}
    assert len(result.figure().data) == 3


def test_repeat_reads_the_cache(long_tiny, events, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    first = run_mcms(long_tiny, events[1:], pipelines=["all"], max_new_tokens=3)

    def refuse(*args, **kwargs):
        raise AssertionError("the model was called for a cached run")

    monkeypatch.setattr(engine, "generate_greedy", refuse)
    second = run_mcms(long_tiny, events[1:], pipelines=["all"], max_new_tokens=3)
    assert second.rows == first.rows


def test_chat_template_wraps_each_prompt(long_tiny, events):
    result = run_mcms(long_tiny, events[1:], pipelines="all", max_new_tokens=3, chat=True, use_cache=False)
    prompt = result.runs[0].prompts[0]
    ids = long_tiny.encode(f"user says {prompt} end model says")  # BOS from the template, once
    assert result.rows[0]["summary"] == clean_output(engine.generate_greedy(long_tiny, ids, max_new_tokens=3).text)


def test_clean_output_keeps_the_first_paragraph():
    assert clean_output("\n A bridge opened.\nIt cost 1.1 billion.\n\nReport 7 (French)") == (
        "A bridge opened.\nIt cost 1.1 billion.")
    assert clean_output("  \n\n") == ""


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pipelines=["fast"]), "unknown pipeline(s) 'fast': choose from all, recurrent"),
        (dict(pipelines=[]), "choose at least one pipeline"),
        (dict(events=[]), "no events to summarize"),
        (dict(target_lang="fr"), "has references in 'en'; summaries in 'fr' could not be scored"),
        (dict(max_new_tokens=0), "max_new_tokens must be a positive whole number"),
    ],
)
def test_bad_requests_are_explained_before_loading(kwargs, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_mcms("no-such-model/anywhere", **kwargs)


def test_bad_requests_for_the_model(tiny_gemma, events):
    with pytest.raises(InputError, match="has no chat template"):
        run_mcms(tiny_gemma, events, chat=True)
    with pytest.raises(InputError, match="max_prompt_tokens must be between 1 and 500"):
        run_mcms(tiny_gemma, events, max_new_tokens=12, max_prompt_tokens=900)
    with pytest.raises(GlobeSummError, match="does not fit in 500 tokens even with empty articles"):
        run_mcms(tiny_gemma, events, pipelines=["protocol"], max_new_tokens=12, use_cache=False)


# --------------------------------------------------------------------------- the Evaluate tab


def test_tab_summarizes_shows_and_exports(long_tiny, tmp_path, monkeypatch):
    import gradio as gr
    import pandas as pd

    from workbench import cache
    from workbench.ui import tab_evaluate as tab

    monkeypatch.setattr(cache, "RESULTS", cache.ResultCache(root=tmp_path))
    upload = tmp_path / "events.jsonl"
    upload.write_text(json.dumps(RECORD) + "\n", encoding="utf-8")
    status, table, fig, rows, event, pipeline, result = tab.run_globesumm(
        long_tiny.facts.spec, ["all", "recurrent"], None, str(upload), 3, False, progress=None)
    assert "**1 events** x 2 pipelines" in status and "at most 3 new tokens" in status
    assert set(table["pipeline"]) == {"all", "recurrent"} and set(table["metric"]) == set(mcms.METRICS)
    assert event["choices"] == ["mill-fire"] and pipeline["choices"] == ["all", "recurrent"]
    reference, summary = tab.show_summary(result, "mill-fire", "recurrent")
    assert reference == RECORD["reference_summary"]
    assert summary == (result.summaries("mill-fire")["recurrent"] or "(empty)")
    with pytest.raises(gr.Error, match="Pipeline 'protocol' was not run"):
        tab.show_summary(result, "mill-fire", "protocol")
    scores_csv, rows_csv = tab.export_globesumm(result, "csv")
    assert len(pd.read_csv(scores_csv)) == len(table) and len(pd.read_csv(rows_csv)) == 2
    with open(tab.export_globesumm(result, "json")[0], encoding="utf-8") as fh:
        assert len(json.load(fh)["rows"]) == 2


@pytest.mark.parametrize("args, message", [
    (([], None, None, 120, False), "choose at least one pipeline"),
    ((["all"], 0, None, 120, False), "Summarize at least one event"),
    ((["all"], None, "/no/such/file.jsonl", 120, False), "no such file"),
    ((["all"], None, None, 0, False), "max_new_tokens must be a positive whole number"),
])
def test_tab_bad_input_is_a_readable_message(args, message):
    import gradio as gr

    from workbench.ui import tab_evaluate as tab

    with pytest.raises(gr.Error, match=message):
        tab.run_globesumm("no-such-model/anywhere", *args, progress=None)
    with pytest.raises(gr.Error, match="Run GlobeSumm first"):
        tab.export_globesumm(None, "json")
