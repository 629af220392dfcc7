"""Faithfulness of a model's answers to the documents it was given (GroundBench style), for the
systems RHIO compares: a plain model, a model under a control token, and contrastive decoding.

Metrics (offline, see workbench/evals/faithfulness.py for their meaning and weaknesses): support =
share of answer sentences grounded in the documents; ROUGE-L F against the reference answer.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from workbench import engine
from workbench.cache import cached, stable_hash
from workbench.errors import InputError
from workbench.evals.bootstrap import bootstrap_ci
from workbench.evals.faithfulness import rougeL_f, support_score
from workbench.models import ModelHandle
from workbench.progress import Progress
from workbench.results import Result

SYSTEMS = ("plain", "pos", "contrastive")


def answer(handle: ModelHandle, item, system: str = "plain", alpha: float = 1.0, plausibility: float | None = 0.1,
           max_new_tokens: int = 60, max_chars: int | None = 2400) -> str:
    """One item's answer under `system`: "plain" (no control token), "pos" ([POS] prompt) or
    "contrastive" ((1 + a) z_POS - a z_NEG)."""
    from trainers.methods import rhio
    from workbench import limits

    limits.check("max_new_tokens", max_new_tokens)
    prompt = rhio.faithfulness_prompt(item.question, item.documents, max_chars)
    if system == "plain":
        return engine.generate_greedy(handle, prompt, max_new_tokens).text.strip()
    if system == "pos":
        return rhio.generate_with_control(handle, prompt, rhio.POS, max_new_tokens).text.strip()
    if system == "contrastive":
        return rhio.contrastive_generate(handle, prompt, alpha, plausibility, max_new_tokens).text.strip()
    raise InputError(f"Unknown system {system!r}; choose one of {', '.join(SYSTEMS)}.")


@dataclass
class FaithfulnessResult(Result):
    """One system's answers to faithfulness items, each with its support and ROUGE-L."""

    model: str
    system: str
    rows: list[dict] = field(default_factory=list)  # id, lang, answer, support, rougeL
    params: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def summary(self) -> pd.DataFrame:
        """One row: mean support with its 95% bootstrap interval, mean ROUGE-L, empty answers."""
        frame = self.to_frame()
        support = frame["support"].dropna().to_numpy()
        mean, lo, hi = bootstrap_ci(support) if len(support) else (math.nan,) * 3
        return pd.DataFrame([{"model": self.model, "system": self.system, "items": len(frame), "support": mean,
                              "support_low": lo, "support_high": hi, "rougeL": float(frame["rougeL"].mean()),
                              "empty_answers": int((frame["answer"].str.len() == 0).sum())}])

    def figure(self):
        """Mean support and ROUGE-L per language."""
        import plotly.graph_objects as go

        means = self.to_frame().groupby("lang", sort=False)[["support", "rougeL"]].mean()
        fig = go.Figure([go.Bar(name=metric, x=means.index.tolist(), y=means[metric].tolist())
                         for metric in ("support", "rougeL")])
        fig.update_layout(barmode="group", yaxis_range=[0, 1], xaxis_title="language",
                          title=f"Faithfulness of {self.model} ({self.system})")
        return fig


def evaluate_faithfulness(handle: ModelHandle, items: Sequence, system: str = "plain", alpha: float = 1.0,
                          max_new_tokens: int = 60, max_chars: int | None = 2400, use_cache: bool = True,
                          progress: Progress | None = None) -> FaithfulnessResult:
    items = list(items)
    if not items:
        raise InputError("No faithfulness items to evaluate.")
    if system not in SYSTEMS:
        raise InputError(f"Unknown system {system!r}; choose one of {', '.join(SYSTEMS)}.")

    params = {"system": system, "alpha": alpha, "max_new_tokens": max_new_tokens, "max_chars": max_chars}

    def compute() -> FaithfulnessResult:
        rows = []
        for i, item in enumerate(items):
            if progress:
                progress(i / len(items), f"{system}: item {i + 1}/{len(items)}")
            text = answer(handle, item, system, alpha, max_new_tokens=max_new_tokens, max_chars=max_chars)
            rows.append({"id": item.id, "lang": item.lang, "answer": text,
                         "support": support_score(text, item.documents, item.lang).score,
                         "rougeL": rougeL_f(text, item.answer, item.lang)})
        return FaithfulnessResult(handle.facts.spec, system, rows, params)

    data = stable_hash([(it.id, it.question, it.answer) for it in items])
    return cached("faithfulness", handle, params, data, compute, use_cache)


def highlight(answer_text: str, documents: Sequence, lang: str) -> str:
    """HTML of the answer with sentences the documents do not support marked in red."""
    result = support_score(answer_text, documents, lang)
    out, pos = [], 0
    for s in result.sentences:
        out.append(html.escape(answer_text[pos:s.start]))
        piece = html.escape(answer_text[s.start:s.end])
        out.append(piece if s.supported else
                   f"<mark style='background:#f8c4c4' title='overlap {s.overlap:.2f}'>{piece}</mark>")
        pos = s.end
    out.append(html.escape(answer_text[pos:]))
    score = "n/a" if np.isnan(result.score) else f"{result.score:.2f}"
    return f"<div><b>support {score}</b><p>{''.join(out) or '<i>(empty answer)</i>'}</p></div>"
