"""XTransplant (arXiv 2412.12686): does the model answer better when one activation of its
last prompt position is replaced by the same layer-site activation of the prompt's translation?

For an item, the *main* prompt is the one answered and the *auxiliary* prompt its translation
(direction "en->x": native main, English auxiliary; "x->en": the reverse). The output of
`blocks.{s}.hook_mlp_out` (or `hook_attn_out`) at the auxiliary prompt's last position replaces
`blocks.{t}` of the same site at the main prompt's last position, in the prefill only; decoding is
greedy and untouched.

A grid runs every (s, t) pair ("overall") or every s into one t ("targetfirst"), reading per cell
the accuracy and the mean change of the gold answer's probability against no transplant. Next to
every pair it runs a *control*: the same transplant from the auxiliary prompt of a different item.
A best-of-pairs upper bound that the control reaches as well measures the number of pairs tried,
not cross-lingual transfer.

Scoring: "probability" ranks the item's options by their teacher-forced log-probability (correct:
the gold ranks first; open answers: greedy decoding would produce a gold); "generation" decodes
greedily (`max_new_tokens`, stopping at a newline by default) and applies the task's scorer.
The gold probability is the probability of the whole gold continuation, in both scorings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from workbench import distributed, engine, limits
from workbench.cache import cached
from workbench.datasets.tasks import Item, split_items
from workbench.errors import InputError
from workbench.models import ModelHandle
from workbench.progress import Progress
from workbench.results import Result

from probes.transplant.cases import (
    Answer,
    Case,
    answer_for,
    chance_level,
    check_direction,
    default_direction,
    make_case,
    score_text,
)
from probes.transplant.runs import check_site, replace_hooks, run_rows, source_vectors
from workbench.engine import prefix, token_scores
from probes.transplant.strategy import BestPair, any_pair_correct, best_pair, pair_accuracy

MODES: tuple[str, ...] = ("overall", "targetfirst")
SCORINGS: tuple[str, ...] = ("probability", "generation")


# --------------------------------------------------------------------------- one item, one pair

@dataclass
class Outcome:
    """One row (no transplant, or one pair) on one item."""

    correct: bool
    p_gold: float  # probability of the gold continuation (best gold for open answers)
    option_p: list[float]  # probability of each scored continuation
    text: str | None  # greedy output, when generated


def _judge(answer: Answer, logprob: torch.Tensor, greedy: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per row: correct under probability scoring, and the gold probability."""
    p = logprob.exp()
    if answer.label is None:
        return greedy.any(-1).numpy(), p.max(-1).values.numpy()
    others = torch.cat([logprob[:, : answer.label], logprob[:, answer.label + 1:]], dim=-1)
    gold = logprob[:, answer.label]
    beats = gold > others.max(-1).values if others.shape[-1] else torch.ones_like(gold, dtype=torch.bool)
    return beats.numpy(), p[:, answer.label].numpy()


@torch.no_grad()
def _plain_row(handle: ModelHandle, case: Case, answer: Answer, site: str, target: int | None,
               vector: torch.Tensor | None, scoring: str, max_new_tokens: int, stop_at_newline: bool) -> Outcome:
    """One row the plain way, with the shared ops only: one hooked forward of the whole prompt
    followed by each continuation but its last token (a right-padded batch with one row per
    distinct such tail, so single-token options share a row; padding comes after every position
    read), and `engine.generate_greedy` with a prefill hook. The reference the cache-sharing grid
    must equal."""
    ids = engine.as_ids(handle, case.item.prompt)
    length = ids.shape[1]
    tails = list(dict.fromkeys(tuple(c[:-1]) for c in answer.tokens))
    batch = torch.zeros(len(tails), length + max(len(t) for t in tails), dtype=torch.long, device=ids.device)
    batch[:, :length] = ids
    for row, tail in enumerate(tails):
        batch[row, length:length + len(tail)] = torch.tensor(tail, dtype=torch.long)
    hooks = [] if target is None else replace_hooks(site, [target] * len(tails), vector.expand(len(tails), -1),
                                                    length - 1)
    logits = engine.forward(handle, batch, fwd_hooks=hooks)[:, length - 1:]
    width = max(len(c) for c in answer.tokens)
    picked = torch.zeros(len(answer.tokens), width, logits.shape[-1], dtype=logits.dtype, device=logits.device)
    wanted = torch.zeros(len(answer.tokens), width, dtype=torch.long, device=logits.device)
    mask = torch.zeros_like(wanted, dtype=torch.bool)
    for k, c in enumerate(answer.tokens):
        picked[k, : len(c)] = logits[tails.index(tuple(c[:-1])), : len(c)]
        wanted[k, : len(c)], mask[k, : len(c)] = torch.tensor(c), True
    logprob, greedy = token_scores(picked, wanted, mask)
    correct, p_gold = _judge(answer, logprob[None].cpu(), greedy[None].cpu())
    text = None
    if scoring == "generation":
        prefill = replace_hooks(site, [target], vector[None], length - 1) if target is not None else []
        text = engine.generate_greedy(handle, ids, max_new_tokens, prefill_hooks=prefill,
                                   stop_at_newline=stop_at_newline).text
        correct = np.array([score_text(case.item, text)])
    return Outcome(bool(correct[0]), float(p_gold[0]), logprob.exp().cpu().tolist(), text)


@dataclass
class TransplantRun(Result):
    """One item answered without and with one transplant (s -> t)."""

    model: str
    item_id: str
    task: str
    lang: str
    site: str
    direction: str
    source: int
    target: int
    main_prompt: str
    aux_prompt: str
    aux_item_id: str  # the item whose auxiliary prompt was used (another item for a control)
    options: list[str]
    golds: list[str]
    baseline: Outcome
    transplanted: Outcome

    @property
    def params(self) -> dict[str, Any]:
        return {"item": self.item_id, "aux_item": self.aux_item_id, "source": self.source, "target": self.target,
                "site": self.site, "direction": self.direction}

    def summary(self) -> pd.DataFrame:
        """One row: correctness and gold probability without and with the transplant."""
        return pd.DataFrame([{"item": self.item_id, "source": self.source, "target": self.target,
                              "baseline_correct": self.baseline.correct, "correct": self.transplanted.correct,
                              "baseline_p_gold": self.baseline.p_gold, "p_gold": self.transplanted.p_gold}])

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for name, out in (("baseline", self.baseline), (f"transplant {self.source}->{self.target}", self.transplanted)):
            rows.append({"run": name, "output": out.text, "correct": out.correct, "p_gold": out.p_gold,
                         **{f"p[{opt.strip()}]": p for opt, p in zip(self.options, out.option_p)}})
        return pd.DataFrame(rows)

    def figure(self):
        import plotly.graph_objects as go

        labels = [o.strip() or repr(o) for o in self.options]
        moved = f"transplant {self.source}->{self.target}"
        fig = go.Figure([go.Bar(name="baseline", x=labels, y=self.baseline.option_p),
                         go.Bar(name=moved, x=labels, y=self.transplanted.option_p)])
        fig.update_layout(barmode="group", yaxis_title="probability",
                          title=f"{self.item_id} ({self.lang}, {self.direction})")
        return fig


def transplant(handle: ModelHandle, item: Item, s: int, t: int, site: str = "mlp", direction: str | None = None,
               max_new_tokens: int = 20, stop_at_newline: bool = True, aux_item: Item | None = None) -> TransplantRun:
    """Answer `item` without and with the transplant of source layer `s` into target layer `t`.

    `aux_item`: take the auxiliary prompt from this other item instead (the mismatched-source
    control). Generation is greedy; `stop_at_newline` ends it at the first newline token.
    """
    check_site(site)
    limits.check("max_new_tokens", max_new_tokens)
    s, t = engine.check_layer(handle, s, "source layer"), engine.check_layer(handle, t, "target layer")
    direction = check_direction(direction or default_direction(item.task))
    case = make_case(item, direction)
    donor = make_case(aux_item, direction) if aux_item is not None else case
    answer = answer_for(handle, case.item)
    vector = source_vectors(handle, engine.as_ids(handle, donor.aux_prompt), site)[s]
    baseline = _plain_row(handle, case, answer, site, None, None, "generation", max_new_tokens, stop_at_newline)
    moved = _plain_row(handle, case, answer, site, t, vector, "generation", max_new_tokens, stop_at_newline)
    return TransplantRun(handle.facts.spec, item.id, item.task, item.lang, site, direction, s, t, case.item.prompt,
                         donor.aux_prompt, donor.item.id, list(answer.texts), case.item.golds, baseline, moved)


# --------------------------------------------------------------------------- the grid

@dataclass
class TransplantGrid(Result):
    """Per item and (source, target) pair: correctness and gold probability, for the matched
    auxiliary prompt and (when run) the mismatched control, next to the no-transplant baseline."""

    model: str
    task: str
    lang: str
    site: str
    direction: str
    mode: str
    scoring: str
    sources: list[int]
    targets: list[int]
    items: list[Item]  # as answered (main prompts)
    aux_prompts: list[str]
    control_ids: list[str] | None  # per item: the item whose auxiliary prompt the control used
    chance: np.ndarray  # (n,) chance level of each item (NaN for open answers)
    baseline_correct: np.ndarray  # (n,)
    baseline_p: np.ndarray  # (n,)
    correct: np.ndarray  # (n, S, T)
    p: np.ndarray  # (n, S, T)
    control_correct: np.ndarray | None
    control_p: np.ndarray | None
    baseline_texts: list[str] | None
    texts: np.ndarray | None  # (n, S, T) of str, generation scoring only
    control_texts: np.ndarray | None
    seconds: float

    @property
    def params(self) -> dict[str, Any]:
        return {"site": self.site, "direction": self.direction, "mode": self.mode, "scoring": self.scoring,
                "sources": self.sources, "targets": self.targets, "control": self.has_control}

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def has_control(self) -> bool:
        return self.control_correct is not None

    @property
    def baseline_accuracy(self) -> float:
        return float(self.baseline_correct.mean())

    @property
    def chance_level(self) -> float:
        return float(np.mean(self.chance)) if not np.isnan(self.chance).any() else float("nan")

    def accuracy(self, control: bool = False) -> np.ndarray:
        """(S, T) accuracy of each pair."""
        return self._table(control, "correct").mean(axis=0)

    def delta_p(self, control: bool = False) -> np.ndarray:
        """(S, T) mean change of the gold probability against no transplant."""
        return (self._table(control, "p") - self.baseline_p[:, None, None]).mean(axis=0)

    def _table(self, control: bool, what: str) -> np.ndarray:
        if control and not self.has_control:
            raise InputError("This grid was run without the mismatched-source control (control=True).")
        return getattr(self, f"control_{what}" if control else what)

    def _index(self, s: int, t: int) -> tuple[int, int]:
        if s not in self.sources or t not in self.targets:
            raise InputError(f"The pair ({s}, {t}) is not in this grid: sources {self.sources}, "
                             f"targets {self.targets}.")
        return self.sources.index(s), self.targets.index(t)

    def to_frame(self) -> pd.DataFrame:
        """One row per (source, target) pair, matched and control side by side."""
        rows = []
        acc, dp = self.accuracy(), self.delta_p()
        cacc = self.accuracy(True) if self.has_control else None
        cdp = self.delta_p(True) if self.has_control else None
        for i, s in enumerate(self.sources):
            for j, t in enumerate(self.targets):
                rows.append({
                    "lang": self.lang, "source": s, "target": t, "accuracy": acc[i, j],
                    "control_accuracy": cacc[i, j] if cacc is not None else np.nan,
                    "delta_p_gold": dp[i, j], "control_delta_p_gold": cdp[i, j] if cdp is not None else np.nan,
                    "baseline_accuracy": self.baseline_accuracy, "chance": self.chance_level, "n_items": self.n_items,
                })
        return pd.DataFrame(rows)

    def cell(self, s: int, t: int) -> pd.DataFrame:
        """Per item for one pair: baseline vs transplanted (vs control) correctness, gold
        probability and, for generation grids, the outputs."""
        i, j = self._index(s, t)
        rows = []
        for n, item in enumerate(self.items):
            row = {"id": item.id, "gold": item.golds[0] if item.label is None else item.choices[item.label],
                   "baseline_correct": bool(self.baseline_correct[n]), "correct": bool(self.correct[n, i, j]),
                   "baseline_p_gold": float(self.baseline_p[n]), "p_gold": float(self.p[n, i, j])}
            if self.has_control:
                row.update(control_source=self.control_ids[n], control_correct=bool(self.control_correct[n, i, j]),
                           control_p_gold=float(self.control_p[n, i, j]))
            if self.texts is not None:
                row.update(baseline_output=self.baseline_texts[n], output=self.texts[n, i, j])
                if self.has_control:
                    row["control_output"] = self.control_texts[n, i, j]
            rows.append(row)
        return pd.DataFrame(rows)

    def figure(self, metric: str = "accuracy"):
        """Heatmaps over (target, source): matched and, when run, control side by side."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        if metric not in ("accuracy", "delta_p"):
            raise InputError("metric must be 'accuracy' or 'delta_p'.")
        read = self.accuracy if metric == "accuracy" else self.delta_p
        panels = [("matched source", read())]
        if self.has_control:
            panels.append(("control: another item's source", read(True)))
        values = np.concatenate([z.ravel() for _, z in panels])
        if metric == "accuracy":
            zmin, zmax, scale, mid = 0.0, 1.0, "Viridis", None
        else:
            bound = float(np.abs(values).max()) or 1.0
            zmin, zmax, scale, mid = -bound, bound, "RdBu", 0.0
        fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[name for name, _ in panels],
                            horizontal_spacing=0.08)
        for col, (name, z) in enumerate(panels, start=1):
            fig.add_trace(go.Heatmap(
                z=z, x=[str(t) for t in self.targets], y=[str(s) for s in self.sources], zmin=zmin, zmax=zmax, zmid=mid,
                colorscale=scale, showscale=col == len(panels), name=name,
                hovertemplate="source %{y} -> target %{x}<br>" + metric + " %{z:.3f}<extra>" + name + "</extra>",
            ), row=1, col=col)
            fig.update_xaxes(title_text="target layer t", type="category", row=1, col=col)
            fig.update_yaxes(title_text="source layer s" if col == 1 else None, type="category", row=1, col=col)
        chance = "n/a" if np.isnan(self.chance_level) else f"{self.chance_level:.2f}"
        fig.update_layout(
            title=(f"XTransplant {self.task}/{self.lang} ({self.direction}, {self.site}, {self.scoring}): "
                   f"{'accuracy' if metric == 'accuracy' else 'change in P(gold)'}; "
                   f"baseline {self.baseline_accuracy:.2f}, chance {chance}, n={self.n_items}"),
            height=max(380, 26 * len(self.sources) + 180),
        )
        return fig

    def summary(self) -> pd.DataFrame:
        """One row of headline numbers, matched and control side by side."""
        return pd.DataFrame([{
            "task": self.task, "lang": self.lang, "site": self.site, "direction": self.direction, "mode": self.mode,
            "scoring": self.scoring, "n_items": self.n_items, "chance": self.chance_level,
            "baseline_accuracy": self.baseline_accuracy, "sources": self.sources, "targets": self.targets,
            "upper_bound": float(any_pair_correct(self.correct).mean()),
            "control_upper_bound": float(any_pair_correct(self.control_correct).mean()) if self.has_control else np.nan,
            "seconds": self.seconds}])


def _layers(handle: ModelHandle, layers: Sequence[int] | None, what: str) -> list[int]:
    if layers is None:
        return list(range(handle.n_layers))
    checked = sorted({engine.check_layer(handle, int(layer), what) for layer in layers})
    if not checked:
        raise InputError(f"Give at least one {what}.")
    return checked


def control_partners(items: Sequence[Item]) -> list[int]:
    """For each item, the index of the item whose auxiliary prompt its control uses: the next one
    (cyclically) with a different gold answer, or simply the next one when all golds agree."""
    n = len(items)
    if n < 2:
        raise InputError("The mismatched-source control needs at least two items.")

    def gold(item: Item) -> str:
        return item.choices[item.label] if item.label is not None and item.choices else item.golds[0]

    partners = []
    for i, item in enumerate(items):
        others = [(i + k) % n for k in range(1, n)]
        partners.append(next((j for j in others if gold(items[j]) != gold(item)), others[0]))
    return partners


def _check_choice(name: str, value: str, options: Sequence[str]) -> str:
    if value not in options:
        raise InputError(f"Unknown {name} {value!r}; choose one of {', '.join(options)}.")
    return value


def transplant_grid(handle: ModelHandle, items: Sequence[Item], site: str = "mlp", mode: str = "overall",
                    target_layer: int | None = None, control: bool = True, scoring: str = "probability",
                    use_cache: bool = True, progress: Progress | None = None, *, direction: str | None = None,
                    sources: Sequence[int] | None = None, targets: Sequence[int] | None = None,
                    max_new_tokens: int = 20, stop_at_newline: bool = True, batch_size: int = 32,
                    fast: bool = True) -> TransplantGrid:
    """Run every (source, target) pair on the items of one task and language.

    mode "overall": `sources` x `targets` (default: every layer); "targetfirst": every source into
    `target_layer`. `control`: also run each pair from a different item's auxiliary prompt.
    `direction`: "en->x" or "x->en" (default: "x->en" for the culture task, "en->x" otherwise).
    `fast=False` runs each pair independently (one auxiliary run, one hooked prompt run and, when
    generating, one generation per pair): the reference the cache-sharing path is tested against.
    `use_cache`: reuse a stored result for the same model, items and parameters.
    """
    items = list(items)
    if not items:
        raise InputError("No items: load a task first.")
    _check_choice("mode", mode, MODES)
    _check_choice("scoring", scoring, SCORINGS)
    check_site(site)
    if len({(it.task, it.lang) for it in items}) > 1:
        raise InputError("A grid covers one task in one language; run one grid per language.")
    if max_new_tokens < 1 or batch_size < 1:
        raise InputError("max_new_tokens and batch_size must be at least 1.")
    direction = check_direction(direction or default_direction(items[0].task))
    if mode == "targetfirst":
        if target_layer is None:
            raise InputError("The 'targetfirst' mode needs a target_layer.")
        targets = [target_layer]
    src, tgt = _layers(handle, sources, "source layer"), _layers(handle, targets, "target layer")
    limits.check("transplant_items", len(items))
    limits.check("transplant_pairs", len(src) * len(tgt))
    limits.check("max_new_tokens", max_new_tokens)
    cases = [make_case(item, direction) for item in items]
    partners = control_partners(items) if control else None
    params = {"site": site, "mode": mode, "sources": src, "targets": tgt, "control": control, "scoring": scoring,
              "direction": direction, "max_new_tokens": max_new_tokens, "stop_at_newline": stop_at_newline,
              "fast": fast}
    settings = _Settings(site, scoring, src, tgt, max_new_tokens, stop_at_newline, batch_size)
    return cached("transplant_grid", handle, params, cases,
                  lambda: _grid(handle, cases, partners, settings, mode, direction, fast, progress), use_cache)


@dataclass(frozen=True)
class _Settings:
    site: str
    scoring: str
    sources: list[int]
    targets: list[int]
    max_new_tokens: int
    stop_at_newline: bool
    batch_size: int

    @property
    def generate(self) -> bool:
        return self.scoring == "generation"


Key = tuple[str, int, int]  # (row kind, source index, target index); ("baseline", -1, -1)
BASELINE: Key = ("baseline", -1, -1)


def _row_keys(kinds: Sequence[str], cfg: _Settings) -> list[Key]:
    return [BASELINE] + [(kind, a, b) for kind in kinds
                         for a in range(len(cfg.sources)) for b in range(len(cfg.targets))]


def _fast_item(handle: ModelHandle, case: Case, answer: Answer, vectors: Mapping[int, torch.Tensor],
               donors: dict[str, int], kinds: Sequence[str], cfg: _Settings) -> dict[Key, Outcome]:
    """Every row of one item over one shared prefix, `batch_size` rows per pass; `vectors[j]` holds
    the (n_layers, d_model) source vectors of item j's auxiliary prompt."""
    pre = prefix(handle, engine.as_ids(handle, case.item.prompt))
    keys = _row_keys(kinds, cfg)
    targets = [None if k == BASELINE else cfg.targets[k[2]] for k in keys]
    zero = torch.zeros_like(vectors[donors["matched"]][0])
    rows = torch.stack([zero if k == BASELINE else vectors[donors[k[0]]][cfg.sources[k[1]]] for k in keys])
    stop = engine.stop_ids(handle, cfg.stop_at_newline) if cfg.generate else frozenset()
    outcomes: dict[Key, Outcome] = {}
    for start in range(0, len(keys), cfg.batch_size):
        part = slice(start, start + cfg.batch_size)
        out = run_rows(handle, pre, cfg.site, targets[part], rows[part], answer.tokens,
                       cfg.max_new_tokens if cfg.generate else 0, stop)
        correct, p_gold = _judge(answer, out.logprob.cpu(), out.greedy.cpu())
        option_p = out.logprob.exp().cpu().tolist()
        for r, key in enumerate(keys[part]):
            text = handle.decode(out.new_ids[r]) if cfg.generate else None
            ok = score_text(case.item, text) if cfg.generate else bool(correct[r])
            outcomes[key] = Outcome(ok, float(p_gold[r]), option_p[r], text)
    return outcomes


def _plain_item(handle: ModelHandle, case: Case, cases: Sequence[Case], answer: Answer, donors: dict[str, int],
                kinds: Sequence[str], cfg: _Settings) -> dict[Key, Outcome]:
    """Every row of one item as independent runs, each pair with its own auxiliary run."""
    args = (cfg.scoring, cfg.max_new_tokens, cfg.stop_at_newline)
    outcomes = {BASELINE: _plain_row(handle, case, answer, cfg.site, None, None, *args)}
    for key in _row_keys(kinds, cfg)[1:]:
        kind, a, b = key
        aux = engine.as_ids(handle, cases[donors[kind]].aux_prompt)
        vector = source_vectors(handle, aux, cfg.site)[cfg.sources[a]]
        outcomes[key] = _plain_row(handle, case, answer, cfg.site, cfg.targets[b], vector, *args)
    return outcomes


def _grid(handle: ModelHandle, cases: list[Case], partners: list[int] | None, cfg: _Settings, mode: str,
          direction: str, fast: bool, progress: Progress | None) -> TransplantGrid:
    start = time.perf_counter()
    n, shape = len(cases), (len(cases), len(cfg.sources), len(cfg.targets))
    kinds = ["matched"] + (["control"] if partners is not None else [])
    correct = {k: np.zeros(shape, bool) for k in kinds}
    p_gold = {k: np.zeros(shape) for k in kinds}
    texts = {k: np.empty(shape, dtype=object) for k in kinds}
    base_correct, base_p, base_texts = np.zeros(n, bool), np.zeros(n), []
    # Under `accelerate launch` each process runs a contiguous share of the items; an item's rows
    # never meet another item's in a batch, so its outcomes do not depend on the split.
    mine = distributed.share(n)
    donors = [{"matched": i, "control": partners[i] if partners is not None else i} for i in range(n)]
    vectors = {}
    if fast:  # each auxiliary prompt of the share runs once; a control borrows its partner's vectors
        needed = sorted({j for i in mine.positions for j in donors[i].values()})
        vectors = {j: source_vectors(handle, engine.as_ids(handle, cases[j].aux_prompt), cfg.site) for j in needed}
    shared = []
    for k, i in enumerate(mine.positions):
        if progress:
            progress(k / len(mine.positions), f"XTransplant: item {k + 1}/{len(mine.positions)}")
        case = cases[i]
        answer = answer_for(handle, case.item)
        if fast:
            shared.append(_fast_item(handle, case, answer, vectors, donors[i], kinds, cfg))
        else:
            shared.append(_plain_item(handle, case, cases, answer, donors[i], kinds, cfg))
    for i, outcomes in enumerate(mine.gather(shared)):
        base = outcomes.pop(BASELINE)
        base_correct[i], base_p[i] = base.correct, base.p_gold
        base_texts.append(base.text)
        for (kind, a, b), out in outcomes.items():
            correct[kind][i, a, b], p_gold[kind][i, a, b], texts[kind][i, a, b] = out.correct, out.p_gold, out.text
    if progress:
        progress(1.0, "XTransplant: done")
    ctrl, gen = partners is not None, cfg.generate
    return TransplantGrid(
        model=handle.facts.spec, task=cases[0].item.task, lang=cases[0].lang, site=cfg.site, direction=direction,
        mode=mode, scoring=cfg.scoring, sources=list(cfg.sources), targets=list(cfg.targets),
        items=[c.item for c in cases], aux_prompts=[c.aux_prompt for c in cases],
        control_ids=[cases[j].item.id for j in partners] if ctrl else None,
        chance=np.array([chance_level(c.item, cfg.scoring) for c in cases]),
        baseline_correct=base_correct, baseline_p=base_p, correct=correct["matched"], p=p_gold["matched"],
        control_correct=correct["control"] if ctrl else None, control_p=p_gold["control"] if ctrl else None,
        baseline_texts=base_texts if gen else None, texts=texts["matched"] if gen else None,
        control_texts=texts["control"] if gen and ctrl else None, seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- read-outs

Grids = TransplantGrid | Sequence[TransplantGrid] | Mapping[str, TransplantGrid]


def _grid_list(grids: Grids) -> list[TransplantGrid]:
    if isinstance(grids, TransplantGrid):
        return [grids]
    out = list(grids.values()) if isinstance(grids, Mapping) else list(grids)
    if not out:
        raise InputError("No grids given.")
    return out


def _pair(best: BestPair | None) -> str:
    return "" if best is None else f"{best.source}->{best.target}"


def _head(grid: TransplantGrid) -> dict:
    return {"task": grid.task, "lang": grid.lang, "site": grid.site, "direction": grid.direction,
            "scoring": grid.scoring, "chance": grid.chance_level}


def upper_bound(grids: Grids) -> pd.DataFrame:
    """Per grid (language): the baseline, the best single pair chosen on all items (in-sample),
    and the instance-aware upper bound (an item counts as correct if any pair answers it), each for
    the matched source and the mismatched control side by side. The control columns are NaN for a
    grid run without control."""
    rows = []
    for grid in _grid_list(grids):
        best = best_pair(grid.correct, grid.sources, grid.targets)
        row = {**_head(grid), "n_items": grid.n_items, "baseline": grid.baseline_accuracy,
               "best_pair": _pair(best), "best_pair_accuracy": best.accuracy,
               "control_best_pair": "", "control_best_pair_accuracy": np.nan,
               "upper_bound": float(any_pair_correct(grid.correct).mean()), "control_upper_bound": np.nan}
        if grid.has_control:
            cbest = best_pair(grid.control_correct, grid.sources, grid.targets)
            row.update(control_best_pair=_pair(cbest), control_best_pair_accuracy=cbest.accuracy,
                       control_upper_bound=float(any_pair_correct(grid.control_correct).mean()))
        rows.append(row)
    return pd.DataFrame(rows)


def scaling_strategy(grids: Grids, n_sample: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The offline scaling strategy, per grid (language): choose the best pair on a sample split
    (`n_sample` items, default half; ties: smallest target, then largest source) and report its
    accuracy on the unseen rest, next to the baseline on the same unseen items, for the matched
    source and the mismatched control side by side. Splits come from `split_items`, so languages
    sharing item ids share the split."""
    rows = []
    for grid in _grid_list(grids):
        k = n_sample if n_sample is not None else grid.n_items // 2
        sample, _ = split_items(grid.items, k, seed)
        chosen = {item.id for item in sample}
        in_sample = np.array([item.id in chosen for item in grid.items])
        best = best_pair(grid.correct[in_sample], grid.sources, grid.targets)
        row = {**_head(grid), "n_sample": int(in_sample.sum()), "n_unseen": int((~in_sample).sum()),
               "baseline_unseen": float(grid.baseline_correct[~in_sample].mean()),
               "pair": _pair(best), "sample_accuracy": best.accuracy,
               "unseen_accuracy": pair_accuracy(grid.correct[~in_sample], grid.sources, grid.targets, best),
               "control_pair": "", "control_sample_accuracy": np.nan, "control_unseen_accuracy": np.nan}
        if grid.has_control:
            cbest = best_pair(grid.control_correct[in_sample], grid.sources, grid.targets)
            row.update(control_pair=_pair(cbest), control_sample_accuracy=cbest.accuracy,
                       control_unseen_accuracy=pair_accuracy(grid.control_correct[~in_sample], grid.sources,
                                                             grid.targets, cbest))
        rows.append(row)
    return pd.DataFrame(rows)
