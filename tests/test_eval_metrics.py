"""ROUGE with language-aware tokens, summary metrics and bootstrap intervals, on hand-made cases."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from rouge_score import rouge_scorer

from workbench.evals.globesumm.data import Conflict, load_events
from workbench.evals.bootstrap import bootstrap_ci
from workbench.evals.rouge import UnknownLanguageError, rouge, token_unit, tokenize
from workbench.evals.globesumm.summarization import (
    conflict_handling,
    content_tokens,
    coverage,
    covered_facts,
    handled_conflicts,
    near_duplicate_sentences,
    redundancy,
    score_summary,
)

ZH = "奥尔维尔河决堤，洪灾已造成12人死亡，另有4人失踪。"
JA = "オルベル川の氾濫で、死者が15人に増えた。"


# --- tokens and ROUGE ------------------------------------------------------------------------


def test_tokenizer_per_language():
    assert token_unit("zh") == token_unit("zh-TW") == "jieba"
    assert token_unit("ja") == token_unit("th") == "char"
    assert token_unit("en") == token_unit("pt_BR") == token_unit("ru") == "word"
    assert tokenize("Die Straße kostete 1,1 Mrd. Euro!", "de") == [
        "die", "straße", "kostete", "1,1", "mrd", "euro"
    ]
    assert tokenize("橋は2.4キロ", "ja") == ["橋", "は", "2.4", "キ", "ロ"]
    zh_tokens = tokenize(ZH, "zh")
    assert "12" in zh_tokens and "死亡" in zh_tokens and "，" not in zh_tokens
    assert "".join(zh_tokens) == "奥尔维尔河决堤洪灾已造成12人死亡另有4人失踪"


def test_unknown_language_is_a_clear_error():
    with pytest.raises(UnknownLanguageError, match="unknown language code 'xx'"):
        rouge("a", "a", "xx")
    assert issubclass(UnknownLanguageError, ValueError)


def test_cjk_rouge_is_not_dropped():
    # rouge-score's own tokenizer keeps only [a-z0-9]: Chinese without digits scores 0 vs itself.
    plain = rouge_scorer.RougeScorer(["rouge1"]).score("洪水造成人员死亡", "洪水造成人员死亡")
    assert plain["rouge1"].fmeasure == 0.0
    assert rouge(ZH, ZH, "zh") == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert rouge(JA, JA, "ja") == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert rouge("大桥正式通车", "洪水造成死亡", "zh") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert rouge("", ZH, "zh")["rouge1"] == 0.0


def test_rouge_matches_hand_computation():
    scores = rouge("The cat sat.", "the cat sat on the mat", "en")
    # unigrams: 3 of 3 predicted match, 3 of 6 reference -> F = 2PR/(P+R) = 2/3
    assert scores["rouge1"] == pytest.approx(2 / 3)
    # bigrams: 2 of 2 predicted, 2 of 5 reference -> F = 2 * 1 * 0.4 / 1.4
    assert scores["rouge2"] == pytest.approx(0.8 / 1.4)
    assert scores["rougeL"] == pytest.approx(2 / 3)  # LCS = "the cat sat"


def test_chinese_rouge1_matches_counter_overlap():
    prediction, reference = "洪灾造成12人死亡。", ZH
    p, r = tokenize(prediction, "zh"), tokenize(reference, "zh")
    overlap = sum((Counter(p) & Counter(r)).values())
    expected = 2 * overlap / (len(p) + len(r))
    assert 0 < expected < 1
    assert rouge(prediction, reference, "zh")["rouge1"] == pytest.approx(expected)


# --- redundancy --------------------------------------------------------------------------------


def test_redundancy_hand_counts():
    # trigrams of "a b c a b c": abc, bca, cab, abc -> one of four repeats
    assert redundancy("a b c a b c", "en") == pytest.approx(0.25)
    assert redundancy("one two", "en") == 0.0  # no trigram at all
    with pytest.raises(ValueError):
        redundancy("a b c", "en", n=0)


def test_repeated_sentence_is_more_redundant():
    clean = "The bridge opened on Friday. Cars pay a toll of three euros."
    repeated = "The bridge opened on Friday. The bridge opened on Friday. Cars pay a toll."
    assert redundancy(repeated, "en") > redundancy(clean, "en") == 0.0
    assert near_duplicate_sentences(repeated, "en") == pytest.approx(1 / 3)
    assert near_duplicate_sentences(clean, "en") == 0.0
    zh_clean = "大桥周五正式通车。过桥费为三欧元。"
    zh_repeated = "大桥周五正式通车。大桥周五正式通车。过桥费为三欧元。"
    assert redundancy(zh_repeated, "zh") > redundancy(zh_clean, "zh")
    assert near_duplicate_sentences(zh_repeated, "zh") == pytest.approx(1 / 3)
    ja_repeated = "橋は金曜日に開通した。橋は金曜日に開通した。"
    assert redundancy(ja_repeated, "ja") > redundancy("橋は金曜日に開通した。", "ja") == 0.0


# --- coverage (omission) -----------------------------------------------------------------------


def test_content_tokens_drop_function_words_only():
    assert content_tokens("The toll is 3 euros in May", "en") == ["toll", "3", "euros", "may"]
    assert content_tokens("死者が15人", "ja") == ["死", "者", "15", "人"]


def test_coverage_counts_majority_of_content_tokens():
    summary = "Police said 600 soldiers were sent. A bridge fell. The railway is closed."
    facts = [
        "600 soldiers deployed",  # 2 of 3 content tokens -> covered
        "Tessau bridge collapsed",  # 1 of 3 -> not covered
        "railway closed",  # 2 of 2 -> covered
        "40 million euro fund",  # 0 of 4 -> not covered
    ]
    assert covered_facts(summary, facts, "en") == [True, False, True, False]
    assert coverage(summary, facts, "en") == 0.5
    assert covered_facts("railway", ["railway closed"], "en") == [False]  # half is not most
    with pytest.raises(ValueError, match="at least one key fact"):
        coverage(summary, [], "en")
    with pytest.raises(ValueError, match="no content words"):
        coverage(summary, ["of the"], "en")


# --- conflict handling -------------------------------------------------------------------------

TOLL = Conflict("death toll", ("12 dead", "15 dead"), None)
RESOLVED = Conflict("death toll", ("12", "15"), "The official figure is 15 dead.")
SUPERSEDED = Conflict("death toll", ("12", "15"), "The later count of 15 supersedes 12.")


def test_conflict_handled_only_when_both_sides_given():
    assert handled_conflicts("Reports differ: 12 vs 15 dead.", [TOLL], "en") == [True]
    assert handled_conflicts("The flood left 15 people dead.", [TOLL], "en") == [False]
    assert handled_conflicts("The flood left 12 people dead.", [TOLL], "en") == [False]


def test_conflict_handled_through_resolution():
    official = "15 dead, according to the official figure."
    assert handled_conflicts(official, [RESOLVED], "en") == [True]
    assert handled_conflicts("15 people died.", [RESOLVED], "en") == [False]
    # a resolution naming both values needs both values in the summary
    assert handled_conflicts("The later count: 15.", [SUPERSEDED], "en") == [False]
    assert handled_conflicts("A later count of 15 supersedes 12.", [SUPERSEDED], "en") == [True]


def test_conflict_handling_share_and_errors():
    summary = "Reports differ: 12 vs 15 dead."
    cars = Conflict("derailed cars", ("14 cars", "17 cars"), None)
    assert conflict_handling(summary, [TOLL, cars], "en") == 0.5
    zh = Conflict("死亡人数", ("12人", "15人"), None)
    assert conflict_handling("有报道称12人死亡，也有报道称15人。", [zh], "zh") == 1.0
    assert conflict_handling("15人死亡。", [zh], "zh") == 0.0
    with pytest.raises(ValueError, match="at least one conflict"):
        conflict_handling(summary, [], "en")
    with pytest.raises(ValueError, match="tells it apart"):
        conflict_handling(summary, [Conflict("x", ("12", "12 dead"), None)], "en")


# --- score_summary -----------------------------------------------------------------------------


def test_score_summary_on_the_sample():
    event = load_events()[0]
    one_sided = "The Saltmere Bridge opened on 3 May. It is 2.4 km long and cost 1.1 billion euros."
    scores = score_summary(one_sided, event, "en")
    assert set(scores) == {
        "redundancy", "near_duplicate_sentences", "rouge1", "rouge2", "rougeL",
        "coverage", "omission", "conflict_handling",
    }
    assert scores["conflict_handling"] == 0.0
    assert scores["omission"] == pytest.approx(1 - scores["coverage"]) and scores["omission"] > 0.5
    full = score_summary(event.reference_summary, event, "en")
    assert full["rouge1"] == 1.0 and full["coverage"] == 1.0 and full["conflict_handling"] == 1.0
    with pytest.raises(ValueError, match="score a summary written in 'en'"):
        score_summary(ZH, event, "zh")


# --- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_constant_and_single_value():
    assert bootstrap_ci([0.4] * 7) == pytest.approx((0.4, 0.4, 0.4))
    assert bootstrap_ci([2.0]) == (2.0, 2.0, 2.0)


def test_bootstrap_bounds_and_normal_approximation():
    values = np.array([1.0] * 120 + [0.0] * 280)  # mean 0.3, n = 400
    mean, low, high = bootstrap_ci(values, n_resamples=2000, seed=1)
    assert mean == pytest.approx(0.3)
    assert low < mean < high
    half_width = 1.96 * math.sqrt(0.3 * 0.7 / 400)  # about 0.045 by the normal approximation
    assert low == pytest.approx(0.3 - half_width, abs=0.01)
    assert high == pytest.approx(0.3 + half_width, abs=0.01)
    assert bootstrap_ci(values, seed=1) == bootstrap_ci(values, seed=1)
    narrower = bootstrap_ci(values, confidence=0.5, seed=1)
    assert low < narrower[1] < narrower[2] < high


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        ([], {}, "non-empty"),
        ([0.1, float("nan")], {}, "NaN"),
        (["high", "low"], {}, "needs numbers"),
        ([0.1, 0.2], {"confidence": 95}, "between 0 and 1"),
        ([0.1, 0.2], {"n_resamples": 0}, "at least 1"),
    ],
)
def test_bootstrap_rejects_bad_input(values, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(values, **kwargs)
