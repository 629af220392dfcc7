"""The "Retrieval heads" tab: score every head on needle-in-a-haystack trials, compare languages,
and mask heads to see what the model answers without them. All science lives in
`probes.retrieval` and `probes.masking`; the handlers only parse inputs and lay out results."""

from __future__ import annotations

import gradio as gr

from probes import masking, retrieval
from workbench import limits, load
from workbench.datasets import haystack
from workbench.errors import InputError

from .common import as_int, export_rows, friendly, progress_callback, require

DEMO_MAX_TOKENS = limits.cap("context_tokens")
DEMO_MAX_TRIALS = limits.cap("retrieval_trials")

INTRO = """Retrieval heads (Wu et al. 2024) copy a fact from far back in the context. A needle
sentence is hidden in a haystack text; while the model answers, a head scores ``1/(needle length)``
each time the key it attends to most is the needle token being copied. Trials whose answer misses
the needle are dropped; scores are averaged over the rest, and heads above 0.1 count as retrieval
heads. On Gemma 3, five of every six layers see only the last 512 tokens: they can retrieve only
needles inside that window, so use lengths on both sides of 512 and read the scores per layer type."""


def _numbers(text: str, kind: type, what: str) -> list:
    parts = [p for p in str(text or "").replace(";", ",").replace(" ", ",").split(",") if p]
    if not parts:
        raise InputError(f"Give at least one {what}, separated by commas.")
    try:
        return [kind(p) for p in parts]
    except ValueError:
        raise InputError(f"Cannot read the {what}s {text!r}: write numbers separated by commas.") from None


def _grid(lengths: str, depths: str, n_needles, n_langs: int = 1) -> tuple[list[int], list[float], int]:
    sizes = _numbers(lengths, int, "context length")
    fractions = _numbers(depths, float, "depth")
    n = as_int(n_needles, "Needles", 1)
    limits.check("context_tokens", max(sizes))
    limits.check("retrieval_trials", len(sizes) * len(fractions) * n * n_langs)
    return sizes, fractions, n


def _status(result: retrieval.RetrievalResult) -> str:
    kinds = result.by_layer_type()
    per_type = "; ".join(f"{r.layer_type}: {int(r.retrieval_heads)} of {int(r.heads)}" for r in kinds.itertuples())
    return f"**{result.lang}**: {result.note} Retrieval heads per layer type: {per_type}."


@friendly
def run_scores(spec: str, lang: str, lengths: str, depths: str, n_needles: float, progress=gr.Progress()):
    """Score every head in one language; returns status, heatmap, ranked table, per-type table,
    window table, trials table, and the result (kept in the session for export and masking)."""
    sizes, fractions, n = _grid(lengths, depths, n_needles)
    handle = load(spec)
    result = retrieval.retrieval_scores(handle, lang, sizes, fractions, n, progress=progress_callback(progress))
    ranked = result.to_frame().round(4)
    return (_status(result), result.figure(), ranked, result.by_layer_type().round(4),
            result.by_window().round(4), result.trials_frame(), result)


@friendly
def run_compare(spec: str, langs: list[str], lengths: str, depths: str, n_needles: float, progress=gr.Progress()):
    """The same grid in several languages: heatmaps, a summary and the top-10 overlap."""
    if not langs:
        raise InputError("Choose at least one language to compare.")
    sizes, fractions, n = _grid(lengths, depths, n_needles, len(langs))
    handle = load(spec)
    cmp = retrieval.compare_languages(handle, langs, sizes, fractions, n, progress=progress_callback(progress))
    overlap = cmp.overlap(10).round(3).reset_index(names="top-10 overlap")
    return cmp.figure(), cmp.summary().round(4), overlap


@friendly
def export_scores(result: retrieval.RetrievalResult | None, kind: str) -> str:
    """CSV: one row per head; JSON: the whole result (settings, scores and every trial)."""
    require(result, retrieval.RetrievalResult, "Compute retrieval scores first.")
    return export_rows({"scores": result.to_frame()}, f"retrieval-heads-{result.lang}", kind, result)[0]


@friendly
def needle_prompt(spec: str, lang: str, length: float = 256) -> str:
    """A ready-made trial prompt (needle in the middle) for the masking playground."""
    handle = load(spec)
    length = as_int(length, "Context length", 1)
    limits.check("context_tokens", length)
    trial = retrieval.make_trials(handle, lang, [length], [0.5], 1)[0]
    return handle.decode(trial.prompt_ids)


def _masked(spec: str, prompt: str, heads: list[tuple[int, int]], mode: str, max_new_tokens: float):
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("Write a prompt (or fill in a needle-in-a-haystack prompt) first.")
    handle = load(spec)
    n = as_int(max_new_tokens, "Max new tokens", 1)
    gen = masking.generate_with_masked_heads(handle, prompt, heads, mode, n, stop_at_newline=True)
    listed = ", ".join(f"{l}.{h}" for l, h in gen.heads)
    if gen.changed:
        note = f"Masking {listed} ({mode}) changed the answer from generated token {gen.first_difference} on."
    else:
        note = f"Masking {listed} ({mode}) left the answer unchanged."
    return gen.original, gen.masked, note


@friendly
def run_masking(spec: str, prompt: str, heads: str, mode: str, max_new_tokens: float):
    """Original and masked generations side by side, for heads written as '5.1, 11.2'."""
    parsed = masking.parse_heads(heads)
    if not parsed:
        raise InputError("Write the heads to mask as layer.head, e.g. '5.1, 11.2'.")
    return _masked(spec, prompt, parsed, mode, max_new_tokens)


@friendly
def mask_top_k(spec: str, result: retrieval.RetrievalResult | None, k: float, prompt: str, mode: str,
               max_new_tokens: float):
    """Mask the k best retrieval heads of the last computed result (one click)."""
    require(result, retrieval.RetrievalResult, "Compute retrieval scores first; the top heads come from that result.")
    top = result.top(as_int(k, "k", 1))
    if top.empty:
        raise InputError("The last result has no scored heads (no trial was kept).")
    heads = list(zip(top["layer"].tolist(), top["head"].tolist()))
    text = ", ".join(f"{l}.{h}" for l, h in heads)
    return (text, *_masked(spec, prompt, heads, mode, max_new_tokens))


def build(model_spec: gr.Textbox) -> None:
    langs = haystack.available_languages()
    default_lengths = ", ".join(map(str, haystack.DEFAULT_LENGTHS))
    default_depths = ", ".join(f"{d:g}" for d in haystack.DEFAULT_DEPTHS)
    result_state = gr.State(None)
    gr.Markdown(INTRO)
    with gr.Row():
        lang = gr.Dropdown(langs, value="en" if "en" in langs else langs[0], label="Language",
                           elem_id="retrieval-lang")
        lengths = gr.Textbox(default_lengths, label="Context lengths (tokens)", elem_id="retrieval-lengths")
        depths = gr.Textbox(default_depths, label="Needle depths (0 = start, 1 = end)", elem_id="retrieval-depths")
        n_needles = gr.Slider(1, len(haystack.load_needles(langs[0])), value=haystack.DEFAULT_NEEDLES, step=1,
                              label="Needles", elem_id="retrieval-needles")
    score_button = gr.Button("Compute retrieval scores", variant="primary", elem_id="retrieval-run")
    status = gr.Markdown(elem_id="retrieval-status")
    heatmap = gr.Plot(label="Retrieval score per head", elem_id="retrieval-heatmap")
    with gr.Row():
        ranked = gr.Dataframe(label="Heads, best first", max_height=360, elem_id="retrieval-ranked")
        per_type = gr.Dataframe(label="Per layer type", elem_id="retrieval-per-type")
    with gr.Accordion("Trials (kept and dropped)", open=False):
        window = gr.Dataframe(label="Mean score by layer type: did the sliding window still cover the needle?")
        trials = gr.Dataframe(wrap=True, max_height=400)
    with gr.Row():
        export_kind = gr.Radio(["csv", "json"], value="csv", label="Export format", elem_id="retrieval-export-kind")
        export_button = gr.Button("Export scores", elem_id="retrieval-export")
        export_file = gr.File(label="Download", elem_id="retrieval-file")
    score_button.click(run_scores, inputs=[model_spec, lang, lengths, depths, n_needles],
                       outputs=[status, heatmap, ranked, per_type, window, trials, result_state], api_name="retrieval_scores")
    export_button.click(export_scores, inputs=[result_state, export_kind], outputs=export_file)

    gr.Markdown("### Per-language comparison\nThe same grid with haystack, needle and question in each language.")
    compare_langs = gr.CheckboxGroup(langs, value=langs, label="Languages")
    compare_button = gr.Button("Compare languages")
    compare_plot = gr.Plot(label="Retrieval scores per language")
    with gr.Row():
        compare_summary = gr.Dataframe(label="Summary")
        compare_overlap = gr.Dataframe(label="Overlap of the top-10 heads (Jaccard)")
    compare_button.click(run_compare, inputs=[model_spec, compare_langs, lengths, depths, n_needles],
                         outputs=[compare_plot, compare_summary, compare_overlap])

    gr.Markdown("### Masking playground\nSwitch heads off while the model answers. *uniform*: the head attends "
                "evenly to every key it may see (causal mask kept); *zero*: its output is removed.")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=6, scale=4)
        fill_button = gr.Button("Use a needle-in-a-haystack prompt", scale=1)
    with gr.Row():
        heads = gr.Textbox(label="Heads to mask (layer.head)", placeholder="5.1, 11.2")
        mode = gr.Radio(list(masking.MASK_MODES), value="uniform", label="Masking")
        max_new = gr.Slider(1, 50, value=30, step=1, label="Max new tokens")
        top_k = gr.Slider(1, 20, value=5, step=1, label="k")
    with gr.Row():
        mask_button = gr.Button("Generate with these heads masked")
        top_button = gr.Button("Mask the top-k retrieval heads", variant="primary")
    with gr.Row():
        original = gr.Textbox(label="Original", lines=4)
        masked_out = gr.Textbox(label="Masked", lines=4)
    mask_note = gr.Markdown()
    fill_button.click(needle_prompt, inputs=[model_spec, lang], outputs=prompt)
    mask_button.click(run_masking, inputs=[model_spec, prompt, heads, mode, max_new],
                      outputs=[original, masked_out, mask_note], api_name="mask_heads")
    top_button.click(mask_top_k, inputs=[model_spec, result_state, top_k, prompt, mode, max_new],
                     outputs=[heads, original, masked_out, mask_note])

