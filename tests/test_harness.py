"""Evaluation harness: per-language scores equal a hand loop, option log-probs equal Hugging Face's,
repeats are served from the cache, checkpoint manifests get the metrics, bad input is explained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import workbench
from workbench import engine
from workbench.datasets.tasks import get_task, load_task
from workbench.errors import InputError
from workbench.evals import harness
from workbench.evals.bootstrap import bootstrap_ci
from workbench.evals.harness import continuation_prefix, evaluate, sequence_logprobs


@pytest.fixture(scope="module")
def hf_gemma(tiny_gemma):
    path = tiny_gemma.facts.path
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def _hf_logprob(hf, context: str, continuation: str) -> float:
    """Independent sum of log P(continuation tokens | BOS + context), one unpadded sequence."""
    model, tok = hf
    ctx = [tok.bos_token_id] + tok(context, add_special_tokens=False).input_ids
    cont = tok(continuation, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([ctx + cont])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return sum(float(logprobs[len(ctx) - 1 + k, t]) for k, t in enumerate(cont))


def test_generation_scores_equal_a_hand_loop(tiny_gemma):
    result = evaluate(tiny_gemma, "xnli", ["en", "zh"], n=2, mode="generate", use_cache=False)
    task = get_task("xnli")
    for lang in ("en", "zh"):
        scores = []
        for item in load_task("xnli", lang)[:2]:
            text = engine.generate_greedy(tiny_gemma, item.prompt, max_new_tokens=8).text
            scores.append(task.score(text.strip().split("\n")[0], item))
        row = result.to_frame().set_index("lang").loc[lang]
        assert (row["score"], row["ci_low"], row["ci_high"]) == bootstrap_ci(scores)
        assert row["n"] == 2 and row["chance"] == pytest.approx(1 / 3)
    assert list(result.to_frame()["lang"]) == ["en", "zh"]


def test_option_logprobs_equal_hugging_face(tiny_gemma, hf_gemma):
    contexts = ["the cat sat on the", "the cat sat on the", "猫坐在", "Premise: le chien court.\nAnswer:"]
    continuations = [" mat", " dog ran in the park", "垫子上", " neutral"]
    ours = sequence_logprobs(tiny_gemma, contexts, continuations)
    expected = [_hf_logprob(hf_gemma, c, k) for c, k in zip(contexts, continuations)]
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_logprob_accuracy_is_the_argmax_over_options(tiny_gemma, hf_gemma):
    result = evaluate(tiny_gemma, "xcopa", ["en", "ja"], n=4, mode="logprob", use_cache=False)
    assert result.metrics == ["logprob", "logprob_norm", "logprob_pmi"]
    items = result.items_frame()
    for lang in ("en", "ja"):
        correct, correct_norm, correct_pmi = [], [], []
        for item in load_task("xcopa", lang)[:4]:
            prefix = continuation_prefix(item.prompt)
            assert prefix == ("" if lang == "ja" else " ")
            cue = item.prompt.split("\n")[-1]
            assert cue == ("答え：" if lang == "ja" else "Answer:")
            lps = np.array([_hf_logprob(hf_gemma, item.prompt, prefix + c) for c in item.choices])
            cue_lps = np.array([_hf_logprob(hf_gemma, cue, prefix + c) for c in item.choices])
            lengths = np.array([len(prefix + c) for c in item.choices])
            correct.append(float(np.argmax(lps) == item.label))
            correct_norm.append(float(np.argmax(lps / lengths) == item.label))
            correct_pmi.append(float(np.argmax(lps - cue_lps) == item.label))
            ours = items[(items["lang"] == lang) & (items["id"] == item.id)].iloc[0]
            np.testing.assert_allclose(ours["option_logprobs"], lps, atol=1e-3)
            np.testing.assert_allclose(ours["cue_logprobs"], cue_lps, atol=1e-3)
        frame = result.to_frame().set_index("lang")
        assert frame.loc[lang, "score"] == pytest.approx(np.mean(correct))
        norm = result.to_frame("logprob_norm").set_index("lang")
        assert norm.loc[lang, "score"] == pytest.approx(np.mean(correct_norm))
        pmi = result.to_frame("logprob_pmi").set_index("lang")
        assert pmi.loc[lang, "score"] == pytest.approx(np.mean(correct_pmi))
        assert frame.loc[lang, "chance"] == pytest.approx(0.5)


def test_answer_probability_gold_first_token(tiny_gemma, hf_gemma):
    result = evaluate(tiny_gemma, "capitals", ["fr"], n=3, mode="probability", use_cache=False)
    assert result.metrics == ["generate", "gold_prob"]
    model, tok = hf_gemma
    expected = []
    for item in load_task("capitals", "fr")[:3]:
        ids = [tok.bos_token_id] + tok(item.prompt, add_special_tokens=False).input_ids
        with torch.no_grad():
            probs = torch.softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
        firsts = {tok(" " + g, add_special_tokens=False).input_ids[0] for g in item.golds}
        expected.append(float(probs[sorted(firsts)].sum()))
    np.testing.assert_allclose(result.items_frame()["gold_prob"], expected, rtol=1e-4)
    gold = result.to_frame("gold_prob").iloc[0]
    assert gold["score"] == pytest.approx(np.mean(expected)) and np.isnan(gold["chance"])


def test_auto_mode_metrics_per_kind():
    assert harness.task_metrics(get_task("xnli"), "auto") == ["logprob", "logprob_norm", "logprob_pmi", "generate"]
    assert harness.task_metrics(get_task("capitals"), "auto") == ["generate", "gold_prob", "logprob", "logprob_norm"]
    assert harness.task_metrics(get_task("xquad"), "auto") == ["generate"]
    assert harness.task_metrics(get_task("xlsum"), "auto") == ["generate"]


def test_repeat_is_served_from_the_cache(tiny_gemma, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    calls = {"n": 0}
    real_scores, real_generate = engine.label_logprobs, engine.generate_greedy

    def counting(real):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(engine, "label_logprobs", counting(real_scores))
    monkeypatch.setattr(engine, "generate_greedy", counting(real_generate))
    seen = []
    first = evaluate(tiny_gemma, "globalopinion", ["de"], n=2, progress=lambda f, m: seen.append(f))
    assert calls["n"] > 0 and seen[-1] == 1.0
    calls["n"] = 0
    second = evaluate(tiny_gemma, "globalopinion", ["de"], n=2)
    assert calls["n"] == 0
    assert second.scores == first.scores


def test_metrics_go_into_the_checkpoint_manifest(tiny_folders, monkeypatch, tmp_path):
    import shutil

    from workbench import registry

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    source = tiny_folders["gpt2"]
    registry.save("evalrun", 3, lambda folder: shutil.copytree(source, folder, dirs_exist_ok=True),
                  {"base_model": str(source), "method": "test", "metrics": {"loss": 1.5}})
    handle = workbench.load("ckpt:evalrun")
    result = evaluate(handle, "xcopa", ["fr"], n=2, mode="logprob", use_cache=False)
    manifest = json.loads((registry.get("evalrun").path / registry.MANIFEST).read_text())
    assert manifest["metrics"]["loss"] == 1.5
    assert manifest["metrics"]["eval/xcopa/logprob/fr"] == result.to_frame().iloc[0]["score"]
    assert registry.get("evalrun@3").metrics["eval/xcopa/logprob_norm/fr"] == pytest.approx(
        result.to_frame("logprob_norm").iloc[0]["score"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(task="nope"), "unknown task 'nope'; known tasks: capitals"),
        (dict(task="xnli", langs=["en", "xx"]), "task 'xnli' has no language 'xx'; it supports en, fr"),
        (dict(task="xnli", langs=[]), "choose at least one language"),
        (dict(task="xnli", n=0), "n must be a positive number of items"),
        (dict(task="xquad", mode="logprob"), "mode 'logprob' needs items with options; xquad is extractive qa"),
        (dict(task="xnli", mode="probability"), "mode 'probability' is for answer-probability tasks"),
        (dict(task="xnli", mode="fast"), "unknown mode 'fast'"),
        (dict(task="xlsum", langs="es"), "no committed sample of xlsum in 'es'"),
    ],
)
def test_bad_input_is_explained(kwargs, message):
    # The spec is never loaded: every check runs before the model is touched.
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        evaluate("no-such-model/anywhere", **kwargs)


def test_result_figure_and_metric_choice(tiny_gemma):
    result = evaluate(tiny_gemma, "xcopa", "en,fr", n=2, mode="logprob", use_cache=False)
    fig = result.figure()
    assert {trace.name for trace in fig.data} >= {"log-prob of options", "log-prob per character"}
    assert any(trace.name.startswith("chance") for trace in fig.data)
    with pytest.raises(InputError, match="metric 'generate' was not computed"):
        result.to_frame("generate")


@pytest.mark.slow
def test_default_model_logprob_matches_hugging_face(gemma):
    """On Gemma 3 (soft-capped logits, 262k vocabulary) the option log-probs equal HF's."""
    model = gemma.hf_model
    item = load_task("xnli", "de")[0]
    ours = sequence_logprobs(gemma, [item.prompt] * 3, [" " + c for c in item.choices])
    expected = []
    for choice in item.choices:
        ctx = gemma.encode(item.prompt)
        cont = gemma.tokenizer(" " + choice, add_special_tokens=False).input_ids
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), dim=-1)
        expected.append(sum(float(logprobs[len(ctx) - 1 + k, t]) for k, t in enumerate(cont)))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------- the Evaluate tab


def test_tab_runs_and_exports_an_evaluation(tiny_folders, tmp_path, monkeypatch):
    import pandas as pd

    from workbench import cache
    from workbench.ui import tab_evaluate as tab

    monkeypatch.setattr(cache, "RESULTS", cache.ResultCache(root=tmp_path))
    spec = str(tiny_folders["gemma3"])
    status, table, fig, items, result = tab.run_eval(spec, "xcopa", ["en", "fr"], 2, "logprob", progress=None)
    assert "**xcopa**" in status and "2 languages, 2 items each" in status and "Chance 0.500" in status
    assert table[["lang", "metric"]].values.tolist() == [
        [lang, metric] for lang in ("en", "fr") for metric in ("logprob", "logprob_norm", "logprob_pmi")]
    assert len(items) == 4 and len(fig.data) >= 2
    scores_csv, items_csv = tab.export_eval(result, "csv")
    assert pd.read_csv(scores_csv)["score"].tolist() == pytest.approx(result.summary()["score"].tolist())
    assert len(pd.read_csv(items_csv)) == 4
    with open(tab.export_eval(result, "json")[0], encoding="utf-8") as fh:
        data = json.load(fh)
    assert data["task"] == "xcopa" and len(data["scores"]) == 6 and len(data["items"]) == 4


def test_tab_task_languages():
    from workbench.ui import tab_evaluate as tab

    update = tab.task_languages("xlsum")
    assert update["choices"] == ["de", "en", "fr", "ja", "zh"] and update["value"] == ["en", "fr", "de", "zh", "ja"]


@pytest.mark.parametrize("args, message", [
    (("nope", ["en"], 2, "auto"), "unknown task 'nope'"),
    (("xnli", [], 2, "auto"), "Choose at least one language"),
    (("xnli", ["en", "xx"], 2, "auto"), "no language 'xx'"),
    (("xnli", ["en"], 0, "auto"), "n must be a positive number of items"),
    (("xnli", ["en"], 1.5, "auto"), "must be a whole number"),
    (("xquad", ["en"], 2, "logprob"), "needs items with options"),
])
def test_tab_bad_input_is_a_readable_message(args, message):
    import gradio as gr

    from workbench.ui import tab_evaluate as tab

    with pytest.raises(gr.Error, match=message):
        tab.run_eval("no-such-model/anywhere", *args, progress=None)
    with pytest.raises(gr.Error, match="Run an evaluation first"):
        tab.export_eval(None, "csv")


def test_tab_builds():
    import gradio as gr

    from workbench.ui import tab_evaluate as tab

    with gr.Blocks():
        tab.build(gr.Textbox("gemma-3-270m"))
