"""The XTransplant tab's handlers, called directly (no browser) on a tiny model."""

import json

import gradio as gr
import pandas as pd
import pytest

from workbench.ui import tab_transplant as tab


@pytest.fixture(scope="module")
def spec(tiny_folders):
    return str(tiny_folders["gemma3"])


@pytest.fixture(scope="module")
def grids(spec):
    status, fig, strategy, bound, grids, picker = tab.run_grids(
        spec, "capitals", ["fr", "de"], tab.TASK_DEFAULT, "mlp", "overall", 0, "all", "probability", 4, 4, True, 2, 0,
        progress=None)
    assert set(grids) == {"fr", "de"} and "baseline" in status and "control" in status
    assert list(strategy["lang"]) == ["fr", "de"] and {"pair", "control_pair", "unseen_accuracy",
                                                        "control_unseen_accuracy"} <= set(strategy.columns)
    assert {"upper_bound", "control_upper_bound", "chance", "baseline"} <= set(bound.columns)
    assert len(fig.data) == 2 and picker["value"] == "fr"
    return grids


def test_parse_layers():
    assert tab.parse_layers("all", 18) is None and tab.parse_layers("", 18) is None
    assert tab.parse_layers("all:6", 18) == [0, 6, 12]
    assert tab.parse_layers("0-17:8", 18) == [0, 8, 16]
    assert tab.parse_layers("3, 1;1 2", 18) == [1, 2, 3]
    for bad in ("0-20", "x", "0-4:0", "-1"):
        with pytest.raises(ValueError):
            tab.parse_layers(bad, 18)


def test_task_list_has_only_scorable_tasks():
    tasks = tab.transplant_tasks()
    assert {"word_translation", "capitals", "xnli", "globalopinion", "xquad"} <= set(tasks)
    assert "xlsum" not in tasks


def test_heatmap_cell_and_export(spec, grids):
    fig = tab.show_heatmap(grids, "de", "change in P(gold)")
    assert "change in P(gold)" in fig.layout.title.text and "/de" in fig.layout.title.text
    note, table = tab.show_cell(spec, grids, "fr", 1, 0, 3)
    assert "generated now" in note and len(table) == 4
    assert {"baseline_output", "output", "control_output", "control_source"} <= set(table.columns)
    files = tab.export_grids(grids, "csv", 2, 0)
    assert len(files) == 3 and len(pd.read_csv(files[0])) == 2 * 4  # two languages x 2 x 2 pairs
    (blob,) = tab.export_grids(grids, "json", 2, 0)
    data = json.load(open(blob, encoding="utf-8"))
    assert {"grids", "cells", "strategy", "upper_bound"} <= set(data)


def test_handler_errors_are_readable(spec, grids):
    with pytest.raises(gr.Error, match="at least one language"):
        tab.run_grids(spec, "capitals", [], tab.TASK_DEFAULT, "mlp", "overall", 0, "all", "probability", 4, 4, True,
                      0, 0, progress=None)
    with pytest.raises(gr.Error, match="Layers must lie"):
        tab.run_grids(spec, "capitals", ["fr"], tab.TASK_DEFAULT, "mlp", "overall", 0, "0-9", "probability", 4, 4,
                      True, 0, 0, progress=None)
    with pytest.raises(gr.Error, match="Run the grid first"):
        tab.show_heatmap(None, "fr", "accuracy")
    with pytest.raises(gr.Error, match="not in this grid"):
        tab.show_cell(spec, grids, "fr", 0, 5, 3)
    with pytest.raises(gr.Error, match="sample split"):
        tab.export_grids(grids, "csv", 9, 0)
