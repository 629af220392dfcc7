"""Train tab: fine-tune a model or checkpoint in a separate process and watch it live.

The handlers only start, poll and cancel jobs (`trainers.jobs`): the training runs in its own
process, so the app stays responsive, and a timer reads progress, losses and logs from the run
folder. Finished runs are registered checkpoints that every other tab opens as `ckpt:NAME`.
"""

from __future__ import annotations

import html

import gradio as gr

from ..errors import InputError
from .common import as_int, as_number, demo_mode, friendly, upload_path

DEMO_CHOICE = "Demo set (fr, de, zh, es)"
UPLOAD_CHOICE = "Upload a JSONL file"
POLL_SECONDS = 2.0
JOBS: dict = {}  # run name -> TrainingJob started by this app


def base_choices(current: str | None = None) -> list[str]:
    """The model in the app's model box, the default model and every registered checkpoint."""
    from .. import registry
    from ..default_model import DEFAULT_MODEL

    choices = [c for c in (current, DEFAULT_MODEL) if c]
    choices += [c.spec for c in registry.list_checkpoints()]
    return list(dict.fromkeys(choices))


def _languages(text: str) -> list[str] | None:
    codes = [c.strip() for c in (text or "").replace(";", ",").split(",") if c.strip()]
    return codes or None


@friendly
def start_training(method: str, base: str, model_spec: str, data_choice: str, upload, languages: str,
                   lr: float, max_steps: float, batch_size: float, grad_accum: float, max_length: float,
                   lora: bool, lora_r: float, seed: float, run_name: str):
    """Check the inputs, then launch the job; returns (run name, status text, timer on)."""
    if demo_mode():
        raise gr.Error("Training is disabled in demo mode. Run the workbench locally to train models.")
    from trainers.config import TrainConfig
    from trainers.data import load_jsonl
    from trainers.jobs import TrainingJob, check_base_model
    from trainers.methods import build_method

    from .. import registry

    for value, what in ((method, "The method"), (base, "The base model"), (model_spec, "The model"),
                        (languages, "The languages"), (run_name, "The run name")):
        if value is not None and not isinstance(value, str):
            raise InputError(f"{what} must be text, not {type(value).__name__}.")
    spec = (base or model_spec or "").strip()
    if not spec:
        raise InputError("Choose a base model or checkpoint to train.")
    if data_choice == UPLOAD_CHOICE:
        if not upload:
            raise InputError("Upload a JSONL file of training records, or choose the demo set.")
        data = upload_path(upload)
    else:
        data = "demo"
    running = [run for run, job in JOBS.items() if job.running]
    if running:
        raise InputError(f"Run {running[0]!r} is still training; cancel it or wait until it ends.")
    rank = as_int(lora_r, "LoRA rank")
    config = TrainConfig(method=method, base_model=spec, data=data, languages=_languages(languages),
                         lr=as_number(lr, "Learning rate"), max_steps=as_int(max_steps, "Steps"),
                         batch_size=as_int(batch_size, "Batch size"), grad_accum=as_int(grad_accum, "Gradient accumulation"),
                         max_length=as_int(max_length, "Max tokens"), lora=bool(lora), lora_r=rank,
                         lora_alpha=2 * rank, seed=as_int(seed, "Seed"),
                         output=(run_name or "").strip())
    method_obj = build_method(config.method, config.method_args)
    load_jsonl(config.data, getattr(method_obj, "required_fields", ("instruction", "output")), config.languages)
    # unknown folders and checkpoints, /etc, pickle-only folders fail here, not in the job
    check_base_model(spec)
    if config.output and registry.latest(config.output):  # names that leave their folder fail here too
        raise InputError(f"Run {config.output!r} already has checkpoints; choose another run name.")
    job = TrainingJob.start(config)
    JOBS[job.run] = job
    return job.run, f"Started **{job.run}**: {method} on `{spec}`, {config.max_steps} steps.", gr.Timer(active=True)


def _bar(fraction: float, text: str) -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (f"<div style='border:1px solid #ccc;border-radius:4px;height:18px;width:100%'>"
            f"<div style='background:#4a7bd0;height:100%;width:{pct:.1f}%'></div></div>"
            f"<div style='font-size:0.9em'>{html.escape(text)}</div>")


@friendly
def poll_training(run: str):
    """Status, progress bar, loss plot and log tail of `run`; the timer stops when the job ends."""
    from trainers.metrics import loss_figure

    job = JOBS.get(run or "")
    if job is None:
        return "No training started from this page yet.", _bar(0, ""), None, "", gr.Timer(active=False)
    status = job.status()
    lines = [f"**{job.run}**: {status.state} ({status.message})"]
    if status.loss is not None:
        lines.append(f"last loss {status.loss:.4f}" + (f", eval loss {status.eval_loss:.4f}" if status.eval_loss is not None else ""))
    if status.checkpoint:
        lines.append(f"latest checkpoint `{status.checkpoint}` (type it in the Model box to open it in every tab)")
    figure = loss_figure(job.metrics(), title=f"{job.run}: loss")
    bar = _bar(status.fraction, f"step {status.step} / {status.total_steps or '?'}")
    return "  \n".join(lines), bar, figure, job.log_tail(), gr.Timer(active=not status.done)


@friendly
def cancel_training(run: str) -> str:
    job = JOBS.get(run or "")
    if job is None or not job.running:
        raise InputError("No running training to cancel.")
    job.cancel()
    return f"Cancelling **{job.run}**: it stops after the current step and saves a checkpoint."


@friendly
def checkpoint_table():
    import pandas as pd

    from .. import registry

    rows = [c.summary() for c in registry.list_checkpoints()]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["name", "method", "base_model", "step", "created"])


def build(model_spec: gr.Textbox) -> None:
    from trainers.methods import available_methods

    disabled = demo_mode()
    gr.Markdown("Fine-tune a model or a registered checkpoint. Training runs in a separate process; "
                "the result is registered as `ckpt:RUN` and opens in every tab."
                + ("\n\n**Training is disabled in demo mode.**" if disabled else ""))
    with gr.Row():
        method = gr.Dropdown(available_methods(), value="sft", label="Method", elem_id="train-method")
        base = gr.Dropdown(base_choices(model_spec.value), value=None, allow_custom_value=True,
                           label="Base model or checkpoint", info="empty: the model in the Model box")
        run_name = gr.Textbox(label="Run name", placeholder="automatic", elem_id="train-run-name")
    with gr.Row():
        data_choice = gr.Radio([DEMO_CHOICE, UPLOAD_CHOICE], value=DEMO_CHOICE, label="Data")
        upload = gr.File(label="JSONL (instruction, output, lang, instruction_en, output_en)", file_types=[".jsonl"])
        languages = gr.Textbox(label="Languages", placeholder="all, or e.g. fr, de")
    with gr.Row():
        lr = gr.Number(value=1e-4, label="Learning rate", elem_id="train-lr")
        max_steps = gr.Number(value=20, precision=0, label="Steps", elem_id="train-steps")
        batch_size = gr.Slider(1, 16, value=4, step=1, label="Batch size")
        grad_accum = gr.Slider(1, 16, value=1, step=1, label="Gradient accumulation")
        max_length = gr.Slider(16, 512, value=64, step=16, label="Max tokens")
    with gr.Row():
        lora = gr.Checkbox(value=True, label="LoRA (merged into the checkpoint)")
        lora_r = gr.Slider(2, 64, value=16, step=2, label="LoRA rank")
        seed = gr.Number(value=0, precision=0, label="Seed")
    with gr.Row():
        start = gr.Button("Start training", variant="primary", interactive=not disabled, elem_id="train-start")
        cancel = gr.Button("Cancel", variant="stop", interactive=not disabled)
    status = gr.Markdown(elem_id="train-status")
    progress = gr.HTML(_bar(0, ""))
    plot = gr.Plot(label="Loss")
    logs = gr.Textbox(label="Log", lines=10, max_lines=10, autoscroll=True)
    with gr.Accordion("Registered checkpoints", open=False):
        table = gr.Dataframe(interactive=False, elem_id="train-checkpoints")
        refresh = gr.Button("Refresh", elem_id="train-refresh")
    current = gr.State("")
    timer = gr.Timer(POLL_SECONDS, active=False)

    start.click(start_training, inputs=[method, base, model_spec, data_choice, upload, languages, lr, max_steps,
                                        batch_size, grad_accum, max_length, lora, lora_r, seed, run_name],
                outputs=[current, status, timer])
    timer.tick(poll_training, inputs=current, outputs=[status, progress, plot, logs, timer])
    cancel.click(cancel_training, inputs=current, outputs=status)
    refresh.click(checkpoint_table, outputs=table)
    refresh.click(lambda spec: gr.Dropdown(choices=base_choices(spec)), inputs=model_spec, outputs=base)
