"""Log-probabilities of given continuations: what the evaluation harness, XTransplant's
probability scoring and the unlearning losses all measure."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from ..errors import InputError
from .kv import fork, prefill, step_logits
from .lens import unembed
from .run import _grad_mode, hooks
from .sites import Hook

IGNORE_INDEX = -100


def token_scores(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the summed log-probability of `tokens` under `logits` (positions where `mask` is
    True) and whether each of those tokens is the argmax, i.e. greedy decoding would produce them.
    logits (N, P, V), tokens and mask (N, P)."""
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None])[..., 0]
    hit = logits.argmax(-1) == tokens
    return (logp * mask).sum(-1), (hit | ~mask).all(-1)


def label_logprobs(handle, ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   grad: bool = False, fwd_hooks: Iterable[Hook] = (), keep_logits: bool = False,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """log p(token t+1 | tokens <= t) of every labelled token (labels != -100, aligned with `ids`).

    Only the positions that predict a labelled token go through the unembedding (on Gemma 3 the
    262k-token matrix is most of the cost). Returns token log-probs (batch, seq-1) with zeros
    elsewhere, the float mask of scored positions, and their logits (n_scored, vocab) when asked.
    With `grad=True` everything keeps its graph (the unlearning losses train through it).
    """
    with _grad_mode(grad), hooks(handle, fwd_hooks):
        hidden = handle.hf_model.base_model(input_ids=ids, attention_mask=attention_mask,
                                            use_cache=False).last_hidden_state
        labels = labels.to(hidden.device)  # a model split over devices ends on another than it starts
        mask = labels[:, 1:] != IGNORE_INDEX
        logits = unembed(handle, hidden[:, :-1][mask]).float()
        mask, labels = mask.to(logits.device), labels.to(logits.device)
        picked = torch.log_softmax(logits, dim=-1).gather(-1, labels[:, 1:][mask].unsqueeze(-1)).squeeze(-1)
        token_logprobs = torch.zeros(mask.shape, dtype=picked.dtype, device=picked.device)
        token_logprobs[mask] = picked
    return token_logprobs, mask.to(picked.dtype), logits if keep_logits else None


@torch.no_grad()
def score_from_state(handle, first: torch.Tensor, cache, continuations: Sequence[Sequence[int]],
                     positions_per_pass: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-force every continuation after every row of a prefilled state: the first token is
    read from the last prompt position's logits `first` (rows, vocab), later tokens from passes
    over forks of the rows' `cache`. Returns (rows, continuations) summed log-probabilities and
    whether greedy decoding would produce each continuation. `positions_per_pass` bounds how many
    (row, position) logits one pass holds in memory."""
    if not continuations or any(len(c) == 0 for c in continuations):
        raise InputError("Every answer continuation needs at least one token.")
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
    for start in range(0, n, step):
        rows = torch.arange(start, min(n, start + step), device=device)
        _, logits = step_logits(handle, inputs.repeat(len(rows), 1), fork(cache, rows.repeat_interleave(m)))
        lp, hit = token_scores(logits, wanted.repeat(len(rows), 1), mask.repeat(len(rows), 1))
        logprob[start:start + len(rows), multi] += lp.view(len(rows), m)
        greedy[start:start + len(rows), multi] &= hit.view(len(rows), m)
    return logprob, greedy


@torch.no_grad()
def score_continuations(handle, prompt_ids: torch.Tensor, continuations: Sequence[Sequence[int]],
                        fwd_hooks: Iterable[Hook] = (), positions_per_pass: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each continuation (token ids) after each prompt row, and whether
    greedy decoding would produce it: (rows, continuations) each. `fwd_hooks` act on the prompt
    only; the prompt runs once and the continuations share its KV cache."""
    cache, first = prefill(handle, prompt_ids, fwd_hooks)
    return score_from_state(handle, first, cache, continuations, positions_per_pass)
