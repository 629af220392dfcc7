"""Head masking: switch chosen attention heads off during any run, and compare generations.

Two ways to switch a head off:

- ``"uniform"``: the head's pre-softmax scores (``hook_attn_scores``) are set to one constant over
  the keys it may attend to, so it attends uniformly to them. Positions the causal or
  sliding-window mask hides stay hidden (unlike the reference code of Wu et al., which also lets
  the head see future tokens). This is the ablation retrieval-head papers and RHIO use.
- ``"zero"``: the head's output (``hook_z``, the per-head input of the output projection) is set
  to zero, so it adds nothing to the residual stream.

Both act per *query* head: with grouped-query attention the shared key/value head is untouched, so
the other query heads of its group compute exactly what they computed before.
"""

from __future__ import annotations

import contextlib
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal, Sequence

import pandas as pd
import torch

from workbench import engine, limits
from workbench.errors import InputError
from workbench.models import ModelHandle
from workbench.results import Result

MaskMode = Literal["uniform", "zero"]
MASK_MODES: tuple[str, ...] = ("uniform", "zero")
Head = tuple[int, int]


def check_heads(handle: ModelHandle, heads: Iterable[Sequence[int]]) -> list[Head]:
    """Validate (layer, head) pairs against the model; sorted, without duplicates."""
    out: set[Head] = set()
    for item in heads:
        if (not isinstance(item, (tuple, list)) or len(item) != 2
                or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in item)):
            raise InputError(f"A head is a (layer, head) pair of whole numbers, got {item!r}.")
        layer = engine.check_layer(handle, int(item[0]))
        out.add((layer, engine.check_head(handle, int(item[1]))))
    return sorted(out)


def check_mode(mode: str) -> MaskMode:
    if mode not in MASK_MODES:
        raise InputError(f"Unknown masking mode {mode!r}; choose 'uniform' or 'zero'.")
    return mode  # type: ignore[return-value]


_HEAD_PATTERN = re.compile(r"^L?(\d+)(?:[.:]|H)(\d+)$", re.IGNORECASE)


def parse_heads(text: str) -> list[Head]:
    """Parse heads written as ``"5.2, 11.0"``, ``"L5H2 L11H0"`` or ``"5:2; 11:0"``."""
    heads = []
    for item in re.split(r"[,;\s]+", (text or "").strip()):
        if not item:
            continue
        m = _HEAD_PATTERN.match(item)
        if not m:
            raise InputError(f"Cannot read the head {item!r}: write layer.head, e.g. '5.2' or 'L5H2'.")
        heads.append((int(m.group(1)), int(m.group(2))))
    return heads


def _by_layer(heads: list[Head]) -> dict[int, list[int]]:
    layers: dict[int, list[int]] = {}
    for layer, head in heads:
        layers.setdefault(layer, []).append(head)
    return layers


def _uniform_scores(head_idx: list[int]):
    def hook(scores: torch.Tensor, hook) -> torch.Tensor:
        # scores: (batch, heads, query, key). Masked keys hold -inf or the dtype's minimum (possibly
        # plus a score); every real score is far above half of that minimum.
        sel = scores[:, head_idx]
        allowed = sel > torch.finfo(sel.dtype).min / 2
        scores = scores.clone()
        scores[:, head_idx] = torch.where(allowed, torch.zeros_like(sel), sel)
        return scores

    return hook


def _zero_output(head_idx: list[int]):
    def hook(z: torch.Tensor, hook) -> torch.Tensor:
        z = z.clone()  # z: (batch, pos, heads, d_head)
        z[:, :, head_idx] = 0.0
        return z

    return hook


def masking_hooks(handle: ModelHandle, heads: Iterable[Sequence[int]], mode: str = "uniform") -> list[engine.Hook]:
    """Forward hooks that mask `heads`; pass them as `fwd_hooks` to any workbench run."""
    mode = check_mode(mode)
    hooks: list[engine.Hook] = []
    for layer, head_idx in _by_layer(check_heads(handle, heads)).items():
        if mode == "uniform":
            hooks.append((engine.hook_name(layer, "attn_scores"), _uniform_scores(head_idx)))
        else:
            hooks.append((engine.hook_name(layer, "z"), _zero_output(head_idx)))
    return hooks


@contextlib.contextmanager
def mask_heads(handle: ModelHandle, heads: Iterable[Sequence[int]], mode: str = "uniform") -> Iterator[None]:
    """Mask `heads` ((layer, head) pairs) for every run of `handle` inside the block.

    Holds the handle's lock, so other threads' runs wait rather than see masked heads.
    """
    with engine.hooks(handle, masking_hooks(handle, heads, mode)):
        yield


@dataclass
class MaskedGeneration(Result):
    """Greedy continuations of one prompt with and without the masked heads."""

    prompt: str
    heads: list[Head]
    mode: str
    original: str
    masked: str
    original_ids: list[int] = field(default_factory=list)
    masked_ids: list[int] = field(default_factory=list)
    model: str = ""

    @property
    def params(self) -> dict[str, Any]:
        return {"heads": [list(h) for h in self.heads], "mode": self.mode}

    @property
    def changed(self) -> bool:
        return self.original_ids != self.masked_ids

    @property
    def first_difference(self) -> int | None:
        """Index of the first generated token that differs (None when both are equal)."""
        for i, (a, b) in enumerate(zip(self.original_ids, self.masked_ids)):
            if a != b:
                return i
        return None if len(self.original_ids) == len(self.masked_ids) else min(len(self.original_ids), len(self.masked_ids))

    def to_frame(self) -> pd.DataFrame:
        heads = ", ".join(f"{l}.{h}" for l, h in self.heads)
        return pd.DataFrame([
            {"run": "original", "heads masked": "", "mode": "", "generation": self.original},
            {"run": "masked", "heads masked": heads, "mode": self.mode, "generation": self.masked},
        ])

    def summary(self) -> pd.DataFrame:
        """One row: whether masking changed the generation, and from which token on."""
        return pd.DataFrame([{"heads": len(self.heads), "mode": self.mode, "changed": self.changed,
                              "first_difference": self.first_difference, "original_tokens": len(self.original_ids),
                              "masked_tokens": len(self.masked_ids)}])

    def figure(self):
        """The two generations as a table, so a notebook shows them next to the other results."""
        import plotly.graph_objects as go

        frame = self.to_frame()
        fig = go.Figure(go.Table(header=dict(values=list(frame.columns)),
                                 cells=dict(values=[frame[c].tolist() for c in frame.columns], align="left")))
        fig.update_layout(title=f"{self.model}: generation with heads masked ({self.mode})", height=320)
        return fig


def generate_with_masked_heads(handle: ModelHandle, prompt: str | Sequence[int], heads: Iterable[Sequence[int]],
                               mode: str = "uniform", max_new_tokens: int = 30,
                               stop_at_newline: bool = False) -> MaskedGeneration:
    """Generate greedily from `prompt` (text or token ids) twice, the second time with `heads` masked."""
    heads = check_heads(handle, heads)
    if not heads:
        raise InputError("Choose at least one head to mask.")
    hooks = masking_hooks(handle, heads, mode)
    limits.check("max_new_tokens", max_new_tokens)
    limits.check("prompt_tokens", engine.as_ids(handle, prompt).shape[-1])
    plain = engine.generate_greedy(handle, prompt, max_new_tokens, stop_at_newline=stop_at_newline)
    masked = engine.generate_greedy(handle, prompt, max_new_tokens, fwd_hooks=hooks, stop_at_newline=stop_at_newline)
    return MaskedGeneration(
        prompt=prompt if isinstance(prompt, str) else handle.decode(plain.prompt_ids[0].tolist()),
        heads=heads, mode=mode, original=plain.text, masked=masked.text,
        original_ids=plain.new_ids[0], masked_ids=masked.new_ids[0], model=handle.facts.spec,
    )
