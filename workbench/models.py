"""Turn a model spec into a loaded model handle, once, and share it.

A spec is one of: the offline default `gemma-3-270m`; a local Hugging Face folder; a registered
checkpoint `ckpt:NAME`; or a Hugging Face hub name. Every handle wraps the same three things the
probes need: a TransformerLens `TransformerBridge` (hooks on every activation over the unmodified
HF model), its tokenizer, and the model's facts (sizes, chat template, weight fingerprint).

`boot` is the one way a spec becomes a handle: `load` caches its handles for the app, notebooks
and probes; trainers boot private copies. Callers that need no hooks use its two halves,
`resolve_folder` (the checked local folder, hub names included) and `load_hf_model`.

Where and in which precision a model runs follows one policy (`workbench/devices.py`); a model
bigger than one device is dispatched by Accelerate (`device_map`, `max_memory`, `offload_folder`)
and the bridge wraps the dispatched model, whose hooks and KV caches work as on one device.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import devices
from .default_model import DEFAULT_MODEL, QUANTIZATION_NOTE, ensure_default_model, source_note
from .errors import InputError, ModelLoadError
from .progress import Progress

CHECKPOINT_PREFIX = "ckpt:"
_WEIGHT_SUFFIXES = (".safetensors",)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class ModelFacts:
    """What the model card shows, and what cache keys are built from (`fingerprint`)."""

    spec: str
    source: str  # "default" | "folder" | "checkpoint" | "hub"
    path: str
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    n_params: int
    layer_types: tuple[str, ...] | None
    sliding_window: int | None
    chat_template: str | None
    fingerprint: str
    dtype: str
    device: str  # where the input embeddings compute
    device_map: dict[str, int] | None  # decoder layers per device ("cpu", "disk", "cuda:0") when dispatched
    load_seconds: float
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelHandle:
    """A loaded model: the bridge (hooks), the tokenizer and the facts, used by every probe."""

    bridge: Any
    tokenizer: Any
    facts: ModelFacts
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def hf_model(self) -> torch.nn.Module:
        """The underlying Hugging Face model; its modules carry the bridge's hook points."""
        return self.bridge.original_model

    @property
    def n_layers(self) -> int:
        return self.facts.n_layers

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the input embeddings (the first device of a dispatched model)."""
        return devices.module_device(self.hf_model.get_input_embeddings())

    def encode(self, text: str, prepend_bos: bool = True) -> list[int]:
        """Token ids of `text`, with the model's BOS token in front unless told otherwise."""
        from .engine.inputs import check_text

        ids = self.tokenizer(check_text(text, "text"), add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return ([bos] if prepend_bos and bos is not None else []) + list(ids)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def str_tokens(self, ids) -> list[str]:
        return [self.tokenizer.decode([i]) for i in ids]

    # The few operations a notebook needs, run by the engine (workbench/engine/), which probes
    # call directly; see docs/architecture.md for the seam a second backend would fill.

    def logits(self, prompt, fwd_hooks=()) -> torch.Tensor:
        """Logits (batch, seq, vocab) of a prompt (text, ids or a tensor)."""
        from . import engine

        return engine.forward(self, engine.as_ids(self, prompt), fwd_hooks)

    def residuals(self, prompt, layers=None, at=None) -> torch.Tensor:
        """`hook_resid_post` of the chosen layers (all by default), no unembedding."""
        from . import engine

        return engine.residual_stream(self, engine.as_ids(self, prompt), layers, at)

    def capture(self, prompt, sites, **options):
        """Named activations of one forward pass (see `engine.capture` for the options)."""
        from . import engine

        return engine.capture(self, engine.as_ids(self, prompt), sites, **options)

    def lens(self, resid: torch.Tensor) -> torch.Tensor:
        """Logit-lens logits of residual-stream vectors (final norm, unembedding, soft-capping)."""
        from . import engine

        return engine.lens_logits(self, resid)

    def greedy(self, prompt, max_new_tokens: int = 20, **options):
        """Greedy continuation (an `engine.Generation`); options as `engine.generate_greedy`."""
        from . import engine

        return engine.generate_greedy(self, prompt, max_new_tokens, **options)

    def score(self, prompt, continuations) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probability of each continuation (token ids) after the prompt, and whether
        greedy decoding would produce it."""
        from . import engine

        return engine.score_continuations(self, engine.as_ids(self, prompt), continuations)


# --------------------------------------------------------------------------- spec resolution

@dataclass(frozen=True)
class ResolvedSpec:
    source: str
    path: str  # a local folder, or the hub name for source == "hub"
    note: str | None = None


_checkpoint_resolver: Callable[[str], Path] | None = None


def set_checkpoint_resolver(resolver: Callable[[str], Path]) -> None:
    """Seam for the checkpoint registry: map `ckpt:NAME` to a local HF folder."""
    global _checkpoint_resolver
    _checkpoint_resolver = resolver


def resolve_spec(spec: str, progress: Progress | None = None) -> ResolvedSpec:
    from . import limits

    from .engine.inputs import check_text

    if spec is not None:
        try:
            check_text(spec, "model spec")  # text, without lone surrogates
        except InputError as exc:
            raise ModelLoadError(str(exc)) from None
    spec = (spec or "").strip()
    if not spec:
        raise ModelLoadError("No model given. Use 'gemma-3-270m', a local folder, 'ckpt:NAME' or a hub name.")
    limits.check_spec(spec)  # demo mode: the default model and ckpt: only, whatever else `spec` names
    if spec == DEFAULT_MODEL:
        folder = ensure_default_model(progress)
        return ResolvedSpec("default", str(folder), QUANTIZATION_NOTE)
    if spec.startswith(CHECKPOINT_PREFIX):
        name = spec[len(CHECKPOINT_PREFIX):]
        if _checkpoint_resolver is None:
            try:
                from . import registry  # noqa: F401  (registers its resolver on import)
            except ImportError:
                pass
        if _checkpoint_resolver is None:
            raise ModelLoadError("No checkpoint registry is available to resolve " + spec)
        folder = _checkpoint_resolver(name)
        return ResolvedSpec("checkpoint", str(folder), source_note(folder))
    try:
        path = Path(spec).expanduser()
    except RuntimeError:  # "~name" of a user that does not exist
        raise ModelLoadError(f"Model folder {spec} does not exist (no user {spec.split('/')[0][1:]!r}).") from None
    try:
        exists = path.exists()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise ModelLoadError(f"{spec[:60]!r}{'...' if len(spec) > 60 else ''} is not a model folder, a checkpoint "
                             f"or a hub name ({exc.strerror}).") from None
    if exists or spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") > 1:
        if not exists:
            raise ModelLoadError(f"Model folder {spec} does not exist.")
        if not path.is_dir():
            raise ModelLoadError(f"{spec} is a file, not a model folder. Give the folder that holds config.json and *.safetensors.")
        return ResolvedSpec("folder", str(path.resolve()), source_note(path))
    return ResolvedSpec("hub", spec)


def _check_folder(folder: Path) -> None:
    if not (folder / "config.json").exists():
        raise ModelLoadError(f"{folder} has no config.json: it is not a Hugging Face model folder.")
    names = [p.name for p in folder.iterdir()]
    if not any(n.endswith(_WEIGHT_SUFFIXES) for n in names):
        pickled = [n for n in names if n.endswith(_PICKLE_SUFFIXES)]
        if pickled:
            raise ModelLoadError(
                f"{folder} holds only pickle weights ({', '.join(sorted(pickled))}). The workbench loads safetensors "
                "only, since pickle files can run code. Convert them with save_pretrained(safe_serialization=True)."
            )
        raise ModelLoadError(f"{folder} has no *.safetensors weights.")
    for weights in folder.glob("*.safetensors"):
        _check_safetensors_header(weights)


def _check_safetensors_header(path: Path) -> None:
    """Fail fast, with a readable message, on truncated or non-safetensors files."""
    import json
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("file too short")
            (n,) = struct.unpack("<Q", head)
            size = path.stat().st_size
            if n <= 0 or 8 + n > size:
                raise ValueError("header length beyond the end of the file")
            header = json.loads(fh.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + n + end > size:
                raise ValueError(f"file is truncated ({size} bytes, tensors need {8 + n + end})")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path.name} in {path.parent} is not a valid safetensors file ({exc}).") from exc


def hub_reachable(timeout: float = 2.0) -> bool:
    """One quick TCP connect instead of the hub client's long retry loop."""
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_folder(name: str, progress: Progress | None) -> Path:
    """Download (or find in the HF cache) a hub model's safetensors, config and tokenizer."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    try:
        try:
            return Path(snapshot_download(name, allow_patterns=patterns, local_files_only=True))
        except LocalEntryNotFoundError:
            if offline:
                raise ModelLoadError(
                    f"Model '{name}' is not a local folder, not a registered checkpoint, and not in the Hugging Face "
                    "cache; the hub is switched off (HF_HUB_OFFLINE=1). Use 'gemma-3-270m' or a local folder."
                ) from None
        if not hub_reachable():
            raise ModelLoadError(
                f"Model '{name}' is not cached and the Hugging Face hub cannot be reached from this machine. "
                "Use 'gemma-3-270m', a local folder, or download the model where the hub is reachable."
            )
        if progress:
            progress(0.1, f"Downloading {name} from the Hugging Face hub")
        return Path(snapshot_download(name, allow_patterns=patterns))
    except (RepositoryNotFoundError, HFValidationError) as exc:
        raise ModelLoadError(f"'{name}' is not a model on the Hugging Face hub, a local folder or a checkpoint.") from exc


def resolve_folder(spec: str, progress: Progress | None = None) -> tuple[ResolvedSpec, Path]:
    """The checked local Hugging Face folder behind any spec (default model, folder, `ckpt:NAME`,
    hub name: fetched or found in the HF cache), so every loader refuses the same things alike."""
    resolved = resolve_spec(spec, progress)
    folder = _hub_folder(resolved.path, progress) if resolved.source == "hub" else Path(resolved.path)
    _check_folder(folder)
    return resolved, folder


# --------------------------------------------------------------------------- loading

def weight_fingerprint(model: torch.nn.Module) -> str:
    """A content hash of the weights from a strided sample of every tensor: cheap, and it changes
    whenever training changes the weights, so cached results never outlive the model they describe.
    Offloaded weights are read one module at a time (Accelerate's `align_module_device`), so a
    dispatched model hashes like the same weights on one device."""
    from accelerate.utils import align_module_device

    h = hashlib.sha256()
    with torch.no_grad():
        for module_name, module in sorted(model.named_modules(), key=lambda item: item[0]):
            with align_module_device(module):
                tensors = [(n, t) for n, t in module._parameters.items() if t is not None]
                tensors += [(n, t) for n, t in module._buffers.items()
                            if t is not None and n not in module._non_persistent_buffers_set]
                for name, tensor in sorted(tensors, key=lambda item: item[0]):
                    flat = tensor.detach().reshape(-1)
                    step = max(1, flat.numel() // 4096)
                    h.update(f"{module_name}.{name}".encode())
                    h.update(str(tuple(tensor.shape)).encode())
                    h.update(flat[::step].to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _layer_devices(hf_model: torch.nn.Module) -> dict[str, int] | None:
    """How many decoder layers each device of a dispatched model holds, e.g. {"cpu": 16, "disk": 2}
    (a layer split over several is counted under "cpu+disk"); None for a model on one device."""
    placed = getattr(hf_model, "hf_device_map", None)
    if not placed:
        return None
    n = hf_model.config.get_text_config().num_hidden_layers
    blocks = next((name for name, m in hf_model.named_modules()
                   if isinstance(m, torch.nn.ModuleList) and len(m) == n), None)
    if blocks is None:
        return None
    counts: dict[str, int] = {}
    for i in range(n):
        path = f"{blocks}.{i}"
        targets = {f"cuda:{t}" if isinstance(t, int) else str(t) for k, t in placed.items()
                   if k in ("", path) or path.startswith(k + ".") or k.startswith(path + ".")}
        where = "+".join(sorted(targets))
        counts[where] = counts.get(where, 0) + 1
    return counts


def _facts(spec: str, resolved: ResolvedSpec, bridge, tokenizer, seconds: float,
           layers: dict[str, int] | None) -> ModelFacts:
    cfg = bridge.original_model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    tl = bridge.cfg
    layer_types = getattr(text_cfg, "layer_types", None)
    return ModelFacts(
        spec=spec,
        source=resolved.source,
        path=resolved.path,
        architecture=(cfg.architectures or [type(bridge.original_model).__name__])[0],
        n_layers=tl.n_layers,
        n_heads=tl.n_heads,
        n_kv_heads=getattr(tl, "n_key_value_heads", None) or tl.n_heads,
        d_model=tl.d_model,
        d_head=tl.d_head,
        d_mlp=getattr(tl, "d_mlp", 0) or 0,
        d_vocab=tl.d_vocab,
        n_ctx=tl.n_ctx,
        n_params=sum(p.numel() for p in bridge.original_model.parameters()),
        layer_types=tuple(layer_types) if layer_types else None,
        sliding_window=getattr(text_cfg, "sliding_window", None),
        chat_template=getattr(tokenizer, "chat_template", None),
        fingerprint=weight_fingerprint(bridge.original_model),
        dtype=devices.dtype_name(next(bridge.original_model.parameters()).dtype),
        device=str(devices.module_device(bridge.original_model.get_input_embeddings())),
        device_map=layers,
        load_seconds=round(seconds, 2),
        note=resolved.note,
    )


def load_tokenizer(folder: Path):
    """The tokenizer in `folder`, with a readable error for the many broken shapes tokenizer files take."""
    from transformers import AutoTokenizer

    try:
        # add_bos_token=True up front: otherwise TL reloads the whole tokenizer (seconds for Gemma's 262k vocab).
        return AutoTokenizer.from_pretrained(folder, add_bos_token=True)
    except Exception as exc:
        raise ModelLoadError(f"Could not read the tokenizer in {folder}: {exc}") from exc


def load_hf_model(folder: Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  device_map: str | dict | None = None, max_memory: dict | None = None,
                  offload_folder: str | None = None) -> torch.nn.Module:
    """The plain Hugging Face model in `folder` (safetensors only), in eval mode: on `device`, or
    dispatched by Accelerate over `device_map` (GPUs, "cpu", "disk" under `offload_folder`). Also for
    callers that need no hooks (reference models, vocabulary surgery)."""
    from transformers import AutoModelForCausalLM

    from . import compat

    compat.install()
    dispatch = {} if device_map is None else {"device_map": device_map, "max_memory": max_memory,
                                               "offload_folder": offload_folder}
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True, **dispatch)
    except Exception as exc:
        raise ModelLoadError(f"Could not load the weights in {folder}: {exc}") from exc
    return (hf_model if dispatch else hf_model.to(device)).eval()


def boot(spec: str, *, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
         device_map: str | dict | None = None, max_memory: str | dict | None = None,
         offload_folder: str | os.PathLike | None = None, wrap: Callable[[torch.nn.Module], None] | None = None,
         progress: Progress | None = None) -> ModelHandle:
    """A fresh, uncached handle for `spec`: the one way a model becomes a handle, for the shared cache
    and for trainers alike. Device, dtype and device map follow `devices.placement`. `wrap` changes
    the HF model in place before the bridge wraps its modules (e.g. injects LoRA adapters, whose
    target names the bridge would otherwise rename)."""
    where = devices.placement(device, dtype, device_map, max_memory, offload_folder)
    return _boot(spec, where, wrap, progress)


def _boot(spec: str, where: devices.Placement, wrap: Callable[[torch.nn.Module], None] | None,
          progress: Progress | None) -> ModelHandle:
    from transformer_lens.model_bridge import TransformerBridge

    resolved, folder = resolve_folder(spec, progress)
    if progress:
        progress(0.9, f"Loading {spec}")
    start = time.time()
    tokenizer = load_tokenizer(folder)
    hf_model = load_hf_model(folder, device=where.device, dtype=where.dtype, device_map=where.device_map,
                             max_memory=where.max_memory, offload_folder=where.offload_folder)
    if wrap is not None:
        wrap(hf_model)
    layers = _layer_devices(hf_model)
    try:
        bridge = TransformerBridge.boot_transformers(
            str(folder), device=str(where.device), dtype=where.dtype, tokenizer=tokenizer, hf_model=hf_model
        )
    except Exception as exc:
        what = "this model" if where.device_map is None else f"this model over device map {where.device_map!r}"
        raise ModelLoadError(f"TransformerLens does not support {what} ({exc}).") from exc
    bridge.eval()
    handle = ModelHandle(bridge, tokenizer, _facts(spec, resolved, bridge, tokenizer, time.time() - start, layers))
    if progress:
        progress(1.0, f"Loaded {spec}")
    return handle


class ModelCache:
    """A small LRU of loaded models, so the app and notebooks load each model once."""

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._models: OrderedDict[tuple, ModelHandle] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: str, where: devices.Placement, progress: Progress | None) -> ModelHandle:
        resolved = resolve_spec(spec, progress)
        key = (resolved.path, *where.key())
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            handle = _boot(spec, where, None, progress)
            self._models[key] = handle
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            return handle

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


MODELS = ModelCache(capacity=int(os.environ.get("WORKBENCH_MAX_MODELS", "2")))


_LOAD_OPTIONS = ("device", "dtype", "device_map", "max_memory", "offload_folder")
_defaults: dict[str, Any] = {}


def set_defaults(**options: Any) -> None:
    """The options `load` uses where its caller leaves them at "auto" / None: `workbench app`'s
    flags, so every tab's `load(spec)` opens the model the way the app was started (the
    environment's WORKBENCH_DEVICE / WORKBENCH_DTYPE come after these). Replaces earlier defaults."""
    unknown = set(options) - set(_LOAD_OPTIONS)
    if unknown:
        raise InputError(f"Unknown load option(s) {', '.join(sorted(unknown))}; use {', '.join(_LOAD_OPTIONS)}.")
    _defaults.clear()
    _defaults.update({k: v for k, v in options.items() if not _unset(v)})


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() == "auto")


def load(spec: str = DEFAULT_MODEL, *, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
         device_map: str | dict | None = None, max_memory: str | dict | None = None,
         offload_folder: str | os.PathLike | None = None, progress: Progress | None = None) -> ModelHandle:
    """Load a model by spec (default model, folder, `ckpt:NAME` or hub name); cached per process and
    per placement. "auto" picks a CUDA GPU, then MPS, then the CPU, in bfloat16 on a GPU that has it
    (else float16) and float32 on the CPU; `device_map` / `max_memory` / `offload_folder` spread a
    model bigger than one device over GPUs, the CPU and the disk (see `workbench/devices.py`)."""
    options = dict(device=device, dtype=dtype, device_map=device_map, max_memory=max_memory,
                   offload_folder=offload_folder)
    placed = not (_unset(device) and device_map is None)  # the caller chose where: no default placement
    for name, value in _defaults.items():
        if _unset(options[name]) and (name == "dtype" or not placed):
            options[name] = value
    return MODELS.get(str(spec), devices.placement(**options), progress)
