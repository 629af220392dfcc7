"""Evaluation harness: run a task of :mod:`workbench.datasets.tasks` on any model, per language.

One call, ``evaluate(model, task, langs)``, gives per-language scores with bootstrap confidence
intervals and the chance level. Items, prompt templates and scorers come from the tasks module;
this module only runs the model and aggregates. Each task is scored in the ways that suit its kind:

- ``generate``: the greedy continuation (a few tokens, cut to its first non-empty line) graded
  by the task's own scorer (multiple choice: names exactly the gold option; QA: the gold span
  occurs; continuation: starts with the gold; summarization: ROUGE-L).
- ``logprob`` / ``logprob_norm`` (items with options: multiple choice, answer-probability ranking):
  the option whose text, appended to the prompt, has the highest summed log-probability (or that
  sum divided by the option's length in characters) is the model's answer, as in lm-eval-harness.
  A small base model that cannot yet follow "(A)/(B)" instructions is often above chance here.
- ``logprob_pmi`` (multiple choice): the same ranking after subtracting each option's
  log-probability after the prompt's last line alone ("Answer:"), i.e. domain-conditional PMI
  (Holtzman et al. 2021, lm-eval-harness ``acc_mutual_info``): it discounts how likely an option
  word is after any question, a preference that can hold a small model at the chance level.
- ``gold_prob`` (answer-probability tasks): the probability of the first token of the gold answer
  right after the prompt (summed over the distinct first tokens of all accepted golds).

Model outputs (generations, option log-probabilities) are cached per (model weights, task,
language, items); scores are recomputed from them, so a changed scorer never reads stale numbers.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from workbench import engine, limits
from workbench.cache import cached, stable_hash
from workbench.datasets.tasks import Item, Task, TaskDataError, get_task, list_tasks, load_task
from workbench.errors import InputError
from workbench.evals.bootstrap import bootstrap_ci
from workbench.models import ModelHandle
from workbench.paths import atomic_write_text
from workbench.progress import Progress
from workbench.results import Result

__all__ = [
    "MODES",
    "METRIC_LABELS",
    "EvalResult",
    "evaluate",
    "task_metrics",
    "sequence_logprobs",
    "continuation_prefix",
    "answer_cue",
    "first_line",
    "as_handle",
    "record_metrics",
]

MODES = ("auto", "generate", "logprob", "probability")
METRIC_LABELS = {
    "generate": "generation (task scorer)",
    "logprob": "log-prob of options",
    "logprob_norm": "log-prob per character",
    "logprob_pmi": "log-prob minus answer-cue log-prob (PMI)",
    "gold_prob": "P(gold first token)",
}
# New tokens generated per item, by task kind: enough for an option, a short answer, one sentence.
GEN_TOKENS = {"multiple_choice": 8, "answer_probability": 8, "extractive_qa": 24, "summarization": 64}
# Rows of one batch are capped so that the (rows x tokens x vocabulary) float32 logits of a
# prefill stay near 512 MiB, whatever the vocabulary size; log-prob batches hold no full logits.
_LOGIT_FLOATS = 2**27
_MAX_ROWS = 16
_LOGPROB_BATCH_TOKENS = 4096


def as_handle(spec_or_handle: str | ModelHandle) -> ModelHandle:
    """A loaded model from a spec string (cached by `workbench.load`) or a handle as is."""
    if isinstance(spec_or_handle, ModelHandle):
        return spec_or_handle
    if isinstance(spec_or_handle, str):
        from workbench import load

        return load(spec_or_handle)
    raise InputError(f"expected a model spec or a loaded model, got {type(spec_or_handle).__name__}")


def record_metrics(handle: ModelHandle, metrics: dict[str, float]) -> bool:
    """Merge ``metrics`` into the manifest of the checkpoint the model was loaded from.

    Does nothing (returns False) for models that are not registered checkpoints. The checkpoint's
    folder is the one loaded, so ``ckpt:RUN`` records on the step that was evaluated.
    """
    if handle.facts.source != "checkpoint" or not metrics:
        return False
    from workbench import registry

    path = Path(handle.facts.path) / registry.MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest.setdefault("metrics", {}).update(metrics)
    atomic_write_text(path, json.dumps(manifest, indent=2, ensure_ascii=False, default=str))
    return True


# --------------------------------------------------------------------------- model computations


def continuation_prefix(prompt: str) -> str:
    """What separates a prompt from its answer: nothing after whitespace or a full-width character
    ("答案：" + "蕴含"), a space otherwise ("Answer:" + " entailment")."""
    last = prompt[-1:]
    if not last or last.isspace() or unicodedata.east_asian_width(last) in ("F", "W"):
        return ""
    return " "


def answer_cue(prompt: str) -> str:
    """The prompt's last line ("Answer:", "答案："): the context of the PMI baseline."""
    return prompt.rsplit("\n", 1)[-1]


def _pad_id(handle: ModelHandle) -> int:
    tok = handle.tokenizer
    for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
        if isinstance(candidate, int):
            return candidate
    return 0


@torch.no_grad()
def sequence_logprobs(
    handle: ModelHandle,
    contexts: Sequence[str],
    continuations: Sequence[str],
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Summed log-probability of each continuation's tokens after its context.

    The context is encoded with BOS, the continuation separately without it, and the model reads
    their concatenation. Sequences are batched by length with right padding: in a causal model no
    real token sees a pad to its right, so padding changes nothing. Only the positions that predict
    continuation tokens go through the unembedding. ``progress(k)`` reports k more sequences done.
    """
    if len(contexts) != len(continuations):
        raise InputError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    pairs = []
    for context, continuation in zip(contexts, continuations):
        ctx, cont = handle.encode(context), handle.encode(continuation, prepend_bos=False)
        if not cont:
            raise InputError(f"the continuation {continuation!r} has no tokens")
        if len(ctx) + len(cont) > handle.facts.n_ctx:
            raise InputError(f"a prompt with its answer has {len(ctx) + len(cont)} tokens; "
                             f"{handle.facts.spec} reads at most {handle.facts.n_ctx}")
        pairs.append((ctx, cont))
    order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
    results = [0.0] * len(pairs)
    pad = _pad_id(handle)
    start = 0
    while start < len(order):
        width = len(pairs[order[start]][0]) + len(pairs[order[start]][1])
        rows = max(1, min(4 * _MAX_ROWS, _LOGPROB_BATCH_TOKENS // width))
        batch = order[start : start + rows]
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full_like(ids, engine.IGNORE_INDEX)
        for r, i in enumerate(batch):
            ctx, cont = pairs[i]
            ids[r, : len(ctx) + len(cont)] = torch.tensor(ctx + cont)
            labels[r, len(ctx) : len(ctx) + len(cont)] = torch.tensor(cont)
        token_lp, _, _ = engine.label_logprobs(handle, ids.to(handle.device), labels.to(handle.device))
        for r, i in enumerate(batch):
            results[i] = float(token_lp[r].sum())
        if progress is not None:
            progress(len(batch))
        start += rows
    return results


def first_line(text: str) -> str:
    """The answer part of a continuation: its first non-empty line, stripped."""
    return text.strip().split("\n", 1)[0].strip()


def _generate(
    handle: ModelHandle,
    prompts: Sequence[str],
    max_new_tokens: int,
    gold_tokens: Sequence[Sequence[int]] | None,
    progress: Callable[[int], None] | None,
) -> list[dict[str, Any]]:
    """Greedy continuations cut to their first non-empty line (a model may open with a newline
    before its answer), batching prompts of equal token length; with ``gold_tokens``, also the
    probability mass of those first tokens after each prompt."""
    encoded = [handle.encode(p) for p in prompts]
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        groups.setdefault(len(ids), []).append(i)
    out: list[dict[str, Any]] = [{} for _ in prompts]
    for length, members in sorted(groups.items()):
        rows = max(1, min(_MAX_ROWS, _LOGIT_FLOATS // (length * handle.facts.d_vocab)))
        for k in range(0, len(members), rows):
            chunk = members[k : k + rows]
            ids = torch.tensor([encoded[i] for i in chunk])
            gen = engine.generate_greedy(handle, ids, max_new_tokens=max_new_tokens,
                                      keep_logits=gold_tokens is not None)
            for r, i in enumerate(chunk):
                out[i]["output"] = first_line(gen.texts[r])
                if gold_tokens is not None:
                    probs = torch.softmax(gen.step_logits[0][r].float(), dim=-1)
                    out[i]["gold_prob"] = float(probs[list(gold_tokens[i])].sum())
            if progress is not None:
                progress(len(chunk))
    return out


# --------------------------------------------------------------------------- results


@dataclass
class EvalResult(Result):
    """Per-item outputs and per-language scores of one task on one model.

    ``items``: one dict per (language, item) with ``lang``, ``id``, the metric values, ``chance``
    and, when generated, ``output``. ``scores``: one dict per (language, metric) with ``score``,
    ``ci_low``, ``ci_high`` (95% percentile bootstrap over items), ``n`` and ``chance`` (NaN where
    no chance level applies). ``metric`` is the headline metric of ``to_frame``.
    """

    model: str
    task: str
    kind: str
    mode: str
    metric: str
    metrics: list[str]
    langs: list[str]
    items: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)

    @property
    def params(self) -> dict[str, Any]:
        return {"task": self.task, "mode": self.mode, "langs": self.langs}

    def to_frame(self, metric: str | None = None) -> pd.DataFrame:
        """One row per language: lang, score, ci_low, ci_high, n, chance (of ``metric``, default
        the headline metric)."""
        metric = metric or self.metric
        if metric not in self.metrics:
            raise InputError(f"metric {metric!r} was not computed; this result has {', '.join(self.metrics)}")
        frame = self.summary()
        frame = frame[frame["metric"] == metric]
        return frame[["lang", "score", "ci_low", "ci_high", "n", "chance", "metric"]].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """Every (language, metric) score, long format."""
        return pd.DataFrame(self.scores, columns=["lang", "metric", "score", "ci_low", "ci_high", "n", "chance"])

    def items_frame(self) -> pd.DataFrame:
        """Per-item outputs and scores."""
        return pd.DataFrame(self.items)

    def figure(self) -> go.Figure:
        """Bars per language for each metric, 95% bootstrap intervals, chance as a dotted mark."""
        table = self.summary()
        fig = go.Figure()
        for metric in self.metrics:
            part = table[table["metric"] == metric]
            fig.add_bar(
                name=METRIC_LABELS.get(metric, metric), x=part["lang"], y=part["score"],
                error_y=dict(type="data", symmetric=False, array=part["ci_high"] - part["score"],
                             arrayminus=part["score"] - part["ci_low"]),
                offsetgroup=metric,
            )
            if part["chance"].notna().any():
                fig.add_scatter(
                    name=f"chance ({METRIC_LABELS.get(metric, metric)})", x=part["lang"], y=part["chance"],
                    mode="markers", marker=dict(symbol="line-ew-open", size=28, color="black"),
                    offsetgroup=metric, showlegend=metric == self.metrics[0],
                )
        fig.update_layout(
            barmode="group", scattermode="group", yaxis_title="score (95% bootstrap CI)",
            title=f"{self.task} on {self.model}", xaxis_title="language", legend_title="metric",
        )
        return fig


# --------------------------------------------------------------------------- evaluate


def task_metrics(task: Task, mode: str) -> list[str]:
    """The metrics ``mode`` computes for ``task`` (the first is the headline)."""
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    has_options = task.kind in ("multiple_choice", "answer_probability")
    if mode == "logprob" and not has_options:
        raise InputError(f"mode 'logprob' needs items with options; {task.name} is {task.kind.replace('_', ' ')}")
    if mode == "probability" and task.kind != "answer_probability":
        raise InputError(f"mode 'probability' is for answer-probability tasks; {task.name} is "
                         f"{task.kind.replace('_', ' ')}")
    if mode == "generate":
        return ["generate"]
    ranking = ["logprob", "logprob_norm"] + (["logprob_pmi"] if task.kind == "multiple_choice" else [])
    if mode == "logprob":
        return ranking
    if mode == "probability" or task.kind == "answer_probability":
        return ["generate", "gold_prob"] + (ranking if mode == "auto" else [])
    if task.kind == "multiple_choice":
        return [*ranking, "generate"]
    return ["generate"]


def _parse_langs(task: Task, langs: Sequence[str] | str | None) -> list[str]:
    if langs is None:
        chosen = task.committed_languages()
    else:
        raw = langs.split(",") if isinstance(langs, str) else list(langs)
        chosen = list(dict.fromkeys(str(lang).strip() for lang in raw if str(lang).strip()))
    if not chosen:
        raise InputError(f"choose at least one language for {task.name}: {', '.join(task.languages)}")
    unknown = [lang for lang in chosen if lang not in task.languages]
    if unknown:
        raise InputError(f"task {task.name!r} has no language {', '.join(map(repr, unknown))}; "
                         f"it supports {', '.join(task.languages)}")
    return chosen


def _load_items(task: Task, lang: str, n: int | None) -> list[Item]:
    try:
        items = load_task(task.name, lang)
    except TaskDataError as error:
        raise InputError(str(error)) from error
    return items if n is None else items[:n]


def _item_data(items: Sequence[Item]) -> str:
    """Hash of what the model reads and is scored against (prompts, options, golds)."""
    return stable_hash([(it.id, it.prompt, it.choices, it.golds, it.meta.get("answer_prefix")) for it in items])


def _answer_prefix(item: Item) -> str:
    prefix = item.meta.get("answer_prefix")
    return prefix if isinstance(prefix, str) else continuation_prefix(item.prompt)


def _cue_logprobs(handle: ModelHandle, items: Sequence[Item], progress) -> list[list[float]]:
    """Log-probability of each option after the prompt's answer cue alone; a (cue, option) pair
    shared by many items (XNLI's three labels) is computed once."""
    keys = [[(answer_cue(it.prompt), _answer_prefix(it) + c) for c in it.choices or []] for it in items]
    pairs = sorted({pair for row in keys for pair in row})
    values = dict(zip(pairs, sequence_logprobs(handle, [c for c, _ in pairs], [o for _, o in pairs], progress)))
    return [[values[pair] for pair in row] for row in keys]


def _option_logprobs(handle: ModelHandle, items: Sequence[Item], progress) -> list[list[float]]:
    contexts, continuations, owners = [], [], []
    for k, item in enumerate(items):
        for choice in item.choices or []:
            contexts.append(item.prompt)
            continuations.append(_answer_prefix(item) + choice)
            owners.append(k)
    flat = sequence_logprobs(handle, contexts, continuations, progress)
    per_item: list[list[float]] = [[] for _ in items]
    for k, value in zip(owners, flat):
        per_item[k].append(value)
    return per_item


def _first_tokens(handle: ModelHandle, item: Item) -> list[int]:
    prefix = _answer_prefix(item)
    firsts = {ids[0] for g in item.golds if (ids := handle.encode(prefix + g, prepend_bos=False))}
    return sorted(firsts)


def _item_records(task: Task, items: Sequence[Item], metrics: Sequence[str], generated, option_lps,
                  cue_lps) -> list[dict]:
    records = []
    for k, item in enumerate(items):
        row: dict[str, Any] = {"lang": item.lang, "id": item.id}
        if "generate" in metrics:
            row["output"] = generated[k]["output"]
            row["generate"] = task.score(generated[k]["output"], item)
        if "gold_prob" in metrics:
            row["gold_prob"] = generated[k]["gold_prob"]
        if "logprob" in metrics:
            lps = np.asarray(option_lps[k])
            lengths = np.asarray([len(_answer_prefix(item) + c) for c in item.choices])
            row["logprob"] = float(int(np.argmax(lps)) == item.label)
            row["logprob_norm"] = float(int(np.argmax(lps / lengths)) == item.label)
            row["option_logprobs"] = lps.round(4).tolist()
        if "logprob_pmi" in metrics:
            pmi = np.asarray(option_lps[k]) - np.asarray(cue_lps[k])
            row["logprob_pmi"] = float(int(np.argmax(pmi)) == item.label)
            row["cue_logprobs"] = np.asarray(cue_lps[k]).round(4).tolist()
        row["options"] = len(item.choices) if item.choices else None
        records.append(row)
    return records


def _chance(task: Task, metric: str, rows: Sequence[dict]) -> float:
    """Expected score of a uniform random pick among the options (NaN without options)."""
    if metric in ("logprob", "logprob_norm", "logprob_pmi") or (metric == "generate" and task.kind == "multiple_choice"):
        return float(np.mean([1.0 / row["options"] for row in rows]))
    return math.nan


def evaluate(
    spec_or_handle: str | ModelHandle,
    task: str,
    langs: Sequence[str] | str | None = None,
    n: int | None = None,
    mode: str = "auto",
    use_cache: bool = True,
    progress: Progress | None = None,
    max_new_tokens: int | None = None,
) -> EvalResult:
    """Scores of ``task`` on the model, per language, with 95% bootstrap intervals.

    ``langs``: codes (list or "en,fr"), default every language with a committed sample. ``n``: the
    first n items of each language (default all). ``mode``: ``"auto"`` (every metric that fits the
    task: multiple choice by option log-prob and by generation; answer-probability by greedy
    continuation, gold first-token probability and option ranking; QA and summaries by generation),
    ``"generate"``, ``"logprob"`` or ``"probability"``. ``max_new_tokens`` overrides the per-kind
    generation length. Model outputs are cached; when the model is a registered checkpoint the
    per-language scores go into its manifest as ``eval/TASK/METRIC/LANG``.
    """
    if task not in list_tasks():
        raise InputError(f"unknown task {task!r}; known tasks: {', '.join(list_tasks())}")
    spec_task = get_task(task)
    metrics = task_metrics(spec_task, mode)
    chosen = _parse_langs(spec_task, langs)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise InputError(f"n must be a positive number of items per language (or None for all), got {n!r}")
    n = limits.capped("eval_items", n)  # demo mode: "all" means the cap
    new_tokens = GEN_TOKENS[spec_task.kind] if max_new_tokens is None else max_new_tokens
    if not isinstance(new_tokens, int) or new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive whole number, got {new_tokens!r}")
    limits.check("max_new_tokens", new_tokens)
    per_lang = {lang: _load_items(spec_task, lang, n) for lang in chosen}
    empty = [lang for lang, items in per_lang.items() if not items]
    if empty:
        raise InputError(f"{task} has no items in {', '.join(empty)}")
    handle = as_handle(spec_or_handle)

    wants_gen = "generate" in metrics or "gold_prob" in metrics
    wants_lp = "logprob" in metrics
    lp_passes = wants_lp + ("logprob_pmi" in metrics)
    total = sum(wants_gen + len(item.choices or []) * lp_passes for items in per_lang.values() for item in items)
    done = 0

    def advance(lang: str, what: str) -> Callable[[int], None]:
        def report(k: int) -> None:
            nonlocal done
            done += k
            if progress is not None:
                progress(min(done / total, 1.0), f"{task} {lang}: {what}")
        return report

    result = EvalResult(handle.facts.spec, task, spec_task.kind, mode, metrics[0], metrics, chosen)
    for lang, items in per_lang.items():
        data = _item_data(items)
        generated = option_lps = cue_lps = None
        if wants_gen:
            with_prob = "gold_prob" in metrics
            generated = cached(
                "eval-generate", handle, {"task": task, "lang": lang, "max_new_tokens": new_tokens,
                                          "gold_prob": with_prob, "output": "first line"}, data,
                lambda: _generate(handle, [it.prompt for it in items], new_tokens,
                                  [_first_tokens(handle, it) for it in items] if with_prob else None,
                                  advance(lang, "generating")),
                use_cache=use_cache,
            )
        if wants_lp:
            option_lps = cached(
                "eval-logprob", handle, {"task": task, "lang": lang}, data,
                lambda: _option_logprobs(handle, items, advance(lang, "scoring options")),
                use_cache=use_cache,
            )
        if "logprob_pmi" in metrics:
            cue_lps = cached(
                "eval-logprob-cue", handle, {"task": task, "lang": lang}, data,
                lambda: _cue_logprobs(handle, items, advance(lang, "scoring options after the answer cue")),
                use_cache=use_cache,
            )
        rows = _item_records(spec_task, items, metrics, generated, option_lps, cue_lps)
        result.items.extend(rows)
        for metric in metrics:
            mean, low, high = bootstrap_ci([row[metric] for row in rows])
            result.scores.append({"lang": lang, "metric": metric, "score": mean, "ci_low": low,
                                  "ci_high": high, "n": len(rows), "chance": _chance(spec_task, metric, rows)})
    if progress is not None:
        progress(1.0, "done")
    record_metrics(handle, {f"eval/{task}/{s['metric']}/{s['lang']}": s["score"] for s in result.scores})
    return result
