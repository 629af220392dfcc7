"""Exports written for the app's download buttons read back exactly."""

import csv
from pathlib import Path

import pandas as pd

from workbench.ui.common import export_frame

TOKENS = ["\r", "a\rb", "\n", "\r\n", 'say "hi"', "x,y", "森林", " plain"]


def test_csv_export_keeps_cells_with_carriage_returns():
    frame = pd.DataFrame({"token": TOKENS, "prob": [0.5 + i / 100 for i in range(len(TOKENS))]})
    path = export_frame(frame, "roundtrip", "csv")
    back = pd.read_csv(path, keep_default_na=False)
    assert len(back) == len(frame)
    assert back["token"].tolist() == TOKENS and back["prob"].tolist() == frame["prob"].tolist()
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert [r[0] for r in rows[1:]] == TOKENS


def test_json_export_keeps_the_same_cells():
    frame = pd.DataFrame({"token": TOKENS})
    back = pd.read_json(export_frame(frame, "roundtrip", "json"), orient="records")
    assert back["token"].tolist() == TOKENS


def test_prepared_unlearning_data_is_downloadable(tmp_path, monkeypatch):
    """The JSONL files live in the workbench home (anywhere on disk); the page gets copies in the
    export folder, the only place besides the working directory Gradio serves files from."""
    from workbench.ui import tab_unlearning
    from workbench.ui.common import export_dir

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    files, message = tab_unlearning.prepare_training_data(3, 1, 0)
    assert [Path(f).name for f in files] == ["inject.jsonl", "retain.jsonl", "unlearn_injected.jsonl", "splits.jsonl"]
    home = tmp_path / "home" / "unlearning" / "data-3-1-0"
    for f in files:
        assert isinstance(f, str)  # what gr.File accepts
        assert Path(f).parent.parent == export_dir()
        assert Path(f).read_bytes() == (home / Path(f).name).read_bytes()
    assert str(home) in message


def test_export_rows_writes_strict_json_and_one_csv_per_table():
    import json
    import math

    from workbench.ui.common import export_rows

    frame = pd.DataFrame({"token": ["a", "b"], "p": [math.nan, math.inf]})
    csvs = export_rows({"scores": frame, "items": frame.head(1)}, "rows")
    assert [Path(p).name.split("-")[1] for p in csvs] == ["scores", "items"]
    assert pd.read_csv(csvs[1])["token"].tolist() == ["a"]

    def refuse(constant):
        raise ValueError(constant)

    (blob,) = export_rows({"scores": frame}, "rows", "json")
    assert json.loads(Path(blob).read_text(encoding="utf-8"), parse_constant=refuse) == {
        "scores": [{"token": "a", "p": None}, {"token": "b", "p": None}]}
