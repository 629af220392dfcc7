"""Training metrics as JSON lines (`metrics.jsonl` in the run folder) and the loss plot.

One JSON object per line, each with an `event`: `start` (total steps), `train` (step, loss,
per-term losses, lr, tokens/s), `eval`, `checkpoint`, `end` (finished / cancelled / failed). The
file is the only channel between a training process and whoever watches it (the app's Train tab,
a notebook, `tail -f`), so a reader never needs the trainer's memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Append-only writer; each line is flushed so a watcher sees it at once."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, event: str, **values: Any) -> dict[str, Any]:
        record = {"event": event, **values}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False, default=float) + "\n")
            fh.flush()
        return record

    def truncate_after(self, step: int) -> None:
        """Drop lines past `step` (written after the checkpoint a resumed run restarts from)."""
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step and r.get("event") != "end"]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All complete lines of a metrics file (a line being written is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def loss_figure(records: list[dict[str, Any]], title: str = "Training loss"):
    """Plotly figure: training loss per step, per-term losses dashed, evaluation loss as markers."""
    import plotly.graph_objects as go

    train = [r for r in records if r.get("event") == "train"]
    evals = [r for r in records if r.get("event") == "eval"]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[r["step"] for r in train], y=[r["loss"] for r in train], mode="lines", name="train loss"))
    terms = sorted({k for r in train for k in r.get("terms", {})})
    if len(terms) > 1:
        for term in terms:
            fig.add_trace(go.Scatter(x=[r["step"] for r in train], y=[r.get("terms", {}).get(term) for r in train],
                                     mode="lines", name=term, line={"dash": "dash"}))
    if evals:
        fig.add_trace(go.Scatter(x=[r["step"] for r in evals], y=[r["eval_loss"] for r in evals],
                                 mode="lines+markers", name="eval loss"))
    fig.update_layout(title=title, xaxis_title="optimizer step", yaxis_title="loss", template="plotly_white",
                      height=360, margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return fig
