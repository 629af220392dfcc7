"""TOFU-style evaluation of one model on unlearning QA sets (entity-level unlearning, arXiv 2406.15796).

For every QA pair the model is asked the question (prompt ``BOS + question + "\\n"``, the format the
trainers fine-tune on) and scored three ways (definitions in :mod:`trainers.methods.unlearning.tofu`):

- ROUGE-L recall of its greedy answer (stopped at end-of-sequence or a newline) against the gold
  answer;
- probability of the gold answer, ``exp(mean token log-prob)``; on the ``real_world`` set, TOFU's
  normalised form (the gold answer's share among gold and perturbed answers);
- the raw truth ratio from the mean token log-probs of the paraphrased and perturbed answers.

Answers are scored with their end-of-sequence token, as they are trained. Sets named ``forget``
and ``target`` (and any other not listed in ``RETAIN_KIND_SETS``) are summarised in TOFU's forget
form, ``retain`` and ``real_world`` in its retain form. Forget Quality compares the raw truth
ratios with those of a model that never saw the forgotten entities (the retain-only model) on the
forget set and, separately, on the target set (the paper scores forgetting on S_T). Model Utility
is the harmonic mean over the retain and real-world sets.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from trainers.methods.unlearning.entities import QAPair
from workbench import engine
from workbench.errors import InputError
from workbench.models import ModelHandle
from workbench.progress import Progress
from workbench.results import Result
from trainers.methods.unlearning.tofu import (
    UnlearningReport,
    answer_probability,
    forget_quality,
    normalized_answer_probability,
    rougeL_recall,
    summarize_set,
    truth_ratio,
)

__all__ = [
    "RETAIN_KIND_SETS",
    "greedy_answers",
    "answer_logprob_means",
    "score_pairs",
    "ModelEvaluation",
    "summarize_items",
    "evaluate_model",
    "set_metrics_frame",
]

RETAIN_KIND_SETS = ("retain", "real_world")
NORMALIZED_PROBABILITY_SETS = ("real_world",)


def _prompt_ids(tokenizer, question: str) -> list[int]:
    """BOS + question + newline: the prompt of `trainers.data.encode_pair`."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + tokenizer(question.rstrip() + "\n", add_special_tokens=False)["input_ids"]


def _pad_id(tokenizer) -> int:
    return next(c for c in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if c is not None)


def _batches(n: int, size: int):
    if size < 1:
        raise InputError(f"batch_size must be at least 1 (got {size}).")
    for start in range(0, n, size):
        yield start, min(start + size, n)


@contextlib.contextmanager
def _eval_mode(handle: ModelHandle):
    """Score in eval mode (no dropout), then leave the model as it was (a trainer's model trains on)."""
    model = handle.hf_model
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def greedy_answers(handle: ModelHandle, questions: Sequence[str], max_new_tokens: int = 32,
                   batch_size: int = 16) -> list[str]:
    """Greedy answers to `questions`, each cut at its first end-of-sequence or newline token.

    Prompts of the same length decode together, `batch_size` at a time (no padding)."""
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1 (got {max_new_tokens}).")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1 (got {batch_size}).")
    prompts = [_prompt_ids(handle.tokenizer, q) for q in questions]
    by_length: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(index)
    answers = [""] * len(prompts)
    with _eval_mode(handle):
        for group in by_length.values():
            for start, end in _batches(len(group), batch_size):
                rows = group[start:end]
                out = engine.generate_greedy(handle, torch.tensor([prompts[i] for i in rows]), max_new_tokens,
                                             stop_at_newline=True)
                for i, text in zip(rows, out.texts):
                    answers[i] = text.strip()
    return answers


@torch.no_grad()
def answer_logprob_means(handle: ModelHandle, questions: Sequence[str], answers: Sequence[str],
                         batch_size: int = 16, max_length: int = 256) -> np.ndarray:
    """Mean per-token log-probability of each answer (with its end-of-sequence token) given its question."""
    from trainers.data import encode_pair, pad_batch
    from trainers.methods.unlearning.methods import answer_scores

    if len(questions) != len(answers):
        raise InputError("answer_logprob_means needs one answer per question.")
    encoded = [encode_pair(handle.tokenizer, q, a, max_length) for q, a in zip(questions, answers)]
    means = np.empty(len(encoded))
    with _eval_mode(handle):
        for start, end in _batches(len(encoded), batch_size):
            chunk = encoded[start:end]
            batch = pad_batch([ids for ids, _ in chunk], [n for _, n in chunk], _pad_id(handle.tokenizer))
            batch = {k: v.to(handle.device) for k, v in batch.items()}
            scores = answer_scores(handle, batch["input_ids"], batch["attention_mask"], batch["labels"])
            means[start:end] = (scores.sequence_logprobs / scores.mask.sum(-1)).cpu().numpy()
    return means


def score_pairs(handle: ModelHandle, pairs: Sequence[QAPair], set_name: str, batch_size: int = 16,
                max_new_tokens: int = 32) -> pd.DataFrame:
    """One row per pair: its greedy answer, ROUGE-L recall, probability and raw truth ratio."""
    if not pairs:
        raise InputError(f"The {set_name!r} set has no QA pairs to evaluate.")
    n_wrong = {len(p.perturbed_answers) for p in pairs}
    if 0 in n_wrong:
        raise InputError(f"Every pair of the {set_name!r} set needs perturbed answers for the truth ratio.")
    # One scoring pass over the gold, paraphrased and perturbed answers of every pair.
    questions, texts, owner = [], [], []
    for index, pair in enumerate(pairs):
        for text in (pair.answer, pair.paraphrased_answer, *pair.perturbed_answers):
            questions.append(pair.question)
            texts.append(text)
            owner.append(index)
    means = answer_logprob_means(handle, questions, texts, batch_size)
    generations = greedy_answers(handle, [p.question for p in pairs], max_new_tokens, batch_size)
    rows, cursor = [], 0
    for pair, generated in zip(pairs, generations):
        k = len(pair.perturbed_answers)
        gold, paraphrase, wrong = means[cursor], means[cursor + 1], means[cursor + 2: cursor + 2 + k]
        cursor += 2 + k
        if set_name in NORMALIZED_PROBABILITY_SETS:
            probability = normalized_answer_probability(gold, wrong)
        else:
            probability = answer_probability(gold, 1)  # gold is already a per-token mean
        rows.append({
            "set": set_name, "entity": pair.entity, "attribute": pair.attribute, "question": pair.question,
            "answer": pair.answer, "generation": generated,
            "rougeL_recall": rougeL_recall(generated, pair.answer, pair.lang),
            "probability": probability, "truth_ratio": truth_ratio(paraphrase, wrong),
            "answer_logprob": gold, "paraphrase_logprob": paraphrase,
        })
    return pd.DataFrame(rows)


@dataclass
class ModelEvaluation(Result):
    """Per-item scores of one model, its TOFU report and Forget Quality on each forgetting set."""

    items: pd.DataFrame = field(repr=False)
    report: UnlearningReport
    forget_quality: dict[str, float]
    model: str = ""

    @property
    def params(self) -> dict[str, Any]:
        return {"sets": list(self.report.sets)}

    def to_frame(self) -> pd.DataFrame:
        """Every scored question (the frames of :func:`score_pairs`)."""
        return self.items

    def summary(self) -> pd.DataFrame:
        """One flat row: `<set>.<metric>` means, `forget_quality.<set>` and `model_utility`."""
        row: dict[str, float] = {}
        for name, metrics in self.report.sets.items():
            for metric in ("rougeL_recall", "probability", "truth_ratio"):
                row[f"{name}.{metric}"] = getattr(metrics, metric)
        for name, value in self.forget_quality.items():
            row[f"forget_quality.{name}"] = value
        present = [s for s in self.report.utility_sets if s in self.report.sets]
        row["model_utility"] = self.report.model_utility if present else math.nan
        return pd.DataFrame([row])

    def figure(self):
        """The report's means per set: ROUGE-L recall, probability and truth ratio."""
        import plotly.graph_objects as go

        frame = self.report.to_frame()
        frame = frame[frame["set"] != "overall"]
        fig = go.Figure([go.Bar(name=metric, x=part["set"].tolist(), y=part["value"].tolist())
                         for metric, part in frame.groupby("metric", sort=False)])
        fig.update_layout(barmode="group", yaxis_title="mean over questions",
                          title=f"Unlearning evaluation of {self.model or 'the model'}")
        return fig


def summarize_items(items: pd.DataFrame, retain_only_items: pd.DataFrame | None = None,
                    model: str = "") -> ModelEvaluation:
    """Summaries of per-item scores (the frames of :func:`score_pairs`, concatenated). With the
    retain-only model's items, Forget Quality (KS p-value of raw truth ratios) is added for every
    set both hold, except the retain-kind ones. `model` is the evaluated model's spec."""
    if items.empty:
        raise InputError("There are no scored items to summarise.")
    summaries = {}
    for name, frame in items.groupby("set", sort=False):
        kind = "retain" if name in RETAIN_KIND_SETS else "forget"
        summaries[name] = summarize_set(kind, frame["rougeL_recall"], frame["probability"], frame["truth_ratio"])
    quality: dict[str, float] = {}
    if retain_only_items is not None:
        for name in summaries:
            reference = retain_only_items.loc[retain_only_items["set"] == name, "truth_ratio"]
            if name not in RETAIN_KIND_SETS and len(reference):
                quality[name] = forget_quality(items.loc[items["set"] == name, "truth_ratio"], reference)
    report = UnlearningReport(sets=summaries, forget_quality=quality.get("forget"))
    return ModelEvaluation(items, report, quality, model)


def evaluate_model(handle: ModelHandle, sets: Mapping[str, Sequence[QAPair]],
                   retain_only_items: pd.DataFrame | None = None, batch_size: int = 16,
                   max_new_tokens: int = 32, progress: Progress | None = None) -> ModelEvaluation:
    """Score the model on each named set and summarise (see :func:`summarize_items`)."""
    if not sets:
        raise InputError("evaluate_model needs at least one QA set.")
    frames = []
    for i, (name, pairs) in enumerate(sets.items()):
        if progress:
            progress(i / len(sets), f"scoring the {name} set ({len(pairs)} questions)")
        frames.append(score_pairs(handle, pairs, name, batch_size, max_new_tokens))
    return summarize_items(pd.concat(frames, ignore_index=True), retain_only_items, handle.facts.spec)


def set_metrics_frame(evaluation: ModelEvaluation) -> pd.DataFrame:
    """The report's long table (set, metric, value) with Forget Quality on every forgetting set."""
    frame = evaluation.report.to_frame()
    extra = [{"set": name, "metric": "forget_quality", "value": value}
             for name, value in evaluation.forget_quality.items() if name != "forget"]
    return pd.concat([frame, pd.DataFrame(extra, columns=frame.columns)], ignore_index=True)

