"""The machinery of an XTransplant run: read a source vector, replace one target activation at the
last prompt position, and run many (source, target) rows of one prompt at once.

A transplant changes only the last prompt position, so everything before it is the same for every
row: the prompt minus its last token runs once with a KV cache, and each batch of rows runs only
the last token (plus, when scoring an answer's probability, the answer's first tokens) against
copies of that cache, each row with its own replacement. Generation then continues greedily from
the same cache, with no hooks, dropping rows as they stop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch

from workbench import ops
from workbench.errors import InputError
from workbench.models import ModelHandle

SITES: dict[str, str] = {"mlp": "hook_mlp_out", "attn": "hook_attn_out"}


def check_site(site: str) -> str:
    if site not in SITES:
        raise InputError(f"Unknown transplant site {site!r}; choose 'mlp' (FFN output) or 'attn' (attention output).")
    return site


def hook_name(layer: int, site: str) -> str:
    return f"blocks.{layer}.{SITES[check_site(site)]}"


@torch.no_grad()
def source_vectors(handle: ModelHandle, ids: torch.Tensor, site: str) -> torch.Tensor:
    """(n_layers, d_model): the site's output of every layer at the prompt's last position."""
    names = [hook_name(layer, site) for layer in range(handle.n_layers)]
    _, cache = ops.run_with_cache(handle, ids, names, positions=-1, return_logits=False)
    return torch.stack([cache[name][0] for name in names])


def replace_hooks(site: str, targets: Sequence[int | None], vectors: torch.Tensor, position: int) -> list[ops.Hook]:
    """Hooks that, in row r of the batch, put `vectors[r]` at sequence `position` of layer
    `targets[r]`'s site output; rows whose target is None are left alone."""
    by_layer: dict[int, list[int]] = {}
    for row, layer in enumerate(targets):
        if layer is not None:
            by_layer.setdefault(layer, []).append(row)
    hooks = []
    for layer, rows in sorted(by_layer.items()):
        index = torch.tensor(rows, device=vectors.device)

        def replace(tensor: torch.Tensor, hook, index=index) -> torch.Tensor:
            out = tensor.clone()
            out[index, position] = vectors[index].to(out.dtype)
            return out

        hooks.append((hook_name(layer, site), replace))
    return hooks


@dataclass
class Prefix:
    """A prompt split into its shared part (run once, KV-cached) and its last token."""

    ids: torch.Tensor  # (1, T): the whole prompt
    cache: object | None  # the HF cache of ids[:, :-1]; None for a one-token prompt


@torch.no_grad()
def prefix(handle: ModelHandle, ids: torch.Tensor) -> Prefix:
    """Run everything but the last prompt token once (no hooks, no unembedding)."""
    if ids.shape[-1] < 2:
        return Prefix(ids, None)
    with ops.hooks(handle):
        out = handle.hf_model.base_model(input_ids=ids[:, :-1], use_cache=True)
    return Prefix(ids, out.past_key_values)


def _expanded(cache, rows: int):
    if cache is None:
        return None
    copied = copy.deepcopy(cache)
    copied.batch_repeat_interleave(rows)
    return copied


@dataclass
class RowsOutput:
    """What one batch of rows produced: logits at the last prompt position and at each
    teacher-forced follow token, and, when asked, each row's greedy continuation (stop tokens
    excluded)."""

    logits: torch.Tensor  # (rows, 1 + len(follow), vocab)
    new_ids: list[list[int]] | None


@torch.no_grad()
def run_rows(handle: ModelHandle, pre: Prefix, site: str, targets: Sequence[int | None], vectors: torch.Tensor,
             follow: Sequence[int] = (), max_new_tokens: int = 0, stop_ids: frozenset[int] = frozenset()) -> RowsOutput:
    """Run one batch of transplant rows over a shared prefix.

    Row r replaces layer `targets[r]` (None: no transplant) with `vectors[r]` at the last prompt
    position. `follow` tokens are then teacher-forced (their positions untouched) to read an
    answer's probability; with `max_new_tokens` > 0 greedy decoding continues from the last prompt
    position without hooks, as `ops.generate_greedy` with `prefill_hooks` does.
    """
    n = len(targets)
    cache = _expanded(pre.cache, n)
    kwargs = {"cache": cache} if cache is not None else {}
    with ops.hooks(handle, replace_hooks(site, targets, vectors, position=0)):
        out = handle.hf_model(input_ids=pre.ids[:, -1:].expand(n, -1), use_cache=True, **kwargs)
    first, cache = out.logits, out.past_key_values
    logits = first
    if follow:
        forced = torch.tensor([list(follow)], dtype=pre.ids.dtype, device=pre.ids.device).expand(n, -1)
        with ops.hooks(handle):
            rest = handle.hf_model(input_ids=forced, cache=copy.deepcopy(cache) if max_new_tokens else cache,
                                   use_cache=True).logits
        logits = torch.cat([first, rest], dim=1)
    new_ids = _decode(handle, cache, first[:, -1], max_new_tokens, stop_ids) if max_new_tokens else None
    return RowsOutput(logits, new_ids)


def _decode(handle: ModelHandle, cache, logits: torch.Tensor, max_new_tokens: int, stop_ids: frozenset[int]) -> list[list[int]]:
    """Greedy decoding from a cache, rows dropped from the batch once they stop."""
    new: list[list[int]] = [[] for _ in range(logits.shape[0])]
    alive = list(range(logits.shape[0]))
    with ops.hooks(handle):
        for step in range(max_new_tokens):
            nxt = logits.argmax(-1)
            keep = []
            for pos, row in enumerate(alive):
                tok = int(nxt[pos])
                if tok not in stop_ids:
                    new[row].append(tok)
                    keep.append(pos)
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(alive):
                cache.batch_select_indices(torch.tensor(keep, device=nxt.device))
                nxt = nxt[keep]
                alive = [alive[pos] for pos in keep]
            out = handle.hf_model(input_ids=nxt[:, None], cache=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1]
    return new
