"""Exports written for the app's download buttons read back exactly."""

import csv

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
