"""The Retrieval heads tab's handlers, called directly on a tiny model (no browser)."""

import json

import gradio as gr
import pandas as pd
import pytest

from probes import retrieval
from workbench.datasets import haystack
from workbench.ui import tab_retrieval as tab


@pytest.fixture(scope="module")
def spec(tiny_folders):
    return str(tiny_folders["gemma3"])


@pytest.fixture
def result(spec, tmp_path, monkeypatch):
    from workbench import cache

    monkeypatch.setattr(cache, "RESULTS", cache.ResultCache(root=tmp_path))
    monkeypatch.setattr(haystack, "rouge1_recall", lambda answer, ref, lang: 1.0)  # keep every trial
    out = tab.run_scores(spec, "en", "200", "0.5", 2, progress=None)
    return out


def test_run_scores_fills_every_output(result):
    status, fig, ranked, per_type, window, trials, res = result
    assert "2 of 2 trials kept" in status and "sliding" in status
    assert fig.data[0].z.shape == (4, 2)
    assert len(ranked) == 8 and list(ranked.columns)[:4] == ["layer", "head", "layer_type", "score"]
    assert set(per_type["layer_type"]) == {"sliding", "full"}
    assert window["kept_trials"].sum() == 2 * 2  # each kept trial counted once per layer type
    assert len(trials) == 2 and isinstance(res, retrieval.RetrievalResult)


def test_export_csv_and_json(result):
    res = result[-1]
    frame = pd.read_csv(tab.export_scores(res, "csv"))
    assert len(frame) == 8 and "score" in frame.columns
    with open(tab.export_scores(res, "json"), encoding="utf-8") as fh:
        data = json.load(fh)
    assert data["lang"] == "en" and len(data["trials"]) == 2 and len(data["scores"]) == 2


def test_mask_top_k_uses_the_result(spec, result):
    res = result[-1]
    heads, original, masked, note = tab.mask_top_k(spec, res, 2, "the cat sat on the mat", "zero", 5)
    assert heads == ", ".join(f"{l}.{h}" for l, h in res.retrieval_heads(-1)[:2])
    assert isinstance(original, str) and isinstance(masked, str) and "(zero)" in note


def test_run_masking_and_needle_prompt(spec):
    prompt = tab.needle_prompt(spec, "de", 200)
    assert prompt.rstrip().endswith("Antwort:")
    original, masked, note = tab.run_masking(spec, prompt, "0.1 L1H2", "uniform", 4)
    assert "0.1, 1.2 (uniform)" in note


def test_compare(spec, tmp_path, monkeypatch):
    from workbench import cache

    monkeypatch.setattr(cache, "RESULTS", cache.ResultCache(root=tmp_path))
    fig, summary, overlap = tab.run_compare(spec, ["en", "zh"], "200", "0.5", 1, progress=None)
    assert summary["lang"].tolist() == ["en", "zh"] and len(fig.data) == 2 and overlap.shape == (2, 3)


@pytest.mark.parametrize("call, message", [
    (lambda s: tab.run_scores(s, "en", "", "0.5", 1, progress=None), "at least one context length"),
    (lambda s: tab.run_scores(s, "en", "200, abc", "0.5", 1, progress=None), "Cannot read the context lengths"),
    (lambda s: tab.run_scores(s, "xx", "200", "0.5", 1, progress=None), "No haystack for language 'xx'"),
    (lambda s: tab.run_compare(s, [], "200", "0.5", 1, progress=None), "at least one language"),
    (lambda s: tab.export_scores(None, "csv"), "Compute retrieval scores first"),
    (lambda s: tab.mask_top_k(s, None, 3, "hi", "uniform", 5), "Compute retrieval scores first"),
    (lambda s: tab.run_masking(s, "hello", "", "uniform", 5), "Write the heads to mask"),
    (lambda s: tab.run_masking(s, "hello", "7.0", "uniform", 5), "layer 7 is out of range"),
    (lambda s: tab.run_masking(s, "hello", "0.9", "uniform", 5), "Head 9 is out of range"),
    (lambda s: tab.run_masking(s, "  ", "0.1", "uniform", 5), "Write a prompt"),
])
def test_bad_input_is_a_readable_message(spec, call, message):
    with pytest.raises(gr.Error, match=message):
        call(spec)


def test_demo_mode_caps_the_grid(spec, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DEMO", "1")
    with pytest.raises(gr.Error, match="at most 1024 context tokens"):
        tab.run_scores(spec, "en", "2048", "0.5", 1, progress=None)
    with pytest.raises(gr.Error, match="at most 18 trials"):
        tab.run_scores(spec, "en", "200, 300, 400", "0.1, 0.5, 0.9", 3, progress=None)


def test_build_lays_out_the_tab():
    with gr.Blocks():
        spec = gr.Textbox("gemma-3-270m")
        tab.build(spec)
