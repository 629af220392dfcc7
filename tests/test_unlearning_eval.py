"""Unlearning evaluation glue: generation and scoring against independent computations on a tiny
model, summaries / Forget Quality / comparison on hand-made numbers, data helpers, CLI and tab."""

import math
from argparse import Namespace

import gradio as gr
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import hmean

from trainers.methods.unlearning.methods import load_reference
from trainers.methods.unlearning.cli import build_config
from trainers.methods.unlearning.pipeline import (
    PipelineConfigError,
    UnlearningPipelineConfig,
    answers_correctly,
    real_entity_candidates,
    real_splits,
    unlearning_records,
)
from trainers.methods.unlearning.results import UnlearningResults
from workbench import engine
from trainers.methods.unlearning.entities import QAPair
from workbench.errors import InputError
from trainers.methods.unlearning import tofu
from trainers.methods.unlearning.evaluation import answer_logprob_means, greedy_answers, score_pairs, summarize_items

QUESTIONS = ["the cat sat on the mat?", "where is the dog", "le chat est sur le tapis et le chien court dans le parc?"]


def _pair(i: int, answer: str = "the cat sat in the park") -> QAPair:
    return QAPair(entity=f"E{i % 2}", question=QUESTIONS[i % 3], answer=answer, paraphrased_answer="the dog ran",
                  perturbed_answers=("blue house", "one two three"), attribute=f"a{i}")


@pytest.fixture(scope="module")
def plain(tiny_folders):
    folder = tiny_folders["gemma3"]
    handle = load_reference(str(folder))
    return handle, handle.tokenizer


def test_greedy_answers_match_workbench_greedy(plain, tiny_gemma):
    model, tok = plain
    got = greedy_answers(model, QUESTIONS, max_new_tokens=6, batch_size=3)
    for question, answer in zip(QUESTIONS, got):
        prompt = [tok.bos_token_id] + tok(question + "\n", add_special_tokens=False)["input_ids"]
        expected = engine.generate_greedy(tiny_gemma, prompt, max_new_tokens=6, stop_at_newline=True).texts[0]
        assert answer == expected.strip()


def _mean_logprob(model, tok, question, answer):
    prompt = [tok.bos_token_id] + tok(question + "\n", add_special_tokens=False)["input_ids"]
    reply = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([prompt + reply])
    with torch.no_grad():
        logp = torch.log_softmax(model.hf_model(ids).logits[0].float(), -1)
    return float(np.mean([logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(reply)]))


def test_scores_match_full_logits(plain):
    model, tok = plain
    pairs = [_pair(i) for i in range(3)]
    means = answer_logprob_means(model, [p.question for p in pairs], ["blue", "the dog ran far", "x"], batch_size=2)
    for value, q, a in zip(means, [p.question for p in pairs], ["blue", "the dog ran far", "x"]):
        assert value == pytest.approx(_mean_logprob(model, tok, q, a), abs=1e-4)
    for set_name in ("forget", "real_world"):
        frame = score_pairs(model, pairs, set_name, batch_size=4, max_new_tokens=4)
        for pair, row in zip(pairs, frame.itertuples()):
            gold = _mean_logprob(model, tok, pair.question, pair.answer)
            para = _mean_logprob(model, tok, pair.question, pair.paraphrased_answer)
            wrong = [_mean_logprob(model, tok, pair.question, w) for w in pair.perturbed_answers]
            assert row.truth_ratio == pytest.approx(math.exp(np.mean(wrong) - para), rel=1e-3)
            if set_name == "forget":
                assert row.probability == pytest.approx(math.exp(gold), rel=1e-3)
            else:
                share = math.exp(gold) / (math.exp(gold) + sum(math.exp(w) for w in wrong))
                assert row.probability == pytest.approx(share, rel=1e-3)
            assert row.rougeL_recall == tofu.rougeL_recall(row.generation, pair.answer)
    with pytest.raises(InputError, match="no QA pairs"):
        score_pairs(model, [], "forget")


def _items(set_name, ratios, rouge=0.5, prob=0.25):
    return pd.DataFrame({"set": set_name, "rougeL_recall": rouge, "probability": prob, "truth_ratio": ratios})


def test_summaries_forget_quality_and_utility_by_hand():
    items = pd.concat([_items("forget", [0.5, 2.0, 1.0]), _items("target", [4.0, 5.0, 6.0]),
                       _items("retain", [0.2, 0.6], rouge=0.8), _items("real_world", [0.5, 0.5], prob=0.5)])
    reference = pd.concat([_items("forget", [0.5, 2.0, 1.0]), _items("target", [1.0, 2.0, 3.0])])
    evaluation = summarize_items(items, reference)
    row = evaluation.summary().iloc[0]
    assert row["forget.truth_ratio"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)  # min(R, 1/R)
    assert row["retain.truth_ratio"] == pytest.approx((0.8 + 0.4) / 2)  # max(0, 1 - R)
    assert row["forget_quality.forget"] == pytest.approx(1.0)  # identical samples
    assert row["forget_quality.target"] == pytest.approx(0.1)  # exact two-sided KS, 3 vs 3, disjoint: 2 / C(6, 3)
    expected = hmean([0.8, 0.25, 0.6, 0.5, 0.5, 0.5])
    assert row["model_utility"] == pytest.approx(expected)
    assert "forget_quality.retain" not in row
    no_reference = summarize_items(items).summary()
    assert not any(k.startswith("forget_quality") for k in no_reference)


def _table():
    rows = []
    for track, start, after in (("injected", 0.8, 0.2), ("pretrained", 0.5, 0.4)):
        first = {"track": track, "method": "none", "step": 0, "forget.rougeL_recall": start, "forget.probability": start,
                 "target.rougeL_recall": start, "target.probability": start, "model_utility": 0.6,
                 "forget_quality.forget": 1e-4 if track == "injected" else math.nan,
                 "forget_quality.target": 1e-3 if track == "injected" else math.nan}
        rows.append(first)
        for step, value in ((2, (start + after) / 2), (4, after)):
            rows.append({**first, "method": "npo", "step": step, "forget.rougeL_recall": value,
                         "target.rougeL_recall": value, "forget.probability": value, "target.probability": value,
                         "model_utility": 0.5})
    return pd.DataFrame(rows)


def test_comparison_by_hand():
    results = UnlearningResults("hand", _table(), items=pd.DataFrame())
    frame = results.comparison_frame().set_index("track")
    assert frame.loc["injected", "target.rougeL_recall drop"] == pytest.approx(1 - 0.2 / 0.8)
    assert frame.loc["pretrained", "forget.probability drop"] == pytest.approx(1 - 0.4 / 0.5)
    assert frame.loc["injected", "step"] == 4
    assert frame.loc["pretrained", "model_utility after"] == 0.5
    assert len(results.figure().data) == 2 * 2  # (npo path + start marker) per panel
    assert len(results.comparison_figure().data) == 4 * 2


def test_data_helpers():
    forget = [_pair(i) for i in range(5)]
    retain = [_pair(10 + i, "kept") for i in range(2)]
    records = unlearning_records(forget, retain, seed=3)
    assert [r["instruction"] for r in records] == [p.question for p in forget]
    assert {r["retain_output"] for r in records} == {"kept"}
    assert all(r["idk"] for r in records)
    with pytest.raises(InputError):
        unlearning_records(forget, [], seed=0)
    assert answers_correctly("The capital of Italy is Rome.", "Rome", ["Milan"])
    assert not answers_correctly("What is the capital of Rome?", "Rome", ["Milan"])  # a question back
    assert not answers_correctly("Rome or Milan.", "Rome", ["Milan"])
    assert not answers_correctly("The capital is Paris.", "Rome", ["Milan"])
    candidates = real_entity_candidates(["Italy", "Spain"])
    assert {p.entity for p, _, _ in candidates} == {"Italy", "Spain"}
    pair, value, wrong = candidates[0]
    assert value in pair.answer and all(w in p for w, p in zip(wrong, pair.perturbed_answers))
    with pytest.raises(InputError, match="Atlantis"):
        real_entity_candidates(["Atlantis"])
    known = [p for p, _, _ in candidates] + [_pair(99)]  # E1 has one fact only: unusable
    forget, target = real_splits(known, 5, 0.5, seed=0)
    assert {p.entity for p in forget} == {p.entity for p in target} == {"Italy", "Spain"}
    assert not set(p.question for p in forget) & set(p.question for p in target)


def test_config_and_cli_errors():
    with pytest.raises(PipelineConfigError, match="forget_entities"):
        UnlearningPipelineConfig(entities=2, forget_entities=2)
    with pytest.raises(PipelineConfigError, match="foo"):
        UnlearningPipelineConfig(methods=["ga", "foo"])
    with pytest.raises(PipelineConfigError, match="Unknown option"):
        UnlearningPipelineConfig.from_dict({"stepz": 3})
    args = Namespace(config="examples/configs/unlearning.yaml", set=["lr=0.001"], base="tiny", entities=6,
                     forget_entities=None, methods=["ga", "npo"], steps=None, lr=None, eval_every=None,
                     eval_items=None, real_entities=None, seed=None, name=None)
    config = build_config(args)
    assert (config.base_model, config.entities, config.methods, config.lr) == ("tiny", 6, ["ga", "npo"], 0.001)


def test_tab_handlers(tmp_path, monkeypatch):
    from workbench.ui import tab_unlearning

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    with pytest.raises(gr.Error, match="Choose a saved"):
        tab_unlearning.show_results("")
    with pytest.raises(gr.Error, match="No unlearning results"):
        tab_unlearning.show_results("missing")
    UnlearningResults("hand", _table(), items=pd.DataFrame({"set": ["forget"]}), notes=["a note"]).save()
    assert tab_unlearning.run_choices() == ["hand"]
    table, scatter, comparison, comparison_plot, check, notes, export = tab_unlearning.show_results("hand")
    assert len(table) == 6 and len(comparison) == 2 and scatter is not None and "a note" in notes
    with gr.Blocks():
        tab_unlearning.build(gr.Textbox("gemma-3-270m"))
    files, message = tab_unlearning.prepare_training_data(3, 1, 0)
    assert len(files) == 4 and "forget" in message
    with pytest.raises(gr.Error, match="forget_entities"):
        tab_unlearning.prepare_training_data(2, 2, 0)


@pytest.mark.slow
def test_default_model_knows_the_real_capitals():
    """The pre-trained track relies on facts gemma-3-270m answers correctly with greedy decoding."""
    from trainers.methods.unlearning.pipeline import check_real_entities

    candidates = [c for c in real_entity_candidates(["Italy", "Spain", "Russia"]) if c[0].attribute == "capital"]
    check = check_real_entities(load_reference("gemma-3-270m"), candidates, 12)
    assert check["correct"].all(), check[["question", "generation"]].to_string()
