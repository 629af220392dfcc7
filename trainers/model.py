"""A private, trainable copy of a model, and its export as a plain Hugging Face folder.

`workbench.load` caches handles that the app and the probes share, so a trainer boots its own
copy here: the same TransformerLens bridge (hook points on every activation, so methods like
CC-Tuning can read and write activations with gradients), optionally with LoRA adapters (peft)
injected before the bridge wraps the modules, optionally with gradient checkpointing that replays
the methods' hooks. The bridge renames module paths, so export maps the weights back to the model's
own names and merges LoRA into them, leaving a plain folder that any tool loads; it works from a
state dict, so a run sharded by FSDP or DeepSpeed ZeRO-3 exports the one its processes gathered.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.errors import ModelLoadError
from workbench.models import ModelHandle, boot

from .config import TrainConfig


@dataclass
class TrainableModel:
    """The handle methods train through (`handle.hf_model` carries the hooks and, with LoRA, the
    adapters) plus the peft wrapper needed to merge or save the adapters."""

    handle: ModelHandle
    peft_model: Any | None

    @property
    def lora(self) -> bool:
        return self.peft_model is not None


def lora_config(config: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules, bias="none")


def load_for_training(spec: str, config: TrainConfig, device: str | torch.device = "cpu") -> TrainableModel:
    """Boot a fresh model for `spec` (never the shared cached handle), with LoRA if configured."""
    adapters: list[Any] = []

    def add_lora(hf_model: torch.nn.Module) -> None:
        from peft import get_peft_model

        try:
            adapters.append(get_peft_model(hf_model, lora_config(config)))
        except ValueError as exc:
            raise ModelLoadError(f"LoRA cannot wrap {spec} with target modules {config.lora_target_modules!r}: {exc}") from exc

    handle = boot(spec, device=device, dtype=getattr(torch, config.dtype), wrap=add_lora if config.lora else None)
    handle.hf_model.train()
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(handle)
    return TrainableModel(handle=handle, peft_model=adapters[0] if adapters else None)


def enable_gradient_checkpointing(handle: ModelHandle) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them
    (Transformers' layer checkpointing, non-reentrant; it also makes the input embeddings require
    grad, which LoRA needs).

    A method attaches its hooks only for the length of its forward call, so the recompute, which
    runs later inside `backward`, would run the layer without them and compute other activations
    (PyTorch stops on the mismatch). Each checkpointed call therefore remembers the hooks attached
    when it ran and reinstates exactly those while it is recomputed."""
    points = list({id(p): p for p in handle.bridge.hook_dict.values()}.values())

    def context_fn() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        seen = {p: (p._forward_hooks.copy(), list(p.fwd_hooks)) for p in points if p._forward_hooks}
        return contextlib.nullcontext(), _hooks_as(points, seen)

    try:
        handle.hf_model.activation_checkpointing_enable({"use_reentrant": False, "context_fn": context_fn})
    except ValueError as exc:
        raise ModelLoadError(f"{handle.facts.spec} does not support gradient checkpointing: {exc}") from exc


@contextlib.contextmanager
def _hooks_as(points: list[torch.nn.Module], seen: dict[torch.nn.Module, tuple[OrderedDict, list]]) -> Iterator[None]:
    """Within the block, every hook point carries the forward hooks in `seen` and no others: in
    PyTorch's registry, which runs them, and in TransformerLens's list, which some bridge
    components (the norms) read to choose how they compute."""
    current = {p: (p._forward_hooks, p.fwd_hooks) for p in points if p._forward_hooks or p in seen}
    for point in current:
        point._forward_hooks, point.fwd_hooks = seen.get(point, (OrderedDict(), []))
    try:
        yield
    finally:
        for point, (hooks, handles) in current.items():
            point._forward_hooks, point.fwd_hooks = hooks, handles


def trainable_parameters(model: TrainableModel) -> dict[str, torch.nn.Parameter]:
    """Parameters that receive gradients, by name, in a fixed order (the optimizer's order)."""
    return {n: p for n, p in model.handle.hf_model.named_parameters() if p.requires_grad}


def _skeleton(hf_model: torch.nn.Module, lora: Any | None = None) -> tuple[torch.nn.Module, Any | None]:
    """The model's own module tree on the meta device (no memory) and, given `lora` (a peft
    config), the peft wrapper that injected the adapters into it under the names the training
    model's adapters have (it merges them once weights are loaded)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(hf_model.config)
        if lora is None:
            return skeleton, None
        from peft import get_peft_model

        return skeleton, get_peft_model(skeleton, copy.deepcopy(lora))


def _clean(state: Mapping[str, torch.Tensor], skeleton: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`state` under the skeleton's names: the bridge inserts `_original_component` segments and
    aliases, which are dropped."""
    wanted = set(skeleton.state_dict())
    clean: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key.replace("._original_component", "")
        if name in wanted and name not in clean:
            clean[name] = value
    absent = wanted - set(clean)
    if absent:
        raise RuntimeError(f"Export lost weights {sorted(absent)[:5]}: the bridge layout is not understood.")
    return clean


def clean_state_dict(hf_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights under the model's own Hugging Face names, ready for `from_pretrained`."""
    return _clean(hf_model.state_dict(), _skeleton(hf_model)[0])


def export_hf(model: TrainableModel, folder: Path, note: str | None = None,
              state: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write `model` into `folder` as config + safetensors + tokenizer, LoRA adapters merged (the
    training model keeps its own). `state` is `handle.hf_model`'s state dict as the training
    processes gathered it (under FSDP / ZeRO-3 the live module holds only shards); by default the
    live module's."""
    source = model.handle.hf_model
    lora = model.peft_model.peft_config["default"] if model.lora else None
    plain, adapters = _skeleton(source, lora)
    weights = _clean(source.state_dict() if state is None else state, plain)
    # the merge writes into the adapted layers' base weights: copies, so the live model keeps its own
    plain.load_state_dict({k: v.detach().to("cpu", copy=adapters is not None and ".base_layer." in k)
                           for k, v in weights.items()}, assign=True)
    if adapters is not None:
        plain = adapters.merge_and_unload()
    plain.tie_weights()
    plain.generation_config = source.generation_config
    plain.save_pretrained(folder, safe_serialization=True)
    model.handle.tokenizer.save_pretrained(folder)
    if note:
        (Path(folder) / "workbench_source.json").write_text(json.dumps({"source": "workbench checkpoint", "note": note}, indent=2))
