"""Hooked forward passes: logits, or only the activations a probe asks for.

All runs go through the Hugging Face modules that the TransformerBridge wrapped with hook points,
so TransformerLens hook names work everywhere. Hooks live on the shared model object, so every
hooked run holds the handle's lock.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch

from ..errors import InputError
from .sites import Hook, block_of, resid_names

Position = int | slice | Sequence[int] | torch.Tensor | str | None


@contextlib.contextmanager
def hooks(handle, fwd_hooks: Iterable[Hook] = ()) -> Iterator[None]:
    """Attach forward hooks for the duration of the block; they are removed even on error."""
    fwd_hooks = list(fwd_hooks)
    known = handle.bridge.hook_dict
    for name, _ in fwd_hooks:
        if name not in known:
            raise InputError(f"Unknown hook point {name!r}.")
    with handle.lock:
        if not fwd_hooks:
            yield
            return
        with handle.bridge.hooks(fwd_hooks=fwd_hooks):
            yield


def _grad_mode(grad: bool):
    return contextlib.nullcontext() if grad else torch.no_grad()


def forward(handle, ids: torch.Tensor, fwd_hooks: Iterable[Hook] = (), attention_mask: torch.Tensor | None = None,
            grad: bool = False) -> torch.Tensor:
    """Logits (batch, seq, vocab) of a hooked forward pass; with `grad=True` they carry gradients
    (the training methods' pass)."""
    with _grad_mode(grad), hooks(handle, fwd_hooks):
        return handle.hf_model(input_ids=ids, attention_mask=attention_mask, use_cache=False).logits


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the deepest activation needed has been seen."""


@dataclass
class Capture:
    """What `capture` kept: activations by hook name, and the logits when asked for."""

    acts: dict[str, torch.Tensor]
    logits: torch.Tensor | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.acts[name]

    def __iter__(self):
        return iter(self.acts)

    def __contains__(self, name: object) -> bool:
        return name in self.acts

    def stack(self, names: Sequence[str], dim: int = 0) -> torch.Tensor:
        return torch.stack([self.acts[n] for n in names], dim=dim)


def _select(tensor: torch.Tensor, at: Position) -> torch.Tensor:
    """Positions of (batch, seq, ...) activations: all (None), one for every row (int), a slice or
    list, or one per row (a LongTensor of shape (batch,): a tag or the last real token)."""
    if at is None:
        return tensor
    if isinstance(at, torch.Tensor) and at.dim() == 1 and at.dtype == torch.long:
        rows = torch.arange(tensor.shape[0], device=tensor.device)
        return tensor[rows, at.to(tensor.device)]
    return tensor[:, at]


def capture(handle, ids: torch.Tensor, sites: Sequence[str], at: Position = None,
            attention_mask: torch.Tensor | None = None, grad: bool = False, stop_after: int | str | None = "auto",
            fwd_hooks: Iterable[Hook] = (), logits: bool = False) -> Capture:
    """One forward pass that keeps only the named activations, at the positions `at` selects.

    `at` is None (all positions), an int / slice / list (the same for every row), "last" (each
    row's last real token, from `attention_mask`; the last column without one) or a (batch,)
    LongTensor (one position per row, e.g. a tag). With `grad=True` the activations keep their
    graph (training); otherwise they are detached copies. Without `logits` the unembedding is
    skipped (on Gemma 3 its 262k-token matrix costs more than all layers together) and, with
    `stop_after="auto"`, the pass ends after the deepest block any site lives in; an int stops
    after that layer, None runs every layer.
    """
    names = list(sites)
    if at == "last":
        if attention_mask is None:
            at = -1
        else:
            positions = torch.arange(ids.shape[-1], device=ids.device).expand_as(ids)
            at = torch.where(attention_mask.bool(), positions, -1).amax(-1)
    if stop_after == "auto":
        blocks = [block_of(n) for n in names]
        stop_after = None if logits or not names or None in blocks else max(blocks)
    if stop_after is not None and logits:
        raise InputError("capture cannot stop the forward early and return logits.")
    kept: dict[str, torch.Tensor] = {}
    stop_name = None if stop_after is None else resid_names(handle, [stop_after])[0]

    def keeper(name: str):  # hook.name is the canonical name; callers asked by alias
        def keep(tensor, hook):
            picked = _select(tensor, at)
            kept[name] = picked if grad else picked.detach().clone()
        return keep

    def stop(tensor, hook):
        raise _Stop

    run_hooks = [*fwd_hooks, *[(n, keeper(n)) for n in names]] + ([(stop_name, stop)] if stop_name else [])
    out = None
    try:
        with _grad_mode(grad), hooks(handle, run_hooks):
            model = handle.hf_model if logits else handle.hf_model.base_model
            out = model(input_ids=ids, attention_mask=attention_mask, use_cache=False)
    except _Stop:
        pass
    missing = [n for n in names if n not in kept]
    if missing:
        raise InputError(f"These hook points never fired: {', '.join(missing)}")
    return Capture(kept, out.logits if logits else None)


def residual_stream(handle, ids: torch.Tensor, layers: Iterable[int] | None = None, at: Position = None) -> torch.Tensor:
    """`hook_resid_post` of the chosen layers, no unembedding: (n_layers, batch, positions, d_model),
    or (n_layers, batch, d_model) when `at` picks one position per row ("last" or a LongTensor)."""
    names = resid_names(handle, layers)
    return capture(handle, ids, names, at=[at] if isinstance(at, int) else at).stack(names)
