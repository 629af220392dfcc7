"""Run one probe or evaluation on two to four models and put the results side by side.

Each kind of analysis is described by a `View`: how to run it on a model, how to flatten its
result into a long table (`keys` identify a row, `values` are compared), and how to draw the
difference. The comparison itself is generic: the same table code, difference and HTML report
serve the pivot lens, retrieval heads, XTransplant grids and evaluation tasks, and each model's
panel is its result's own `figure()` (one panel per model, as LIT duplicates a module per model).
Results come from each probe's own cache, so comparing a model that was already probed costs no
model run.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from . import limits
from .errors import InputError
from .models import ModelHandle, load
from .progress import Progress
from .results import Result

MAX_MODELS = 4
BLOCK_GAP = 0.08  # paper width between two models' panels: room for a colour bar


@dataclass(frozen=True)
class View:
    name: str
    title: str
    run: Callable[[ModelHandle, dict, Progress | None], Any]
    frame: Callable[[Any], pd.DataFrame]
    keys: tuple[str, ...]
    values: tuple[str, ...]
    plot: str  # how the difference is drawn: "lines" | "heatmap" | "bars"
    x: str
    y: str | None = None
    defaults: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- the views

def _pivot_run(handle: ModelHandle, params: dict, progress: Progress | None):
    from probes.pivot import pivot

    from .datasets.lexicon import load_concepts

    src, tgt, n = params["src_lang"], params["tgt_lang"], int(params["n_items"])
    words = load_concepts([src, tgt, "en"]).head(n)
    return pivot(handle, words, task=params["task"], src_lang=src, tgt_lang=tgt, k_shot=int(params["k_shot"]),
                 progress=progress)


def _pivot_frame(result) -> pd.DataFrame:
    frame = result.summary()
    return frame[["layer", "metric", "value", "lo", "hi"]].rename(columns={"metric": "series"})


def _retrieval_run(handle: ModelHandle, params: dict, progress: Progress | None):
    from probes.retrieval import retrieval_scores

    return retrieval_scores(handle, lang=params["lang"], lengths=tuple(params["lengths"]),
                            depths=tuple(params["depths"]), n_needles=int(params["n_needles"]), progress=progress)


def _retrieval_frame(result) -> pd.DataFrame:
    return result.to_frame()[["layer", "head", "score"]]


def _transplant_run(handle: ModelHandle, params: dict, progress: Progress | None):
    from probes.transplant import transplant_grid

    from .datasets.tasks import load_task

    items = load_task(params["task"], params["lang"])[: int(params["n_items"])]
    layers = params.get("layers")
    return transplant_grid(handle, items, site=params["site"], control=bool(params["control"]),
                           sources=layers, targets=layers, progress=progress)


def _transplant_frame(result) -> pd.DataFrame:
    return result.to_frame()[["source", "target", "accuracy", "delta_p_gold"]]


def _eval_run(handle: ModelHandle, params: dict, progress: Progress | None):
    from .evals.harness import evaluate

    return evaluate(handle, params["task"], params["langs"], n=params.get("n"), progress=progress)


def _eval_frame(result) -> pd.DataFrame:
    frame = result.to_frame()
    return frame[["lang", "score", "ci_low", "ci_high"]].rename(columns={"ci_low": "lo", "ci_high": "hi"})


VIEWS: dict[str, View] = {v.name: v for v in [
    View("pivot", "English-pivot lens", _pivot_run, _pivot_frame, ("layer", "series"), ("value",), "lines", "layer",
         defaults={"task": "translation", "src_lang": "fr", "tgt_lang": "zh", "k_shot": 4, "n_items": 60}),
    View("retrieval", "Retrieval heads", _retrieval_run, _retrieval_frame, ("layer", "head"), ("score",), "heatmap",
         "layer", "head", defaults={"lang": "en", "lengths": [256], "depths": [0.25, 0.75], "n_needles": 2}),
    View("transplant", "XTransplant grid", _transplant_run, _transplant_frame, ("source", "target"),
         ("accuracy", "delta_p_gold"), "heatmap", "target", "source",
         defaults={"task": "capitals", "lang": "fr", "site": "mlp", "control": False, "n_items": 20, "layers": None}),
    View("evaluate", "Evaluation", _eval_run, _eval_frame, ("lang",), ("score",), "bars", "lang",
         defaults={"task": "capitals", "langs": ["en", "fr", "de", "zh", "ja"], "n": 20}),
]}


# --------------------------------------------------------------------------- the comparison

@dataclass
class Comparison(Result):
    """Results of one view on several models, aligned on the view's keys."""

    view: str
    params: dict
    models: list[str]
    results: list[Any]
    frames: list[pd.DataFrame]

    @property
    def model(self) -> str:
        return " vs ".join(self.models)

    @property
    def spec(self) -> View:
        return VIEWS[self.view]

    def summary(self) -> pd.DataFrame:
        """Every model's own summary, one after the other, with a `model` column."""
        return pd.concat([r.summary().assign(model=m) for m, r in zip(self.models, self.results)], ignore_index=True)

    def to_frame(self) -> pd.DataFrame:
        """All models' rows in one long table with a `model` column."""
        return pd.concat([f.assign(model=m) for m, f in zip(self.models, self.frames)], ignore_index=True)

    def difference(self, base: int = 0, other: int = 1) -> pd.DataFrame:
        """`other - base` for every compared value, matched on the view's keys (rows one model
        lacks are kept with NaN so nothing disappears silently)."""
        for i in (base, other):
            if not 0 <= i < len(self.models):
                raise InputError(f"Model index {i} out of range: this comparison has {len(self.models)} models.")
        keys, values = list(self.spec.keys), list(self.spec.values)
        a = self.frames[base][keys + values]
        b = self.frames[other][keys + values]
        merged = a.merge(b, on=keys, how="outer", suffixes=("_base", "_other"))
        for v in values:
            merged[f"{v}_diff"] = merged[f"{v}_other"] - merged[f"{v}_base"]
        merged.attrs.update(base=self.models[base], other=self.models[other])
        return merged

    # ---------------------------------------------------------------- figures

    def figure(self, **view: Any):
        """Each model's result drawn by its own `figure(**view)`, side by side."""
        return side_by_side([r.figure(**view) for r in self.results], self.models, f"{self.spec.title}: {self.model}")

    def difference_figure(self, base: int = 0, other: int = 1):
        import plotly.graph_objects as go

        diff = self.difference(base, other)
        v = self.spec.values[0]
        title = f"{self.spec.title}: {self.models[other]} minus {self.models[base]} ({v})"
        if self.spec.plot == "heatmap":
            table = diff.pivot(index=self.spec.y, columns=self.spec.x, values=f"{v}_diff")
            bound = float(np.nanmax(np.abs(table.values))) if np.isfinite(table.values).any() else 1.0
            fig = go.Figure(go.Heatmap(z=table.values, x=table.columns.tolist(), y=table.index.tolist(),
                                       colorscale="RdBu", zmid=0, zmin=-bound or -1, zmax=bound or 1,
                                       colorbar=dict(title="difference")))
            fig.update_yaxes(autorange="reversed", title=self.spec.y)
            fig.update_xaxes(title=self.spec.x)
        elif self.spec.plot == "lines":
            fig = go.Figure()
            for series, part in diff.groupby("series", sort=False):
                if not str(series).startswith("P("):
                    continue
                fig.add_trace(go.Scatter(x=part[self.spec.x], y=part[f"{v}_diff"], mode="lines+markers", name=series))
            fig.add_hline(y=0, line_color="#888")
            fig.update_xaxes(title=self.spec.x)
        else:
            fig = go.Figure(go.Bar(x=diff[self.spec.x], y=diff[f"{v}_diff"], marker_color="#9467bd"))
            fig.add_hline(y=0, line_color="#888")
        fig.update_layout(title=title, template="plotly_white", height=420)
        return fig

    # ---------------------------------------------------------------- report

    def to_html(self) -> str:
        """A self-contained HTML report (plotly.js inlined): figures, difference, tables."""
        figs = [self.figure()] + [self.difference_figure(0, i) for i in range(1, len(self.models))]
        parts = [fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
                 for i, fig in enumerate(figs)]
        params = html.escape(", ".join(f"{k}={v}" for k, v in self.params.items()))
        tables = [f"<h2>{html.escape(m)}</h2>" + f.to_html(index=False, float_format=lambda x: f"{x:.4f}")
                  for m, f in zip(self.models, self.frames)]
        return ("<!doctype html><html><head><meta charset='utf-8'><title>Comparison</title>"
                "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
                "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
                f"<h1>{html.escape(self.spec.title)}: {html.escape(self.model)}</h1>"
                f"<p>Parameters: {params}</p>{''.join(parts)}{''.join(tables)}</body></html>")


def compare(models: Sequence[str | ModelHandle], view: str, params: dict | None = None,
            progress: Progress | None = None) -> Comparison:
    """Run `view` ("pivot", "retrieval", "transplant" or "evaluate") on 2-4 models (specs or
    handles) with the same parameters; each result comes from the probe's cache when it exists."""
    if view not in VIEWS:
        raise InputError(f"Unknown comparison {view!r}; choose one of {', '.join(VIEWS)}.")
    models = [m for m in models if not (isinstance(m, str) and not m.strip())]
    if not 2 <= len(models) <= MAX_MODELS:
        raise InputError(f"Pick 2 to {MAX_MODELS} models to compare (got {len(models)}).")
    spec = VIEWS[view]
    unknown = set(params or {}) - set(spec.defaults)
    if unknown:
        raise InputError(f"Unknown parameter(s) for {view}: {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(spec.defaults)}.")
    merged = {**spec.defaults, **(params or {})}
    # demo mode: refused before any model loads (each probe checks its own caps again)
    for key, cap in (("n_items", "pivot_items" if view == "pivot" else "transplant_items"), ("n", "eval_items")):
        if key in merged:
            limits.check(cap, merged[key])
    names, results, frames = [], [], []
    for i, model in enumerate(models):
        handle = model if isinstance(model, ModelHandle) else load(model.strip())
        name = handle.facts.spec
        if name in names:
            name = f"{name} #{i + 1}"
        part = None
        if progress:
            def part(fraction: float, message: str = "", i=i, name=name) -> None:
                progress((i + fraction) / len(models), f"{name}: {message}")
        result = spec.run(handle, merged, part)
        names.append(name)
        results.append(result)
        frames.append(spec.frame(result).reset_index(drop=True))
    return Comparison(view, merged, names, results, frames)


# --------------------------------------------------------------------------- one panel per model

_AXIS_KEY = re.compile(r"^([xy])axis(\d*)$")
_AXIS_REF = re.compile(r"^([xy])(\d*)( domain)?$")
_AXIS_LINKS = ("anchor", "matches", "overlaying", "scaleanchor")


def side_by_side(figures: Sequence[Any], names: Sequence[str], title: str = ""):
    """One figure holding each of `figures` in its own block, left to right, headed by its name.

    Every axis is renamed and its horizontal domain squeezed into the block (annotations, shapes
    and colour bars move with it), so a figure with subplots keeps its own layout inside its block
    and each result is drawn by its own code; the legend is the first block's."""
    import plotly.graph_objects as go

    width = (1 - BLOCK_GAP * (len(figures) - 1)) / len(figures)
    counts = {"x": 0, "y": 0}
    data, layout, notes, shapes = [], {}, [], []
    for k, (fig, name) in enumerate(zip(figures, names)):
        start = k * (width + BLOCK_GAP)
        traces, axes, block_notes, block_shapes = _place(fig, start, width, counts)
        for trace in traces:
            if k:
                trace.showlegend = False
            data.append(trace)
        layout.update(axes)
        notes += block_notes
        shapes += block_shapes
        own = (fig.layout.title.text or "").replace("<br>", " ")
        notes.append({"text": f"<b>{html.escape(name)}</b>" + (f"<br><sub>{own}</sub>" if own else ""),
                      "xref": "paper", "yref": "paper", "x": start + width / 2, "y": 1, "yshift": 36,
                      "xanchor": "center", "yanchor": "bottom", "showarrow": False})
    first = figures[0].to_plotly_json()["layout"]
    layout.update({k: v for k, v in first.items() if not _AXIS_KEY.match(k) and k not in ("annotations", "shapes", "title")})
    heights = [fig.layout.height for fig in figures if fig.layout.height]
    layout.update(annotations=notes, shapes=shapes, title={"text": title}, height=max(heights, default=480) + 60,
                  margin={"t": 150})
    return go.Figure(data=data, layout=layout)


def _place(fig: Any, start: float, width: float, counts: dict[str, int]):
    """`fig`'s traces, axes, annotations and shapes moved into the paper block [start, start + width],
    its axes renamed after the `counts` axes taken by earlier blocks."""
    renamed: dict[str, str] = {}

    def ref(name: Any) -> Any:
        match = _AXIS_REF.match(name) if isinstance(name, str) else None
        if not match:
            return name  # "paper", "free", or no axis
        letter, number, domain = match.groups()
        if letter + number not in renamed:
            counts[letter] += 1
            renamed[letter + number] = letter + (str(counts[letter]) if counts[letter] > 1 else "")
        return renamed[letter + number] + (domain or "")

    def squeeze(x: Any) -> float:
        return start + float(x) * width

    spec = fig.to_plotly_json()
    axes: dict[str, dict] = {}
    for key, axis in spec["layout"].items():
        match = _AXIS_KEY.match(key)
        if match:
            new = ref(match[1] + match[2])
            axis = {k: ref(v) if k in _AXIS_LINKS else v for k, v in axis.items()}
            if match[1] == "x":
                axis["domain"] = [squeeze(d) for d in axis.get("domain", (0, 1))]
            axes[f"{new[0]}axis{new[1:]}"] = axis
    traces = []
    for trace in (type(t)(t) for t in fig.data):  # copies: the source figure stays as it was
        if "xaxis" in trace:  # a cartesian trace
            x, y = ref(trace.xaxis or "x"), ref(trace.yaxis or "y")
            trace.update(xaxis=x, yaxis=y)
            axes.setdefault(f"xaxis{x[1:]}", {"domain": [squeeze(0), squeeze(1)]}).setdefault("anchor", y)
            axes.setdefault(f"yaxis{y[1:]}", {}).setdefault("anchor", x)
        elif "domain" in trace:  # a table or a pie
            trace.domain.x = [squeeze(d) for d in trace.domain.x or (0, 1)]
        if "colorbar" in trace and trace.showscale is not False:
            trace.colorbar.x = squeeze(1.02 if trace.colorbar.x is None else trace.colorbar.x)
        traces.append(trace)
    notes, shapes = [], []
    for items, out, xs in ((spec["layout"].get("annotations", []), notes, ("x",)),
                           (spec["layout"].get("shapes", []), shapes, ("x0", "x1"))):
        for item in items:
            item = {**item, "xref": ref(item.get("xref", "x")), "yref": ref(item.get("yref", "y"))}  # plotly's defaults
            if item["xref"] == "paper":
                item.update({x: squeeze(item.get(x, 0.5)) for x in xs})
            out.append(item)
    return traces, axes, notes, shapes
