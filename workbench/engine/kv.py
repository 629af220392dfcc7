"""KV caches shared between many continuations of one prompt (XTransplant rows, scoring)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable

import torch

from .run import hooks
from .sites import Hook


def fork(cache, index: torch.Tensor):
    """A cache whose batch rows are `cache`'s rows `index` (repeats allowed). The original is left
    as it was: HF's dynamic cache layers replace their tensors rather than writing into them, so
    copying the layer objects (not the tensors) is enough. The index goes to the CPU: a CPU index
    selects rows on any device, so the layers of a model split over GPUs keep their caches."""
    forked = copy.copy(cache)
    forked.layers = [copy.copy(layer) for layer in cache.layers]
    forked.batch_select_indices(index.cpu())
    return forked


@dataclass
class Prefix:
    """A prompt split into its shared part (run once, KV-cached) and its last token."""

    ids: torch.Tensor  # (1, T): the whole prompt
    cache: object | None  # the HF cache of ids[:, :-1]; None for a one-token prompt


@torch.no_grad()
def prefill(handle, ids: torch.Tensor, fwd_hooks: Iterable[Hook] = (), cache=None, last_logits: bool = True):
    """Run `ids` with a KV cache (continuing `cache` when given); returns (cache, logits of the last
    position or None). Without `last_logits` the unembedding is skipped."""
    kwargs = {} if cache is None else {"cache": cache}
    with hooks(handle, fwd_hooks):
        if last_logits:
            out = handle.hf_model(input_ids=ids, use_cache=True, logits_to_keep=1, **kwargs)  # not (T, vocab) floats
            return out.past_key_values, out.logits[:, -1]
        out = handle.hf_model.base_model(input_ids=ids, use_cache=True, **kwargs)
        return out.past_key_values, None


def prefix(handle, ids: torch.Tensor) -> Prefix:
    """Run everything but the last prompt token once (no hooks, no unembedding)."""
    if ids.shape[-1] < 2:
        return Prefix(ids, None)
    cache, _ = prefill(handle, ids[:, :-1], last_logits=False)
    return Prefix(ids, cache)


@torch.no_grad()
def step_logits(handle, ids: torch.Tensor, cache, fwd_hooks: Iterable[Hook] = ()) -> tuple[object, torch.Tensor]:
    """Feed (rows, k) tokens after `cache`; returns (cache, logits (rows, k, vocab))."""
    with hooks(handle, fwd_hooks):
        out = handle.hf_model(input_ids=ids, cache=cache, use_cache=True)
    return out.past_key_values, out.logits
