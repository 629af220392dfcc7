"""Unlearning tab: results of entity-level unlearning runs (arXiv 2406.15796) and their data.

A run (`workbench unlearn ...`, or `trainers.methods.unlearning.pipeline.run_pipeline`) injects invented
entities, unlearns them with each method and scores every checkpoint. This tab shows a saved run:
the results table, Forget Quality vs Model Utility per method and checkpoint, and injected vs
pre-trained (real) entities. Single unlearning runs are launched from the Train tab (methods
`unlearn-*`) on the JSONL files the "Prepare data" section writes.
"""

from __future__ import annotations

import gradio as gr

from .. import limits
from ..errors import InputError
from .common import as_int, export_copy, export_rows, friendly

INTRO = (
    "Entity-level unlearning: a model first learns invented entities (injection), then each method "
    "tries to make it forget some of them. **Forget Quality** is the KS-test p-value between the "
    "truth ratios of the unlearned model and of a model never trained on the forgotten entities "
    "(higher = closer to never having learned them); **Model Utility** is the harmonic mean of ROUGE-L "
    "recall, probability and truth ratio on retained and real-world questions. The *target* set asks "
    "about facts of the forgotten entities that unlearning did not train on. Run the pipeline with "
    "`workbench unlearn`; launch single runs in the Train tab with the files prepared below."
)
SUMMARY_COLUMNS = ["track", "method", "step", "forget.rougeL_recall", "target.rougeL_recall", "forget.probability",
                   "target.probability", "forget.truth_ratio", "target.truth_ratio", "forget_quality.forget",
                   "forget_quality.target", "model_utility"]


def run_choices() -> list[str]:
    from trainers.methods.unlearning.results import list_results

    return list_results()


@friendly
def show_results(name: str):
    """(table, scatter, comparison table, comparison plot, real-entity check, notes, CSV export)."""
    from trainers.methods.unlearning.results import UnlearningResults

    if not isinstance(name, str) or not name.strip():
        raise InputError("Choose a saved unlearning run (run `workbench unlearn` first if the list is empty).")
    results = UnlearningResults.load(name.strip())
    table = results.table[[c for c in SUMMARY_COLUMNS if c in results.table]].round(4)
    comparison = results.comparison_frame()
    has_injected = (results.table["track"] == "injected").any()
    notes = "\n".join(f"- {n}" for n in results.notes) or "No notes."
    check = results.real_check if results.real_check is not None else None
    return (table, results.figure() if has_injected else None, comparison.round(4),
            results.comparison_figure() if not comparison.empty else None, check, notes,
            export_rows({"results": results.table}, f"unlearning-{results.name}")[0])


@friendly
def prepare_training_data(entities: float, forget_entities: float, seed: float):
    """Write inject / retain / unlearn JSONL files for the Train tab; returns (files, message)."""
    from trainers.methods.unlearning.pipeline import UnlearningPipelineConfig, prepare_data
    from trainers.methods.unlearning.results import results_root

    from ..paths import safe_child

    limits.check("entities", as_int(entities, "Invented entities"))
    config = UnlearningPipelineConfig(name="data", entities=as_int(entities, "Invented entities"),
                                      forget_entities=as_int(forget_entities, "Entities to forget"),
                                      seed=as_int(seed, "Seed"))
    # prepare_data creates the folder only once the entities and splits are drawn, so a refused
    # request leaves nothing behind
    folder = safe_child(results_root(), f"data-{config.entities}-{config.forget_entities}-{config.seed}")
    splits, inject, retain, unlearn = prepare_data(config, folder)
    message = (f"{len(splits.forget)} forget, {len(splits.target)} target and {len(splits.retain)} retain QA pairs "
               f"about {config.entities} invented entities. In the Train tab: method `sft` on `{inject.name}` "
               f"injects them; then any `unlearn-*` method on `{unlearn.name}` from that checkpoint unlearns "
               f"them (`{retain.name}` trains the retain-only model).")
    if not limits.demo_mode():  # the server's folder is no stranger's business
        message += f" Files are in {folder}."
    # the files stay in the home for the Train tab; the page downloads copies (Gradio serves temp files only)
    return [export_copy(path) for path in (inject, retain, unlearn, folder / "splits.jsonl")], message


def build(model_spec: gr.Textbox) -> None:
    gr.Markdown(INTRO)
    with gr.Row():
        run = gr.Dropdown(run_choices(), label="Saved run", allow_custom_value=True, elem_id="unlearn-run")
        refresh = gr.Button("Refresh list", elem_id="unlearn-refresh")
        show = gr.Button("Show", variant="primary", elem_id="unlearn-show")
    table = gr.Dataframe(label="Results per method and checkpoint (step 0 = injected model)", interactive=False,
                         elem_id="unlearn-table")
    scatter = gr.Plot(label="Forget Quality vs Model Utility", elem_id="unlearn-scatter")
    gr.Markdown("**Injected vs pre-trained entities**: how much of each score unlearning removed (1 - after/before).")
    comparison = gr.Dataframe(interactive=False, elem_id="unlearn-comparison")
    comparison_plot = gr.Plot(label="Injected vs pre-trained entities", elem_id="unlearn-comparison-plot")
    with gr.Accordion("Real-entity check (the base model's greedy answers)", open=False):
        check = gr.Dataframe(interactive=False)
    notes = gr.Markdown(elem_id="unlearn-notes")
    export = gr.File(label="Results (CSV)", elem_id="unlearn-file")
    with gr.Accordion("Prepare data for the Train tab", open=False):
        with gr.Row():
            entities = gr.Slider(2, 40, value=4, step=1, label="Invented entities")
            forget_entities = gr.Slider(1, 39, value=1, step=1, label="Entities to forget")
            seed = gr.Number(value=0, precision=0, label="Seed")
        prepare = gr.Button("Write JSONL files", elem_id="unlearn-prepare")
        files = gr.File(label="Data files", file_count="multiple", elem_id="unlearn-data-files")
        message = gr.Markdown(elem_id="unlearn-data-message")

    refresh.click(lambda: gr.Dropdown(choices=run_choices()), outputs=run)
    show.click(show_results, inputs=run, outputs=[table, scatter, comparison, comparison_plot, check, notes, export])
    prepare.click(prepare_training_data, inputs=[entities, forget_entities, seed], outputs=[files, message])
