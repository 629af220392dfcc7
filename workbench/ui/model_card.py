"""The model picker's card: the facts of the loaded model, in words a researcher scans quickly."""

from __future__ import annotations

from ..models import ModelFacts


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
