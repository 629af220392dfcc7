"""The checkpoint registry: every training run's checkpoints, each a plain Hugging Face folder.

Layout: `WORKBENCH_HOME/checkpoints/<run>/step-00000020/` holds config.json, *.safetensors, the
tokenizer, `manifest.json` (base model, parent, method, config, data hash, metrics, time, files)
and, for resuming, `resume/` (optimizer, scheduler and RNG state, also safetensors + JSON).

A checkpoint is written into a hidden temp folder and renamed into place when complete, and it is
listed only if its manifest's files are all present with their recorded sizes: a killed or
cancelled run never leaves a half-written checkpoint in the list. Names: `RUN` is the run's latest
checkpoint, `RUN@STEP` a given one; `workbench.load("ckpt:NAME")` opens either in every probe.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import models
from .errors import InputError, WorkbenchError
from .paths import atomic_dir, safe_child, subdir

MANIFEST = "manifest.json"
STEP_PREFIX = "step-"


class CheckpointError(InputError):
    """An unknown or unusable checkpoint name."""


@dataclass(frozen=True)
class Checkpoint:
    run: str
    step: int
    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.run}@{self.step}"

    @property
    def spec(self) -> str:
        """The model spec that loads this checkpoint: `ckpt:RUN@STEP`."""
        return f"{models.CHECKPOINT_PREFIX}{self.name}"

    @property
    def base_model(self) -> str:
        return self.manifest.get("base_model", "")

    @property
    def parent(self) -> str | None:
        return self.manifest.get("parent")

    @property
    def method(self) -> str:
        return self.manifest.get("method", "")

    @property
    def created(self) -> str:
        return self.manifest.get("created", "")

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config", {})

    @property
    def data_hash(self) -> str:
        return self.manifest.get("data_hash", "")

    def summary(self) -> dict[str, Any]:
        """One row for tables: name, method, base model, step, created, last losses."""
        return {"name": self.name, "run": self.run, "step": self.step, "method": self.method,
                "base_model": self.base_model, "parent": self.parent, "created": self.created,
                **{k: v for k, v in self.metrics.items() if isinstance(v, (int, float))}}


def root() -> Path:
    return subdir("checkpoints")


def run_folder(run: str) -> Path:
    """The folder of a run's checkpoints; the run name must be a plain folder name without '@'."""
    if "@" in run:
        raise CheckpointError(f"Run name {run!r} must not contain '@' (it separates the run from a step).")
    try:
        return safe_child(root(), run)
    except WorkbenchError as exc:
        raise CheckpointError(str(exc)) from None


def step_folder_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:08d}"


def parse_name(name: str) -> tuple[str, int | None]:
    """`RUN` -> (RUN, None); `RUN@STEP` -> (RUN, STEP)."""
    name = (name or "").strip()
    if name.startswith(models.CHECKPOINT_PREFIX):
        name = name[len(models.CHECKPOINT_PREFIX):]
    run, sep, step = name.partition("@")
    if not run:
        raise CheckpointError("Empty checkpoint name: use RUN or RUN@STEP.")
    if sep:
        if not step.isdigit():
            raise CheckpointError(f"Checkpoint {name!r}: the part after '@' must be a step number.")
        return run, int(step)
    return run, None


def _read(run: str, folder: Path) -> Checkpoint | None:
    """The checkpoint in `folder`, or None unless it is complete (manifest and every file intact)."""
    if folder.name.startswith(".") or not folder.name.startswith(STEP_PREFIX) or not folder.is_dir():
        return None
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        step = int(folder.name[len(STEP_PREFIX):])
        for entry in manifest["files"]:
            if (folder / entry["path"]).stat().st_size != entry["bytes"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Checkpoint(run=run, step=step, path=folder, manifest=manifest)


def list_checkpoints(run: str | None = None) -> list[Checkpoint]:
    """Every complete checkpoint (of one run, or of all), ordered by run then step."""
    runs = [run_folder(run)] if run else sorted(p for p in root().iterdir() if p.is_dir() and not p.name.startswith("."))
    found = []
    for folder in runs:
        if folder.is_dir():
            found.extend(c for c in (_read(folder.name, p) for p in sorted(folder.iterdir())) if c)
    return found


def latest(run: str) -> Checkpoint | None:
    ckpts = list_checkpoints(run)
    return ckpts[-1] if ckpts else None


def get(name: str) -> Checkpoint:
    """The checkpoint called `RUN` (its latest step) or `RUN@STEP`, with a helpful error if unknown."""
    run, step = parse_name(name)
    ckpts = list_checkpoints(run)
    if not ckpts:
        from .limits import demo_mode

        if demo_mode():  # a stranger learns neither the folder nor the other runs
            raise CheckpointError(f"No published checkpoint named {run!r}.")
        known = sorted({c.run for c in list_checkpoints()})
        listing = f" Registered runs: {', '.join(known)}." if known else " The registry is empty."
        raise CheckpointError(f"No checkpoint named {run!r} in {root()}.{listing}")
    if step is None:
        return ckpts[-1]
    for ckpt in ckpts:
        if ckpt.step == step:
            return ckpt
    raise CheckpointError(f"Run {run!r} has no checkpoint at step {step}; it has steps "
                          f"{', '.join(str(c.step) for c in ckpts)}.")


def resolve(name: str) -> Path:
    """The folder of checkpoint `name`: the seam `workbench.load("ckpt:NAME")` goes through."""
    return get(name).path


def _files(folder: Path) -> list[dict[str, Any]]:
    return [{"path": str(p.relative_to(folder)), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file()]


def save(run: str, step: int, write: Callable[[Path], None], manifest: dict[str, Any]) -> Checkpoint:
    """Write a checkpoint atomically: `write(tmp_folder)` fills a hidden temp folder, the manifest
    (with name, run, step, time and the files' sizes) goes in last, then the folder is renamed
    into place. If `write` fails or the process dies, nothing is listed."""
    final = run_folder(run) / step_folder_name(step)
    with atomic_dir(final) as tmp:
        write(tmp)
        full = {"name": f"{run}@{step}", "run": run, "step": step,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                **manifest, "files": _files(tmp)}
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(full, fh, indent=2, ensure_ascii=False, default=str)
            fh.flush()
            os.fsync(fh.fileno())
    ckpt = _read(run, final)
    if ckpt is None:
        raise CheckpointError(f"Checkpoint {final} could not be read back after writing it.")
    return ckpt


def delete(name: str) -> None:
    """Remove one checkpoint (`RUN@STEP`, or `RUN` for its latest): renamed away first, so it leaves
    the list at once, then deleted."""
    ckpt = get(name)
    _remove(ckpt.path)


def _remove(folder: Path) -> None:
    trash = Path(tempfile.mkdtemp(prefix=f".deleted-{folder.name}-", dir=folder.parent))
    os.rename(folder, trash / folder.name)
    shutil.rmtree(trash, ignore_errors=True)


def prune(run: str, keep_last: int) -> list[Checkpoint]:
    """Delete all but the `keep_last` newest checkpoints of `run`; returns the deleted ones."""
    ckpts = list_checkpoints(run)
    doomed = ckpts[: max(0, len(ckpts) - max(1, keep_last))]
    for ckpt in doomed:
        _remove(ckpt.path)
    return doomed


def remove_partial(run: str) -> int:
    """Delete leftovers of a killed writer (hidden temp and trash folders) in `run`'s folder.
    Call it only while holding the run (no other process is writing it)."""
    folder = run_folder(run)
    if not folder.is_dir():
        return 0
    leftovers = [p for p in folder.iterdir() if p.name.startswith(".")]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return len(leftovers)


models.set_checkpoint_resolver(resolve)
