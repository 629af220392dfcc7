"""The English pivot tab's handlers, called directly on a tiny model (no browser)."""

import json

import gradio as gr
import pandas as pd
import pytest

from probes import pivot as lens
from probes import representation as rep
from workbench import cache
from workbench.ui import tab_pivot as tab

CSV = "concept,en,de,zh\ncat,cat,Katze,猫\ndog,dog,Hund,狗\nsun,sun,Sonne,太阳\nwater,water,Wasser,水\nmoon,moon,Mond,月亮\n"


@pytest.fixture(scope="module")
def spec(tiny_folders):
    return str(tiny_folders["gemma3"])


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "RESULTS", cache.ResultCache(root=tmp_path))


@pytest.fixture
def upload(tmp_path):
    path = tmp_path / "words.csv"
    path.write_text(CSV, encoding="utf-8")
    return str(path)


def test_run_pivot_on_an_upload(spec, upload):
    status, fig, dropped, items, result = tab.run_pivot(spec, "Uploaded CSV", upload, "translation", "de", "zh", 2, 0,
                                                        60, progress=None)
    assert isinstance(result, lens.PivotResult) and result.n_items == 5 and dropped.empty
    assert "**5 items** kept" in status and "P(en) peaks at layer" in status
    assert len(items) == 5 and "P(zh)" in items.columns
    csv_files = tab.export_pivot(result, "csv")
    assert len(pd.read_csv(csv_files[0])) == 5 * 2 and len(pd.read_csv(csv_files[1])) == 5 * 2
    with open(tab.export_pivot(result, "json")[0], encoding="utf-8") as fh:
        assert json.load(fh)["tgt_lang"] == "zh"


def test_builtin_lists_and_cloze(spec):
    *_, months = tab.run_pivot(spec, "CLDR months", None, "translation", "fr", "ja", 1, 0, 6, progress=None)
    assert months.n_items + len(months.dropped) == 6
    *_, cloze = tab.run_pivot(spec, "Concept list (committed)", None, "cloze", "", "de", 1, 0, 5, progress=None)
    assert cloze.task == "cloze" and cloze.items[0]["prompt"].endswith('Deutsch: "')


@pytest.mark.parametrize("args, message", [
    (("Concept list (committed)", None, "translation", "fr", "xx", 2), "Unknown language code 'xx'"),
    (("Concept list (committed)", None, "translation", "fr", "sw", 2), "No words for 'sw'"),
    (("Concept list (committed)", None, "translation", "", "zh", 2), "Choose a source language"),
    (("Uploaded CSV", None, "translation", "de", "zh", 2), "Upload a CSV file"),
    (("Uploaded CSV", "EMPTY", "translation", "de", "zh", 2), "empty"),
    (("Uploaded CSV", "UPLOAD", "translation", "de", "zh", 9), "larger than the data"),
])
def test_bad_input_is_a_clear_error(spec, upload, tmp_path, args, message):
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    source, file, *rest = args
    file = {"EMPTY": str(empty), "UPLOAD": upload}.get(file, file)
    with pytest.raises(gr.Error, match=message):
        tab.run_pivot(spec, source, file, *rest, 0, 60, progress=None)


def test_export_before_run():
    with pytest.raises(gr.Error, match="Run the pivot lens first"):
        tab.export_pivot(None, "csv")


def test_grid(spec):
    fig, path = tab.run_grid(spec, "the cat sat on the mat", 3)
    assert fig.data[0].z.shape[0] == 2 and len(pd.read_csv(path)) % 3 == 0
    with pytest.raises(gr.Error, match="empty"):
        tab.run_grid(spec, "", 3)


def test_map_and_slider(spec, upload, monkeypatch):
    fig, scores, slider, result = tab.run_map(spec, "Uploaded CSV", upload, "en, de, zh", "{word}", 40, "pca", 12,
                                              progress=None)
    assert isinstance(result, rep.RepresentationResult) and slider["maximum"] == 1 and slider["value"] == 1
    assert sum(len(t.x) for t in fig.data) == 15
    monkeypatch.setattr(rep, "last_token_residuals", None)  # re-plotting must not run the model
    fig0, same = tab.replot_map(result, 0, "pca")
    assert same is result and "layer 0" in fig0.layout.title.text
    assert tab.replot_map(None, 0, "pca")[1] is None  # a slider moved before any map: no error
    scores_csv, points_csv = tab.export_map(result, 0)
    assert len(pd.read_csv(scores_csv)) == 2 and len(pd.read_csv(points_csv)) == 15
    with pytest.raises(gr.Error, match="at least two language"):
        tab.run_map(spec, "Uploaded CSV", upload, "en", "{word}", 40, "pca", 0, progress=None)
    with pytest.raises(gr.Error, match="must contain"):
        tab.run_map(spec, "Uploaded CSV", upload, "en, de", "word", 40, "pca", 0, progress=None)
    with pytest.raises(gr.Error, match="no fr column"):
        tab.run_map(spec, "Uploaded CSV", upload, "en, fr", "{word}", 40, "pca", 0, progress=None)
