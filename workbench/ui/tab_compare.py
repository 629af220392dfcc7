"""The "Compare" tab: one probe or evaluation on two to four models, side by side, with the
difference. All the work is `workbench.compare.compare`; this only parses the form."""

from __future__ import annotations

import gradio as gr

from ..compare import MAX_MODELS, VIEWS, Comparison, compare
from ..errors import InputError
from .common import as_int, export_rows, export_text, friendly, progress_callback, require

INTRO = """Pick two to four models — the default model, checkpoints written by the trainers
(`ckpt:NAME`), local folders or hub names — and one analysis. Each model runs it with the same
settings (cached results are reused) and the results appear side by side, followed by the
difference of each model from the first. The small default model fits this CPU; the same code runs
larger models where memory allows."""


def checkpoint_choices() -> list[str]:
    """The default model plus every registered checkpoint."""
    from .. import registry

    return ["gemma-3-270m"] + [c.spec for c in registry.list_checkpoints()]


def _langs(text: str) -> list[str]:
    langs = [p.strip() for p in str(text or "").replace(";", ",").split(",") if p.strip()]
    if not langs:
        raise InputError("Give at least one language code, e.g. en, fr.")
    return langs


def params_for(view: str, task: str, lang: str, second_lang: str, n_items: float) -> dict:
    """Map the form's few shared fields onto each analysis' parameters."""
    n = as_int(n_items, "The number of items")
    if n < 1:
        raise InputError("The number of items must be at least 1.")
    if view == "pivot":
        return {"src_lang": lang, "tgt_lang": second_lang, "n_items": n}
    if view == "retrieval":
        return {"lang": lang}
    if view == "transplant":
        return {"task": task, "lang": lang, "n_items": n}
    if view == "evaluate":
        return {"task": task, "langs": _langs(f"{lang},{second_lang}"), "n": n}
    raise InputError(f"Unknown analysis {view!r}.")


@friendly
def run_compare(models: list[str], extra: str, view: str, task: str, lang: str, second_lang: str, n_items: float,
                progress=gr.Progress()):
    specs = list(dict.fromkeys([*(models or []), *[m.strip() for m in str(extra or "").split(",") if m.strip()]]))
    if not 2 <= len(specs) <= MAX_MODELS:
        raise InputError(f"Pick 2 to {MAX_MODELS} models (you picked {len(specs)}).")
    comp = compare(specs, view, params_for(view, task, lang, second_lang, n_items),
                   progress=progress_callback(progress))
    note = f"Compared {', '.join(comp.models)} on **{VIEWS[view].title}**; differences are from {comp.models[0]}."
    return note, comp.figure(), comp.difference_figure(0, 1), comp.to_frame(), comp.difference(0, 1), comp


@friendly
def export_compare(comp) -> list[str]:
    require(comp, Comparison, "Run a comparison first.")
    return [export_text(comp.to_html(), "comparison", "html"),
            *export_rows({"table": comp.to_frame(), "difference": comp.difference()}, "comparison")]


def build(model_spec: gr.Textbox) -> None:
    gr.Markdown(INTRO)
    with gr.Row():
        models = gr.Dropdown(choices=checkpoint_choices(), value=["gemma-3-270m"], multiselect=True,
                             label="Models", allow_custom_value=True, scale=3, elem_id="compare-models")
        refresh = gr.Button("Refresh checkpoints", scale=1)
        extra = gr.Textbox(label="More models (comma-separated specs)", scale=3, elem_id="compare-extra")
    with gr.Row():
        view = gr.Dropdown(choices=[(v.title, k) for k, v in VIEWS.items()], value="pivot", label="Analysis",
                           elem_id="compare-view")
        task = gr.Dropdown(choices=["capitals", "word_translation", "xnli", "xcopa", "xquad"], value="capitals",
                           label="Task (XTransplant, evaluation)", elem_id="compare-task")
        lang = gr.Textbox(value="fr", label="Language (pivot: input language)", elem_id="compare-lang")
        second = gr.Textbox(value="zh", label="Second language (pivot: target; evaluation: also)",
                            elem_id="compare-second")
        n_items = gr.Number(value=20, precision=0, label="Items", elem_id="compare-n")
    run = gr.Button("Compare", variant="primary", elem_id="compare-run")
    note = gr.Markdown(elem_id="compare-note")
    side = gr.Plot(label="Side by side", elem_id="compare-side")
    diff_plot = gr.Plot(label="Difference from the first model", elem_id="compare-diff")
    with gr.Accordion("Tables", open=False):
        table = gr.Dataframe(label="All models", elem_id="compare-table")
        diff_table = gr.Dataframe(label="Difference")
    state = gr.State()
    with gr.Row():
        export = gr.Button("Export HTML report + CSV", elem_id="compare-export")
        files = gr.File(label="Downloads", file_count="multiple", elem_id="compare-files")
    refresh.click(lambda: gr.Dropdown(choices=checkpoint_choices()), outputs=models)
    run.click(run_compare, inputs=[models, extra, view, task, lang, second, n_items],
              outputs=[note, side, diff_plot, table, diff_table, state], api_name="compare")
    export.click(export_compare, inputs=state, outputs=files)
