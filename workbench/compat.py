"""Compatibility shims between TransformerLens 4.3 and Transformers 5.2x.

Transformers 5.2x passes the KV cache to attention layers as `cache=`; TL 4.3's attention bridge
only looks for `past_key_values=` / `layer_past=`, so with a cache every decode step silently
attends to itself alone and generation turns to garbage (on every architecture, Gemma 3 included).
The shim hands the cache over under the name the bridge expects. `tests/test_models.py` checks
greedy parity with Hugging Face, so a TL release that fixes this is noticed either way.

Under bf16 autocast with float32 weights (`mixed_precision: bf16` in training) the attention scores
the bridge rebuilds are bfloat16 while Transformers' additive mask holds float32's minimum, which
the bridge casts to bfloat16: it overflows to -inf, a query that sees no key (padding beyond a
sliding window, Gemma 3) softmaxes to NaN, and 0 x NaN spreads it to every row of the batch. The
second shim clamps the mask to the scores' own minimum first, as Transformers' own masks are built
(`tests/test_trainer_scale.py` trains a padded batch under bf16 autocast).
"""

from __future__ import annotations

import functools


def install() -> None:
    import torch
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    original = AttentionBridge._update_kv_cache
    if getattr(original, "_workbench_shim", False):
        return
    original_mask = AttentionBridge._apply_reconstruct_attention_mask

    @functools.wraps(original_mask)
    def _apply_reconstruct_attention_mask(self, attn_scores, attention_mask, *args, **kwargs):
        if (attention_mask is not None and attention_mask.is_floating_point() and not self.compatibility_mode
                and attention_mask.dtype != attn_scores.dtype):
            attention_mask = attention_mask.clamp(min=torch.finfo(attn_scores.dtype).min)
        return original_mask(self, attn_scores, attention_mask, *args, **kwargs)

    @functools.wraps(original)
    def _update_kv_cache(self, k, v, **kwargs):
        if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
            kwargs["past_key_values"] = kwargs["cache"]
        return original(self, k, v, **kwargs)

    _update_kv_cache._workbench_shim = True
    AttentionBridge._update_kv_cache = _update_kv_cache
    AttentionBridge._apply_reconstruct_attention_mask = _apply_reconstruct_attention_mask
