"""Comparison: a model against itself differs by zero; two models differ by their results subtracted."""

import numpy as np
import pytest

from workbench.compare import VIEWS, compare
from workbench.errors import InputError

TRANSPLANT = {"task": "capitals", "lang": "fr", "n_items": 4, "layers": [0, 1]}
PIVOT = {"src_lang": "fr", "tgt_lang": "de", "n_items": 12, "k_shot": 2}


@pytest.fixture(scope="module")
def two_tiny(tiny_folders, tmp_path_factory):
    import workbench
    from workbench.tiny import build_tiny_model

    other = build_tiny_model("gemma3", tmp_path_factory.mktemp("other") / "g", seed=1)
    return workbench.load(str(tiny_folders["gemma3"])), workbench.load(str(other))


@pytest.mark.parametrize("view,params", [("transplant", TRANSPLANT), ("pivot", PIVOT)])
def test_self_comparison_is_zero(two_tiny, view, params):
    a, _ = two_tiny
    comp = compare([a, a], view, params)
    diff = comp.difference()
    for v in VIEWS[view].values:
        assert np.allclose(diff[f"{v}_diff"].dropna(), 0.0)
    assert len(diff) == len(comp.frames[0])


@pytest.mark.parametrize("view,params", [("transplant", TRANSPLANT), ("pivot", PIVOT)])
def test_difference_is_results_subtracted(two_tiny, view, params):
    a, b = two_tiny
    comp = compare([a, b], view, params)
    spec = VIEWS[view]
    merged = {**spec.defaults, **params}
    fa = spec.frame(spec.run(a, merged, None)).set_index(list(spec.keys))
    fb = spec.frame(spec.run(b, merged, None)).set_index(list(spec.keys))
    diff = comp.difference().set_index(list(spec.keys))
    for v in spec.values:
        expected = (fb[v] - fa[v]).reindex(diff.index)
        np.testing.assert_allclose(diff[f"{v}_diff"].to_numpy(), expected.to_numpy(), equal_nan=True)
    # two different models do differ somewhere (random tiny models may both score 0 accuracy)
    assert any((diff[f"{v}_diff"].fillna(0) != 0).any() for v in spec.values)


def test_figures_and_html(two_tiny):
    a, b = two_tiny
    comp = compare([a, b], "transplant", TRANSPLANT)
    assert len(comp.figure().data) == 2
    assert comp.difference_figure().data[0].type == "heatmap"
    page = comp.to_html()
    assert page.startswith("<!doctype html>") and "plotly" in page and "minus" in page


def test_bad_requests(two_tiny):
    a, _ = two_tiny
    with pytest.raises(InputError, match="2 to 4"):
        compare([a], "pivot")
    with pytest.raises(InputError, match="Unknown comparison"):
        compare([a, a], "nope")
    with pytest.raises(InputError, match="Unknown parameter"):
        compare([a, a], "pivot", {"layers": 3})


def test_tab_handler(tiny_folders, two_tiny):
    import gradio as gr

    from workbench.ui.tab_compare import export_compare, run_compare

    a, b_spec = str(tiny_folders["gemma3"]), two_tiny[1].facts.spec
    note, side, diff_plot, table, diff, comp = run_compare([a], b_spec, "transplant", "capitals", "fr", "de", 4,
                                                           progress=None)
    assert "Compared" in note and set(table["model"]) == set(comp.models)
    files = export_compare(comp)
    assert files[0].endswith(".html") and files[1].endswith(".csv")
    with pytest.raises(gr.Error, match="2 to 4"):
        run_compare([a], "", "pivot", "capitals", "fr", "de", 4, progress=None)
    with pytest.raises(gr.Error, match="at least 1"):
        run_compare([a], b_spec, "pivot", "capitals", "fr", "de", 0, progress=None)
    with pytest.raises(gr.Error, match="Run a comparison first"):
        export_compare(None)
