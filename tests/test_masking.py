"""Head masking: what a masked head computes is checked against values rebuilt by hand from the
same run's V vectors; causality, the untouched heads and the KV-cache path are checked directly."""

import numpy as np
import pytest
import torch

from probes.masking import (
    MaskedGeneration,
    check_heads,
    generate_with_masked_heads,
    mask_heads,
    masking_hooks,
    parse_heads,
)
from workbench import engine
from workbench.errors import InputError

PROMPT = "the cat sat on the mat and the dog ran in the park"


def _allowed(handle, layer: int, n: int) -> torch.Tensor:
    """(n, n) bool: which keys each query may see (causal, plus the sliding window if any)."""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    allowed = j <= i
    types = handle.facts.layer_types
    if types and types[layer] == "sliding_attention":
        allowed &= j > i - handle.facts.sliding_window
    return allowed


def _z_and_v(handle, ids, layer, fwd_hooks=()):
    names = [f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.attn.hook_v", f"blocks.{layer}.attn.hook_pattern"]
    cache = engine.capture(handle, ids, names, fwd_hooks=fwd_hooks)
    return cache[names[0]][0], cache[names[1]][0], cache[names[2]][0]


@pytest.mark.parametrize("layer", [0, 1])
def test_uniform_mask_averages_values_over_allowed_keys_only(tiny_handle, layer):
    """The masked head's output is the plain mean of V over the causally (and sliding-window)
    allowed keys; every other query head, including those sharing its KV head, is unchanged."""
    h = tiny_handle
    ids = engine.as_ids(h, PROMPT)
    n = ids.shape[1]
    assert n > (h.facts.sliding_window or 0)  # the tiny Gemma's window (8) must really slide
    head = 1
    z0, _, _ = _z_and_v(h, ids, layer)
    z1, v, pattern = _z_and_v(h, ids, layer, masking_hooks(h, [(layer, head)], "uniform"))
    group = h.facts.n_heads // v.shape[1]
    allowed = _allowed(h, layer, n).float()
    expected = (allowed / allowed.sum(-1, keepdim=True)) @ v[:, head // group]
    torch.testing.assert_close(z1[:, head], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pattern[head], allowed / allowed.sum(-1, keepdim=True), atol=1e-6, rtol=0)
    others = [k for k in range(h.facts.n_heads) if k != head]
    torch.testing.assert_close(z1[:, others], z0[:, others], atol=0, rtol=0)


def test_uniform_mask_keeps_causality(tiny_handle):
    """Changing the last token must not change any earlier position's logits under masking."""
    h = tiny_handle
    ids = engine.as_ids(h, PROMPT)
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 7) % h.facts.d_vocab
    heads = [(0, 0), (0, 3), (1, 2)]
    with mask_heads(h, heads, "uniform"):
        a = engine.forward(h, ids)
        b = engine.forward(h, changed)
    torch.testing.assert_close(a[0, :-1], b[0, :-1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[0, -1], b[0, -1])


def test_zero_mask_zeroes_only_the_chosen_head(tiny_handle):
    h = tiny_handle
    ids = engine.as_ids(h, PROMPT)
    z0, _, _ = _z_and_v(h, ids, 1)
    z1, _, _ = _z_and_v(h, ids, 1, masking_hooks(h, [(1, 2)], "zero"))
    assert torch.count_nonzero(z1[:, 2]) == 0
    torch.testing.assert_close(z1[:, [0, 1, 3]], z0[:, [0, 1, 3]], atol=0, rtol=0)
    with mask_heads(h, [(1, 2)], "zero"):
        masked = engine.forward(h, ids)
    assert not torch.allclose(masked, engine.forward(h, ids))


@pytest.mark.parametrize("mode", ["uniform", "zero"])
def test_masked_generation_with_kv_cache_matches_full_recompute(tiny_handle, mode):
    """Masking must act the same on the cached decode steps (one query row, possibly a cropped
    sliding-window cache) as on a full forward pass over the finished text."""
    h = tiny_handle
    heads = [(0, 1), (1, 0), (1, 3)]
    gen = generate_with_masked_heads(h, PROMPT, heads, mode=mode, max_new_tokens=8)
    assert isinstance(gen, MaskedGeneration) and len(gen.masked_ids) > 0
    prompt = engine.as_ids(h, PROMPT)
    full = torch.cat([prompt, torch.tensor([gen.masked_ids])], dim=1)
    with mask_heads(h, heads, mode):
        logits = engine.forward(h, full)
    n = prompt.shape[1]
    predicted = logits[0, n - 1:-1].argmax(-1).tolist()
    assert predicted == gen.masked_ids
    plain = engine.generate_greedy(h, PROMPT, max_new_tokens=8)
    assert gen.original_ids == plain.new_ids[0]


def test_mask_context_removes_its_hooks(tiny_gemma):
    ids = engine.as_ids(tiny_gemma, PROMPT)
    before = engine.forward(tiny_gemma, ids)
    with mask_heads(tiny_gemma, [(0, 0), (1, 1)], "uniform"):
        pass
    torch.testing.assert_close(engine.forward(tiny_gemma, ids), before, atol=0, rtol=0)


def test_masked_generation_frame_and_difference():
    g = MaskedGeneration("p", [(1, 2)], "zero", "a b", "a c", [5, 6], [5, 7])
    assert g.changed and g.first_difference == 1
    frame = g.to_frame()
    assert list(frame["generation"]) == ["a b", "a c"] and frame["heads masked"][1] == "1.2"
    same = MaskedGeneration("p", [(1, 2)], "zero", "a", "a", [5], [5])
    assert not same.changed and same.first_difference is None


def test_parse_heads():
    assert parse_heads("5.2, 11.0") == [(5, 2), (11, 0)]
    assert parse_heads("L5H2 l11h0; 3:1") == [(5, 2), (11, 0), (3, 1)]
    assert parse_heads("  ") == []
    with pytest.raises(InputError, match="Cannot read the head 'x'"):
        parse_heads("5.2, x")


def test_bad_input_is_explained(tiny_gemma):
    with pytest.raises(InputError, match="out of range"):
        check_heads(tiny_gemma, [(0, 4)])
    with pytest.raises(InputError, match="layer 5 is out of range"):
        check_heads(tiny_gemma, [(5, 0)])
    with pytest.raises(InputError, match="pair"):
        check_heads(tiny_gemma, [3])
    with pytest.raises(InputError, match="Unknown masking mode"):
        masking_hooks(tiny_gemma, [(0, 0)], "mean")
    with pytest.raises(InputError, match="at least one head"):
        generate_with_masked_heads(tiny_gemma, PROMPT, [])
    assert check_heads(tiny_gemma, [(1, 2), [1, 2], (np.int64(0), 3)]) == [(0, 3), (1, 2)]
    with pytest.raises(InputError, match="whole numbers"):
        check_heads(tiny_gemma, [(0.5, 1)])


@pytest.mark.slow
@pytest.mark.parametrize("layer", [4, 5])  # a sliding-window layer and a full-attention layer
def test_gemma_uniform_mask_acts_on_one_query_head(gemma, layer):
    """On the real model (4 query heads sharing 1 KV head) the bridge computes attention itself,
    so the score hook takes effect: the masked head averages V, its three siblings are unchanged."""
    ids = engine.as_ids(gemma, "The capital of France is Paris. The capital of Germany is")
    z0, _, _ = _z_and_v(gemma, ids, layer)
    z1, v, _ = _z_and_v(gemma, ids, layer, masking_hooks(gemma, [(layer, 2)], "uniform"))
    allowed = _allowed(gemma, layer, ids.shape[1]).float()
    torch.testing.assert_close(z1[:, 2], (allowed / allowed.sum(-1, keepdim=True)) @ v[:, 0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(z1[:, [0, 1, 3]], z0[:, [0, 1, 3]], atol=0, rtol=0)
    assert not torch.allclose(z1[:, 2], z0[:, 2])
