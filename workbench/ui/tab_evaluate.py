"""The "Evaluate" tab: multilingual task scores with confidence intervals, and GlobeSumm MCMS.

The science lives in `workbench.evals.harness` (tasks, scoring modes, bootstrap intervals) and
`workbench.evals.globesumm.mcms` (summarization pipelines and their metrics); handlers parse inputs, call the
same functions a notebook calls and lay out the results.
"""

from __future__ import annotations


import gradio as gr

from workbench.evals.globesumm.data import PIPELINES, load_events
from workbench.datasets.tasks import get_task, list_tasks
from workbench.errors import InputError
from workbench.evals.harness import METRIC_LABELS, MODES, EvalResult, evaluate
from workbench.evals.globesumm.mcms import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PIPELINES, PIPELINE_NAMES, MCMSResult, run_mcms

from workbench import limits

from .common import as_int, export_rows, friendly, progress_callback, require, upload_path

DEMO_MAX_ITEMS = limits.cap("eval_items")
DEMO_MAX_EVENTS = limits.cap("events")
DEFAULT_TASK = "xnli"
DEFAULT_LANGS = ["en", "fr", "de", "zh", "ja"]

INTRO = """**How well does the model do each task, language by language?** Every score is a mean over
items with its 95% bootstrap confidence interval; a score is above chance only where the interval's
lower end clears the chance mark. Multiple-choice tasks are scored two ways: by the **log-probability
of each option** appended to the prompt (as lm-eval-harness does; a small base model is often above
chance here) and by **generation** (the greedy answer must name exactly the gold option; the small
default model is at chance this way). Answer-probability tasks (capitals, word translation) report
greedy accuracy and the probability of the gold answer's first token. Data: the committed samples
(original text in each benchmark's format)."""

MCMS_INTRO = f"""### GlobeSumm: one summary of many reports in many languages
Each event's reports (English, French, Chinese, ...) are summarized in English by three pipelines:
**all at once** (every report in one prompt), **chronological recurrent** (sort by date, summarize
the first two, then fold in one report at a time) and **protocol-guided** (the prompt names how to
treat redundancy, omission and conflict). Metrics (see `docs/metrics.md`): ROUGE against the
reference (CJK-aware), **redundancy** (share of repeated word 3-grams; lower is better), **omission**
(share of key facts not covered; lower is better) and **conflict handling** (share of planted
disagreements the summary reports with both values or their resolution).

The default model is a 270M *base* model: it continues text instead of following instructions, so
its summaries are a floor, not a measure of the method. The task needs an instruction-tuned model
with a context of a few thousand tokens (e.g. a 1-8B "-it"/"-Instruct" model, ideally on a GPU):
put its spec in the Model box and tick *chat template*; the same code runs it. Each model call
writes at most the chosen number of new tokens ({DEFAULT_MAX_NEW_TOKENS} by default), and articles
are shortened when a prompt would not fit the model's context."""


# --------------------------------------------------------------------------- task evaluation


def _items_per_language(n) -> int | None:
    """Empty means all items (in demo mode: the cap); anything else must be a whole number (the
    API checks it is >= 1)."""
    if n is None or (isinstance(n, str) and not n.strip()):
        return limits.capped("eval_items", None)
    value = as_int(n, "The number of items")
    limits.check("eval_items", value)
    return value


def _eval_status(result: EvalResult) -> str:
    frame = result.to_frame()
    label = METRIC_LABELS.get(result.metric, result.metric)
    lines = [f"**{result.task}** on `{result.model}`: {len(result.langs)} languages, "
             f"{int(frame['n'].iloc[0])} items each. Headline: {label}, mean {frame['score'].mean():.3f}."]
    if frame["chance"].notna().all():
        above = frame[frame["ci_low"] > frame["chance"]]["lang"].tolist()
        lines.append(f"Chance {frame['chance'].mean():.3f}; above chance (CI lower end > chance): "
                     f"{', '.join(above) if above else 'none'}.")
    return " ".join(lines)


@friendly
def task_languages(task: str):
    """Language choices of a task: those with a committed sample."""
    langs = get_task(task).committed_languages()
    return gr.update(choices=langs, value=[lang for lang in DEFAULT_LANGS if lang in langs] or langs[:1])


@friendly
def run_eval(spec: str, task: str, langs: list[str], n, mode: str, progress=gr.Progress()):
    """Scores of one task: status, per-(language, metric) table, figure, per-item table, result."""
    if not langs:
        raise InputError("Choose at least one language.")
    result = evaluate(spec, task, langs, n=_items_per_language(n), mode=mode,
                      progress=progress_callback(progress))
    table = result.summary()
    table.insert(2, "scoring", table["metric"].map(METRIC_LABELS))
    items = result.items_frame().drop(columns=["option_logprobs", "options"], errors="ignore")
    return _eval_status(result), table.round(3), result.figure(), items.round(3), result


@friendly
def export_eval(result: EvalResult | None, kind: str) -> list[str]:
    """CSV: per-language scores and per-item rows; JSON: the whole result in one file."""
    require(result, EvalResult, "Run an evaluation first.")
    return export_rows({"scores": result.summary(), "items": result.items_frame()}, f"eval-{result.task}", kind,
                       result)


# --------------------------------------------------------------------------- GlobeSumm


def _upload_path(upload) -> str | None:
    if upload is None:
        return None
    return upload_path(upload)


@friendly
def run_globesumm(spec: str, pipelines: list[str], n_events, upload, max_new_tokens, chat: bool,
                  progress=gr.Progress()):
    """MCMS: status, per-(pipeline, metric) table, figure, per-summary table, event and pipeline
    pickers, result."""
    events = load_events(_upload_path(upload))
    count = len(events) if n_events is None else as_int(n_events, "Events")
    if count < 1:
        raise InputError("Summarize at least one event.")
    limits.check("events", count)
    new_tokens = as_int(max_new_tokens, "The number of new tokens")
    limits.check("max_new_tokens", new_tokens)
    result = run_mcms(spec, events[:count], pipelines or [], max_new_tokens=new_tokens,
                      chat=bool(chat), progress=progress_callback(progress))
    table = result.summary()
    table.insert(1, "pipeline name", table["pipeline"].map(PIPELINE_NAMES))
    rows = result.to_frame().drop(columns=["reference"])
    names = list(dict.fromkeys(rows["event"]))
    status = (f"**{len(names)} events** x {len(result.pipelines)} pipelines on `{result.model}`, at most "
              f"{result.max_new_tokens} new tokens per call, prompts within {result.max_prompt_tokens} tokens"
              f"{' (some articles shortened to fit)' if rows['truncated'].any() else ''}.")
    event_picker = gr.update(choices=names, value=names[0])
    pipeline_picker = gr.update(choices=result.pipelines, value=result.pipelines[0])
    return status, table.round(3), result.figure(), rows.round(3), event_picker, pipeline_picker, result


@friendly
def show_summary(result: MCMSResult | None, event: str, pipeline: str) -> tuple[str, str]:
    """The reference summary and one pipeline's summary of an event, side by side."""
    if result is None or not event:
        return "", ""
    require(result, MCMSResult, "Run GlobeSumm first.")
    texts = result.summaries(event)
    if pipeline not in texts:
        raise InputError(f"Pipeline {pipeline!r} was not run; this result has {', '.join(result.pipelines)}.")
    return texts["reference"], texts[pipeline] or "(empty)"


@friendly
def export_globesumm(result: MCMSResult | None, kind: str) -> list[str]:
    """CSV: per-(pipeline, metric) means and every summary; JSON: the whole result in one file."""
    require(result, MCMSResult, "Run GlobeSumm first.")
    return export_rows({"scores": result.summary(), "summaries": result.to_frame()}, "globesumm", kind, result)


# --------------------------------------------------------------------------- layout


def build(model_spec: gr.Textbox) -> None:
    eval_state = gr.State(None)
    mcms_state = gr.State(None)
    gr.Markdown(INTRO)
    first_langs = get_task(DEFAULT_TASK).committed_languages()
    with gr.Row():
        task = gr.Dropdown(list_tasks(), value=DEFAULT_TASK, label="Task", elem_id="eval-task")
        langs = gr.Dropdown(first_langs, value=[l for l in DEFAULT_LANGS if l in first_langs], multiselect=True,
                            label="Languages", elem_id="eval-langs")
        n = gr.Number(20, precision=0, label="Items per language (empty = all)", elem_id="eval-n")
        mode = gr.Radio(list(MODES), value="auto", label="Scoring",
                        info="auto: every scoring that fits the task")
    run_button = gr.Button("Evaluate", variant="primary", elem_id="eval-run")
    status = gr.Markdown(elem_id="eval-status")
    plot = gr.Plot(label="Scores per language", elem_id="eval-plot")
    scores = gr.Dataframe(label="Scores (mean, 95% CI, chance)", max_height=360, elem_id="eval-scores")
    with gr.Accordion("Items", open=False):
        items = gr.Dataframe(label="Per item: output and scores", wrap=True, max_height=360)
    with gr.Row():
        export_kind = gr.Radio(["csv", "json"], value="csv", label="Export format", elem_id="eval-export-kind")
        export_button = gr.Button("Export", elem_id="eval-export")
        export_files = gr.File(label="Download", file_count="multiple", elem_id="eval-files")
    task.change(task_languages, inputs=task, outputs=langs)
    run_button.click(run_eval, inputs=[model_spec, task, langs, n, mode],
                     outputs=[status, scores, plot, items, eval_state], api_name="evaluate")
    export_button.click(export_eval, inputs=[eval_state, export_kind], outputs=export_files)

    gr.Markdown(MCMS_INTRO)
    with gr.Row():
        pipelines = gr.CheckboxGroup(list(PIPELINES), value=list(DEFAULT_PIPELINES), label="Pipelines",
                                     elem_id="mcms-pipelines")
        n_events = gr.Number(len(load_events()), precision=0, label="Events (the first N)", elem_id="mcms-events")
        new_tokens = gr.Number(DEFAULT_MAX_NEW_TOKENS, precision=0, label="Max new tokens per call",
                               elem_id="mcms-new-tokens")
        chat = gr.Checkbox(False, label="Chat template (instruction-tuned models)")
    upload = gr.File(label="GlobeSumm file (.jsonl / .json; default: the committed sample)",
                     file_types=[".jsonl", ".json"])
    mcms_button = gr.Button("Summarize and score", variant="primary", elem_id="mcms-run")
    mcms_status = gr.Markdown(elem_id="mcms-status")
    mcms_plot = gr.Plot(label="Metrics per pipeline", elem_id="mcms-plot")
    mcms_table = gr.Dataframe(label="Mean over events, 95% CI", max_height=360, elem_id="mcms-table")
    with gr.Row():
        event = gr.Dropdown([], label="Event")
        pipeline = gr.Dropdown(list(DEFAULT_PIPELINES), value="all", label="Pipeline")
    with gr.Row():
        reference = gr.Textbox(label="Reference summary", lines=8, elem_id="mcms-reference")
        generated = gr.Textbox(label="Generated summary", lines=8, elem_id="mcms-generated")
    with gr.Accordion("Every summary and its metrics", open=False):
        mcms_rows = gr.Dataframe(wrap=True, max_height=360)
    with gr.Row():
        mcms_kind = gr.Radio(["csv", "json"], value="csv", label="Export format")
        mcms_export = gr.Button("Export", elem_id="mcms-export")
        mcms_files = gr.File(label="Download", file_count="multiple", elem_id="mcms-files")
    mcms_button.click(run_globesumm, inputs=[model_spec, pipelines, n_events, upload, new_tokens, chat],
                      outputs=[mcms_status, mcms_table, mcms_plot, mcms_rows, event, pipeline, mcms_state],
                      api_name="globesumm").then(
        show_summary, inputs=[mcms_state, event, pipeline], outputs=[reference, generated])
    for control in (event, pipeline):
        control.change(show_summary, inputs=[mcms_state, event, pipeline], outputs=[reference, generated])
    mcms_export.click(export_globesumm, inputs=[mcms_state, mcms_kind], outputs=mcms_files)
