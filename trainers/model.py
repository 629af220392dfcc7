"""A private, trainable copy of a model, and its export as a plain Hugging Face folder.

`workbench.load` caches handles that the app and the probes share, so a trainer boots its own
copy here: the same TransformerLens bridge (hook points on every activation, so methods like
CC-Tuning can read and write activations with gradients), optionally with LoRA adapters (peft)
injected before the bridge wraps the modules. The bridge renames module paths, so export maps the
weights back to the model's own names; LoRA is merged into a copy first, leaving a plain folder
that any tool loads.
"""

from __future__ import annotations

import copy
import json
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

    handle = boot(spec, device=device, wrap=add_lora if config.lora else None)
    handle.hf_model.train()
    return TrainableModel(handle=handle, peft_model=adapters[0] if adapters else None)


def trainable_parameters(model: TrainableModel) -> dict[str, torch.nn.Parameter]:
    """Parameters that receive gradients, by name, in a fixed order (the optimizer's order)."""
    return {n: p for n, p in model.handle.hf_model.named_parameters() if p.requires_grad}


def clean_state_dict(hf_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights under the model's own Hugging Face names (the bridge inserts
    `_original_component` segments and aliases), ready for `from_pretrained`."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(hf_model.config)
    wanted = set(skeleton.state_dict())
    clean: dict[str, torch.Tensor] = {}
    for key, value in hf_model.state_dict().items():
        name = key.replace("._original_component", "")
        if name in wanted and name not in clean:
            clean[name] = value
    absent = wanted - set(clean)
    if absent:
        raise RuntimeError(f"Export lost weights {sorted(absent)[:5]}: the bridge layout is not understood.")
    return clean


def export_hf(model: TrainableModel, folder: Path, note: str | None = None) -> None:
    """Write `model` into `folder` as config + safetensors + tokenizer. LoRA adapters are merged
    into a copy (the training model keeps its adapters)."""
    from transformers import AutoModelForCausalLM

    source = model.handle.hf_model
    if model.lora:
        source = copy.deepcopy(model.peft_model).merge_and_unload()
    state = {k: v.detach().to("cpu") for k, v in clean_state_dict(source).items()}
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(source.config)
    plain.load_state_dict(state, assign=True)
    plain.tie_weights()
    plain.generation_config = source.generation_config
    plain.save_pretrained(folder, safe_serialization=True)
    model.handle.tokenizer.save_pretrained(folder)
    if note:
        (Path(folder) / "workbench_source.json").write_text(json.dumps({"source": "workbench checkpoint", "note": note}, indent=2))
