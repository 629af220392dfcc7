"""GlobeSumm MCMS on a real model: run the summarization pipelines through it and score them.

The prompts and pipelines live in :mod:`workbench.evals.globesumm.data` (no model inside), the
metrics in :mod:`workbench.evals.globesumm.summarization` and :mod:`workbench.evals.rouge`; this module joins
them to a loaded model: greedy decoding through :func:`workbench.engine.generate_greedy` with a
bounded number of new tokens, prompts shortened to fit the model's context, one cached run per
(event, pipeline), and per-pipeline means with bootstrap intervals over events.

The small default model is a base (not instruction-tuned) model: it continues the prompt rather
than follows it, so its scores are a floor. The same code runs an instruction-tuned model with a
long context (``chat=True`` wraps each prompt in the model's chat template).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from workbench import engine, limits
from workbench.cache import cached, stable_hash
from workbench.evals.globesumm.data import PIPELINES, Event, SummaryRun, load_events, summarize
from workbench.errors import InputError
from workbench.evals.bootstrap import bootstrap_ci
from workbench.evals.harness import as_handle, record_metrics
from workbench.evals.rouge import primary_language
from workbench.evals.globesumm.summarization import score_summary
from workbench.models import ModelHandle
from workbench.progress import Progress
from workbench.results import Result

__all__ = [
    "DEFAULT_PIPELINES",
    "PIPELINE_NAMES",
    "METRICS",
    "MCMSResult",
    "run_mcms",
    "clean_output",
]

DEFAULT_PIPELINES: tuple[str, ...] = ("all", "recurrent", "protocol")
PIPELINE_NAMES = {
    "all": "all reports at once",
    "recurrent": "chronological recurrent",
    "protocol": "protocol-guided (PGP)",
    "recurrent_protocol": "recurrent + protocol",
}
# The metrics shown and recorded, with whether higher is better.
METRICS: dict[str, bool] = {
    "rouge1": True,
    "rouge2": True,
    "rougeL": True,
    "redundancy": False,
    "omission": False,
    "conflict_handling": True,
}
DEFAULT_MAX_NEW_TOKENS = 120
# Prompt budget when none is given: the model's context, but at most this many tokens, so a real
# GlobeSumm event (tens of long articles) stays affordable on a CPU; raise it on a GPU.
DEFAULT_PROMPT_CAP = 4096


@dataclass
class MCMSResult(Result):
    """Summaries of each event by each pipeline, with their metrics.

    ``rows`` holds one dict per (event, pipeline): ``event``, ``pipeline``, ``summary``,
    ``reference``, ``calls`` (model calls), ``truncated`` (articles were shortened to fit) and the
    metrics of :func:`workbench.evals.globesumm.summarization.score_summary`. ``runs`` holds the matching
    :class:`SummaryRun` objects (every prompt and output).
    """

    model: str
    pipelines: list[str]
    max_new_tokens: int
    max_prompt_tokens: int
    rows: list[dict] = field(default_factory=list)
    runs: list[SummaryRun] = field(default_factory=list)

    @property
    def params(self) -> dict[str, Any]:
        return {"pipelines": self.pipelines, "max_new_tokens": self.max_new_tokens,
                "max_prompt_tokens": self.max_prompt_tokens}

    def to_frame(self) -> pd.DataFrame:
        """One row per (event, pipeline) with its metrics."""
        return pd.DataFrame(self.rows)

    def summary(self, n_resamples: int = 1000) -> pd.DataFrame:
        """One row per (pipeline, metric): mean over events with a 95% bootstrap interval."""
        frame = self.to_frame()
        records = []
        for pipeline in self.pipelines:
            part = frame[frame["pipeline"] == pipeline]
            for metric, higher_better in METRICS.items():
                if metric not in part or part[metric].isna().all():
                    continue
                values = part[metric].dropna().to_numpy()
                mean, low, high = bootstrap_ci(values, n_resamples=n_resamples)
                records.append({
                    "pipeline": pipeline, "metric": metric, "score": mean, "ci_low": low,
                    "ci_high": high, "n": len(values), "higher_is_better": higher_better,
                })
        return pd.DataFrame(records)

    def summaries(self, event: str) -> dict[str, str]:
        """Pipeline -> generated summary for one event id, plus ``"reference"``."""
        rows = [row for row in self.rows if row["event"] == event]
        if not rows:
            known = ", ".join(dict.fromkeys(row["event"] for row in self.rows))
            raise InputError(f"no event {event!r} in this result; events: {known}")
        return {"reference": rows[0]["reference"] or "", **{r["pipeline"]: r["summary"] for r in rows}}

    def figure(self) -> go.Figure:
        """Grouped bars: each metric's mean per pipeline, with its bootstrap interval."""
        table = self.summary()
        fig = go.Figure()
        for pipeline in self.pipelines:
            part = table[table["pipeline"] == pipeline]
            fig.add_bar(
                name=PIPELINE_NAMES.get(pipeline, pipeline),
                x=[f"{m} {'↑' if h else '↓'}" for m, h in zip(part["metric"], part["higher_is_better"])],
                y=part["score"],
                error_y=dict(
                    type="data", symmetric=False,
                    array=part["ci_high"] - part["score"], arrayminus=part["score"] - part["ci_low"],
                ),
            )
        n_events = len({row["event"] for row in self.rows})
        fig.update_layout(
            barmode="group", yaxis_title="score (mean over events, 95% CI)", yaxis_range=[0, 1],
            title=f"GlobeSumm MCMS on {self.model} ({n_events} event{'s' * (n_events != 1)}; "
                  "↑ higher is better, ↓ lower is better)",
            legend_title="pipeline",
        )
        return fig


def clean_output(text: str) -> str:
    """The summary part of a raw continuation: up to the first blank line after some text.

    A base model does not stop after its summary; it goes on with a new "Report ..." or another
    task. The first paragraph is what the prompt asked for.
    """
    return text.strip().split("\n\n", 1)[0].strip()


def _prompt_ids(handle: ModelHandle, prompt: str, chat: bool) -> list[int]:
    """Token ids the model reads for ``prompt`` (inside the chat template when ``chat``)."""
    if not chat:
        return handle.encode(prompt)
    text = handle.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    bos = handle.tokenizer.bos_token
    return handle.encode(text, prepend_bos=not (bos and text.startswith(bos)))


def _generate_fn(handle: ModelHandle, max_new_tokens: int, chat: bool) -> Callable[[str], str]:
    def generate(prompt: str) -> str:
        ids = _prompt_ids(handle, prompt, chat)
        return clean_output(engine.generate_greedy(handle, ids, max_new_tokens=max_new_tokens).text)

    return generate


def _check_pipelines(pipelines: Sequence[str]) -> list[str]:
    if isinstance(pipelines, str):
        pipelines = [pipelines]
    chosen = list(dict.fromkeys(pipelines))
    if not chosen:
        raise InputError(f"choose at least one pipeline: {', '.join(PIPELINES)}")
    unknown = [p for p in chosen if p not in PIPELINES]
    if unknown:
        raise InputError(
            f"unknown pipeline(s) {', '.join(map(repr, unknown))}: choose from {', '.join(PIPELINES)}"
        )
    return chosen


def _check_events(events: Sequence[Event] | str | Path | None, target_lang: str | None) -> list[Event]:
    loaded = load_events(events) if events is None or isinstance(events, (str, Path)) else list(events)
    if not loaded:
        raise InputError("no events to summarize")
    for event in loaded:
        if not isinstance(event, Event):
            raise InputError(f"events must be GlobeSumm Event objects, got {type(event).__name__}")
        has_refs = bool(event.reference_summary or event.key_facts or event.conflicts)
        lang = target_lang or event.reference_lang
        if has_refs and primary_language(lang) != primary_language(event.reference_lang):
            raise InputError(
                f"event {event.id or event.description[:40]!r} has references in "
                f"{event.reference_lang!r}; summaries in {lang!r} could not be scored against them"
            )
    return loaded


def _calls(event: Event, pipeline: str) -> int:
    """Model calls a pipeline makes on an event (for progress)."""
    return max(1, len(event.news) - 1) if pipeline.startswith("recurrent") else 1


def run_mcms(
    spec_or_handle: str | ModelHandle,
    events: Sequence[Event] | str | Path | None = None,
    pipelines: Sequence[str] = DEFAULT_PIPELINES,
    target_lang: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    max_prompt_tokens: int | None = None,
    chat: bool = False,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> MCMSResult:
    """Summarize each event with each pipeline on the model, and score every summary.

    ``events``: Event objects, a GlobeSumm file, or None for the committed sample.
    ``target_lang``: language of the summaries (default: each event's ``reference_lang``, which
    scoring needs). Each model call decodes at most ``max_new_tokens`` greedily; its prompt is cut
    to ``max_prompt_tokens`` (default: the model's context less ``max_new_tokens``, at most
    ``DEFAULT_PROMPT_CAP``) by shortening the articles. With ``chat`` the prompts go through the
    model's chat template (for instruction-tuned models). Each (event, pipeline) run is cached;
    when the model is a registered checkpoint, the per-pipeline means go into its manifest.
    """
    chosen = _check_pipelines(pipelines)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive whole number, got {max_new_tokens!r}")
    limits.check("max_new_tokens", max_new_tokens)
    loaded = _check_events(events, target_lang)
    limits.check("events", len(loaded))
    handle = as_handle(spec_or_handle)
    if chat and not handle.facts.chat_template:
        raise InputError(f"{handle.facts.spec} has no chat template: run with chat=False")
    room = handle.facts.n_ctx - max_new_tokens
    if room < 1:
        raise InputError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in "
                         f"{handle.facts.spec}'s context of {handle.facts.n_ctx} tokens")
    budget = min(room, DEFAULT_PROMPT_CAP) if max_prompt_tokens is None else max_prompt_tokens
    if not isinstance(budget, int) or not 1 <= budget <= room:
        raise InputError(f"max_prompt_tokens must be between 1 and {room} for {handle.facts.spec} "
                         f"(context {handle.facts.n_ctx} less {max_new_tokens} new tokens), got {budget!r}")

    generate = _generate_fn(handle, max_new_tokens, chat)
    total = sum(_calls(e, p) for e in loaded for p in chosen)
    finished = 0  # model calls before the current (event, pipeline), cached ones included
    result = MCMSResult(handle.facts.spec, chosen, max_new_tokens, budget)
    for index, event in enumerate(loaded, 1):
        name = event.id or f"event {index}"
        lang = target_lang or event.reference_lang
        for pipeline in chosen:
            call = [finished]

            def step(prompt: str, call=call, label=f"{name}: {PIPELINE_NAMES[pipeline]}") -> str:
                if progress is not None:
                    progress(call[0] / total, f"{label} (call {call[0] + 1}/{total})")
                call[0] += 1
                return generate(prompt)

            params = {"pipeline": pipeline, "lang": lang, "max_new_tokens": max_new_tokens,
                      "max_prompt_tokens": budget, "chat": chat}
            run = cached(
                "globesumm-run", handle, params, stable_hash(event),
                lambda: summarize(event, step, pipeline, lang, budget,
                                  lambda text: len(_prompt_ids(handle, text, chat))),
                use_cache=use_cache,
            )
            finished += _calls(event, pipeline)
            result.runs.append(run)
            result.rows.append({
                "event": name, "pipeline": pipeline, "lang": lang, "summary": run.summary,
                "reference": event.reference_summary, "calls": len(run.outputs),
                "truncated": run.truncated, **score_summary(run.summary, event, lang),
            })
    if progress is not None:
        progress(1.0, "done")
    record_metrics(handle, _manifest_metrics(result))
    return result


def _manifest_metrics(result: MCMSResult) -> dict[str, float]:
    table = result.summary()
    return {f"globesumm/{r.pipeline}/{r.metric}": float(r.score) for r in table.itertuples()}
