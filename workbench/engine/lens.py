"""From residual-stream vectors to logits: the model's own final norm, unembedding and output
transform (Gemma's soft-capping), so a lens read of the last layer reproduces the model's logits."""

from __future__ import annotations

import torch

from ..errors import InputError


def final_norm(handle) -> torch.nn.Module:
    base = handle.hf_model.base_model
    for attr in ("norm", "ln_f", "final_layernorm", "final_layer_norm"):
        if hasattr(base, attr):
            return getattr(base, attr)
    raise InputError(f"Cannot find the final norm of {type(handle.hf_model).__name__}.")


def unembed(handle, normed: torch.Tensor) -> torch.Tensor:
    """Logits of vectors that already went through the final norm (e.g. `last_hidden_state`)."""
    logits = handle.hf_model.get_output_embeddings()(normed)
    cap = getattr(handle.hf_model.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def lens_logits(handle, resid: torch.Tensor) -> torch.Tensor:
    """The logit lens of residual-stream vectors taken *before* the final norm: the last layer is
    normed exactly once and reproduces the model's logits."""
    return unembed(handle, final_norm(handle)(resid))
