"""TOFU-style unlearning metrics against hand-computed values and scipy."""

import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from workbench.errors import InputError
from trainers.methods.unlearning.tofu import (
    SetMetrics,
    UnlearningReport,
    answer_probability,
    forget_quality,
    model_utility,
    normalized_answer_probability,
    rougeL_recall,
    summarize_set,
    truth_ratio,
    truth_ratio_forget_form,
    truth_ratio_retain_form,
)

# --- ROUGE-L recall ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        ("the cat sat on the mat", "the cat sat on the mat", 1.0),
        ("the cat on mat", "the cat sat on the mat", 4 / 6),  # LCS: the cat on mat
        ("the cat sat on the mat and then slept", "the cat sat", 1.0),  # recall ignores extra words
        ("d c b a", "a b c d", 1 / 4),  # order matters: LCS has length 1
        ("Running dogs!", "run dog", 1.0),  # TOFU's English scorer lower-cases and stems
        ("", "the cat", 0.0),
        ("something else entirely", "the cat", 0.0),
    ],
)
def test_rougeL_recall_english_by_hand(prediction, reference, expected):
    assert rougeL_recall(prediction, reference) == pytest.approx(expected)


def test_rougeL_recall_other_languages_keep_non_ascii_words():
    reference = "L'été est très chaud à Zürich."  # tokens: l été est très chaud à zürich
    assert rougeL_recall("été chaud Zürich", reference, lang="fr") == pytest.approx(3 / 7)
    assert rougeL_recall("Été", "été", lang="fr") == 1.0
    assert rougeL_recall("été", "hiver", lang="fr") == 0.0
    with pytest.raises(ValueError, match="unknown language"):
        rougeL_recall("a", "a", lang="xx")


# --- probabilities and truth ratio -------------------------------------------------------------


def test_answer_probability_is_length_normalized():
    token_logprobs = [math.log(0.5), math.log(0.25), math.log(0.125)]
    geometric_mean = (0.5 * 0.25 * 0.125) ** (1 / 3)
    assert answer_probability(sum(token_logprobs), 3) == pytest.approx(geometric_mean)
    with pytest.raises(InputError, match="n_tokens"):
        answer_probability(-1.0, 0)
    with pytest.raises(InputError, match="finite"):
        answer_probability(float("nan"), 2)


def test_normalized_answer_probability_by_hand():
    true, wrong = -1.0, [-2.0, -3.0]
    expected = math.exp(-1) / (math.exp(-1) + math.exp(-2) + math.exp(-3))
    assert normalized_answer_probability(true, wrong) == pytest.approx(expected)
    assert normalized_answer_probability(-900.0, [-900.0]) == pytest.approx(0.5)  # no underflow


def test_truth_ratio_by_hand_from_token_probabilities():
    # paraphrased answer: 2 tokens; perturbed answers: 2 and 3 tokens
    paraphrased = [0.8, 0.5]
    perturbed = [[0.1, 0.4], [0.2, 0.2, 0.2]]
    p_para = (0.8 * 0.5) ** (1 / 2)
    p_wrong = [(0.1 * 0.4) ** (1 / 2), (0.2 * 0.2 * 0.2) ** (1 / 3)]
    expected = math.sqrt(p_wrong[0] * p_wrong[1]) / p_para  # geometric mean over perturbed
    mean_lp = lambda probs: float(np.mean(np.log(probs)))  # noqa: E731
    got = truth_ratio(mean_lp(paraphrased), [mean_lp(p) for p in perturbed])
    assert got == pytest.approx(expected)
    assert truth_ratio(-1.0, [-2.0, -3.0]) == pytest.approx(math.exp(-1.5))
    assert truth_ratio(-800.0, [0.0]) == math.inf
    with pytest.raises(InputError, match="empty"):
        truth_ratio(-1.0, [])


@pytest.mark.parametrize("ratio, retain, forget", [(0.25, 0.75, 0.25), (1.0, 0.0, 1.0), (4.0, 0.0, 0.25)])
def test_truth_ratio_reporting_forms(ratio, retain, forget):
    assert truth_ratio_retain_form(ratio) == pytest.approx(retain)
    assert truth_ratio_forget_form(ratio) == pytest.approx(forget)


# --- forget quality and model utility ----------------------------------------------------------


def test_forget_quality_is_the_ks_p_value():
    unlearned = [0.2, 0.5, 0.9, 1.3, 0.7, 0.4]
    retain_only = [0.6, 0.8, 1.1, 1.5, 2.0, 0.95, 1.2]
    assert forget_quality(unlearned, retain_only) == pytest.approx(ks_2samp(unlearned, retain_only).pvalue)
    # TOFU's code tests 1/R; the p-value does not change
    inverted = ks_2samp([1 / r for r in unlearned], [1 / r for r in retain_only]).pvalue
    assert forget_quality(unlearned, retain_only) == pytest.approx(inverted)
    assert forget_quality(unlearned, unlearned) == 1.0
    assert forget_quality([0.01 * i for i in range(1, 21)], [5 + i for i in range(20)]) < 1e-6
    with pytest.raises(InputError, match="empty"):
        forget_quality([], [1.0])


def test_model_utility_is_the_harmonic_mean():
    assert model_utility({"a": 0.5, "b": 0.25, "c": 1.0}) == pytest.approx(3 / (2 + 4 + 1))
    assert model_utility({"a": 0.5, "b": 0.0}) == 0.0
    with pytest.raises(InputError, match="negative: b"):
        model_utility({"a": 0.5, "b": -0.1})
    with pytest.raises(InputError, match="at least one"):
        model_utility({})


# --- per-set summaries and the report ----------------------------------------------------------


def test_summarize_set_uses_the_form_of_its_kind():
    forget = summarize_set("forget", [1.0, 0.0], [0.5, 0.3], [0.5, 2.0])
    assert forget == SetMetrics(rougeL_recall=0.5, probability=pytest.approx(0.4), truth_ratio=0.5)
    retain = summarize_set("retain", [1.0, 0.0], [0.5, 0.3], [0.5, 2.0])
    assert retain.truth_ratio == pytest.approx((0.5 + 0.0) / 2)
    with pytest.raises(InputError, match="one value per question"):
        summarize_set("retain", [1.0], [0.5, 0.3], [0.5, 2.0])
    with pytest.raises(InputError, match="kind"):
        summarize_set("target", [1.0], [0.5], [0.5])


def test_report_model_utility_and_frame():
    report = UnlearningReport(
        sets={
            "forget": SetMetrics(0.1, 0.2, 0.9),
            "retain": SetMetrics(0.5, 0.5, 0.5),
            "real_world": SetMetrics(1.0, 1.0, 0.25),
        },
        forget_quality=0.3,
    )
    assert report.model_utility == pytest.approx(6 / (2 + 2 + 2 + 1 + 1 + 4))  # forget set excluded
    frame = report.to_frame()
    assert list(frame.columns) == ["set", "metric", "value"] and len(frame) == 3 * 3 + 2
    overall = frame[frame["set"] == "overall"].set_index("metric")["value"]
    assert overall["forget_quality"] == 0.3 and overall["model_utility"] == pytest.approx(0.5)
    forget_only = UnlearningReport(sets={"forget": SetMetrics(0.1, 0.2, 0.9)})
    assert len(forget_only.to_frame()) == 3
    with pytest.raises(InputError, match="Model utility needs"):
        forget_only.model_utility
