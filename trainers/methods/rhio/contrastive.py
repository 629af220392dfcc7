"""RHIO's self-induced contrastive decoding: the [POS] and [NEG] streams decode together and each
step picks the argmax of (1 + a) z_POS - a z_NEG, a step function of the engine's decoding loop."""

from __future__ import annotations

import torch

from workbench import engine
from workbench.errors import InputError
from workbench.models import ModelHandle

from trainers.methods.rhio.control_tokens import CONTROL_TOKENS, control_ids, control_prompt


def contrastive_step(z_pos: torch.Tensor, z_neg: torch.Tensor, alpha: float,
                     plausibility: float | None = None) -> torch.Tensor:
    """Scores (1 + a) z_POS - a z_NEG; with `plausibility` = b, tokens whose [POS] probability is
    below b times the most likely token's are excluded (the contrastive-decoding cut-off)."""
    scores = (1 + alpha) * z_pos - alpha * z_neg
    if plausibility:
        probs = torch.softmax(z_pos.float(), dim=-1)
        keep = probs >= plausibility * probs.max(dim=-1, keepdim=True).values
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores


def contrastive_generate(handle: ModelHandle, prompt: str, alpha: float = 1.0, plausibility: float | None = 0.1,
                         max_new_tokens: int = 60) -> engine.Generation:
    """Decode [POS] and [NEG] as a batch of two rows (one KV cache each) that are fed the same
    token, chosen by `contrastive_step`. alpha = 0 is plain greedy decoding under [POS]."""
    if alpha < 0:
        raise InputError("alpha must be >= 0.")
    if plausibility is not None and not 0 <= plausibility <= 1:
        raise InputError("The plausibility cut-off must be between 0 and 1.")
    control_ids(handle.tokenizer)
    rows = [handle.encode(control_prompt(prompt, c) + "\n") for c in CONTROL_TOKENS]
    if len(rows[0]) != len(rows[1]):
        raise InputError("[POS] and [NEG] prompts tokenize to different lengths.")

    def step(logits: torch.Tensor) -> torch.Tensor:
        return contrastive_step(logits[0], logits[1], alpha, plausibility).argmax().repeat(2)

    out = engine.decode(handle, torch.tensor(rows), max_new_tokens, step=step)
    return engine.Generation(out.prompt_ids[:1], out.new_ids[:1], out.texts[:1])
