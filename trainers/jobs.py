"""Training as a separate process: start it, watch it through its run folder, cancel it cleanly.

The app must stay responsive while a model trains, and a crash or an out-of-memory kill must not
take the app down, so a job is the `workbench train` CLI in a child process (its own process
group). Everything a watcher needs is in the run folder: `metrics.jsonl` (progress, losses,
checkpoints, final state) and `train.log` (the process's output). Cancel asks the loop to stop at
the next optimizer step through the STOP file (it saves a checkpoint first), then escalates to
SIGTERM and SIGKILL if the process does not exit in time; the registry stays consistent either way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.paths import atomic_write_text

from .config import TrainConfig
from .loop import STOP_FILE, default_run_name, request_stop, run_dir
from .metrics import METRICS_FILE, read_metrics

LOG_FILE = "train.log"
JOB_CONFIG = "job.yaml"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job: `state` is starting, running, cancelling, finished, cancelled or failed."""

    run: str
    state: str
    step: int
    total_steps: int
    loss: float | None
    eval_loss: float | None
    checkpoint: str | None
    message: str
    returncode: int | None

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    @property
    def done(self) -> bool:
        return self.state in ("finished", "cancelled", "failed")


def check_base_model(spec: str) -> None:
    """Refuse, in this process and before anything is written, a base model the job could not
    load: the spec must resolve to a folder with a readable config.json and safetensors weights
    (`workbench.models.resolve_folder`: pickle-only folders, `/etc` and unknown checkpoints fail)."""
    from workbench.errors import ModelLoadError
    from workbench.models import resolve_folder

    _, folder = resolve_folder(spec)
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 - any unreadable config is the user's to fix
        raise ModelLoadError(f"The base model {spec} has a config.json that cannot be read ({exc}).") from None


class TrainingJob:
    """One training process and its run folder."""

    def __init__(self, run: str, process: subprocess.Popen, started: float):
        self.run = run
        self.process = process
        self.started = started
        self.folder = run_dir(run)
        self._cancel_requested = False

    @classmethod
    def start(cls, config: TrainConfig) -> "TrainingJob":
        """Launch `workbench train` for `config` with this Python (a run name is chosen if it has none).
        The base model is checked first: a refused start leaves no run folder."""
        check_base_model(config.base_model)
        run = config.output or default_run_name(config.method)
        config = config.replace(output=run)
        folder = run_dir(run)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STOP_FILE).unlink(missing_ok=True)
        atomic_write_text(folder / JOB_CONFIG, config.to_yaml())
        command = [sys.executable, "-m", "workbench", "train", config.method, "--config", str(folder / JOB_CONFIG)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join(p for p in (str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)}
        started = time.time()
        with open(folder / LOG_FILE, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True)
        return cls(run, process, started)

    # ------------------------------------------------------------------ watching

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def metrics(self) -> list[dict[str, Any]]:
        """The run's metrics once this launch has written its `start` event (before that, the file
        may still hold an earlier launch's lines); a resumed run's earlier steps are included."""
        records = read_metrics(self.folder / METRICS_FILE)
        return records if any(self._is_own_start(r) for r in records) else []

    def _is_own_start(self, record: dict[str, Any]) -> bool:
        return record.get("event") == "start" and record.get("time", 0) >= self.started - 1

    def log_tail(self, max_chars: int = 6000) -> str:
        """The end of the process's output, with progress-bar redraws reduced to their last state."""
        path = self.folder / LOG_FILE
        if not path.exists():
            return ""
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - max_chars))
            text = fh.read().decode("utf-8", errors="replace")
        lines = [line.split("\r")[-1] for line in text.replace("\r\n", "\n").split("\n")]
        return "\n".join(line for line in lines if line.strip())

    def status(self) -> JobStatus:
        records = self.metrics()
        start = next((r for r in reversed(records) if self._is_own_start(r)), None)
        train = [r for r in records if r.get("event") == "train"]
        evals = [r for r in records if r.get("event") == "eval"]
        ckpts = [r for r in records if r.get("event") == "checkpoint"]
        end = next((r for r in reversed(records) if r.get("event") == "end"), None)
        step = train[-1]["step"] if train else (start or {}).get("step", 0)
        total = (start or {}).get("total_steps", 0)
        code = self.process.poll()
        if code is None:
            state = "cancelling" if self._cancel_requested else ("running" if start else "starting")
            message = f"step {step}/{total}" if start else "loading the model and data"
        elif end and end.get("state") in ("finished", "cancelled") and code == 0:
            state, message = end["state"], f"{end['state']} at step {end['step']}"
        elif self._cancel_requested:
            state, message = "cancelled", f"stopped by signal at step {step} (exit code {code})"
        else:
            detail = (end or {}).get("error") or self._last_error()
            state, message = "failed", f"exit code {code}: {detail}"
        return JobStatus(run=self.run, state=state, step=step, total_steps=total,
                         loss=train[-1]["loss"] if train else None, eval_loss=evals[-1]["eval_loss"] if evals else None,
                         checkpoint=ckpts[-1]["spec"] if ckpts else None, message=message, returncode=code)

    def _last_error(self) -> str:
        lines = [line for line in self.log_tail(3000).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:") or "Error" in line]
        return (errors or lines or ["no output"])[-1].strip()

    def wait(self, timeout: float | None = None) -> JobStatus:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.status()

    # ------------------------------------------------------------------ stopping

    def cancel(self, grace_s: float = 120.0, term_s: float = 15.0) -> None:
        """Ask the run to stop at its next optimizer step (saving a checkpoint); if it is still alive
        after `grace_s`, send SIGTERM, and SIGKILL after `term_s` more. Returns at once."""
        if not self.running:
            return
        self._cancel_requested = True
        request_stop(self.run)
        threading.Thread(target=self._escalate, args=(grace_s, term_s), daemon=True).start()

    def _escalate(self, grace_s: float, term_s: float) -> None:
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, term_s)):
            try:
                self.process.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                self._signal(sig)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (no checkpoint; the registry stays consistent)."""
        self._signal(signal.SIGKILL)
        self.process.wait()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
