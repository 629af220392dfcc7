"""Resume state without pickle: optimizer, scheduler, RNG and trainable tensors as safetensors + JSON.

Accelerate's `save_state` pickles the optimizer and RNG; the registry holds safetensors only (a
pickle can run code when loaded), so the same state is flattened into tensors and JSON here.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

RESUME_DIR = "resume"
METHOD_TENSORS = "method_state.safetensors"
METHOD_JSON = "method_state.json"


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path))


# ---------------------------------------------------------------------- optimizer

def optimizer_to_files(state: dict[str, Any], folder: Path) -> None:
    """`optimizer.state_dict()` -> optimizer.safetensors (per-parameter tensors) + optimizer.json."""
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for slot, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{slot}"] = value
            else:
                scalars[f"{index}.{slot}"] = value
    save_tensors(tensors, folder / "optimizer.safetensors")
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def optimizer_from_files(folder: Path) -> dict[str, Any]:
    meta = json.loads((folder / "optimizer.json").read_text())
    slots: dict[int, dict[str, Any]] = {}
    for key, value in load_file(str(folder / "optimizer.safetensors")).items():
        index, slot = key.split(".", 1)
        slots.setdefault(int(index), {})[slot] = value
    for key, value in meta["scalars"].items():
        index, slot = key.split(".", 1)
        slots.setdefault(int(index), {})[slot] = value
    groups = meta["param_groups"]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": slots, "param_groups": groups}


# ---------------------------------------------------------------------- RNG

def rng_state() -> dict[str, Any]:
    """This process's random states (Python, NumPy, torch CPU and CUDA), as tensors and JSON."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    meta = {"python": [version, list(internal), gauss], "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return {"tensors": tensors, "meta": meta}


def save_rng(state: dict[str, Any], folder: Path, rank: int) -> None:
    save_tensors(state["tensors"], folder / f"rng_{rank}.safetensors")
    (folder / f"rng_{rank}.json").write_text(json.dumps(state["meta"]))


def restore_rng(folder: Path, rank: int) -> bool:
    """Restore this rank's random states; False if the checkpoint has none for this rank."""
    path = folder / f"rng_{rank}.safetensors"
    if not path.exists():
        return False
    tensors = load_file(str(path))
    meta = json.loads((folder / f"rng_{rank}.json").read_text())
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    return True


# ---------------------------------------------------------------------- tensors and method state

def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def save_method_state(extras: dict[str, Any], folder: Path) -> None:
    """A method's `extra_files()`: tensors -> method_state.safetensors, dicts -> method_state.json."""
    tensors = {k: v for k, v in extras.items() if torch.is_tensor(v)}
    others = {k: v for k, v in extras.items() if not torch.is_tensor(v)}
    bad = [k for k, v in others.items() if not isinstance(v, dict)]
    if bad:
        raise TypeError(f"extra_files() values must be tensors or dicts; {bad} are not.")
    if tensors:
        save_tensors(tensors, folder / METHOD_TENSORS)
    if others:
        (folder / METHOD_JSON).write_text(json.dumps(others, indent=2, ensure_ascii=False))


def load_method_state(folder: Path) -> dict[str, Any]:
    """What `save_method_state` wrote (empty if nothing): for methods' `load_extra(folder)`."""
    folder = Path(folder)
    out: dict[str, Any] = {}
    if (folder / METHOD_TENSORS).exists():
        out.update(load_file(str(folder / METHOD_TENSORS)))
    if (folder / METHOD_JSON).exists():
        out.update(json.loads((folder / METHOD_JSON).read_text(encoding="utf-8")))
    return out
