"""The "English pivot" tab: latent-language curves, the logit-lens grid and the representation map.

The science lives in `probes.pivot` and `probes.representation`; handlers parse inputs, call the
same functions a notebook calls and lay out the results. Results are cached on disk, and the
representation map keeps every layer's residuals, so the layer slider and the PCA/UMAP switch
only re-project.
"""

from __future__ import annotations

from dataclasses import replace

import gradio as gr
import pandas as pd

from probes import pivot as lens
from probes import representation as rep
from workbench import limits, load
from workbench.datasets import lexicon
from workbench.errors import InputError

from .common import as_int, export_rows, friendly, progress_callback, require, upload_path

SOURCES = {
    "Concept list (committed)": "concepts",
    "CLDR months": "months",
    "CLDR weekdays": "weekdays",
    "CLDR countries": "countries",
    "CLDR language names": "languages",
    "Uploaded CSV": "upload",
}
DEMO_MAX_ITEMS = limits.cap("pivot_items")
DEMO_MAX_SHOTS = limits.cap("pivot_shots")
DEFAULT_GRID_PROMPT = 'Français: "forêt" - 中文: "森林"\nFrançais: "cochon" - 中文: "猪"\nFrançais: "eau" - 中文: "'

INTRO = """**Does the model think in English?** (Wendler et al. 2024.) The logit lens reads every layer's
residual stream at the answer position through the final norm and unembedding. For each item the
curves show the probability of the word in the input language, in English and in the target
language (every token that starts the word, with or without a leading space, plus its first byte
token for byte-encoded scripts). Items whose languages share a token or contain one another are
dropped and listed. Bands: 95% confidence interval of the mean over items."""


def _code(text: str, what: str) -> str:
    code = (text or "").strip()
    if not code:
        raise InputError(f"Choose a {what} language.")
    lens.label(code)  # unknown codes fail here with the lexicon's message
    return code


def _upload_path(upload) -> str:
    if upload is None:
        raise InputError("Upload a CSV file first (or choose a built-in word list).")
    return upload_path(upload)


def word_table(source: str, upload, languages: list[str]) -> pd.DataFrame:
    """The chosen word list with (at least) the given language columns."""
    kind = SOURCES.get(source, source)
    if kind == "concepts":
        return lexicon.load_concepts(languages)
    if kind in lexicon.BABEL_KINDS:
        return lexicon.babel_word_list(kind, languages)
    if kind == "upload":
        return lexicon.parse_word_csv(_upload_path(upload))
    raise InputError(f"Unknown word source {source!r}; choose one of {', '.join(SOURCES)}.")


def cloze_table(source: str, upload, lang: str) -> pd.DataFrame:
    """Committed cloze sentences, or an uploaded CSV with sentence and answer columns."""
    if SOURCES.get(source, source) != "upload":
        return lexicon.load_cloze([lang])
    try:
        frame = pd.read_csv(_upload_path(upload), dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read the cloze CSV: {exc}. Expected columns sentence,answer "
                         "(and en or concept).") from None
    if frame.empty:
        raise InputError("The cloze CSV has no rows.")
    return frame


def _sample(frame: pd.DataFrame, max_items, seed: int) -> pd.DataFrame:
    n = as_int(max_items, "Max items")
    if n < 1:
        raise InputError("Use at least one item.")
    limits.check("pivot_items", n)
    return frame.sample(n=n, random_state=seed).sort_index() if len(frame) > n else frame


def _status(result: lens.PivotResult) -> str:
    peaks = []
    for lang in result.languages:
        mean = result.prob(lang).mean(axis=0)
        peaks.append(f"P({lang}) peaks at layer {int(mean.argmax())} ({mean.max():.2f})")
    return (f"**{result.n_items} items** kept, {len(result.dropped)} dropped. " + "; ".join(peaks) + ". "
            f"Example prompt:\n```\n{result.items[0]['prompt']}\n```")


@friendly
def run_pivot(spec: str, source: str, upload, task: str, src_lang: str, tgt_lang: str, k_shot: float,
              seed: float, max_items: float, progress=gr.Progress()):
    """Pivot curves; returns status, figure, dropped items, per-item table and the result (for export)."""
    tgt = _code(tgt_lang, "target")
    src = _code(src_lang, "source") if task == "translation" else tgt
    k, seed = as_int(k_shot, "Examples per prompt (k)", 0), as_int(seed, "Seed", 0)
    limits.check("pivot_shots", k)
    if task == "cloze":
        table = cloze_table(source, upload, tgt)
    else:
        table = word_table(source, upload, list(dict.fromkeys([src, tgt, "en"])))
    handle = load(spec)
    result = lens.pivot(handle, _sample(table, max_items, seed), task, src_lang=src, tgt_lang=tgt, k_shot=k,
                        seed=seed, progress=progress_callback(progress))
    items = result.to_frame(per_item=True)
    last = items[items["layer"] == result.n_layers - 1].drop(columns="layer")
    return _status(result), result.figure(), result.dropped_frame(), last.round(4), result


@friendly
def export_pivot(result: lens.PivotResult | None, kind: str) -> list[str]:
    """CSV: the per-layer summary and the per-item table; JSON: the whole result in one file."""
    require(result, lens.PivotResult, "Run the pivot lens first.")
    stem = f"pivot-{result.task}-{result.src_lang}-{result.tgt_lang}"
    return export_rows({"summary": result.summary(), "items": result.to_frame(per_item=True)}, stem, kind, result)


@friendly
def run_grid(spec: str, prompt: str, top_k: float):
    """Logit-lens grid of one prompt: heatmap and the CSV of every cell's top-k."""
    handle = load(spec)
    grid = lens.logit_lens_grid(handle, prompt, top_k=as_int(top_k, "Top-k", 1))
    return grid.figure(), export_rows({"cells": grid.to_frame()}, "logit-lens-grid")[0]


def _languages(text: str) -> list[str]:
    codes = [c.strip() for c in str(text or "").replace(";", ",").replace(" ", ",").split(",") if c.strip()]
    if len(codes) < 2:
        raise InputError("Give at least two language codes, e.g. en, fr, zh.")
    for code in codes:
        lens.label(code)
    return list(dict.fromkeys(codes))


@friendly
def run_map(spec: str, source: str, upload, languages: str, template: str, max_items: float, method: str,
            layer: float, progress=gr.Progress()):
    """Representation map: scatter at `layer`, merge scores per layer, slider range and the result."""
    langs = _languages(languages)
    layer = as_int(layer, "Layer", 0)
    template = template or "{word}"
    if not isinstance(template, str) or "{word}" not in template:
        raise InputError("The prompt template must contain {word}.")
    table = word_table(source, upload, langs)
    missing = [c for c in langs if c not in table.columns]
    if missing:
        raise InputError(f"The word list has no {', '.join(missing)} column.")
    table = _sample(table[langs].replace("", pd.NA).dropna(), max_items, 0)
    prompts = {lang: [template.replace("{word}", str(w)) for w in table[lang]] for lang in langs}
    result = rep.representation_map(load(spec), prompts, method=method, progress=progress_callback(progress))
    layer = min(layer, result.n_layers - 1)
    slider = gr.update(maximum=result.n_layers - 1, value=layer)
    return result.figure(layer), result.scores_figure(), slider, result


@friendly
def replot_map(result: rep.RepresentationResult | None, layer: float, method: str):
    """Re-project the stored residuals (no model run) for another layer or method; a slider moved
    before any map exists does nothing."""
    if not isinstance(result, rep.RepresentationResult):
        return gr.update(), None
    if method != result.method:
        result = replace(result, method=method)
    return result.figure(as_int(layer, "Layer", 0)), result


@friendly
def export_map(result: rep.RepresentationResult | None, layer: float) -> list[str]:
    require(result, rep.RepresentationResult, "Compute the representation map first.")
    layer = as_int(layer, "Layer", 0)
    return export_rows({"scores": result.to_frame(), f"layer{layer}": result.points_frame(layer)}, "representation")


def build(model_spec: gr.Textbox) -> None:
    languages = list(lexicon.LANGUAGES)
    pivot_state = gr.State(None)
    map_state = gr.State(None)
    gr.Markdown(INTRO)
    with gr.Row():
        source = gr.Dropdown(list(SOURCES), value="Concept list (committed)", label="Word list")
        upload = gr.File(label="CSV (header: language codes, e.g. en,fr,zh)", file_types=[".csv"])
    with gr.Row():
        task = gr.Radio(list(lens.TASKS), value="translation", label="Task")
        src = gr.Dropdown(languages, value="fr", allow_custom_value=True, label="Input language")
        tgt = gr.Dropdown(languages, value="zh", allow_custom_value=True, label="Target language", elem_id="pivot-tgt")
        k_shot = gr.Slider(0, 10, value=4, step=1, label="Examples per prompt (k)", elem_id="pivot-k")
        seed = gr.Number(0, precision=0, label="Seed")
        max_items = gr.Number(60, precision=0, label="Max items", elem_id="pivot-max-items")
    run_button = gr.Button("Run the pivot lens", variant="primary", elem_id="pivot-run")
    status = gr.Markdown(elem_id="pivot-status")
    curves = gr.Plot(label="Per-layer curves", elem_id="pivot-curves")
    with gr.Accordion("Items (last layer) and dropped items", open=False):
        items = gr.Dataframe(label="Per item, last layer", max_height=360, elem_id="pivot-items")
        dropped = gr.Dataframe(label="Dropped items and why", wrap=True, max_height=300, elem_id="pivot-dropped")
    with gr.Row():
        export_kind = gr.Radio(["csv", "json"], value="csv", label="Export format", elem_id="pivot-export-kind")
        export_button = gr.Button("Export", elem_id="pivot-export")
        export_files = gr.File(label="Download", file_count="multiple", elem_id="pivot-files")
    run_button.click(run_pivot, inputs=[model_spec, source, upload, task, src, tgt, k_shot, seed, max_items],
                     outputs=[status, curves, dropped, items, pivot_state], api_name="pivot")
    export_button.click(export_pivot, inputs=[pivot_state, export_kind], outputs=export_files)

    gr.Markdown("### Logit-lens grid\nThe top lens token at every layer and position; hover for the top-k.")
    with gr.Row():
        prompt = gr.Textbox(DEFAULT_GRID_PROMPT, label="Prompt", lines=4, scale=4, elem_id="grid-prompt")
        top_k = gr.Slider(1, 10, value=5, step=1, label="Top-k on hover", scale=1)
    grid_button = gr.Button("Show the grid", elem_id="grid-run")
    grid_plot = gr.Plot(label="Logit lens", elem_id="grid-plot")
    grid_file = gr.File(label="Download (CSV)", elem_id="grid-file")
    grid_button.click(run_grid, inputs=[model_spec, prompt, top_k], outputs=[grid_plot, grid_file],
                      api_name="logit_lens_grid")

    gr.Markdown("### Representation map\nLast-token residuals of the same words in several languages, projected "
                "per layer. Where the colours mix and translations find each other, the languages have merged.")
    with gr.Row():
        map_langs = gr.Textbox("en, fr, de, zh, ja, ru", label="Languages", elem_id="map-langs")
        template = gr.Textbox("{word}", label="Prompt template")
        map_items = gr.Number(40, precision=0, label="Words per language", elem_id="map-items")
        method = gr.Radio(list(rep.METHODS), value="pca", label="Projection")
    map_button = gr.Button("Compute the map", elem_id="map-run")
    layer = gr.Slider(0, 17, value=12, step=1, label="Layer")
    with gr.Row():
        map_plot = gr.Plot(label="Map", elem_id="map-plot")
        scores_plot = gr.Plot(label="Merge scores per layer", elem_id="map-scores")
    with gr.Row():
        map_export = gr.Button("Export the map", elem_id="map-export")
        map_files = gr.File(label="Download", file_count="multiple", elem_id="map-files")
    map_button.click(run_map, inputs=[model_spec, source, upload, map_langs, template, map_items, method, layer],
                     outputs=[map_plot, scores_plot, layer, map_state], api_name="representation_map")
    layer.release(replot_map, inputs=[map_state, layer, method], outputs=[map_plot, map_state])
    method.change(replot_map, inputs=[map_state, layer, method], outputs=[map_plot, map_state])
    map_export.click(export_map, inputs=[map_state, layer], outputs=map_files)
