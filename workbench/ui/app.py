"""The Gradio app: a model picker with its card, and one tab per capability.

Each tab module (`workbench/ui/tab_*.py`) exposes `build(model_spec)`; the app only lays them out.
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from .. import load  # noqa: E402
from ..default_model import DEFAULT_MODEL  # noqa: E402
from ..errors import InputError  # noqa: E402
from .common import demo_mode, friendly, progress_callback  # noqa: E402
from .model_card import model_card_markdown  # noqa: E402

TABS = [
    ("English pivot", "tab_pivot"),
    ("Retrieval heads", "tab_retrieval"),
    ("XTransplant", "tab_transplant"),
    ("Train", "tab_train"),
    ("Faithfulness", "tab_faithfulness"),
    ("Unlearning", "tab_unlearning"),
    ("Evaluate", "tab_evaluate"),
    ("Compare", "tab_compare"),
]

INTRO = f"""# Multilingual interpretability workbench
Look inside a language model and act on what you see: the English-pivot lens, retrieval heads,
cross-lingual transplants, trainers and side-by-side comparison, all over one Python API.
The default model is **{DEFAULT_MODEL}** (dequantized 4-bit weights; see its card below)."""


@friendly
def load_model(spec: str, progress=gr.Progress()) -> str:
    """Load (or reuse) a model and return its card."""
    if not isinstance(spec, str):
        raise InputError("Give a model spec as text, e.g. gemma-3-270m.")
    handle = load(spec.strip(), progress=progress_callback(progress))
    return model_card_markdown(handle.facts)


def available_tabs() -> list[tuple[str, object]]:
    tabs = []
    for title, name in TABS:
        if importlib.util.find_spec(f"workbench.ui.{name}") is not None:
            tabs.append((title, importlib.import_module(f"workbench.ui.{name}")))
    return tabs


def build_app(default_spec: str = DEFAULT_MODEL) -> gr.Blocks:
    with gr.Blocks(title="Multilingual interpretability workbench") as app:
        gr.Markdown(INTRO)
        if demo_mode():
            gr.Markdown("**Demo mode**: input sizes are capped and training is disabled.")
        with gr.Row():
            info = ("the default model or a published checkpoint (ckpt:NAME)" if demo_mode() else
                    "gemma-3-270m, a local folder, ckpt:NAME or a Hugging Face hub name")
            model_spec = gr.Textbox(value=default_spec, label="Model", info=info, scale=4)
            load_button = gr.Button("Load model", variant="primary", scale=1)
        card = gr.Markdown(elem_id="model-card")
        load_button.click(load_model, inputs=model_spec, outputs=card, api_name="model_info")
        model_spec.submit(load_model, inputs=model_spec, outputs=card)
        app.load(load_model, inputs=model_spec, outputs=card)
        for title, module in available_tabs():
            with gr.Tab(title, elem_id="tab-" + module.__name__.rsplit(".", 1)[-1].removeprefix("tab_")):
                module.build(model_spec)
    return app
