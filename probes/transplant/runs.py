"""The machinery of an XTransplant run: read source vectors, replace one target activation at the
last prompt position, and run many (source, target) rows of one prompt at once.

A transplant changes only the last prompt position, so everything before it is the same for every
row: the prompt minus its last token runs once with a KV cache, and each batch of rows runs only
the last token against copies of that cache, each row with its own replacement. Answer
continuations are then teacher-forced, and generation continues greedily, from the rows' caches
with no hooks (decode steps are never touched), dropping rows as they stop.
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
    """Hooks that, in batch row r, put `vectors[r]` at sequence `position` of layer `targets[r]`'s
    site output; rows whose target is None are left alone."""
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


def token_scores(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the summed log-probability of `tokens` under `logits` (positions where `mask` is
    True) and whether each of those tokens is the argmax, i.e. greedy decoding would produce them.
    logits (N, P, V), tokens and mask (N, P)."""
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None])[..., 0]
    hit = logits.argmax(-1) == tokens
    return (logp * mask).sum(-1), (hit | ~mask).all(-1)


def fork(cache, index: torch.Tensor):
    """A cache whose batch rows are `cache`'s rows `index` (repeats allowed). The original is left
    as it was: HF's dynamic cache layers replace their tensors rather than writing into them, so
    copying the layer objects (not the tensors) is enough."""
    forked = copy.copy(cache)
    forked.layers = [copy.copy(layer) for layer in cache.layers]
    forked.batch_select_indices(index)
    return forked


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


@dataclass
class RowsOutput:
    """What one batch of rows produced."""

    logprob: torch.Tensor  # (rows, continuations): summed log-probability of each continuation
    greedy: torch.Tensor  # (rows, continuations): would greedy decoding produce the continuation?
    new_ids: list[list[int]] | None  # greedy continuations (stop tokens excluded), when asked


@torch.no_grad()
def run_rows(handle: ModelHandle, pre: Prefix, site: str, targets: Sequence[int | None], vectors: torch.Tensor,
             continuations: Sequence[Sequence[int]], max_new_tokens: int = 0,
             stop_ids: frozenset[int] = frozenset(), positions_per_pass: int = 128) -> RowsOutput:
    """Run one batch of transplant rows over a shared prefix.

    Row r replaces layer `targets[r]` (None: no transplant) with `vectors[r]` at the last prompt
    position. Each continuation (token ids, at least one) is scored by teacher forcing; with
    `max_new_tokens` > 0 greedy decoding also continues from the last prompt position, as
    `ops.generate_greedy` with `prefill_hooks` does. `positions_per_pass` bounds how many
    (row, position) logits one teacher-forcing pass holds in memory.
    """
    if not continuations or any(len(c) == 0 for c in continuations):
        raise InputError("Every answer continuation needs at least one token.")
    n, device = len(targets), pre.ids.device
    kwargs = {}
    if pre.cache is not None:
        kwargs["cache"] = fork(pre.cache, torch.zeros(n, dtype=torch.long, device=device))
    with ops.hooks(handle, replace_hooks(site, targets, vectors, position=0)):
        out = handle.hf_model(input_ids=pre.ids[:, -1:].expand(n, -1), use_cache=True, **kwargs)
    first, cache = out.logits[:, -1], out.past_key_values
    logprob, greedy = _score_continuations(handle, first, cache, continuations, positions_per_pass)
    new_ids = _decode(handle, cache, first, max_new_tokens, stop_ids) if max_new_tokens else None
    return RowsOutput(logprob, greedy, new_ids)


def _score_continuations(handle: ModelHandle, first: torch.Tensor, cache, continuations: Sequence[Sequence[int]],
                         positions_per_pass: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-force every continuation after every row: the first token is read from the last
    prompt position's logits, later tokens from a pass over forks of the rows' caches."""
    n, device = first.shape[0], first.device
    heads = torch.tensor([c[0] for c in continuations], device=device)
    logprob = torch.log_softmax(first.float(), -1)[:, heads]
    greedy = first.argmax(-1)[:, None] == heads[None]
    multi = [k for k, c in enumerate(continuations) if len(c) > 1]
    if not multi:
        return logprob, greedy
    width = max(len(continuations[k]) - 1 for k in multi)
    inputs = torch.zeros(len(multi), width, dtype=torch.long, device=device)
    wanted, mask = torch.zeros_like(inputs), torch.zeros_like(inputs, dtype=torch.bool)
    for row, k in enumerate(multi):
        tail = list(continuations[k])
        inputs[row, : len(tail) - 1] = torch.tensor(tail[:-1])
        wanted[row, : len(tail) - 1] = torch.tensor(tail[1:])
        mask[row, : len(tail) - 1] = True
    m = len(multi)
    step = max(1, positions_per_pass // (m * width))
    with ops.hooks(handle):
        for start in range(0, n, step):
            rows = torch.arange(start, min(n, start + step), device=device)
            sub = fork(cache, rows.repeat_interleave(m))
            logits = handle.hf_model(input_ids=inputs.repeat(len(rows), 1), cache=sub, use_cache=True).logits
            lp, hit = token_scores(logits, wanted.repeat(len(rows), 1), mask.repeat(len(rows), 1))
            logprob[start:start + len(rows), multi] += lp.view(len(rows), m)
            greedy[start:start + len(rows), multi] &= hit.view(len(rows), m)
    return logprob, greedy


def _decode(handle: ModelHandle, cache, logits: torch.Tensor, max_new_tokens: int,
            stop_ids: frozenset[int]) -> list[list[int]]:
    """Greedy decoding from the rows' caches, each row dropped from the batch once it stops."""
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
                index = torch.tensor(keep, device=nxt.device)
                cache, nxt = fork(cache, index), nxt[index]
                alive = [alive[pos] for pos in keep]
            out = handle.hf_model(input_ids=nxt[:, None], cache=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1]
    return new
