"""Where a model runs and in which precision: the one policy behind `workbench.load`, the CLI and the app.

`"auto"` means the fastest thing this machine offers: a CUDA GPU, then Apple's MPS, then the CPU;
bfloat16 on a GPU that computes it natively, float16 on one that does not, float32 on the CPU
(bfloat16 there is a fast mode one asks for). `WORKBENCH_DEVICE` / `WORKBENCH_DTYPE` replace
"auto" for a whole process (a Space, a container). Device maps for models bigger than one device
are Accelerate's; this module only reads them from text and says where a dispatched module runs.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import InputError, ModelLoadError

DEVICE_ENV, DTYPE_ENV = "WORKBENCH_DEVICE", "WORKBENCH_DTYPE"
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_DEVICE_TYPES = ("cpu", "cuda", "mps")


def _requested(name: Any, env: str) -> tuple[Any, str]:
    """`name`, or the environment's choice when `name` is "auto" (or None); and where it came from,
    for the error messages."""
    if name is None or (isinstance(name, str) and name.strip().lower() == "auto"):
        chosen = os.environ.get(env, "").strip()
        return (chosen, f" (from ${env})") if chosen else ("auto", "")
    return name, ""


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device for `name` ("auto", "cpu", "cuda", "cuda:1", "mps" or a torch.device),
    refused with a clear message when it is not a device name or this machine lacks it."""
    name, source = _requested(name, DEVICE_ENV)
    if isinstance(name, str) and name.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if torch.backends.mps.is_available() else torch.device("cpu")
    try:
        device = torch.device(name.strip().lower() if isinstance(name, str) else name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in _DEVICE_TYPES:
        raise InputError(f"Unknown device {name!r}{source}: use auto, cpu, cuda, cuda:N or mps.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"Device {name!r}{source} was asked for, but this machine has no CUDA GPU that "
                                 "torch can use. Use --device auto or cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelLoadError(f"Device {name!r}{source} does not exist: this machine has "
                                 f"{torch.cuda.device_count()} CUDA GPU(s), numbered from 0.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"Device {name!r}{source} was asked for, but Apple's MPS is not available here. "
                             "Use --device auto or cpu.")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware (an Ampere+ GPU, MPS on macOS 14+, a CPU with
    AMX or AVX512-BF16); elsewhere bfloat16 is emulated, and on a CPU several times slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "mps":
        return torch.backends.mps.is_macos_or_newer(14, 0)
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The torch dtype for `name` ("auto", float32/fp32, bfloat16/bf16, float16/fp16 or a torch dtype)
    on `device`: "auto" is bfloat16 on a GPU with native bfloat16, else float16 on a GPU, and
    float32 on the CPU."""
    name, source = _requested(name, DTYPE_ENV)
    if isinstance(name, torch.dtype):
        if name in DTYPES.values():
            return name
        raise InputError(f"Unsupported dtype {name}: use float32, bfloat16 or float16.")
    text = str(name).strip().lower().removeprefix("torch.")
    if text == "auto":
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if native_bf16(device) else torch.float16
    if text not in DTYPES:
        raise InputError(f"Unknown dtype {name!r}{source}: use auto, float32 (fp32), bfloat16 (bf16) "
                         "or float16 (fp16).")
    return DTYPES[text]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _map_device(device_map: str | dict) -> torch.device:
    """The device whose precision policy a dispatched model follows: the first GPU its map names
    (a strategy such as "auto" fills the GPUs there are), else the CPU."""
    if isinstance(device_map, str):
        return resolve_device("auto")
    for target in device_map.values():
        if isinstance(target, int) or str(target).startswith(("cuda", "mps")):
            return resolve_device(f"cuda:{target}" if isinstance(target, int) else str(target))
    return torch.device("cpu")


def parse_device_map(text: str | dict | None) -> str | dict | None:
    """A device map from the command line or the environment: a strategy (auto, balanced,
    balanced_low_0, sequential), a JSON object {"module.name": target} or a JSON file holding one;
    targets are GPU numbers, "cpu", "disk", "cuda:N" or "mps"."""
    if text is None or isinstance(text, dict):
        return text
    text = text.strip()
    if not text:
        return None
    if text in DEVICE_MAP_STRATEGIES:
        return text
    source = text if text.startswith("{") else None
    if source is None:
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputError(f"Device map {text!r} is not one of {', '.join(DEVICE_MAP_STRATEGIES)}, "
                             "a JSON object or a JSON file.")
        source = path.read_text()
    try:
        mapping = json.loads(source)
    except json.JSONDecodeError as exc:
        raise InputError(f"The device map is not valid JSON ({exc}).") from None
    if not isinstance(mapping, dict) or not mapping:
        raise InputError('A device map is a JSON object such as {"model.layers.0": 0, "lm_head": "cpu"}.')
    return mapping


def parse_max_memory(text: str | dict | None) -> dict | None:
    """Per-device memory budgets for a dispatched model: "0=20GiB,cpu=60GiB" or a JSON object;
    GPU numbers become ints, as Accelerate expects."""
    if text is None or isinstance(text, dict):
        return text
    text = text.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            pairs = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"max_memory is not valid JSON ({exc}).") from None
    else:
        pairs = {}
        for item in filter(None, re.split(r"[,\s]+", text)):
            key, sep, budget = item.partition("=")
            if not sep or not budget:
                raise InputError(f"Cannot read the memory budget {item!r}: write DEVICE=SIZE, e.g. 0=20GiB,cpu=60GiB.")
            pairs[key] = budget
    return {int(k) if str(k).isdigit() else str(k): v for k, v in pairs.items()}


@dataclass(frozen=True)
class Placement:
    """Where and in which precision one model is loaded, every "auto" resolved."""

    device: torch.device  # one device, or the first GPU (else the CPU) of a device map
    dtype: torch.dtype
    device_map: str | dict | None = None
    max_memory: dict | None = None
    offload_folder: str | None = None

    def key(self) -> tuple:
        """What tells two loads of one folder apart (the offload folder does not change the model)."""
        return (str(self.device), dtype_name(self.dtype), json.dumps(self.device_map, sort_keys=True, default=str),
                json.dumps(self.max_memory, sort_keys=True, default=str))


def placement(device: str | torch.device | None = "auto", dtype: str | torch.dtype | None = "auto",
              device_map: str | dict | None = None, max_memory: str | dict | None = None,
              offload_folder: str | os.PathLike | None = None) -> Placement:
    """Resolve load options into a `Placement`, refusing combinations Accelerate would misread."""
    device_map, max_memory = parse_device_map(device_map), parse_max_memory(max_memory)
    if device_map is None:
        if max_memory is not None or offload_folder is not None:
            raise InputError("max_memory and offload_folder apply to a dispatched model: give a device_map too "
                             "(e.g. device_map='auto').")
        where = resolve_device(device)
        return Placement(where, resolve_dtype(dtype, where))
    if device is not None and str(device).strip().lower() != "auto":
        raise InputError(f"Give either a device ({device}) or a device_map, not both: the map says where each "
                         "part of the model goes.")
    where = _map_device(device_map)
    folder = None if offload_folder is None else str(Path(offload_folder).expanduser())
    return Placement(where, resolve_dtype(dtype, where), device_map, max_memory, folder)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where `module` computes: the execution device of Accelerate's hook when the model was
    dispatched (an offloaded module's weights sit on "meta" between calls), else where its first
    weight lives."""
    for candidate in (module, getattr(module, "original_component", None)):
        hook = getattr(candidate, "_hf_hook", None)
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    tensor = next(module.parameters(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def to_module(tensor: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    """`tensor` on the device `module` computes on and, when floating, in its weights' dtype: a
    float32 vector never meets a bfloat16 layer, nor a CPU vector a layer on a GPU."""
    weight = next(module.parameters(), None)
    dtype = weight.dtype if weight is not None and tensor.is_floating_point() else tensor.dtype
    return tensor.to(module_device(module), dtype)
