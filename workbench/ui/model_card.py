"""The model picker's card: the facts of the loaded model, in words a researcher scans quickly."""

from __future__ import annotations

import torch

from ..devices import native_bf16
from ..models import ModelFacts


def _runs_on(facts: ModelFacts) -> str:
    """Which mode produced the results (float32, or a half-precision fast mode that differs from it
    slightly) and where the model runs."""
    mode = facts.dtype if facts.dtype == "float32" else f"{facts.dtype} (fast mode)"
    where = facts.device
    if facts.device_map:
        where += " (layers: " + ", ".join(f"{n} on {d}" for d, n in facts.device_map.items()) + ")"
    line = f"- **Results computed in**: {mode}, on {where}"
    if facts.dtype == "bfloat16" and facts.device == "cpu" and not native_bf16(torch.device("cpu")):
        line += ". This CPU has no native bfloat16 (AMX, AVX512-BF16), so bfloat16 runs slower than float32 here"
    return line


def model_card_markdown(facts: ModelFacts) -> str:
    kv = f"{facts.n_kv_heads} KV heads (grouped-query)" if facts.n_kv_heads != facts.n_heads else "no grouping"
    layer_types = ""
    if facts.layer_types:
        full = [i for i, t in enumerate(facts.layer_types) if t == "full_attention"]
        if len(full) != len(facts.layer_types):
            layer_types = (f"\n- **Attention**: sliding window {facts.sliding_window} tokens, full attention in layers "
                           f"{', '.join(map(str, full))}")
    note = f"\n\n> {facts.note}" if facts.note else ""
    template = "yes" if facts.chat_template else "no"
    return (
        f"### {facts.spec}\n"
        f"{_runs_on(facts)}\n"
        f"- **Architecture**: {facts.architecture} ({facts.source})\n"
        f"- **Layers / heads**: {facts.n_layers} layers, {facts.n_heads} heads, {kv}\n"
        f"- **Sizes**: d_model {facts.d_model}, d_head {facts.d_head}, d_mlp {facts.d_mlp}, vocabulary {facts.d_vocab:,}, "
        f"context {facts.n_ctx:,}\n"
        f"- **Parameters**: {facts.n_params / 1e6:,.1f} M ({facts.dtype})"
        f"{layer_types}\n"
        f"- **Chat template**: {template}\n"
        f"- **Weights fingerprint**: `{facts.fingerprint}`; loaded in {facts.load_seconds:.1f} s"
        f"{note}"
    )
