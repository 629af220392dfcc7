"""Compatibility shims between TransformerLens 4.3 and Transformers 5.2x.

Transformers 5.2x passes the KV cache to attention layers as `cache=`; TL 4.3's attention bridge
only looks for `past_key_values=` / `layer_past=`, so with a cache every decode step silently
attends to itself alone and generation turns to garbage (on every architecture, Gemma 3 included).
The shim hands the cache over under the name the bridge expects. `tests/test_models.py` checks
greedy parity with Hugging Face, so a TL release that fixes this is noticed either way.
"""

from __future__ import annotations

import functools


def install() -> None:
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    original = AttentionBridge._update_kv_cache
    if getattr(original, "_workbench_shim", False):
        return

    @functools.wraps(original)
    def _update_kv_cache(self, k, v, **kwargs):
        if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
            kwargs["past_key_values"] = kwargs["cache"]
        return original(self, k, v, **kwargs)

    _update_kv_cache._workbench_shim = True
    AttentionBridge._update_kv_cache = _update_kv_cache
