"""Every tab in a real browser: its main action on small inputs, its export, and a bad input.

Each test opens a fresh page on the live app (the default model, Gemma 3 270M on CPU), sets the
smallest inputs the tab allows, clicks the main button, checks the result that appears (status
text, plot traces, table shape), downloads the export through the page's own link and parses it,
and checks that a bad input ends in a short error toast, never a Python traceback. A screenshot of
every tab lands in test-artifacts/ (`tab_<name>.png`).

Set WORKBENCH_TEST_APP_URL to drive an app that is already running instead of starting one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pytest

from browser import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODEL_TIMEOUT = 180_000  # ms: one default-model action on a slow, shared CPU
UI_TIMEOUT = 30_000
REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def app_url(request):
    return os.environ.get("WORKBENCH_TEST_APP_URL") or request.getfixturevalue("live_app")


@pytest.fixture()
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(app_url, wait_until="domcontentloaded", timeout=120_000)
    page.locator("#model-card").get_by_text("18 layers").wait_for(timeout=MODEL_TIMEOUT)
    yield page
    page.close()


def open_tab(page, name: str) -> None:
    page.locator(f"#tab-{name}-button").click()
    page.locator(f"#tab-{name}").wait_for(state="visible", timeout=UI_TIMEOUT)


def set_value(page, selector: str, value) -> None:
    """Type into a textbox, number or slider's number box; Tab commits it (Gradio reads the value
    on change, not on every keystroke)."""
    box = page.locator(f"{selector} textarea, {selector} input[type=number], {selector} input[type=text], "
                       f"{selector} input:not([type])").first
    box.fill(str(value))
    box.press("Tab")


def choose(page, selector: str, option: str) -> None:
    """Pick an option of a (single-choice) dropdown."""
    page.locator(f"{selector} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def click(page, selector: str) -> None:
    page.locator(selector).click()


def wait_text(page, selector: str, text: str, timeout: int = MODEL_TIMEOUT) -> str:
    page.locator(selector).get_by_text(text).first.wait_for(timeout=timeout)
    return page.locator(selector).inner_text()


def expect_error(page, text: str, timeout: int = MODEL_TIMEOUT) -> str:
    """Wait for an error toast containing `text`; the page shows no traceback."""
    toast = page.locator("[data-testid=toast-text]").filter(has_text=text).first
    toast.wait_for(timeout=timeout)
    message = toast.inner_text()
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and 'File "' not in body, body[-2000:]
    return message


def close_toasts(page) -> None:
    """Close every toast and wait until they are gone (they fade out), so a later wait for "an
    error toast or a result" does not see an old one."""
    for button in page.locator("[data-testid=toast-close]").all():
        button.click()
    page.wait_for_function("() => !document.querySelector('[data-testid=toast-text]')", timeout=UI_TIMEOUT)


def refused(page, field: str, value, button: str, text: str) -> str:
    """Type a bad `value` into `field`, press `button`: the error toast containing `text` (no
    traceback on the page); the toasts are closed before returning."""
    set_value(page, field, value)
    click(page, button)
    message = expect_error(page, text)
    close_toasts(page)
    return message


def plot_traces(page, selector: str) -> list[dict]:
    """Type and name of every trace plotly drew in a gr.Plot (waits until it has drawn)."""
    plot = f"{selector} .js-plotly-plot"
    page.wait_for_function("sel => { const g = document.querySelector(sel); "
                           "return g && g.data && g.data.length > 0 && g.querySelector('.main-svg'); }",
                           arg=plot, timeout=UI_TIMEOUT)
    # _fullData: the traces as drawn (binary-encoded arrays decoded)
    return page.evaluate("sel => { const g = document.querySelector(sel); return g._fullData.map(d => ({type: d.type, "
                         "name: g.data[d.index].name || '', n: (d.x || d.z || []).length})); }", plot)


def table_shape(page, selector: str) -> tuple[int, int]:
    """(data rows, columns) of a gr.Dataframe, as the grid announces them."""
    grid = page.locator(f"{selector} [role=grid]").first
    grid.wait_for(timeout=UI_TIMEOUT)
    return int(grid.get_attribute("aria-rowcount")) - 1, int(grid.get_attribute("aria-colcount"))


def table_headers(page, selector: str) -> list[str]:
    titles = page.locator(f"{selector} th[role=columnheader]").evaluate_all("es => es.map(e => e.title)")
    return list(dict.fromkeys(titles))


def downloads(page, selector: str, tmp_path: Path, count: int) -> list[Path]:
    """Click each download link of a gr.File and save what the browser receives."""
    links = page.locator(f"{selector} a[data-testid=download-link]")
    links.nth(count - 1).wait_for(timeout=MODEL_TIMEOUT)
    assert links.count() == count, [links.nth(i).get_attribute("download") for i in range(links.count())]
    paths = []
    for i in range(count):
        with page.expect_download(timeout=UI_TIMEOUT) as info:
            links.nth(i).click()
        target = tmp_path / info.value.suggested_filename
        info.value.save_as(target)
        paths.append(target)
    return paths


def by_name(paths: list[Path], part: str) -> Path:
    found = [p for p in paths if part in p.name]
    assert len(found) == 1, (part, [p.name for p in paths])
    return found[0]


# --------------------------------------------------------------------------- English pivot


def test_pivot_tab(page, tmp_path):
    open_tab(page, "pivot")
    assert refused(page, "#pivot-max-items", 0, "#pivot-run", "item") == "Use at least one item."

    set_value(page, "#pivot-max-items", 4)
    set_value(page, "#pivot-k", 1)
    click(page, "#pivot-run")
    status = wait_text(page, "#pivot-status", "kept")
    kept = int(re.search(r"(\d+) items kept", status).group(1))
    assert kept >= 1 and "P(zh) peaks at layer" in status
    traces = plot_traces(page, "#pivot-curves")
    curves = {t["name"]: t["n"] for t in traces if t["name"]}  # unnamed traces are the confidence bands
    assert {"fr (input)", "en (English)", "zh (target)"} <= set(curves), traces
    assert set(curves.values()) == {18}, traces  # one point per layer

    page.get_by_text("Items (last layer) and dropped items").click()
    rows, _ = table_shape(page, "#pivot-items")
    assert rows == kept
    assert {"P(fr)", "P(en)", "P(zh)", "answer_rank"} <= set(table_headers(page, "#pivot-items"))

    click(page, "#pivot-export")
    summary_csv, items_csv = (by_name(paths := downloads(page, "#pivot-files", tmp_path, 2), "summary"),
                              by_name(paths, "items"))
    items = pd.read_csv(items_csv)
    assert len(items) == kept * 18 and {"layer", "P(fr)", "P(en)", "P(zh)"} <= set(items.columns)
    summary = pd.read_csv(summary_csv)
    assert set(summary["layer"]) == set(range(18))
    page.locator("#pivot-export-kind").get_by_text("json").click()
    click(page, "#pivot-export")
    page.locator("#pivot-files").get_by_text(".json").wait_for(timeout=UI_TIMEOUT)
    (json_file,) = downloads(page, "#pivot-files", tmp_path, 1)
    data = json.loads(json_file.read_text(encoding="utf-8"))
    assert data and json_file.suffix == ".json"

    # logit-lens grid of the default prompt
    click(page, "#grid-run")
    (heat,) = plot_traces(page, "#grid-plot")
    assert heat["type"] == "heatmap"
    (grid_csv,) = downloads(page, "#grid-file", tmp_path, 1)
    grid = pd.read_csv(grid_csv)
    assert {"layer", "position", "input_token", "rank", "token", "prob"} <= set(grid.columns)
    assert set(grid["layer"]) == set(range(18)) and grid["prob"].between(0, 1).all()

    # representation map: two languages, four words
    assert "at least two language codes" in refused(page, "#map-langs", "en", "#map-run", "language codes")
    set_value(page, "#map-langs", "en, fr")
    set_value(page, "#map-items", 4)
    click(page, "#map-run")
    points = plot_traces(page, "#map-plot")
    assert sum(t["n"] for t in points) == 8, points  # 4 words x 2 languages
    assert plot_traces(page, "#map-scores")
    click(page, "#map-export")
    files = downloads(page, "#map-files", tmp_path, 2)
    layer_points = pd.read_csv(by_name(files, "layer"))
    assert len(layer_points) == 8
    assert "layer" in pd.read_csv(by_name(files, "scores")).columns
    page.locator("#pivot-curves").scroll_into_view_if_needed()
    screenshot(page, "tab_pivot")


# --------------------------------------------------------------------------- Retrieval heads


def test_retrieval_tab(page, tmp_path):
    open_tab(page, "retrieval")
    assert "context length" in refused(page, "#retrieval-lengths", "short", "#retrieval-run", "Cannot read")

    set_value(page, "#retrieval-lengths", "128")
    set_value(page, "#retrieval-depths", "0.5")
    set_value(page, "#retrieval-needles", 1)
    click(page, "#retrieval-run")
    status = wait_text(page, "#retrieval-status", "Retrieval heads per layer type")
    assert "1 of 1 trials kept" in status, status
    (heat,) = plot_traces(page, "#retrieval-heatmap")
    assert heat["type"] == "heatmap"
    rows, _ = table_shape(page, "#retrieval-ranked")
    assert rows == 18 * 4  # every (layer, head) of the default model
    assert table_headers(page, "#retrieval-ranked")[:4] == ["layer", "head", "layer_type", "score"]
    assert table_shape(page, "#retrieval-per-type")[0] == 2  # sliding and full attention layers

    click(page, "#retrieval-export")
    (csv_file,) = downloads(page, "#retrieval-file", tmp_path, 1)
    scores = pd.read_csv(csv_file)
    assert len(scores) == 72 and {"layer", "head", "score", "retrieval_head"} <= set(scores.columns)
    assert scores["score"].between(0, 1).all()
    page.locator("#retrieval-export-kind").get_by_text("json").click()
    click(page, "#retrieval-export")
    page.locator("#retrieval-file").get_by_text(".json").wait_for(timeout=UI_TIMEOUT)
    (json_file,) = downloads(page, "#retrieval-file", tmp_path, 1)
    assert isinstance(json.loads(json_file.read_text(encoding="utf-8")), dict)
    page.locator("#retrieval-status").scroll_into_view_if_needed()
    screenshot(page, "tab_retrieval")


# --------------------------------------------------------------------------- XTransplant


def test_transplant_tab(page, tmp_path):
    open_tab(page, "transplant")
    assert "0..17" in refused(page, "#xt-layers", "0, 99", "#xt-run", "Layers must lie")

    langs = page.locator("#xt-langs .token span").all_inner_texts()
    assert len(langs) == 2, langs
    set_value(page, "#xt-layers", "0, 17")
    set_value(page, "#xt-items", 2)
    set_value(page, "#xt-sample", 1)
    click(page, "#xt-run")
    status = wait_text(page, "#xt-status", "baseline")
    assert all(f"{lang} (2 items" in status for lang in langs), status
    (heat, *_) = plot_traces(page, "#xt-heatmap")
    assert heat["type"] == "heatmap"
    assert table_shape(page, "#xt-strategy")[0] == 2 and table_shape(page, "#xt-bound")[0] == 2
    assert "upper_bound" in table_headers(page, "#xt-bound")

    click(page, "#xt-export")
    files = downloads(page, "#xt-files", tmp_path, 3)
    cells = pd.read_csv(by_name(files, "cells"))
    assert {"source", "target"} <= set(cells.columns)
    assert set(cells["source"]) == {0, 17} and set(cells["target"]) == {0, 17}
    assert len(pd.read_csv(by_name(files, "upper-bound"))) == 2
    assert len(pd.read_csv(by_name(files, "strategy"))) == 2
    page.locator("#xt-status").scroll_into_view_if_needed()
    screenshot(page, "tab_transplant")


# --------------------------------------------------------------------------- Train


def test_train_tab_validates_and_lists_checkpoints(page):
    """A real run is too slow for a browser test on CPU (trainers have their own tests): check
    that bad inputs are refused before any job starts, and the method and checkpoint lists render."""
    open_tab(page, "train")
    page.locator("#train-method input").first.click()
    methods = page.get_by_role("option").all_inner_texts()
    assert {"sft", "rhio"} <= {m.split()[-1] for m in methods}, methods  # the chosen one has a check mark
    page.keyboard.press("Escape")

    assert refused(page, "#train-steps", "", "#train-start", "Steps") == "Steps is required."
    set_value(page, "#train-steps", 5)
    set_value(page, "#train-lr", "")
    click(page, "#train-start")
    assert expect_error(page, "Learning rate") == "Learning rate is required."
    assert "Started" not in page.locator("#train-status").inner_text()

    page.get_by_text("Registered checkpoints").click()
    click(page, "#train-refresh")
    page.locator("#train-checkpoints th[title=base_model]").first.wait_for(timeout=UI_TIMEOUT)
    assert {"name", "method", "base_model", "step"} <= set(table_headers(page, "#train-checkpoints"))
    screenshot(page, "tab_train")


# --------------------------------------------------------------------------- Faithfulness


@pytest.fixture(scope="module")
def rhio_folder(tiny_folders, tmp_path_factory):
    """A tiny Gemma 3 with [POS]/[NEG] added, as `workbench rhio prepare` writes it, but kept out
    of the checkpoint registry (a local folder is a model spec too)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.methods import rhio

    source = tiny_folders["gemma3"]
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    tokenizer.add_special_tokens({"additional_special_tokens": list(rhio.CONTROL_TOKENS)})
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.config.max_position_embeddings = 2048  # room for the item's documents (rotary positions)
    folder = tmp_path_factory.mktemp("rhio-tiny")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def test_faithfulness_tab(page, rhio_folder):
    """The tab has no export. The RHIO side runs a tiny prepared model (a trained RHIO checkpoint
    of the default model is not available in tests); the base side is the default model."""
    open_tab(page, "faithfulness")
    context = page.locator("#faith-context")
    question = context.locator("h4").inner_text()
    assert question and "Reference" in context.inner_text()

    set_value(page, "#faith-new-tokens", 4)
    # the default model is not prepared for RHIO: it has no [POS] token
    assert "rhio prepare" in refused(page, "#faith-rhio", "gemma-3-270m", "#faith-run", "[POS]")

    set_value(page, "#faith-rhio", str(rhio_folder))
    click(page, "#faith-run")
    # wait until all three show a finished answer ("support x.xx" first, not progress text such as
    # "0.1s base model - 10.0%", which also fills the element between updates) or an error toast
    page.wait_for_function(r"sels => document.querySelector('[data-testid=toast-text]') || sels.every(sel => "
                           r"/^support \d\.\d\d\n/.test(document.querySelector(sel).innerText.trimStart()))",
                           arg=["#faith-base", "#faith-pos", "#faith-cd"], timeout=MODEL_TIMEOUT)
    assert page.locator("[data-testid=toast-text]").all_inner_texts() == []
    for selector in ("#faith-base", "#faith-pos", "#faith-cd"):
        assert re.match(r"support \d\.\d\d\n", page.locator(selector).inner_text()), selector
    screenshot(page, "tab_faithfulness")


# --------------------------------------------------------------------------- Unlearning


@pytest.fixture()
def saved_unlearning_run():
    """The committed results table (docs/unlearning_results.csv) saved as a pipeline run."""
    from trainers.methods.unlearning.results import UnlearningResults, results_root

    table = pd.read_csv(REPO / "docs" / "unlearning_results.csv")
    name = f"browser-test-{uuid.uuid4().hex[:8]}"
    results = UnlearningResults(name, table, pd.DataFrame({"id": ["none"]}), notes=["copy of the committed table"])
    folder = results.save()
    assert folder.parent == results_root()
    yield name, table
    shutil.rmtree(folder, ignore_errors=True)


def test_unlearning_tab(page, tmp_path, saved_unlearning_run):
    name, table = saved_unlearning_run
    open_tab(page, "unlearning")
    box = page.locator("#unlearn-run input").first
    box.fill("no-such-run")
    box.press("Enter")
    click(page, "#unlearn-show")
    assert name in expect_error(page, "No unlearning results named 'no-such-run'", timeout=UI_TIMEOUT)
    close_toasts(page)

    click(page, "#unlearn-refresh")
    choose(page, "#unlearn-run", name)
    click(page, "#unlearn-show")
    page.locator("#unlearn-file a[data-testid=download-link]").wait_for(timeout=UI_TIMEOUT)
    rows, _ = table_shape(page, "#unlearn-table")
    assert rows == len(table)
    assert {"track", "method", "step", "model_utility"} <= set(table_headers(page, "#unlearn-table"))
    scatter = plot_traces(page, "#unlearn-scatter")
    assert len(scatter) >= 2
    assert plot_traces(page, "#unlearn-comparison-plot")
    assert "copy of the committed table" in page.locator("#unlearn-notes").inner_text()
    (csv_file,) = downloads(page, "#unlearn-file", tmp_path, 1)
    exported = pd.read_csv(csv_file)
    assert list(exported.columns) == list(table.columns) and len(exported) == len(table)

    page.get_by_text("Prepare data for the Train tab").click()
    click(page, "#unlearn-prepare")
    message = wait_text(page, "#unlearn-data-message", "forget", timeout=UI_TIMEOUT)
    assert "invented entities" in message
    files = downloads(page, "#unlearn-data-files", tmp_path, 4)
    inject = [json.loads(line) for line in by_name(files, "inject.jsonl").read_text(encoding="utf-8").splitlines()]
    assert inject and all({"instruction", "output", "lang"} <= set(r) for r in inject)
    page.locator("#unlearn-table").scroll_into_view_if_needed()
    screenshot(page, "tab_unlearning")


# --------------------------------------------------------------------------- Evaluate


def test_evaluate_tab(page, tmp_path):
    open_tab(page, "evaluate")
    tokens = page.locator("#eval-langs .token")
    while tokens.count() > 2:  # keep the first two default languages
        tokens.last.locator(".token-remove").click()
    langs = page.locator("#eval-langs .token span").all_inner_texts()
    assert len(langs) == 2
    set_value(page, "#eval-n", 2)
    click(page, "#eval-run")
    status = wait_text(page, "#eval-status", "Headline")
    assert "2 languages, 2 items each" in status, status
    rows, _ = table_shape(page, "#eval-scores")
    assert rows % 2 == 0 and rows >= 2  # every scoring, for each of the two languages
    assert {"lang", "metric", "score", "chance"} <= set(table_headers(page, "#eval-scores"))
    assert plot_traces(page, "#eval-plot")
    click(page, "#eval-export")
    files = downloads(page, "#eval-files", tmp_path, 2)
    scores = pd.read_csv(by_name(files, "scores"))
    assert set(scores["lang"]) == set(langs) and len(scores) == rows
    items = pd.read_csv(by_name(files, "items"))
    assert len(items) >= 4 and set(items["lang"]) == set(langs)
    page.locator("#eval-status").scroll_into_view_if_needed()
    screenshot(page, "tab_evaluate")

    page.locator("#eval-langs .remove-all").click()
    click(page, "#eval-run")
    assert expect_error(page, "language") == "Choose at least one language."
    close_toasts(page)

    # GlobeSumm: one event, one pipeline, a few tokens
    assert refused(page, "#mcms-events", 0, "#mcms-run", "event") == "Summarize at least one event."
    checked = page.locator("#mcms-pipelines input[type=checkbox]:checked")
    assert checked.count() == 3  # all, recurrent, protocol by default
    for pipeline in ("recurrent", "protocol"):
        page.locator(f"#mcms-pipelines input[name={pipeline}]").uncheck()
    assert checked.count() == 1
    set_value(page, "#mcms-events", 1)
    set_value(page, "#mcms-new-tokens", 8)
    click(page, "#mcms-run")
    status = wait_text(page, "#mcms-status", "events")
    assert "1 events x 1 pipelines" in status, status
    assert plot_traces(page, "#mcms-plot")
    page.wait_for_function("() => document.querySelector('#mcms-reference textarea').value.length > 20",
                           timeout=UI_TIMEOUT)
    click(page, "#mcms-export")
    files = downloads(page, "#mcms-files", tmp_path, 2)
    summary = pd.read_csv(by_name(files, "scores"))
    assert set(summary["pipeline"]) == {"all"}
    assert len(pd.read_csv(by_name(files, "summaries"))) == 1


# --------------------------------------------------------------------------- Compare


def test_compare_tab(page, tmp_path, tiny_folders):
    """Two models: the default one and a tiny random Gemma 3 (a local folder), on the cheapest
    analysis (the capitals evaluation, two items in two languages)."""
    open_tab(page, "compare")
    click(page, "#compare-run")
    assert "you picked 1" in expect_error(page, "Pick 2")
    close_toasts(page)

    tiny = str(tiny_folders["gemma3"])
    set_value(page, "#compare-extra", tiny)
    choose(page, "#compare-view", "Evaluation")
    set_value(page, "#compare-n", 2)
    click(page, "#compare-run")
    note = wait_text(page, "#compare-note", "Compared")
    assert "gemma-3-270m" in note and "Evaluation" in note
    assert len(plot_traces(page, "#compare-side")) >= 2
    assert plot_traces(page, "#compare-diff")
    click(page, "#compare-export")
    files = downloads(page, "#compare-files", tmp_path, 3)
    html = by_name(files, ".html").read_text(encoding="utf-8")
    assert "<html" in html and "plotly" in html.lower()
    frame = pd.read_csv(next(p for p in files if p.suffix == ".csv" and "difference" not in p.name))
    assert {"lang", "score", "model"} <= set(frame.columns) and frame["model"].nunique() == 2
    assert set(frame["lang"]) == {"fr", "zh"}
    page.locator("#compare-note").scroll_into_view_if_needed()
    screenshot(page, "tab_compare")
