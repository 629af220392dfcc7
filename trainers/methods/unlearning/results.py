"""Results of an unlearning pipeline run: the table, per-item scores, saving, loading and plots.

A run folder `WORKBENCH_HOME/unlearning/<name>/` holds `results.csv` (one row per track, method
and checkpoint step: `<set>.<metric>` means, `forget_quality.<set>`, `model_utility`),
`items.csv` (every question's greedy answer and scores), `real_entity_check.csv` (the base
model's answers to the real-entity questions), `run.json` (configuration and notes) and the
pipeline's data files. Step 0 of method `none` is the injected model before unlearning; method
`retain-only` is the model trained without the forgotten entities (Forget Quality's reference).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.errors import InputError
from workbench.paths import atomic_write_text, safe_child, subdir
from workbench.results import Result

TABLE_FILE, ITEMS_FILE, CHECK_FILE, RUN_FILE = "results.csv", "items.csv", "real_entity_check.csv", "run.json"
TRACK_LABELS = {"injected": "injected (invented) entities", "pretrained": "pre-trained (real) entities"}


def results_root() -> Path:
    return subdir("unlearning")


def results_dir(name: str) -> Path:
    """The folder of pipeline run `name` (created if needed)."""
    folder = safe_child(results_root(), name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def list_results() -> list[str]:
    """Names of the saved pipeline runs, newest first."""
    runs = [p for p in results_root().iterdir() if (p / TABLE_FILE).is_file()]
    return [p.name for p in sorted(runs, key=lambda p: (p / TABLE_FILE).stat().st_mtime, reverse=True)]


def _relative_drop(before: float, after: float) -> float:
    """1 - after / before: the share of a score the unlearning removed (NaN when before is 0)."""
    return 1.0 - after / before if before and math.isfinite(before) else math.nan


@dataclass
class UnlearningResults(Result):
    """Every checkpoint's scores of one pipeline run (see the module docstring for the files)."""

    name: str
    table: pd.DataFrame
    items: pd.DataFrame = field(repr=False)
    real_check: pd.DataFrame | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """The base model the entities were injected into."""
        return self.config.get("base_model", "")

    @property
    def params(self) -> dict[str, Any]:
        return self.config

    # ------------------------------------------------------------------ files

    def save(self) -> Path:
        folder = results_dir(self.name)
        self.items.to_csv(folder / ITEMS_FILE, index=False)
        if self.real_check is not None:
            self.real_check.to_csv(folder / CHECK_FILE, index=False)
        atomic_write_text(folder / RUN_FILE, json.dumps({"config": self.config, "notes": self.notes}, indent=2))
        self.table.to_csv(folder / TABLE_FILE, index=False)  # last: its presence marks a complete run
        return folder

    @classmethod
    def load(cls, name: str) -> "UnlearningResults":
        folder = safe_child(results_root(), name)
        if not (folder / TABLE_FILE).is_file():
            known = ", ".join(list_results()) or "none yet"
            raise InputError(f"No unlearning results named {name!r} (saved runs: {known}).")
        meta = json.loads((folder / RUN_FILE).read_text(encoding="utf-8")) if (folder / RUN_FILE).is_file() else {}
        check = pd.read_csv(folder / CHECK_FILE) if (folder / CHECK_FILE).is_file() else None
        return cls(name, pd.read_csv(folder / TABLE_FILE), pd.read_csv(folder / ITEMS_FILE), check,
                   meta.get("notes", []), meta.get("config", {}))

    # ------------------------------------------------------------------ tables

    def to_frame(self) -> pd.DataFrame:
        return self.table

    def summary(self) -> pd.DataFrame:
        """The headline: per track and method, the last checkpoint against the injected model."""
        return self.comparison_frame()

    def comparison_frame(self) -> pd.DataFrame:
        """Injected vs pre-trained entities: per track and method, the last checkpoint against the
        injected model (step 0) on the forget and target sets, and model utility after unlearning."""
        rows = []
        for track, group in self.table.groupby("track", sort=False):
            start = group[group["method"] == "none"]
            if start.empty:
                continue
            start = start.iloc[0]
            for method, runs in group[~group["method"].isin(["none", "retain-only"])].groupby("method", sort=False):
                last = runs.sort_values("step").iloc[-1]
                row = {"track": track, "method": method, "step": int(last["step"])}
                for split in ("forget", "target"):
                    for metric in ("rougeL_recall", "probability"):
                        key = f"{split}.{metric}"
                        row[f"{key} before"] = start[key]
                        row[f"{key} after"] = last[key]
                        row[f"{key} drop"] = _relative_drop(start[key], last[key])
                row["model_utility before"] = start["model_utility"]
                row["model_utility after"] = last["model_utility"]
                rows.append(row)
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ figures

    def figure(self):
        """Forget Quality (log scale) vs Model Utility for every method and checkpoint on the
        injected track, one panel per forgetting set; lines start at the injected model."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        table = self.table[self.table["track"] == "injected"]
        sets = [s for s in ("forget", "target") if f"forget_quality.{s}" in table]
        if table.empty or not sets:
            raise InputError("These results have no Forget Quality to plot (no injected-track rows).")
        fig = make_subplots(rows=1, cols=len(sets), shared_yaxes=True,
                            subplot_titles=[f"Forget Quality on the {s} set" for s in sets])
        start = table[table["method"] == "none"]
        palette = _palette()
        for col, split in enumerate(sets, start=1):
            y = f"forget_quality.{split}"
            for i, (method, runs) in enumerate(table[~table["method"].isin(["none", "retain-only"])].groupby("method", sort=False)):
                path = pd.concat([start, runs.sort_values("step")])
                fig.add_trace(go.Scatter(
                    x=path["model_utility"], y=path[y], mode="lines+markers+text", name=method, legendgroup=method,
                    showlegend=col == 1, text=[f"{s}" for s in path["step"]], textposition="top center",
                    line={"color": palette[i % len(palette)]}, marker={"size": 9},
                    hovertemplate=f"{method}<br>step %{{text}}<br>MU %{{x:.3f}}<br>FQ %{{y:.3g}}<extra></extra>"), row=1, col=col)
            fig.add_trace(go.Scatter(x=start["model_utility"], y=start[y], mode="markers", name="injected (step 0)",
                                     legendgroup="start", showlegend=col == 1,
                                     marker={"symbol": "star", "size": 14, "color": "black"}), row=1, col=col)
            fig.update_xaxes(title_text="Model Utility", row=1, col=col)
        fig.update_yaxes(type="log", title_text="Forget Quality (KS p-value vs retain-only model)", row=1, col=1)
        fig.update_layout(title=f"{self.name}: forget quality vs model utility (labels: step)", template="plotly_white",
                          height=440, margin={"l": 60, "r": 20, "t": 70, "b": 50})
        return fig

    def comparison_figure(self):
        """Relative drop of ROUGE-L recall and answer probability on the forget and target sets,
        per method, for injected vs pre-trained entities (higher = more forgotten)."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        frame = self.comparison_frame()
        if frame.empty:
            raise InputError("These results have no unlearned checkpoints to compare.")
        panels = [("forget", "rougeL_recall"), ("target", "rougeL_recall"), ("forget", "probability"), ("target", "probability")]
        titles = [f"{split} set: {'ROUGE-L recall' if m == 'rougeL_recall' else 'probability'} drop" for split, m in panels]
        fig = make_subplots(rows=2, cols=2, subplot_titles=titles, shared_xaxes=True)
        colors = {"injected": "#1f77b4", "pretrained": "#d62728"}
        for i, (split, metric) in enumerate(panels):
            r, c = divmod(i, 2)
            for track, rows in frame.groupby("track", sort=False):
                fig.add_trace(go.Bar(x=rows["method"], y=rows[f"{split}.{metric} drop"], name=TRACK_LABELS.get(track, track),
                                     legendgroup=track, showlegend=i == 0, marker_color=colors.get(track)), row=r + 1, col=c + 1)
        fig.update_yaxes(title_text="1 - after / before", col=1)
        fig.update_layout(barmode="group", template="plotly_white", height=560,
                          title=f"{self.name}: how much each kind of entity is forgotten",
                          margin={"l": 60, "r": 20, "t": 80, "b": 40})
        return fig


def _palette() -> list[str]:
    import plotly.express as px

    return list(px.colors.qualitative.D3)
