"""The machinery of an XTransplant run: read source vectors, replace one target activation at the
last prompt position, and run many (source, target) rows of one prompt at once.

A transplant changes only the last prompt position, so everything before it is the same for every
row: the prompt minus its last token runs once with a KV cache (`engine.prefix`), and each batch
of rows runs only the last token against forks of that cache, each row with its own replacement.
Answer continuations are then teacher-forced (`engine.score_from_state`), and generation continues
greedily from the rows' caches with no hooks (decode steps are never touched), dropping rows as
they stop (`engine.continue_decoding`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from workbench import engine
from workbench.engine import Prefix
from workbench.models import ModelHandle

TRANSPLANT_SITES = ("mlp", "attn")  # FFN output, attention output


def check_site(site: str) -> str:
    return engine.check_site(site, TRANSPLANT_SITES)


@torch.no_grad()
def source_vectors(handle: ModelHandle, ids: torch.Tensor, site: str) -> torch.Tensor:
    """(n_layers, d_model): the site's output of every layer at the prompt's last position."""
    names = [engine.hook_name(layer, check_site(site)) for layer in range(handle.n_layers)]
    return engine.capture(handle, ids, names, at=-1).stack(names)[:, 0]


def replace_hooks(site: str, targets: Sequence[int | None], vectors: torch.Tensor, position: int) -> list[engine.Hook]:
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
            out = tensor.clone()  # the vectors follow the hooked tensor: its dtype, its (dispatched) device
            out[index.to(out.device), position] = vectors[index].to(out.device, out.dtype)
            return out

        hooks.append((engine.hook_name(layer, check_site(site)), replace))
    return hooks


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
    `engine.generate_greedy` with `prefill_hooks` does. `positions_per_pass` bounds how many
    (row, position) logits one teacher-forcing pass holds in memory.
    """
    n, device = len(targets), pre.ids.device
    shared = None if pre.cache is None else engine.fork(pre.cache, torch.zeros(n, dtype=torch.long, device=device))
    cache, first = engine.prefill(handle, pre.ids[:, -1:].expand(n, -1),
                                  replace_hooks(site, targets, vectors, position=0), cache=shared)
    logprob, greedy = engine.score_from_state(handle, first, cache, continuations, positions_per_pass)
    new_ids = None
    if max_new_tokens:
        new_ids, _ = engine.continue_decoding(handle, cache, first, max_new_tokens, stop_ids, drop_finished=True)
    return RowsOutput(logprob, greedy, new_ids)
