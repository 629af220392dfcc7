"""CC-Tuning inference on a monolingual (non-English) prompt, for generation and for every probe.

Training connected the English prompt's FFN outputs to the non-English pass. At inference there
is no English prompt, so the Transform Matrix X stands in for it:
1. a reading pass of the prompt collects u_l = `blocks.{l}.hook_mlp_out` at the tag position (the
   last real token of each row: the last position the attention mask keeps, or the last
   non-padding token), for every layer;
2. v~_l = u_l X; the Decision Maker reads mean_l(v~_l + e_tag) and chooses one layer. The choice
   is the argmax by default (deterministic, so probes and generations are reproducible);
   `choice="gumbel"` samples as in training;
3. the prompt pass itself runs with sum_l s_l v~_l added to `blocks.1.hook_resid_pre` at the tag.
Only the prompt (prefill) pass is changed: decode steps that continue from a KV cache are left
alone, as in training, where only the prompt's tag received the connection.

Two ways to use it:
- `ccti.prefill_hooks(prompt)` -> hooks for `engine.generate_greedy(..., prefill_hooks=...)`;
- `with cc_tuning_inference(handle) as ccti:` every forward pass of the model that starts a
  sequence (no KV cache yet) gets the connection: generation, `engine.forward`, `run_with_cache`, the
  lens and every probe. Each such pass first runs the reading pass (step 1), with whatever other
  hooks are active, so a probe's own hooks see two passes per prompt; a probe that splits one
  prompt over several cached calls gets the tag at the end of its first call. Inside the block
  the handle's fingerprint names the checkpoint's Decision Maker and matrix, so cached probe
  results of the plain model and of CC-Tuning inference never mix.
Prompts should be formatted as in training (`encode_prompt`: the instruction and a newline), since
the Decision Maker learnt the connection at that tag token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from pathlib import Path
from typing import Iterator, Sequence

import torch

from workbench import engine
from workbench.errors import InputError
from workbench.models import ModelHandle

from trainers.methods.cc_tuning.method import (
    INJECT_HOOK,
    DecisionMaker,
    add_at_tags,
    check_model,
    connection,
    injection_hook,
    load_decision_maker,
    read_state,
    tag_embeddings,
    tag_mlp_outputs,
    tag_positions,
)
from trainers.methods.cc_tuning.transform_matrix import load_transform

CHOICES = ("argmax", "gumbel")


class CCTuningInference:
    """A tuned model's Decision Maker and Transform Matrix, applied to prompts (module docstring)."""

    def __init__(self, handle: ModelHandle, decision_maker: DecisionMaker, transform: torch.Tensor,
                 choice: str = "argmax"):
        check_model(handle)
        if choice not in CHOICES:
            raise InputError(f"choice must be one of {', '.join(CHOICES)} (got {choice!r}).")
        d = handle.facts.d_model
        if tuple(transform.shape) != (d, d):
            raise InputError(f"The Transform Matrix is {tuple(transform.shape)}, but {handle.facts.spec} needs ({d}, {d}).")
        param = next(handle.hf_model.parameters())
        self.handle = handle
        self.decision_maker = decision_maker.to(device=param.device, dtype=param.dtype).eval()
        self.transform = transform.to(device=param.device, dtype=param.dtype)
        self.choice = choice
        self.last_choice: torch.Tensor | None = None  # chosen source layer per row, last prompt pass
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self._reading = False

    @classmethod
    def from_checkpoint(cls, handle: ModelHandle, folder: str | Path | None = None,
                        choice: str = "argmax") -> "CCTuningInference":
        """Load the Decision Maker and the Transform Matrix saved with a CC-Tuning checkpoint (by
        default the folder `handle` was loaded from, i.e. `workbench.load("ckpt:NAME")`)."""
        if folder is None:
            if handle.facts.source != "checkpoint":
                raise InputError(f"{handle.facts.spec} is not a checkpoint: load a CC-Tuning checkpoint with "
                                 "workbench.load('ckpt:NAME') or give its folder.")
            folder = handle.facts.path
        state = read_state(folder)
        transform = load_transform(folder)
        if transform is None:
            raise InputError(f"{folder} has no Transform Matrix yet: run `workbench transform-matrix NAME --data FILE` "
                             "(or trainers.methods.cc_tuning.transform_matrix.transform_matrix) on parallel prompts first.")
        return cls(handle, load_decision_maker(handle, state), transform, choice)

    @property
    def fingerprint(self) -> str:
        """Names this inference setup: the weights' fingerprint plus the Decision Maker, X and choice."""
        h = hashlib.sha256(self.choice.encode())
        for tensor in (self.decision_maker.proj.weight, self.transform):
            h.update(tensor.detach().float().cpu().numpy().tobytes())
        return f"{self.handle.facts.fingerprint}+cc-{h.hexdigest()[:12]}"

    @torch.no_grad()
    def injection(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(tag positions (B,), vectors (B, d_model)) to add after layer 0 for these prompt ids."""
        tags = tag_positions(ids, attention_mask, self.handle.tokenizer.pad_token_id)
        self._reading = True
        try:
            u = tag_mlp_outputs(self.handle, ids, tags, attention_mask)
        finally:
            self._reading = False
        v = u @ self.transform
        choice = self.decision_maker(v, tag_embeddings(self.handle, ids, tags), sample=self.choice == "gumbel")
        self.last_choice = choice.argmax(-1)
        return tags, connection(v, choice)

    def prefill_hooks(self, prompt: str | Sequence[int] | torch.Tensor) -> list[engine.Hook]:
        """Hooks for the prompt pass of `prompt` (e.g. `generate_greedy(..., prefill_hooks=...)`)."""
        tags, delta = self.injection(engine.as_ids(self.handle, prompt))
        return [injection_hook(tags, delta)]

    # ------------------------------------------------------------------ global mode

    def _before(self, module, args, kwargs):
        """Forward pre-hook on the decoder: at the start of a sequence, prepare the injection."""
        if self._reading:
            return None
        self._pending = None
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and cache.get_seq_length() > 0:
            return None  # a decode step: the prompt already received the connection
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise InputError("CC-Tuning inference needs token ids (the tag token's embedding), not inputs_embeds.")
        self._pending = self.injection(ids, kwargs.get("attention_mask"))
        return None

    def _after(self, module, args, kwargs, output):
        if not self._reading:
            self._pending = None

    def _inject(self, tensor: torch.Tensor, hook) -> torch.Tensor | None:
        if self._reading or self._pending is None:
            return None
        return add_at_tags(tensor, *self._pending)

    @contextlib.contextmanager
    def active(self) -> Iterator["CCTuningInference"]:
        """Apply CC-Tuning inference to every prompt pass of the model inside the block."""
        handle = self.handle
        decoder = handle.hf_model.base_model
        with handle.lock:
            facts = handle.facts
            before = decoder.register_forward_pre_hook(self._before, with_kwargs=True)
            after = decoder.register_forward_hook(self._after, with_kwargs=True)
            try:
                handle.facts = dataclasses.replace(facts, fingerprint=self.fingerprint)
                with engine.hooks(handle, [(INJECT_HOOK, self._inject)]):
                    yield self
            finally:
                before.remove()
                after.remove()
                handle.facts = facts
                self._pending = None


@contextlib.contextmanager
def cc_tuning_inference(handle: ModelHandle, checkpoint: str | Path | None = None,
                        choice: str = "argmax") -> Iterator[CCTuningInference]:
    """`with cc_tuning_inference(workbench.load("ckpt:RUN")) as ccti:` run any generation or probe
    with CC-Tuning inference (argmax choice by default). `checkpoint` is the checkpoint folder, by
    default the one `handle` was loaded from."""
    ccti = CCTuningInference.from_checkpoint(handle, checkpoint, choice)
    with ccti.active():
        yield ccti
