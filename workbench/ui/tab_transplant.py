"""The "XTransplant" tab: the (source, target) grid per language, its cells' generations, and the
offline strategy / upper bound with the mismatched-source control. The science lives in
`probes.transplant`; handlers parse inputs, call the same functions a notebook calls, and lay out
the results."""

from __future__ import annotations

import math

import gradio as gr
import pandas as pd

from probes import transplant as xt
from probes.transplant.cases import DIRECTIONS
from workbench import limits, load
from workbench.datasets.tasks import get_task, list_tasks, load_task
from workbench.errors import InputError

from .common import as_int, demo_mode, export_rows, friendly, progress_callback

DEMO_MAX_ITEMS = limits.cap("transplant_items")
DEMO_MAX_PAIRS = limits.cap("transplant_pairs")
TASK_DEFAULT = "task default"

INTRO = """**XTransplant** (arXiv 2412.12686). Each item has a *main* prompt (the one answered) and an
*auxiliary* prompt (its translation). The FFN (or attention) output of source layer *s* at the
auxiliary prompt's last position replaces target layer *t*'s at the main prompt's last position,
in the prefill only. *en->x*: native main, English auxiliary; *x->en*: the reverse (culture tasks).
Every pair is also run from the auxiliary prompt of a **different item** (the control): a best
pair or an any-pair upper bound that the control reaches as well says nothing about transfer.
Read every number next to the baseline and the chance level: Gemma 3 270M base answers A/B/C
questions at chance; word translation and capitals (options ranked by probability) are above it."""


def transplant_tasks() -> list[str]:
    """Tasks with a short answer to score and a committed non-English sample."""
    kinds = ("multiple_choice", "extractive_qa", "answer_probability")
    return [t for t in list_tasks() if get_task(t).kind in kinds and _languages(t)]


def _languages(task: str) -> list[str]:
    return [lang for lang in get_task(task).committed_languages() if lang != "en"]


def parse_layers(text: str, n_layers: int) -> list[int] | None:
    """'all' or '' -> None (every layer); 'all:3' every third layer from 0; otherwise '0, 4, 8',
    '0-17' or '0-17:3' (a range with a step)."""
    text = str(text or "").strip().lower()
    if text in ("", "all"):
        return None
    if text.startswith("all:"):
        text = f"0-{n_layers - 1}:{text[4:]}"
    layers: list[int] = []
    for part in text.replace(";", ",").replace(" ", ",").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                span, _, step = part.partition(":")
                lo, hi = (int(x) for x in span.split("-", 1))
                if step and int(step) < 1:
                    raise ValueError(step)
                layers += list(range(lo, hi + 1, int(step) if step else 1))
            else:
                layers.append(int(part))
        except ValueError:
            raise InputError(f"Cannot read the layers {text!r}: write 'all', 'all:3', '0, 4, 8', '0-17' "
                             "or '0-17:3'.") from None
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad or not layers:
        raise InputError(f"Layers must lie in 0..{n_layers - 1}; got {text!r}.")
    return sorted(set(layers))


def _status(grids: dict[str, xt.TransplantGrid]) -> str:
    lines = []
    for lang, grid in grids.items():
        chance, base, n = grid.chance_level, grid.baseline_accuracy, grid.n_items
        bound = xt.upper_bound(grid).iloc[0]
        line = (f"**{lang}** ({n} items, {grid.direction}): baseline {base:.2f}, chance "
                f"{'n/a' if math.isnan(chance) else f'{chance:.2f}'}; best pair {bound.best_pair} "
                f"{bound.best_pair_accuracy:.2f}; any-pair upper bound {bound.upper_bound:.2f}")
        if grid.has_control:
            line += (f" vs control {bound.control_best_pair} {bound.control_best_pair_accuracy:.2f} / "
                     f"{bound.control_upper_bound:.2f}")
        if not math.isnan(chance) and base <= chance + 2 * math.sqrt(chance * (1 - chance) / n):
            line += " ⚠ the baseline is within noise of chance: this task measures nothing on this model."
        lines.append(line + f" ({grid.seconds:.0f} s)")
    return "\n\n".join(lines)


@friendly
def task_languages(task: str):
    """Language choices of a task (for the dropdown)."""
    langs = _languages(task)
    return gr.update(choices=langs, value=langs[:2])


@friendly
def run_grids(spec: str, task: str, langs: list[str], direction: str, site: str, mode: str, target_layer: float,
              layers: str, scoring: str, max_new_tokens: float, max_items: float, control: bool, n_sample: float,
              seed: float, progress=gr.Progress()):
    """One grid per language; returns status, heatmap, strategy and upper-bound tables, the grids
    (kept in the session) and the language picker."""
    if not langs:
        raise InputError("Choose at least one language.")
    n = as_int(max_items, "Items per language")
    if n < 2:
        raise InputError("Use at least two items (the control borrows another item's prompt; "
                         "the strategy needs a split).")
    target = as_int(target_layer, "Target layer", 0) if mode == "targetfirst" else None
    new_tokens = as_int(max_new_tokens, "Max new tokens", 1)
    handle = load(spec)
    chosen = parse_layers(layers, handle.n_layers)
    n_src = len(chosen) if chosen is not None else handle.n_layers
    pairs = n_src * (1 if mode == "targetfirst" else n_src)
    limits.check("transplant_items", n)
    limits.check("transplant_pairs", pairs)  # fewer: a layer subset such as '0-17:3'
    limits.check("max_new_tokens", new_tokens)
    report = progress_callback(progress)
    grids: dict[str, xt.TransplantGrid] = {}
    for k, lang in enumerate(langs):
        items = load_task(task, lang)[:n]
        grids[lang] = xt.transplant_grid(
            handle, items, site=site, mode=mode, target_layer=target,
            control=bool(control), scoring=scoring, direction=None if direction == TASK_DEFAULT else direction,
            sources=chosen, targets=chosen if mode == "overall" else None, max_new_tokens=new_tokens,
            progress=lambda f, msg, k=k, lang=lang: report((k + f) / len(langs), f"{lang}: {msg}"))
    strategy, bound = _tables(grids, n_sample, seed)
    first = next(iter(grids.values()))
    return (_status(grids), first.figure(), strategy, bound, grids,
            gr.update(choices=list(grids), value=first.lang))


def _tables(grids: dict[str, xt.TransplantGrid], n_sample: float, seed: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    smallest = min(g.n_items for g in grids.values())
    k = as_int(n_sample, "Strategy sample size") if n_sample else smallest // 2
    if not 0 < k < smallest:
        raise InputError(f"The sample split must hold between 1 and {smallest - 1} items (of {smallest}).")
    return (xt.scaling_strategy(grids, n_sample=k, seed=as_int(seed, "Split seed", 0)).round(3),
            xt.upper_bound(grids).round(3))


def _grids(grids) -> dict[str, xt.TransplantGrid]:
    """The grids kept in the page's state; anything else means the grid has not run."""
    if not grids or not isinstance(grids, dict) or not all(isinstance(g, xt.TransplantGrid) for g in grids.values()):
        raise InputError("Run the grid first.")
    return grids


def _grid(grids: dict[str, xt.TransplantGrid] | None, lang: str) -> xt.TransplantGrid:
    grids = _grids(grids)
    if not isinstance(lang, str) or lang not in grids:
        raise InputError(f"No grid for {lang!r}; computed: {', '.join(grids)}.")
    return grids[lang]


@friendly
def show_heatmap(grids: dict[str, xt.TransplantGrid] | None, lang: str, metric: str):
    return _grid(grids, lang).figure("delta_p" if str(metric or "").startswith("change") else "accuracy")


@friendly
def show_cell(spec: str, grids: dict[str, xt.TransplantGrid] | None, lang: str, source: float, target: float,
              max_new_tokens: float):
    """Per item outputs of one pair: baseline, transplanted and control side by side. Grids scored
    by probability hold no outputs, so the cell is generated now (one small grid)."""
    grid = _grid(grids, lang)
    s, t = as_int(source, "Source layer", 0), as_int(target, "Target layer", 0)
    new_tokens = as_int(max_new_tokens, "Max new tokens", 1)
    stored = grid.cell(s, t)  # a clear error for a pair outside the grid
    note = f"Pair {s}->{t} of {lang}."
    if grid.texts is None:
        cell_grid = xt.transplant_grid(load(spec), grid_items(grid, lang), site=grid.site, control=grid.has_control,
                                       scoring="generation", direction=grid.direction, sources=[s], targets=[t],
                                       max_new_tokens=new_tokens)
        note += (" The grid ranked options by probability; these greedy outputs were generated now and "
                 "scored with the task's scorer.")
        return note, cell_grid.cell(s, t)
    return note, stored


def grid_items(grid: xt.TransplantGrid, lang: str):
    """The grid's items as loaded (the grid keeps them as answered, i.e. in English for 'x->en')."""
    by_id = {item.id: item for item in load_task(grid.task, lang)}
    return [by_id[item.id] for item in grid.items]


@friendly
def export_grids(grids: dict[str, xt.TransplantGrid] | None, kind: str, n_sample: float, seed: float) -> list[str]:
    """CSV: every cell of every language, the strategy and the upper-bound tables; JSON: all in one."""
    grids = _grids(grids)
    cells = pd.concat([g.to_frame() for g in grids.values()], ignore_index=True)
    strategy, bound = _tables(grids, n_sample, seed)
    first = next(iter(grids.values()))
    document = {"grids": list(grids.values()), "cells": cells, "strategy": strategy, "upper_bound": bound}
    return export_rows({"cells": cells, "strategy": strategy, "upper-bound": bound},
                       f"xtransplant-{first.task}-{first.site}", kind, document)


def build(model_spec: gr.Textbox) -> None:
    tasks = transplant_tasks()
    default_task = "word_translation" if "word_translation" in tasks else tasks[0]
    langs = _languages(default_task)
    grids_state = gr.State(None)
    gr.Markdown(INTRO)
    with gr.Row():
        task = gr.Dropdown(tasks, value=default_task, label="Task", elem_id="xt-task")
        lang_pick = gr.Dropdown(langs, value=langs[:2], multiselect=True, label="Languages", elem_id="xt-langs")
        direction = gr.Radio([TASK_DEFAULT, *DIRECTIONS], value=TASK_DEFAULT, label="Direction")
        site = gr.Radio(["mlp", "attn"], value="mlp", label="Site (FFN or attention output)")
    with gr.Row():
        mode = gr.Radio(list(xt.MODES), value="overall", label="Grid")
        target_layer = gr.Number(value=0, precision=0, label="Target layer (targetfirst)")
        layers = gr.Textbox("all:3", label="Layers (sources, and targets for 'overall')",
                            info="'all', 'all:3' (every third), '0, 4, 8', '0-17' or '0-17:3'", elem_id="xt-layers")
        scoring = gr.Radio(list(xt.SCORINGS), value="probability", label="Scoring",
                           info="probability: rank the options; generation: greedy output + the task's scorer")
    with gr.Row():
        max_items = gr.Number(value=10 if demo_mode() else 20, precision=0, label="Items per language",
                              elem_id="xt-items")
        max_new = gr.Slider(1, 40, value=20, step=1, label="Max new tokens (generation)")
        control = gr.Checkbox(value=True, label="Mismatched-source control")
        n_sample = gr.Number(value=0, precision=0, label="Strategy sample size (0: half the items)",
                             elem_id="xt-sample")
        seed = gr.Number(value=0, precision=0, label="Split seed")
    run_button = gr.Button("Run the grid", variant="primary", elem_id="xt-run")
    status = gr.Markdown(elem_id="xt-status")
    with gr.Row():
        show_lang = gr.Dropdown([], label="Heatmap language")
        metric = gr.Radio(["accuracy", "change in P(gold)"], value="accuracy", label="Heatmap")
    heatmap = gr.Plot(label="Per-pair accuracy: matched source vs control", elem_id="xt-heatmap")
    gr.Markdown("**Offline strategy** (best pair on the sample split, applied to the unseen rest) and the "
                "**instance-aware upper bound** (an item counts if any pair answers it), matched vs control.")
    strategy = gr.Dataframe(label="Offline scaling strategy", elem_id="xt-strategy")
    bound = gr.Dataframe(label="Upper bound", elem_id="xt-bound")
    gr.Markdown("### One cell\nPick a (source, target) pair to see each item's outputs without and with "
                "the transplant.")
    with gr.Row():
        cell_source = gr.Number(value=0, precision=0, label="Source layer s")
        cell_target = gr.Number(value=0, precision=0, label="Target layer t")
        cell_button = gr.Button("Show this cell")
    cell_note = gr.Markdown()
    cell_table = gr.Dataframe(wrap=True, max_height=420)
    with gr.Row():
        export_kind = gr.Radio(["csv", "json"], value="csv", label="Export format", elem_id="xt-export-kind")
        export_button = gr.Button("Export", elem_id="xt-export")
        export_files = gr.File(label="Download", file_count="multiple", elem_id="xt-files")

    task.change(task_languages, inputs=task, outputs=lang_pick)
    run_button.click(run_grids, inputs=[model_spec, task, lang_pick, direction, site, mode, target_layer, layers,
                                        scoring, max_new, max_items, control, n_sample, seed],
                     outputs=[status, heatmap, strategy, bound, grids_state, show_lang], api_name="xtransplant_grid")
    for trigger in (show_lang.change, metric.change):
        trigger(show_heatmap, inputs=[grids_state, show_lang, metric], outputs=heatmap)
    cell_button.click(show_cell, inputs=[model_spec, grids_state, show_lang, cell_source, cell_target, max_new],
                      outputs=[cell_note, cell_table])
    export_button.click(export_grids, inputs=[grids_state, export_kind, n_sample, seed], outputs=export_files)
