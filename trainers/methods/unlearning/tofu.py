"""TOFU-style unlearning metrics on plain numbers and strings, so any trainer can feed them.

Definitions follow TOFU (Maini et al. 2024, arXiv 2401.06121) and its reference evaluation code.
``lp(a)`` below is the *mean* per-token log-probability of answer ``a`` given the question, i.e.
``sum of token log-probs / number of answer tokens``; every probability is length-normalized
this way so that long answers are not penalized for their length.

- **ROUGE-L recall** of the model's greedy answer against the gold answer.
- **Probability** ``P(a|q)^(1/|a|) = exp(lp(a))``. On real-world sets TOFU instead normalizes over
  the answer options: ``p(true) / (p(true) + sum_i p(perturbed_i))``.
- **Truth ratio** ``R = (prod_i P(a_i|q)^(1/|a_i|))^(1/n) / P(a~|q)^(1/|a~|)``, the geometric mean
  of the n perturbed (wrong) answers' normalized probabilities over the paraphrased answer's, i.e.
  ``R = exp(mean_i lp(a_i) - lp(a~))``. R < 1: the model prefers the true fact. TOFU reports
  ``max(0, 1 - R)`` on retain and real-world sets (higher = better kept) and ``min(R, 1/R)`` on the
  forget set (closer to 1 = the model no longer tells true from false).
- **Forget quality**: p-value of the two-sample Kolmogorov-Smirnov test between the per-question
  R of the unlearned model and of a model fine-tuned on the retain data only, on the forget set.
  TOFU's code feeds the test 1/R; the KS statistic depends only on the order of the values, and
  1/R reverses the order of both samples alike, so R gives the same p-value.
- **Model utility**: harmonic mean of the three metrics above on the retain and real-world sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import fmean
from typing import Literal, Mapping, Sequence

import pandas as pd
from rouge_score import rouge_scorer, tokenizers
from scipy.special import logsumexp
from scipy.stats import hmean, ks_2samp

from workbench.errors import InputError
from workbench.evals import rouge

__all__ = [
    "rougeL_recall",
    "answer_probability",
    "normalized_answer_probability",
    "truth_ratio",
    "truth_ratio_retain_form",
    "truth_ratio_forget_form",
    "forget_quality",
    "model_utility",
    "SetMetrics",
    "summarize_set",
    "UnlearningReport",
]

METRICS = ("rougeL_recall", "probability", "truth_ratio")


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number (got {value}).")
    return value


def _finite_list(name: str, values: Sequence[float]) -> list[float]:
    values = [_finite(name, v) for v in values]
    if not values:
        raise InputError(f"{name} must not be empty.")
    return values


# ---------------------------------------------------------------------------------------------
# ROUGE-L recall


class _WorkbenchTokenizer(tokenizers.Tokenizer):
    """rouge-score adapter for :func:`workbench.evals.rouge.tokenize` in one language."""

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def tokenize(self, text: str) -> list[str]:
        return rouge.tokenize(text, self.lang)


@lru_cache(maxsize=None)
def _rougeL_scorer(lang: str) -> rouge_scorer.RougeScorer:
    if lang == "en":  # exactly TOFU's scorer, so English numbers compare with published ones
        return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge.token_unit(lang)  # raises UnknownLanguageError (a ValueError) for an unknown code
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_WorkbenchTokenizer(lang))


def rougeL_recall(prediction: str, reference: str, lang: str = "en") -> float:
    """Share of the reference's tokens in its longest common subsequence with the prediction.

    English uses rouge-score's tokenizer with Porter stemming, as TOFU does; other languages use
    the workbench's script-aware tokenizer (no stemming), since rouge-score's own keeps only
    ``[a-z0-9]``. An empty side scores 0.
    """
    return float(_rougeL_scorer(lang).score(reference, prediction)["rougeL"].recall)


# ---------------------------------------------------------------------------------------------
# probabilities and truth ratio


def answer_probability(sum_logprob: float, n_tokens: int) -> float:
    """Length-normalized answer probability ``exp(sum_logprob / n_tokens)``."""
    if int(n_tokens) != n_tokens or n_tokens < 1:
        raise InputError(f"n_tokens must be a positive whole number (got {n_tokens}).")
    return math.exp(_finite("sum_logprob", sum_logprob) / n_tokens)


def normalized_answer_probability(
    answer_logprob_mean: float, perturbed_logprob_means: Sequence[float]
) -> float:
    """TOFU's real-world probability: the true answer's share among true and perturbed answers."""
    true = _finite("answer_logprob_mean", answer_logprob_mean)
    wrong = _finite_list("perturbed_logprob_means", perturbed_logprob_means)
    return math.exp(true - logsumexp([true, *wrong]))


def truth_ratio(paraphrased_logprob_mean: float, perturbed_logprob_means: Sequence[float]) -> float:
    """Raw TOFU truth ratio ``R = exp(mean(perturbed_logprob_means) - paraphrased_logprob_mean)``.

    Arguments are mean per-token log-probabilities (see the module docstring).
    """
    paraphrased = _finite("paraphrased_logprob_mean", paraphrased_logprob_mean)
    wrong = _finite_list("perturbed_logprob_means", perturbed_logprob_means)
    try:
        return math.exp(fmean(wrong) - paraphrased)
    except OverflowError:
        return math.inf


def truth_ratio_retain_form(ratio: float) -> float:
    """``max(0, 1 - R)``: what TOFU reports on retain and real-world sets (1 = truth clearly preferred)."""
    return max(0.0, 1.0 - float(ratio))


def truth_ratio_forget_form(ratio: float) -> float:
    """``min(R, 1/R)``: what TOFU reports on the forget set (1 = true and false equally likely)."""
    ratio = float(ratio)
    if ratio <= 0:
        raise InputError(f"A truth ratio is positive (got {ratio}).")
    return min(ratio, 1.0 / ratio)


# ---------------------------------------------------------------------------------------------
# aggregate scores


def forget_quality(
    unlearned_truth_ratios: Sequence[float], retain_only_truth_ratios: Sequence[float]
) -> float:
    """KS-test p-value between raw truth ratios on the forget set (1.0 = indistinguishable)."""
    unlearned = [float(r) for r in unlearned_truth_ratios]
    retain_only = [float(r) for r in retain_only_truth_ratios]
    if not unlearned or not retain_only:
        raise InputError("forget_quality needs truth ratios from both models (got an empty list).")
    if any(math.isnan(r) for r in unlearned + retain_only):
        raise InputError("Truth ratios must not be NaN.")
    return float(ks_2samp(unlearned, retain_only).pvalue)


def model_utility(values: Mapping[str, float]) -> float:
    """Harmonic mean of the named metric values; 0 when any of them is 0."""
    if not values:
        raise InputError("model_utility needs at least one metric value.")
    numbers = {name: _finite(name, value) for name, value in values.items()}
    negative = [name for name, value in numbers.items() if value < 0]
    if negative:
        raise InputError(f"Model utility combines non-negative metrics; negative: {', '.join(negative)}.")
    if any(value == 0 for value in numbers.values()):
        return 0.0
    return float(hmean(list(numbers.values())))


@dataclass(frozen=True)
class SetMetrics:
    """Mean ROUGE-L recall, probability and (reported form of the) truth ratio over one QA set."""

    rougeL_recall: float
    probability: float
    truth_ratio: float


def summarize_set(
    kind: Literal["forget", "retain"],
    rougeL_recalls: Sequence[float],
    probabilities: Sequence[float],
    truth_ratios: Sequence[float],
) -> SetMetrics:
    """Average per-question metrics of one set; raw truth ratios become ``kind``'s reported form.

    Use ``kind="forget"`` for S_F and S_T, ``"retain"`` for retain and real-world sets. For
    real-world sets pass :func:`normalized_answer_probability` values as ``probabilities``.
    """
    if kind not in ("forget", "retain"):
        raise InputError(f"kind must be 'forget' or 'retain' (got {kind!r}).")
    lengths = {len(rougeL_recalls), len(probabilities), len(truth_ratios)}
    if len(lengths) != 1:
        raise InputError("rougeL_recalls, probabilities and truth_ratios must have one value per question each.")
    form = truth_ratio_forget_form if kind == "forget" else truth_ratio_retain_form
    return SetMetrics(
        rougeL_recall=fmean(_finite_list("rougeL_recalls", rougeL_recalls)),
        probability=fmean(_finite_list("probabilities", probabilities)),
        truth_ratio=fmean(form(r) for r in _finite_list("truth_ratios", truth_ratios)),
    )


@dataclass(frozen=True)
class UnlearningReport:
    """Per-set metrics of one model plus forget quality; model utility is computed from the sets."""

    sets: Mapping[str, SetMetrics]
    forget_quality: float | None = None
    utility_sets: tuple[str, ...] = ("retain", "real_world")

    @property
    def model_utility(self) -> float:
        """Harmonic mean of all three metrics over the utility sets present in ``sets``."""
        present = [name for name in self.utility_sets if name in self.sets]
        if not present:
            raise InputError(
                f"Model utility needs at least one of the sets {', '.join(self.utility_sets)}; "
                f"the report has {', '.join(self.sets) or 'none'}."
            )
        return model_utility(
            {f"{name}.{metric}": getattr(self.sets[name], metric) for name in present for metric in METRICS}
        )

    def to_frame(self) -> pd.DataFrame:
        """Long table ``set, metric, value``; forget quality and model utility under set ``overall``."""
        rows = [
            {"set": name, "metric": metric, "value": getattr(values, metric)}
            for name, values in self.sets.items()
            for metric in METRICS
        ]
        if self.forget_quality is not None:
            rows.append({"set": "overall", "metric": "forget_quality", "value": self.forget_quality})
        if any(name in self.sets for name in self.utility_sets):
            rows.append({"set": "overall", "metric": "model_utility", "value": self.model_utility})
        return pd.DataFrame(rows, columns=["set", "metric", "value"])
