"""Retrieval heads (Wu et al. 2024): which attention heads copy the needle out of a haystack.

For every needle-in-a-haystack trial the model answers greedily (up to 50 tokens, stopping at a
newline). At each generated token, a head scores ``1 / (e - s)`` when the key its last query row
attends to most lies in the needle span ``[s, e)`` and holds the very token being generated. A
trial counts only if the answer recalls the needle's answer (ROUGE-1 recall > 0.5); a head's
retrieval score is its mean over the kept trials, and heads above 0.1 are retrieval heads.

Only what the score needs is read from the model: a hook on every layer's attention pattern takes
the argmax over keys of the last query row and keeps one integer per (step, layer, head); no
attention maps or caches are stored, so memory grows with the context like plain generation.

Keys seen by a decode step are not always the whole sequence: Hugging Face's cache for a
sliding-window layer (transformers 5.x ``DynamicSlidingWindowLayer``) keeps the last ``window - 1``
keys, and the step attends to those plus its own, so key index ``j`` of a pattern with ``K``
columns is sequence position ``query_pos + 1 - K + j``. The shift is zero when a layer sees every
key, so the same formula is right whichever way a cache behaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from workbench import distributed, engine, limits
from workbench.cache import cached, stable_hash
from workbench.datasets import haystack
from workbench.errors import InputError
from workbench.models import ModelHandle
from workbench.progress import Progress
from workbench.results import Result

RETRIEVAL_THRESHOLD = 0.1  # heads scoring above this are retrieval heads (the paper's cut)
KEEP_RECALL = 0.5  # a trial is kept when ROUGE-1 recall of the expected answer exceeds this
MAX_NEW_TOKENS = 50


# --------------------------------------------------------------------------- scoring (pure)

def to_prompt_positions(key_index: torch.Tensor | np.ndarray, n_keys: int, query_pos: int):
    """Sequence positions of key indices from a pattern row with `n_keys` columns whose query
    sits at `query_pos`: the keys are always the last `n_keys` positions up to the query."""
    offset = query_pos + 1 - n_keys
    if offset < 0:
        raise ValueError(f"A query at position {query_pos} cannot see {n_keys} keys.")
    return key_index + offset


def score_trace(attended: np.ndarray, tokens: Sequence[int], prompt_ids: Sequence[int],
                span: tuple[int, int]) -> np.ndarray:
    """Retrieval score of one trial from its argmax trace.

    `attended[t, l, h]` is the sequence position head (l, h) attended to most when token
    `tokens[t]` was generated. A step adds ``1 / (e - s)`` to a head when that position is inside
    the needle span ``[s, e)`` and the prompt token there equals the generated token (one argmax
    per step, so at most once per step). Returns (n_layers, n_heads).
    """
    attended = np.asarray(attended)
    tokens = np.asarray(tokens)
    s, e = span
    if not 0 <= s < e <= len(prompt_ids):
        raise ValueError(f"The needle span {span} is not inside a prompt of {len(prompt_ids)} tokens.")
    if attended.ndim != 3 or attended.shape[0] != tokens.shape[0]:
        raise ValueError(f"Expected one (layers, heads) argmax row per generated token, got {attended.shape} "
                         f"for {tokens.shape[0]} tokens.")
    needle = np.asarray(prompt_ids[s:e])
    inside = (attended >= s) & (attended < e)
    copied_token = needle[np.clip(attended - s, 0, e - s - 1)]
    hits = inside & (copied_token == tokens[:, None, None])
    return hits.sum(axis=0) / (e - s)


def keep_trial(recall: float) -> bool:
    """The paper keeps a trial only when the answer recalls the needle (ROUGE-1 recall > 0.5)."""
    return recall > KEEP_RECALL


def aggregate(trial_scores: Sequence[np.ndarray], kept: Sequence[bool]) -> np.ndarray:
    """Mean of the kept trials' scores; NaN everywhere when no trial was kept."""
    chosen = [s for s, k in zip(trial_scores, kept) if k]
    if not chosen:
        shape = np.shape(trial_scores[0]) if len(trial_scores) else (0, 0)
        return np.full(shape, np.nan)
    return np.mean(chosen, axis=0)


# --------------------------------------------------------------------------- recording

class ArgmaxRecorder:
    """Forward hooks on every layer's `hook_pattern` that keep, per forward call, the argmax key
    of the last query row for each head, as a sequence position. Batch size 1."""

    def __init__(self, handle: ModelHandle, prompt_len: int):
        self.n_layers = handle.n_layers
        self.prompt_len = prompt_len
        self.rows: list[list[torch.Tensor]] = [[] for _ in range(self.n_layers)]
        self.n_keys: list[list[int]] = [[] for _ in range(self.n_layers)]

    def _hook(self, layer: int):
        def record(pattern: torch.Tensor, hook) -> None:
            # pattern: (batch, heads, queries, keys); the prompt pass has all queries, decode steps one.
            query_pos = self.prompt_len - 1 + len(self.rows[layer])
            n_keys = pattern.shape[-1]
            idx = pattern[0, :, -1, :].argmax(dim=-1)
            self.rows[layer].append(to_prompt_positions(idx, n_keys, query_pos))
            self.n_keys[layer].append(n_keys)

        return record

    def hooks(self) -> list[engine.Hook]:
        return [(engine.hook_name(l, "pattern"), self._hook(l)) for l in range(self.n_layers)]

    def trace(self) -> np.ndarray:
        """(n_steps, n_layers, n_heads) int32 sequence positions."""
        per_layer = [torch.stack(rows) for rows in self.rows]
        return torch.stack(per_layer, dim=1).cpu().numpy().astype(np.int32)


@dataclass
class TrialRecord:
    """One trial's outcome: the answer, the keep decision and the head scores it contributed."""

    lang: str
    needle_id: str
    context_tokens: int
    depth: float
    prompt_tokens: int
    needle_span: tuple[int, int]
    expected: str
    answer: str
    recall: float
    kept: bool
    window_sees_needle: bool | None  # sliding-window layers see the whole needle at the first step
    tokens: np.ndarray  # (n_steps,) generated ids, the stop token included
    attended: np.ndarray  # (n_steps, n_layers, n_heads) argmax positions
    scores: np.ndarray  # (n_layers, n_heads)


@torch.no_grad()
def run_trial(handle: ModelHandle, trial: haystack.Trial, max_new_tokens: int = MAX_NEW_TOKENS) -> TrialRecord:
    """Generate the answer of one trial while recording the argmax trace, and score it."""
    prompt_len = len(trial.prompt_ids)
    recorder = ArgmaxRecorder(handle, prompt_len)
    tokens: list[int] = []
    gen = engine.generate_greedy(
        handle, trial.prompt_ids, max_new_tokens, fwd_hooks=recorder.hooks(), stop_at_newline=True,
        on_step=lambda step, nxt: tokens.append(int(nxt[0])),
    )
    attended = recorder.trace()
    if attended.shape[0] != len(tokens):
        raise RuntimeError(f"Recorded {attended.shape[0]} attention steps for {len(tokens)} tokens.")
    recall = haystack.rouge1_recall(gen.text, trial.needle.answer, trial.lang)
    window = handle.facts.sliding_window if "sliding_attention" in _layer_types(handle) else None
    s, e = trial.needle_span
    return TrialRecord(
        lang=trial.lang, needle_id=trial.needle.id, context_tokens=trial.context_tokens, depth=trial.depth,
        prompt_tokens=prompt_len, needle_span=(s, e), expected=trial.needle.answer, answer=gen.text.strip(),
        recall=float(recall), kept=keep_trial(recall),
        window_sees_needle=None if window is None else bool(s >= prompt_len - window),
        tokens=np.asarray(tokens, dtype=np.int64), attended=attended,
        scores=score_trace(attended, tokens, trial.prompt_ids, (s, e)).astype(np.float32),
    )


# --------------------------------------------------------------------------- results

def _layer_types(handle: ModelHandle) -> tuple[str, ...]:
    return tuple(handle.facts.layer_types or ("full_attention",) * handle.n_layers)


def _short_type(layer_type: str) -> str:
    return layer_type.replace("_attention", "")


@dataclass
class RetrievalResult(Result):
    """Retrieval scores of every head for one language, with the trials behind them."""

    model: str
    lang: str
    scores: np.ndarray  # (n_layers, n_heads); NaN when no trial was kept
    layer_types: tuple[str, ...]
    sliding_window: int | None
    trials: list[TrialRecord]
    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    n_needles: int
    threshold: float = RETRIEVAL_THRESHOLD
    max_new_tokens: int = MAX_NEW_TOKENS

    @property
    def params(self) -> dict[str, Any]:
        return {"lang": self.lang, "lengths": list(self.lengths), "depths": list(self.depths),
                "n_needles": self.n_needles, "max_new_tokens": self.max_new_tokens, "threshold": self.threshold}

    @property
    def n_kept(self) -> int:
        return sum(t.kept for t in self.trials)

    @property
    def n_dropped(self) -> int:
        return len(self.trials) - self.n_kept

    @property
    def note(self) -> str:
        text = (f"{self.n_kept} of {len(self.trials)} trials kept (answer recalls the needle); "
                f"{len(self.retrieval_heads())} heads score above {self.threshold}.")
        if self.n_kept == 0:
            text += " No trial was kept, so no head has a score: try shorter contexts or another language."
        return text

    def retrieval_heads(self, threshold: float | None = None) -> list[tuple[int, int]]:
        """(layer, head) pairs scoring above `threshold` (default 0.1), best first."""
        cut = self.threshold if threshold is None else threshold
        frame = self.to_frame()
        frame = frame[frame["score"] > cut]
        return list(zip(frame["layer"].tolist(), frame["head"].tolist()))

    def to_frame(self) -> pd.DataFrame:
        """One row per head, best first: layer, head, layer type, score, retrieval head or not."""
        n_layers, n_heads = self.scores.shape
        frame = pd.DataFrame({
            "layer": np.repeat(np.arange(n_layers), n_heads),
            "head": np.tile(np.arange(n_heads), n_layers),
            "layer_type": np.repeat([_short_type(t) for t in self.layer_types], n_heads),
            "score": self.scores.reshape(-1).astype(np.float64),  # float32 would print as 0.10939999669
        })
        frame["retrieval_head"] = frame["score"] > self.threshold
        return frame.sort_values(["score", "layer", "head"], ascending=[False, True, True],
                                 na_position="last", kind="stable").reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """One row: kept and dropped trials, retrieval heads and the best head."""
        top = self.top(1)
        return pd.DataFrame([{
            "lang": self.lang, "kept": self.n_kept, "dropped": self.n_dropped,
            "retrieval_heads": len(self.retrieval_heads()),
            "best_head": f"{top['layer'][0]}.{top['head'][0]}" if len(top) else "",
            "best_score": float(top["score"][0]) if len(top) else np.nan,
        }])

    def top(self, k: int = 10) -> pd.DataFrame:
        """The `k` best-scoring heads."""
        if k < 1:
            raise InputError("k must be at least 1.")
        return self.to_frame().dropna(subset=["score"]).head(k).reset_index(drop=True)

    def trials_frame(self) -> pd.DataFrame:
        """One row per trial: where the needle was, what the model answered, kept or dropped."""
        return pd.DataFrame([{
            "lang": t.lang, "needle": t.needle_id, "context_tokens": t.context_tokens, "depth": t.depth,
            "prompt_tokens": t.prompt_tokens, "needle_start": t.needle_span[0], "needle_end": t.needle_span[1],
            "window_sees_needle": t.window_sees_needle, "expected": t.expected, "answer": t.answer,
            "recall": round(t.recall, 3), "kept": t.kept, "steps": int(t.tokens.shape[0]),
            "max_head_score": float(t.scores.max()) if t.scores.size else 0.0,
        } for t in self.trials])

    def by_layer_type(self) -> pd.DataFrame:
        """Scores summarised per layer type (sliding-window layers can only retrieve a needle
        inside their window, so they are reported apart from full-attention layers)."""
        frame = self.to_frame()
        return (frame.groupby("layer_type")
                .agg(heads=("score", "size"), mean_score=("score", "mean"), max_score=("score", "max"),
                     retrieval_heads=("retrieval_head", "sum"))
                .reset_index())

    def _mean_by_type(self, key: str, groups: dict) -> pd.DataFrame:
        """Mean head score per layer type over the kept trials of each group."""
        types = np.array([_short_type(t) for t in self.layer_types])
        rows = []
        for value, chosen in groups.items():
            for kind in sorted(set(types)):
                rows.append({
                    key: value, "layer_type": kind, "kept_trials": len(chosen),
                    "mean_score": float(np.mean([t.scores[types == kind].mean() for t in chosen])) if chosen else np.nan,
                })
        return pd.DataFrame(rows, columns=[key, "layer_type", "kept_trials", "mean_score"])

    def by_length(self) -> pd.DataFrame:
        """Mean head score per context length and layer type, over the kept trials."""
        return self._mean_by_type("context_tokens", {
            n: [t for t in self.trials if t.kept and t.context_tokens == n] for n in self.lengths})

    def by_window(self) -> pd.DataFrame:
        """Mean head score per layer type over kept trials, split by whether the sliding window
        still covered the whole needle when the answer began (empty for models without one)."""
        if self.sliding_window is None or "sliding_attention" not in self.layer_types:
            return self._mean_by_type("window_sees_needle", {})
        return self._mean_by_type("window_sees_needle", {
            sees: [t for t in self.trials if t.kept and t.window_sees_needle is sees] for sees in (True, False)})

    def figure(self, zmax: float | None = None):
        """Heatmap of the scores: heads down, layers across (full-attention layers marked)."""
        import plotly.graph_objects as go

        n_layers, n_heads = self.scores.shape
        ticks = [f"{l}" + (" full" if self.layer_types[l] == "full_attention" and len(set(self.layer_types)) > 1 else "")
                 for l in range(n_layers)]
        z = self.scores.T
        fig = go.Figure(go.Heatmap(
            z=z, x=ticks, y=[f"H{h}" for h in range(n_heads)], colorscale="Viridis", zmin=0,
            zmax=zmax if zmax is not None else max(float(np.nanmax(z)) if np.isfinite(z).any() else 0.0, self.threshold),
            text=np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.2f}")(z), texttemplate="%{text}",
            customdata=np.array([[_short_type(self.layer_types[l]) for l in range(n_layers)]] * n_heads),
            hovertemplate="layer %{x} (%{customdata}), %{y}: %{z:.3f}<extra></extra>",
            colorbar=dict(title="score"),
        ))
        fig.update_layout(
            title=f"Retrieval scores, {self.model}, {self.lang}: {self.n_kept}/{len(self.trials)} trials kept, "
                  f"{len(self.retrieval_heads())} heads > {self.threshold}",
            xaxis_title="layer", yaxis_title="head", height=160 + 40 * n_heads, margin=dict(t=60, b=40),
        )
        fig.update_yaxes(autorange="reversed")
        return fig


# --------------------------------------------------------------------------- public API

def _check_grid(lang: str, lengths: Sequence[int], depths: Sequence[float], n_needles: int,
                max_new_tokens: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    langs = haystack.available_languages()
    if lang not in langs:
        raise InputError(f"No haystack for language {lang!r}; available: {', '.join(langs)}.")
    lengths = tuple(int(n) for n in lengths)
    depths = tuple(float(d) for d in depths)
    if not lengths or any(n < 16 for n in lengths):
        raise InputError("Give at least one context length, each of 16 tokens or more.")
    if not depths or any(not 0.0 <= d <= 1.0 for d in depths):
        raise InputError("Give at least one depth, each a fraction between 0 and 1.")
    if not isinstance(n_needles, int) or n_needles < 1:
        raise InputError("n_needles must be a whole number of at least 1.")
    if not 1 <= max_new_tokens <= 512:
        raise InputError("max_new_tokens must be between 1 and 512.")
    return lengths, depths


def make_trials(handle: ModelHandle, lang: str, lengths: Sequence[int], depths: Sequence[float],
                n_needles: int) -> list[haystack.Trial]:
    """The needle-in-a-haystack grid for `handle`'s tokenizer (lengths x depths x needles)."""
    try:
        trials = haystack.trial_grid(handle.tokenizer, lang, lengths, depths, n_needles)
    except haystack.HaystackDataError as exc:
        raise InputError(str(exc)) from exc
    longest = max(len(t.prompt_ids) for t in trials)
    if longest > handle.facts.n_ctx:
        raise InputError(f"The longest trial has {longest} tokens; {handle.facts.spec} reads at most {handle.facts.n_ctx}.")
    return trials


def _check_limits(lengths: Sequence[int], depths: Sequence[float], n_needles: int, max_new_tokens: int,
                  n_langs: int = 1) -> None:
    """Demo-mode caps (`workbench.limits`): context length, number of trials, new tokens."""
    limits.check("context_tokens", max(lengths, default=0))
    limits.check("retrieval_trials", len(lengths) * len(depths) * n_needles * n_langs)
    limits.check("max_new_tokens", max_new_tokens)


def retrieval_scores(handle: ModelHandle, lang: str = "en", lengths: Sequence[int] = haystack.DEFAULT_LENGTHS,
                     depths: Sequence[float] = haystack.DEFAULT_DEPTHS, n_needles: int = haystack.DEFAULT_NEEDLES,
                     use_cache: bool = True, progress: Progress | None = None,
                     max_new_tokens: int = MAX_NEW_TOKENS) -> RetrievalResult:
    """Retrieval score of every (layer, head) on a needle-in-a-haystack grid in `lang`.

    The default grid (256, 512, 1024 tokens x depths 0.1, 0.5, 0.9 x 3 needles) is sized for a
    CPU; on Gemma 3 it spans contexts inside and beyond the 512-token sliding window. Results are
    cached per model weights, settings and trial data.
    """
    lengths, depths = _check_grid(lang, lengths, depths, n_needles, max_new_tokens)
    _check_limits(lengths, depths, n_needles, max_new_tokens)
    trials = make_trials(handle, lang, lengths, depths, n_needles)
    params = {"lang": lang, "lengths": lengths, "depths": depths, "n_needles": n_needles,
              "max_new_tokens": max_new_tokens, "keep_recall": KEEP_RECALL}
    data = stable_hash([(t.prompt_ids, t.needle_span, t.needle.answer) for t in trials])

    def compute() -> RetrievalResult:
        # One trial per forward pass, so a trial's outputs do not depend on which process runs it;
        # strided shares balance the work (the grid's lengths grow along the list).
        mine = distributed.share(len(trials), strided=True)
        records = []
        for n, i in enumerate(mine.positions):
            trial = trials[i]
            if progress:
                progress(n / len(mine.positions), f"{lang}: trial {n + 1}/{len(mine.positions)} "
                         f"({trial.context_tokens} tokens, depth {trial.depth:g})")
            records.append(run_trial(handle, trial, max_new_tokens))
        records = mine.gather(records)
        if progress:
            progress(1.0, f"{lang}: done")
        return RetrievalResult(
            model=handle.facts.spec, lang=lang,
            scores=aggregate([r.scores for r in records], [r.kept for r in records]),
            layer_types=_layer_types(handle), sliding_window=handle.facts.sliding_window,
            trials=records, lengths=lengths, depths=depths, n_needles=n_needles, max_new_tokens=max_new_tokens,
        )

    return cached("retrieval_heads", handle, params, data, compute, use_cache=use_cache)


@dataclass
class LanguageComparison(Result):
    """Retrieval scores of the same model in several languages."""

    results: dict[str, RetrievalResult] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return next(iter(self.results.values())).model if self.results else ""

    @property
    def params(self) -> dict[str, Any]:
        first = next(iter(self.results.values())).params if self.results else {}
        return {**{k: v for k, v in first.items() if k != "lang"}, "langs": self.langs}

    @property
    def langs(self) -> list[str]:
        return list(self.results)

    def to_frame(self) -> pd.DataFrame:
        """One row per head: layer, head, layer type and one score column per language."""
        first = next(iter(self.results.values()))
        frame = first.to_frame()[["layer", "head", "layer_type"]].sort_values(["layer", "head"]).reset_index(drop=True)
        for lang, res in self.results.items():
            frame[lang] = res.scores.reshape(-1)
        return frame

    def summary(self) -> pd.DataFrame:
        """Per language: kept/dropped trials, retrieval heads and the best head."""
        return pd.concat([res.summary() for res in self.results.values()], ignore_index=True)

    def overlap(self, k: int = 10) -> pd.DataFrame:
        """Jaccard overlap of the languages' top-k head sets (1 = the same heads)."""
        tops = {lang: {(int(r.layer), int(r.head)) for r in res.top(k).itertuples()} for lang, res in self.results.items()}
        return pd.DataFrame({a: {b: len(tops[a] & tops[b]) / max(1, len(tops[a] | tops[b])) for b in tops} for a in tops})

    def correlation(self) -> pd.DataFrame:
        """Spearman rank correlation of head scores between languages."""
        return self.to_frame()[self.langs].corr(method="spearman")

    def figure(self):
        """One heatmap per language on a shared colour scale."""
        from plotly.subplots import make_subplots

        zmax = max([float(np.nanmax(r.scores)) for r in self.results.values() if np.isfinite(r.scores).any()] +
                   [RETRIEVAL_THRESHOLD])
        fig = make_subplots(rows=len(self.results), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                            subplot_titles=[f"{lang}: {r.n_kept}/{len(r.trials)} kept, {len(r.retrieval_heads())} heads > "
                                            f"{r.threshold}" for lang, r in self.results.items()])
        for row, res in enumerate(self.results.values(), start=1):
            trace = res.figure(zmax=zmax).data[0]
            trace.showscale = row == 1
            fig.add_trace(trace, row=row, col=1)
            fig.update_yaxes(autorange="reversed", row=row, col=1)
        n_heads = next(iter(self.results.values())).scores.shape[1]
        fig.update_layout(title="Retrieval scores per language", height=120 + len(self.results) * (60 + 35 * n_heads))
        return fig


def compare_languages(handle: ModelHandle, langs: Sequence[str] = ("en", "fr", "de", "zh"),
                      lengths: Sequence[int] = haystack.DEFAULT_LENGTHS,
                      depths: Sequence[float] = haystack.DEFAULT_DEPTHS, n_needles: int = haystack.DEFAULT_NEEDLES,
                      use_cache: bool = True, progress: Progress | None = None,
                      max_new_tokens: int = MAX_NEW_TOKENS) -> LanguageComparison:
    """`retrieval_scores` for each language on the same grid, side by side."""
    langs = list(dict.fromkeys(langs))
    if not langs:
        raise InputError("Choose at least one language.")
    for lang in langs:  # fail before any model run
        checked = _check_grid(lang, lengths, depths, n_needles, max_new_tokens)
    _check_limits(*checked, n_needles, max_new_tokens, len(langs))
    out = LanguageComparison()
    for i, lang in enumerate(langs):
        sub = None
        if progress:
            sub = (lambda f, m, i=i: progress((i + f) / len(langs), m))
        out.results[lang] = retrieval_scores(handle, lang, lengths, depths, n_needles, use_cache, sub, max_new_tokens)
    return out
