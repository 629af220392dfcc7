"""Model operations every probe shares: hooked runs, restricted caches, the logit lens and greedy
generation that honours hooks.

All runs go through the Hugging Face modules that the TransformerBridge has wrapped with hook
points, so TransformerLens hook names (`blocks.{l}.hook_mlp_out`, ...) work everywhere, and
generation uses Hugging Face's own KV cache (TL 4.3's KV-cache generation is wrong on Gemma 3).
Hooks live on the shared model object, so every hooked run holds the handle's lock.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import torch

from .errors import InputError
from .models import ModelHandle

Hook = tuple[str, Callable]  # (hook name, fn(tensor, hook) -> tensor | None)


def as_ids(handle: ModelHandle, prompt: str | Sequence[int] | torch.Tensor, prepend_bos: bool = True) -> torch.Tensor:
    """A (batch, seq) LongTensor on the model's device from text, a list of ids, or a tensor."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InputError("The prompt is empty.")
        ids = torch.tensor([handle.encode(prompt, prepend_bos=prepend_bos)])
    elif isinstance(prompt, torch.Tensor):
        ids = prompt if prompt.dim() == 2 else prompt.unsqueeze(0)
    else:
        ids = torch.tensor([list(prompt)])
    if ids.shape[-1] == 0:
        raise InputError("The prompt has no tokens.")
    if ids.shape[-1] > handle.facts.n_ctx:
        raise InputError(f"The prompt has {ids.shape[-1]} tokens; {handle.facts.spec} reads at most {handle.facts.n_ctx}.")
    return ids.to(handle.device)


def check_layer(handle: ModelHandle, layer: int, what: str = "layer") -> int:
    n = handle.n_layers
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise InputError(f"The {what} must be a whole number, got {layer!r}.")
    if not -n <= layer < n:
        raise InputError(f"The {what} {layer} is out of range: {handle.facts.spec} has layers 0..{n - 1}.")
    return layer % n


def check_head(handle: ModelHandle, head: int) -> int:
    n = handle.facts.n_heads
    if not isinstance(head, int) or not 0 <= head < n:
        raise InputError(f"Head {head!r} is out of range: {handle.facts.spec} has heads 0..{n - 1} per layer.")
    return head


@contextlib.contextmanager
def hooks(handle: ModelHandle, fwd_hooks: Iterable[Hook] = ()) -> Iterator[None]:
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


@torch.no_grad()
def forward(handle: ModelHandle, ids: torch.Tensor, fwd_hooks: Iterable[Hook] = (),
            attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (batch, seq, vocab) of a hooked forward pass."""
    with hooks(handle, fwd_hooks):
        return handle.hf_model(input_ids=ids, attention_mask=attention_mask, use_cache=False).logits


@torch.no_grad()
def run_with_cache(handle: ModelHandle, ids: torch.Tensor, names: Sequence[str],
                   positions: slice | Sequence[int] | int | None = None, fwd_hooks: Iterable[Hook] = (),
                   return_logits: bool = True) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """Run once and keep only the named activations (optionally only some positions).

    With `return_logits=False` the unembedding is skipped: on Gemma 3 its 262k-token matrix costs
    more than all transformer layers together.
    """
    cache: dict[str, torch.Tensor] = {}
    pos = positions if positions is not None else slice(None)

    def keeper(name: str):  # hook.name is the canonical name; callers asked by alias
        def keep(tensor, hook):
            cache[name] = tensor[:, pos].detach().clone()
        return keep

    with hooks(handle, [*fwd_hooks, *[(n, keeper(n)) for n in names]]):
        model = handle.hf_model if return_logits else handle.hf_model.base_model
        out = model(input_ids=ids, use_cache=False)
    logits = out.logits if return_logits else None
    missing = [n for n in names if n not in cache]
    if missing:
        raise InputError(f"These hook points never fired: {', '.join(missing)}")
    return logits, cache


def resid_names(handle: ModelHandle, layers: Iterable[int] | None = None) -> list[str]:
    layers = range(handle.n_layers) if layers is None else layers
    return [f"blocks.{check_layer(handle, l)}.hook_resid_post" for l in layers]


@torch.no_grad()
def residual_stream(handle: ModelHandle, ids: torch.Tensor, layers: Iterable[int] | None = None,
                    positions: slice | Sequence[int] | int | None = None) -> torch.Tensor:
    """`hook_resid_post` of the chosen layers: (n_layers, batch, positions, d_model), no unembedding."""
    names = resid_names(handle, layers)
    _, cache = run_with_cache(handle, ids, names, positions=positions, return_logits=False)
    stacked = [cache[n] for n in names]
    return torch.stack([s if s.dim() == 3 else s.unsqueeze(1) for s in stacked])


def final_norm(handle: ModelHandle) -> torch.nn.Module:
    base = handle.hf_model.base_model
    for attr in ("norm", "ln_f", "final_layernorm", "final_layer_norm"):
        if hasattr(base, attr):
            return getattr(base, attr)
    raise InputError(f"Cannot find the final norm of {type(handle.hf_model).__name__}.")


def lens_logits(handle: ModelHandle, resid: torch.Tensor) -> torch.Tensor:
    """The logit lens: final norm, unembedding and the model's own output transform (Gemma's
    soft-capping) applied to residual-stream vectors taken *before* the final norm, so even the
    last layer is normed exactly once and reproduces the model's logits."""
    logits = handle.hf_model.get_output_embeddings()(final_norm(handle)(resid))
    cap = getattr(handle.hf_model.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


# --------------------------------------------------------------------------- generation

@dataclass
class Generation:
    """Greedy continuation of each prompt row."""

    prompt_ids: torch.Tensor
    new_ids: list[list[int]]
    texts: list[str]
    step_logits: list[torch.Tensor] = field(default_factory=list)  # per step, (batch, vocab), when kept

    @property
    def text(self) -> str:
        return self.texts[0]


_STOP_IDS: dict[tuple[str, str, bool], frozenset[int]] = {}


def _stop_ids(handle: ModelHandle, stop_at_newline: bool) -> frozenset[int]:
    """End-of-sequence ids, plus every token whose text holds a newline; computed once per model
    because scanning Gemma's 262k-token vocabulary takes about half a second."""
    key = (handle.facts.fingerprint, handle.facts.path, stop_at_newline)
    if key in _STOP_IDS:
        return _STOP_IDS[key]
    stops = set()
    eos = handle.tokenizer.eos_token_id
    for e in (eos if isinstance(eos, (list, tuple)) else [eos]):
        if e is not None:
            stops.add(int(e))
    gen_eos = getattr(handle.hf_model.generation_config, "eos_token_id", None)
    for e in (gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]):
        if e is not None:
            stops.add(int(e))
    if stop_at_newline:
        for tok, idx in handle.tokenizer.get_vocab().items():
            if "\n" in handle.tokenizer.convert_tokens_to_string([tok]):
                stops.add(idx)
    _STOP_IDS[key] = frozenset(stops)
    return _STOP_IDS[key]


def fit_new_tokens(handle: ModelHandle, prompt_tokens: int, max_new_tokens: int) -> int:
    """`max_new_tokens`, lowered so that decoding stops when the context window is full (beyond
    it, learned positions run out and rotary ones extrapolate; a huge request would never end)."""
    return max(1, min(int(max_new_tokens), handle.facts.n_ctx - prompt_tokens + 1))


@torch.no_grad()
def generate_greedy(handle: ModelHandle, prompt: str | Sequence[int] | torch.Tensor, max_new_tokens: int = 20,
                    fwd_hooks: Iterable[Hook] = (), prefill_hooks: Iterable[Hook] = (),
                    stop_at_newline: bool = False, keep_logits: bool = False,
                    on_step: Callable[[int, torch.Tensor], None] | None = None) -> Generation:
    """Greedy decoding with Hugging Face's KV cache; token-for-token equal to `model.generate`.

    `fwd_hooks` are active for the prefill and every decode step; `prefill_hooks` only while the
    prompt is processed (what XTransplant and CC-Tuning inference need). A batch of identical-length
    prompts decodes together; each row stops at EOS (or a newline token when asked), or when the
    context window is full.
    `on_step(step, next_ids)` is called after each token is chosen (step 0 = first new token).
    """
    if max_new_tokens < 1:
        raise InputError("max_new_tokens must be at least 1.")
    ids = as_ids(handle, prompt)
    max_new_tokens = fit_new_tokens(handle, ids.shape[-1], max_new_tokens)
    stops = _stop_ids(handle, stop_at_newline)
    batch = ids.shape[0]
    done = torch.zeros(batch, dtype=torch.bool, device=ids.device)
    new: list[list[int]] = [[] for _ in range(batch)]
    step_logits: list[torch.Tensor] = []
    fwd_hooks, prefill_hooks = list(fwd_hooks), list(prefill_hooks)
    with handle.lock:
        with hooks(handle, fwd_hooks + prefill_hooks):
            out = handle.hf_model(input_ids=ids, use_cache=True, logits_to_keep=1)  # not (T, 262k) floats
        past = out.past_key_values
        logits = out.logits[:, -1]
        with hooks(handle, fwd_hooks):
            for step in range(max_new_tokens):
                if keep_logits:
                    step_logits.append(logits.detach().clone())
                nxt = logits.argmax(-1)
                if on_step is not None:
                    on_step(step, nxt)
                for row in range(batch):
                    if not done[row]:
                        tok = int(nxt[row])
                        if tok in stops:
                            done[row] = True
                        else:
                            new[row].append(tok)
                if bool(done.all()) or step == max_new_tokens - 1:
                    break
                out = handle.hf_model(input_ids=nxt[:, None], cache=past, use_cache=True)
                past, logits = out.past_key_values, out.logits[:, -1]
    texts = [handle.tokenizer.decode(row, skip_special_tokens=True) for row in new]
    return Generation(ids, new, texts, step_logits)
