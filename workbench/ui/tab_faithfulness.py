"""The "Faithfulness" view: one (documents, question) item answered by the base model, an RHIO
model, and the RHIO model with contrastive decoding, side by side, with the sentences the
documents do not support highlighted. RHIO training itself is launched from the Train tab."""

from __future__ import annotations

import gradio as gr

from .. import load
from ..datasets.faithfulness import load_faithfulness
from ..errors import InputError
from trainers.methods.rhio.evaluation import answer, highlight
from .common import as_int, as_number, friendly

INTRO = """RHIO (Retrieval Head-Induced Optimization) trains a model on faithful answers under a
`[POS]` token and on answers produced with its retrieval heads masked under `[NEG]`; decoding then
contrasts the two: logits = (1 + a) z_POS − a z_NEG. Prepare a base with
`workbench rhio prepare`, build data with `workbench rhio augment`, train with the Train tab
(method `rhio`). Highlighted sentences share too few content words with the documents (a lexical
check: it flags invented names and numbers, not subtle misreadings)."""


def _items():
    return load_faithfulness()


def item_choices() -> list[tuple[str, str]]:
    return [(f"{it.id} [{it.lang}] {it.question[:60]}", it.id) for it in _items()]


def _item(item_id: str):
    for it in _items():
        if it.id == item_id:
            return it
    raise InputError(f"No faithfulness item {item_id!r}.")


@friendly
def show_item(item_id: str) -> str:
    it = _item(item_id)
    docs = "".join(f"<p><b>{d.title}</b><br>{d.text}</p>" for d in it.documents)
    return f"<h4>{it.question}</h4>{docs}<p><i>Reference:</i> {it.answer}</p>"


@friendly
def compare_answers(base_spec: str, rhio_spec: str, item_id: str, alpha: float, max_new_tokens: float,
                    progress=gr.Progress()) -> tuple[str, str, str]:
    it = _item(item_id)
    if not isinstance(rhio_spec, str) or not rhio_spec.strip():
        raise InputError("Give the RHIO model (e.g. ckpt:rhio) — train one from the Train tab with method rhio.")
    alpha = as_number(alpha, "The contrast strength a")
    if alpha < 0:
        raise InputError("alpha must be >= 0.")
    n = as_int(max_new_tokens, "New tokens", 1)
    base = load(base_spec)
    progress(0.1, desc="base model")
    a = answer(base, it, "plain", max_new_tokens=n)
    tuned = load(rhio_spec)
    progress(0.4, desc="RHIO [POS]")
    b = answer(tuned, it, "pos", max_new_tokens=n)
    progress(0.7, desc="RHIO contrastive")
    c = answer(tuned, it, "contrastive", alpha=alpha, max_new_tokens=n)
    return tuple(highlight(x, it.documents, it.lang) for x in (a, b, c))


def build(model_spec: gr.Textbox) -> None:
    gr.Markdown(INTRO)
    choices = item_choices()
    with gr.Row():
        item = gr.Dropdown(choices=choices, value=choices[0][1], label="Item", elem_id="faith-item")
        rhio_spec = gr.Textbox(value="ckpt:rhio", label="RHIO model", elem_id="faith-rhio")
        alpha = gr.Number(value=1.0, label="Contrast strength a", elem_id="faith-alpha")
        max_new = gr.Number(value=60, precision=0, label="New tokens", elem_id="faith-new-tokens")
    context = gr.HTML(show_item(choices[0][1]), elem_id="faith-context")
    run = gr.Button("Answer with all three", variant="primary", elem_id="faith-run")
    with gr.Row():
        base_out = gr.HTML(label="Base model", elem_id="faith-base")
        pos_out = gr.HTML(label="RHIO [POS]", elem_id="faith-pos")
        cd_out = gr.HTML(label="RHIO + contrastive decoding", elem_id="faith-cd")
    item.change(show_item, inputs=item, outputs=context)
    run.click(compare_answers, inputs=[model_spec, rhio_spec, item, alpha, max_new],
              outputs=[base_out, pos_out, cd_out], api_name="faithfulness")
