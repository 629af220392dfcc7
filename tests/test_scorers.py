"""Scorers on hand-made outputs: label patterns, the two-labels rule, CJK, punctuation, QA metrics."""

import pytest

from workbench.evals.scorers import (
    exact_match,
    f1_score,
    mentioned_choices,
    normalize_text,
    rouge_scores,
    score_continuation,
    score_extractive,
    score_multiple_choice,
)

NLI = ["entailment", "neutral", "contradiction"]


def test_normalize_text_folds_width_case_punctuation_and_cjk_spaces():
    assert normalize_text("（Ａ）  Hello,   World!") == "a hello world"
    assert normalize_text("東京 都、") == "東京都"
    assert normalize_text("l'eau") == "l eau"
    assert normalize_text("Tokyo 東京") == "tokyo 東京"


@pytest.mark.parametrize("output", [
    "(B)", " B)", "B.", "B", " B\n\nPremise: ...", "The answer is (B).", "(b) neutral",
    "neutral", "It is neutral.", "答案：（Ｂ）", "Answer: B) neutral",
])
def test_multiple_choice_accepts_label_patterns_and_choice_text(output):
    assert score_multiple_choice(output, NLI, 1)


@pytest.mark.parametrize("output", [
    "(A)", "entailment", "(A) or (B)", "(B) entailment", "B. Actually, C.",
    "(A) entailment\n(B) neutral\n(C) contradiction", "neutral or contradiction", "", "I don't know",
])
def test_multiple_choice_rejects_wrong_or_several_labels(output):
    assert not score_multiple_choice(output, NLI, 1)


def test_bare_letter_counts_only_as_the_whole_reply():
    assert mentioned_choices("A woman is walking.", ["x", "y"]) == set()
    assert mentioned_choices("A", ["x", "y"]) == {0}
    assert mentioned_choices("U.S.A. is big", ["x", "y"]) == set()


def test_choice_text_inside_a_longer_choice_does_not_count():
    choices = ["neutral", "not neutral"]
    assert mentioned_choices("It is not neutral.", choices) == {1}
    assert score_multiple_choice("It is not neutral.", choices, 1)
    assert not score_multiple_choice("It is not neutral.", choices, 0)


def test_choice_aliases_and_cjk_choices():
    options = [["蕴含", "entailment"], ["中立", "neutral"], ["矛盾", "contradiction"]]
    assert score_multiple_choice("答案是矛盾。", options, 2)
    assert score_multiple_choice(" contradiction", options, 2)
    assert not score_multiple_choice("矛盾 (B)", options, 2)


def test_multiple_choice_checks_its_arguments():
    with pytest.raises(ValueError, match="out of range"):
        score_multiple_choice("(A)", NLI, 3)
    with pytest.raises(ValueError, match="labels"):
        score_multiple_choice("(A)", NLI, 0, labels=("A", "B"))


def test_numeric_labels():
    assert score_multiple_choice("2)", ["x", "y"], 1, labels=("1", "2"))
    assert not score_multiple_choice("1) and 2)", ["x", "y"], 1, labels=("1", "2"))


@pytest.mark.parametrize("output,golds,expected", [
    ("It was founded in 1889.", ["1889"], True),
    ("It was founded in 18890.", ["1889"], False),
    ("THE EIFFEL TOWER!", "Eiffel Tower", True),
    ("Two dogs.", "dog", False),
    ("首都是东京。", "东京", True),
    ("首都是東京 都です", "東京都", True),
    ("パリです。", ["ロンドン", "パリ"], True),
    ("384 000 kilomètres", "384 000 kilomètres", True),
    ("about 384,000 kilometres", "384,000 kilometres", True),
    ("", "Paris", False),
    ("Paris", [""], False),
])
def test_extractive(output, golds, expected):
    assert score_extractive(output, golds) is expected


@pytest.mark.parametrize("output,gold,expected", [
    (" Paris.\nThe capital of", " Paris", True),
    (" paris", "Paris", True),
    (" Parisian food", "Paris", False),
    (" The city of Paris", "Paris", False),
    ("、パリです", "パリ", True),
    ("巴黎。", ["北京", "巴黎"], True),
    ('dog"', "dog", True),
    ("dogs", "dog", False),
    (" Mexico City.", ["Mexico City"], True),
])
def test_continuation(output, gold, expected):
    assert score_continuation(output, gold) is expected


def test_exact_match_drops_articles_of_the_language():
    assert exact_match("The Nile.", "nile", lang="en")
    assert exact_match("la Seine", "Seine", lang="fr")
    assert not exact_match("la Seine", "Seine", lang="en")
    assert exact_match("东京", ["東京", "东京"])


def test_f1_against_hand_counts():
    # pred {cat, sat}, gold {cat, sat, on, mat}: P = 1, R = 1/2
    assert f1_score("the cat sat", "cat sat on the mat", lang="en") == pytest.approx(2 / 3)
    # CJK per character: pred 东 京 都, gold 东 京: P = 2/3, R = 1
    assert f1_score("东京都", "东京") == pytest.approx(0.8)
    assert f1_score("dog", ["cat", "dog"]) == 1.0
    assert f1_score("", "dog") == 0.0


def test_rouge_for_cjk_counts_characters():
    # LCS("猫坐在垫子上", "猫在垫子上") = 5: P = 5/6, R = 5/5
    scores = rouge_scores("猫坐在垫子上", "猫在垫子上")
    assert scores["rougeL"] == pytest.approx(2 * (5 / 6) / (5 / 6 + 1))
    assert scores["rouge1"] == pytest.approx(scores["rougeL"])
    assert rouge_scores("a b c", "a b c")["rouge2"] == pytest.approx(1.0)
    assert rouge_scores("Le chat dort.", "Un chien court.")["rougeL"] == 0.0
