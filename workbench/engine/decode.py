"""One decoding loop. A step function turns each step's logits into the next tokens: greedy
here, self-induced contrastive decoding in RHIO, anything else a method needs.

Decoding uses Hugging Face's own KV cache (TL 4.3's KV-cache generation is wrong on Gemma 3);
greedy decoding equals `model.generate` token for token (tests/test_models.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch

from ..errors import InputError
from .inputs import as_ids
from .kv import fork, prefill, step_logits
from .run import hooks
from .sites import Hook

Step = Callable[[torch.Tensor], torch.Tensor]  # logits (rows, vocab) -> next ids (rows,)


def greedy_step(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1)


@dataclass
class Generation:
    """The continuation of each prompt row."""

    prompt_ids: torch.Tensor
    new_ids: list[list[int]]
    texts: list[str]
    step_logits: list[torch.Tensor] = field(default_factory=list)  # per step, (batch, vocab), when kept

    @property
    def text(self) -> str:
        return self.texts[0]


_STOP_IDS: dict[tuple[str, str, bool], frozenset[int]] = {}


def stop_ids(handle, stop_at_newline: bool) -> frozenset[int]:
    """End-of-sequence ids, plus every token whose text holds a newline; computed once per model
    because scanning Gemma's 262k-token vocabulary takes about half a second."""
    key = (handle.facts.fingerprint, handle.facts.path, stop_at_newline)
    if key in _STOP_IDS:
        return _STOP_IDS[key]
    stops = set()
    eos = handle.tokenizer.eos_token_id
    gen_eos = getattr(handle.hf_model.generation_config, "eos_token_id", None)
    for ids in (eos, gen_eos):
        for e in (ids if isinstance(ids, (list, tuple)) else [ids]):
            if e is not None:
                stops.add(int(e))
    if stop_at_newline:
        for tok, idx in handle.tokenizer.get_vocab().items():
            if "\n" in handle.tokenizer.convert_tokens_to_string([tok]):
                stops.add(idx)
    _STOP_IDS[key] = frozenset(stops)
    return _STOP_IDS[key]


def fit_new_tokens(handle, prompt_tokens: int, max_new_tokens: int) -> int:
    """`max_new_tokens`, lowered so that decoding stops when the context window is full (beyond
    it, learned positions run out and rotary ones extrapolate; a huge request would never end)."""
    return max(1, min(int(max_new_tokens), handle.facts.n_ctx - prompt_tokens + 1))


@torch.no_grad()
def continue_decoding(handle, cache, logits: torch.Tensor, max_new_tokens: int, stops: frozenset[int],
                      step: Step = greedy_step, fwd_hooks: Iterable[Hook] = (), drop_finished: bool = False,
                      keep_logits: bool = False, on_step: Callable[[int, torch.Tensor], None] | None = None,
                      ) -> tuple[list[list[int]], list[torch.Tensor]]:
    """The decoding loop from a prefilled state: `logits` (rows, vocab) of the last position and
    its `cache`. Each row stops at a stop token or after `max_new_tokens`; with `drop_finished`
    finished rows leave the batch (their cache rows are forked away), which saves work when rows
    stop at different times. Returns the new ids of each row (stop tokens excluded) and, when
    `keep_logits`, each step's logits."""
    rows = logits.shape[0]
    new: list[list[int]] = [[] for _ in range(rows)]
    kept: list[torch.Tensor] = []
    alive = list(range(rows))  # batch position -> row
    done = [False] * rows
    with hooks(handle, fwd_hooks):  # attached once for the whole loop
        for k in range(max_new_tokens):
            if keep_logits:
                kept.append(logits.detach().clone())
            nxt = step(logits)
            if on_step is not None:
                on_step(k, nxt)
            for pos, row in enumerate(alive):
                if not done[row]:
                    tok = int(nxt[pos])
                    if tok in stops:
                        done[row] = True
                    else:
                        new[row].append(tok)
            if all(done[row] for row in alive) or k == max_new_tokens - 1:
                break
            if drop_finished and any(done[row] for row in alive):
                index = torch.tensor([p for p, row in enumerate(alive) if not done[row]], device=nxt.device)
                cache, nxt = fork(cache, index), nxt[index]
                alive = [row for row in alive if not done[row]]
            cache, out = step_logits(handle, nxt[:, None], cache)
            logits = out[:, -1]
    return new, kept


@torch.no_grad()
def decode(handle, prompt: str | Sequence[int] | torch.Tensor, max_new_tokens: int = 20, step: Step = greedy_step,
           fwd_hooks: Iterable[Hook] = (), prefill_hooks: Iterable[Hook] = (), stop_at_newline: bool = False,
           keep_logits: bool = False, on_step: Callable[[int, torch.Tensor], None] | None = None) -> Generation:
    """Decode a batch of identical-length prompts with one step function.

    `fwd_hooks` are active for the prefill and every decode step; `prefill_hooks` only while the
    prompt is processed (what XTransplant and CC-Tuning inference need). Each row stops at EOS (or
    a newline token when asked), or when the context window is full. `on_step(step, next_ids)`
    is called after each token is chosen (step 0 = first new token).
    """
    if max_new_tokens < 1:
        raise InputError("max_new_tokens must be at least 1.")
    ids = as_ids(handle, prompt)
    max_new_tokens = fit_new_tokens(handle, ids.shape[-1], max_new_tokens)
    stops = stop_ids(handle, stop_at_newline)
    fwd_hooks, prefill_hooks = list(fwd_hooks), list(prefill_hooks)
    with handle.lock:
        cache, logits = prefill(handle, ids, fwd_hooks + prefill_hooks)
        new, kept = continue_decoding(handle, cache, logits, max_new_tokens, stops, step=step, fwd_hooks=fwd_hooks,
                                      keep_logits=keep_logits, on_step=on_step)
    texts = [handle.tokenizer.decode(row, skip_special_tokens=True) for row in new]
    return Generation(ids, new, texts, kept)


def generate_greedy(handle, prompt: str | Sequence[int] | torch.Tensor, max_new_tokens: int = 20,
                    fwd_hooks: Iterable[Hook] = (), prefill_hooks: Iterable[Hook] = (), stop_at_newline: bool = False,
                    keep_logits: bool = False, on_step: Callable[[int, torch.Tensor], None] | None = None) -> Generation:
    """Greedy decoding; token-for-token equal to Hugging Face `model.generate`."""
    return decode(handle, prompt, max_new_tokens, greedy_step, fwd_hooks, prefill_hooks, stop_at_newline,
                  keep_logits, on_step)
