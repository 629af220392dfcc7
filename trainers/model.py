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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench import compat
from workbench.errors import ModelLoadError
from workbench.models import ModelHandle, _check_folder, _facts, _hub_folder, resolve_spec

from .config import TrainConfig


@dataclass
class TrainableModel:
    """The handle methods train through (`handle.hf_model` carries the hooks and, with LoRA, the
    adapters) plus the peft wrapper needed to merge or save the adapters."""

    handle: ModelHandle
    peft_model: Any | None
    folder: Path

    @property
    def lora(self) -> bool:
        return self.peft_model is not None


def lora_config(config: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules, bias="none")


def load_for_training(spec: str, config: TrainConfig, device: str | torch.device = "cpu") -> TrainableModel:
    """Boot a fresh model for `spec` (never the shared cached handle), with LoRA if configured."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_spec(spec)
    folder = _hub_folder(resolved.path, None) if resolved.source == "hub" else Path(resolved.path)
    _check_folder(folder)
    compat.install()
    start = time.time()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    except Exception as exc:  # noqa: BLE001 - many broken shapes, one clear message
        raise ModelLoadError(f"Could not load {spec} from {folder} for training: {exc}") from exc
    hf_model.to(device)
    peft_model = None
    if config.lora:
        from peft import get_peft_model

        try:
            peft_model = get_peft_model(hf_model, lora_config(config))
        except ValueError as exc:
            raise ModelLoadError(f"LoRA cannot wrap {spec} with target modules {config.lora_target_modules!r}: {exc}") from exc
    bridge = TransformerBridge.boot_transformers(str(folder), device=str(device), dtype=torch.float32,
                                                 tokenizer=tokenizer, hf_model=hf_model)
    handle = ModelHandle(bridge, tokenizer, _facts(spec, resolved, bridge, tokenizer, time.time() - start))
    handle.hf_model.train()
    return TrainableModel(handle=handle, peft_model=peft_model, folder=folder)


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
