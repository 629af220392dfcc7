"""Turning prompts, layers and heads into what the model reads, with clear messages when wrong."""

from __future__ import annotations

import numbers
from typing import Sequence

import torch

from ..errors import InputError


def check_text(text: object, what: str = "prompt") -> str:
    """`text` if it is a string every tokenizer can read; a clear message for null, non-strings and
    lone UTF-16 surrogates (which JSON can carry but UTF-8 cannot encode)."""
    if text is None:
        raise InputError(f"The {what} is empty.")
    if not isinstance(text, str):
        raise InputError(f"The {what} must be text, not {type(text).__name__}.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"The {what} holds a character that is not valid text (a lone surrogate "
                         f"{text[exc.start]!r} at position {exc.start}).") from None
    return text


def as_ids(handle, prompt: str | Sequence[int] | torch.Tensor, prepend_bos: bool = True) -> torch.Tensor:
    """A (batch, seq) LongTensor on the model's device from text, a list of ids, or a tensor."""
    if prompt is None or isinstance(prompt, str):
        prompt = check_text(prompt)
        if not prompt.strip():
            raise InputError("The prompt is empty.")
        ids = torch.tensor([handle.encode(prompt, prepend_bos=prepend_bos)])
    elif isinstance(prompt, torch.Tensor):
        ids = prompt if prompt.dim() == 2 else prompt.unsqueeze(0)
    elif isinstance(prompt, (list, tuple)) and all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in prompt):
        ids = torch.tensor([list(prompt)], dtype=torch.long)
    else:
        raise InputError(f"The prompt must be text or a list of token ids, not {type(prompt).__name__}.")
    if ids.shape[-1] == 0:
        raise InputError("The prompt has no tokens.")
    if ids.shape[-1] > handle.facts.n_ctx:
        raise InputError(f"The prompt has {ids.shape[-1]} tokens; {handle.facts.spec} reads at most {handle.facts.n_ctx}.")
    return ids.to(handle.device)


def pad_id(handle) -> int:
    pad = handle.tokenizer.pad_token_id
    return 0 if pad is None else int(pad)


def pad_rows(handle, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged token rows -> right-padded ids (batch, longest) and each row's last real position.

    In a causal model no real token sees a pad to its right, so right padding changes nothing
    at the real positions and needs no attention mask."""
    if not rows or any(len(row) == 0 for row in rows):
        raise InputError("Every prompt needs at least one token.")
    longest = max(len(row) for row in rows)
    if longest > handle.facts.n_ctx:
        raise InputError(f"A prompt has {longest} tokens; {handle.facts.spec} reads at most {handle.facts.n_ctx}.")
    ids = torch.full((len(rows), longest), pad_id(handle), dtype=torch.long)
    for r, toks in enumerate(rows):
        ids[r, :len(toks)] = torch.tensor(list(toks), dtype=torch.long)
    last = torch.tensor([len(toks) - 1 for toks in rows])
    return ids.to(handle.device), last.to(handle.device)


def check_layer(handle, layer: int, what: str = "layer") -> int:
    n = handle.n_layers
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise InputError(f"The {what} must be a whole number, got {layer!r}.")
    if not -n <= layer < n:
        raise InputError(f"The {what} {layer} is out of range: {handle.facts.spec} has layers 0..{n - 1}.")
    return layer % n


def check_head(handle, head: int) -> int:
    n = handle.facts.n_heads
    if not isinstance(head, int) or not 0 <= head < n:
        raise InputError(f"Head {head!r} is out of range: {handle.facts.spec} has heads 0..{n - 1} per layer.")
    return head
