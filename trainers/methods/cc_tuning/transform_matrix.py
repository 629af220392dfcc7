"""The CC-Tuning Transform Matrix: after training, a map from non-English FFN outputs to English ones,
so that inference needs only the non-English prompt.

Run the tuned model on parallel (non-English, English) prompts and read every layer's
`hook_mlp_out` at the tag position (the last prompt token, prompts formatted as in training). Rows
over samples x layers stack into S (non-English) and T (English); X is the least-squares solution
of S X = T: one d_model x d_model matrix shared by all layers, no bias, not trained. With fewer
rows than d_model (or a rank-deficient S) it is numpy's minimum-norm solution; the fit reports
the rank so a user sees when more pairs are needed.

X is saved next to a checkpoint's weights as `transform_matrix.safetensors`, and the manifest
records it (file size, data, fit statistics), so the registry keeps listing the checkpoint.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from workbench import registry
from workbench.cache import stable_hash
from workbench.errors import InputError
from workbench.models import ModelHandle
from workbench.paths import atomic_write_bytes, atomic_write_text
from workbench.progress import Progress, progress_bar

from trainers.data import load_jsonl, pad_batch, pad_id
from trainers.methods.cc_tuning.method import check_model, encode_prompt, tag_mlp_outputs

TRANSFORM_FILE = "transform_matrix.safetensors"
TRANSFORM_KEY = "transform_matrix"
PAIR_FIELDS = ("instruction", "instruction_en")


@dataclass
class TransformFit:
    """X (d_model, d_model) with how well it fits: relative residual ||SX - T|| / ||T||."""

    matrix: np.ndarray
    n_pairs: int
    n_rows: int
    rank: int
    relative_residual: float

    def summary(self) -> dict:
        return {"n_pairs": self.n_pairs, "n_rows": self.n_rows, "rank": self.rank,
                "d_model": int(self.matrix.shape[0]), "relative_residual": self.relative_residual}


@torch.no_grad()
def tag_outputs(handle: ModelHandle, prompts: Sequence[str], max_length: int, batch_size: int = 8,
                progress: Progress | None = None, label: str = "") -> np.ndarray:
    """(n_prompts, n_layers, d_model): every layer's `hook_mlp_out` at each prompt's tag token."""
    if batch_size < 1:
        raise InputError("batch_size must be at least 1.")
    pad = pad_id(handle.tokenizer)
    out = []
    for start in range(0, len(prompts), batch_size):
        encoded = [encode_prompt(handle.tokenizer, p, max_length) for p in prompts[start:start + batch_size]]
        batch = pad_batch(encoded, [len(ids) for ids in encoded], pad)
        tags = torch.tensor([len(ids) - 1 for ids in encoded], device=handle.device)
        out.append(tag_mlp_outputs(handle, batch["input_ids"].to(handle.device), tags,
                                   batch["attention_mask"].to(handle.device)).float().cpu().numpy())
        if progress:
            done = min(len(prompts), start + batch_size)
            progress(done / len(prompts), f"FFN outputs of {done}/{len(prompts)} {label}prompts")
    return np.concatenate(out)


def solve(source: np.ndarray, target: np.ndarray, n_pairs: int) -> TransformFit:
    """Least-squares X with source @ X ~ target (rows = samples x layers), in float64."""
    S, T = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    X, _, rank, _ = np.linalg.lstsq(S, T, rcond=None)
    residual = float(np.linalg.norm(S @ X - T) / max(np.linalg.norm(T), 1e-30))
    return TransformFit(X, n_pairs, int(S.shape[0]), int(rank), residual)


def fit_transform(handle: ModelHandle, pairs: Sequence[tuple[str, str]], max_length: int = 256,
                  batch_size: int = 8, progress: Progress | None = None) -> TransformFit:
    """The Transform Matrix of a tuned model from (non-English prompt, English prompt) pairs."""
    check_model(handle)
    pairs = [(a, b) for a, b in pairs]
    if not pairs:
        raise InputError("The Transform Matrix needs at least one (non-English, English) prompt pair.")
    for n, (a, b) in enumerate(pairs, 1):
        if not (isinstance(a, str) and a.strip() and isinstance(b, str) and b.strip()):
            raise InputError(f"Prompt pair {n} has an empty prompt.")
    d = handle.facts.d_model
    half = (lambda f, m: progress(f / 2, m)) if progress else None
    rest = (lambda f, m: progress(0.5 + f / 2, m)) if progress else None
    S = tag_outputs(handle, [a for a, _ in pairs], max_length, batch_size, half, "non-English ").reshape(-1, d)
    T = tag_outputs(handle, [b for _, b in pairs], max_length, batch_size, rest, "English ").reshape(-1, d)
    return solve(S, T, len(pairs))


# ---------------------------------------------------------------------- saved with a checkpoint

def load_transform(folder: str | Path) -> torch.Tensor | None:
    """The checkpoint's Transform Matrix, or None if `transform-matrix` has not been run on it."""
    from safetensors.torch import load_file

    path = Path(folder) / TRANSFORM_FILE
    return load_file(str(path))[TRANSFORM_KEY] if path.exists() else None


def save_transform(checkpoint: registry.Checkpoint, fit: TransformFit, data: dict) -> Path:
    """Write X beside the checkpoint's weights and record it in the manifest.

    The matrix file is written first (atomically), then the manifest (atomically) with the file's
    size, so the checkpoint stays complete in the registry's eyes at every moment: its size is
    fixed by d_model, so a refit never changes it."""
    from safetensors.torch import save

    path = checkpoint.path / TRANSFORM_FILE
    atomic_write_bytes(path, save({TRANSFORM_KEY: torch.from_numpy(fit.matrix.astype(np.float32)).contiguous()}))
    manifest = dict(checkpoint.manifest)
    files = [f for f in manifest.get("files", []) if f.get("path") != TRANSFORM_FILE]
    manifest["files"] = files + [{"path": TRANSFORM_FILE, "bytes": path.stat().st_size}]
    manifest["transform_matrix"] = {**fit.summary(), **data,
                                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(checkpoint.path / registry.MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False, default=str))
    return path


def transform_matrix(checkpoint: str, data: str | Path, languages: Sequence[str] | None = None,
                     batch_size: int = 8, progress: Progress | None = None) -> TransformFit:
    """Fit and save the Transform Matrix of CC-Tuning checkpoint `checkpoint` (`RUN` or `RUN@STEP`)
    from the parallel prompts (`instruction`, `instruction_en`) of a JSONL file."""
    import workbench

    ckpt = registry.get(checkpoint)
    if ckpt.method != "cc-tuning":
        raise InputError(f"Checkpoint {ckpt.name} was trained with {ckpt.method or 'an unknown method'!r}, not "
                         "cc-tuning: only CC-Tuning checkpoints have a Decision Maker to use the matrix with.")
    records = load_jsonl(data, PAIR_FIELDS, languages)
    handle = workbench.load(ckpt.spec)
    max_length = int(ckpt.config.get("max_length", 256))
    pairs = [(r["instruction"], r["instruction_en"]) for r in records]
    fit = fit_transform(handle, pairs, max_length=max_length, batch_size=batch_size, progress=progress)
    save_transform(ckpt, fit, {"data": str(data), "data_hash": stable_hash(pairs), "max_length": max_length})
    return fit


# ---------------------------------------------------------------------- command line

def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="CC-Tuning checkpoint: RUN (latest step) or RUN@STEP")
    p.add_argument("--data", required=True, help="JSONL with parallel prompts: instruction (non-English), instruction_en")
    p.add_argument("--languages", nargs="*", default=None, help="only these languages' records (lang field)")
    p.add_argument("--batch-size", type=int, default=8)


def _run(args) -> None:
    with progress_bar("transform matrix") as report:
        fit = transform_matrix(args.checkpoint, args.data, args.languages, args.batch_size, progress=report)
    print(json.dumps({"checkpoint": registry.get(args.checkpoint).name, **fit.summary()}, indent=2))


def _register() -> None:
    from workbench.cli import command

    command("transform-matrix", "fit and save the Transform Matrix of a CC-Tuning checkpoint")((_configure, _run))


_register()
