"""The one training loop every method uses, on Hugging Face Accelerate.

The same code runs in this process on a CPU, on one GPU, or as several processes / nodes started
by `accelerate launch` (DDP, gloo on CPUs; FSDP; DeepSpeed), with the precision, weight dtype and
gradient checkpointing the configuration asks for. A method only builds batches and computes a
loss; the loop does the rest: seeds, AdamW with a warmup + cosine/linear schedule, gradient accumulation,
periodic evaluation, JSON-lines metrics, checkpoints in the registry, exact resume, and a clean
stop on request (a STOP file in the run folder, SIGTERM or Ctrl-C) at an optimizer-step boundary.

Gradient sync: the method's whole loss computation is the forward of one container module holding
the model and the method's extra modules, and that container is what Accelerate wraps (DDP, FSDP,
DeepSpeed). So a method may call `handle.hf_model` and its own modules directly, use hooks, run
several forward passes, and every trainable parameter is still averaged across processes.

Sharded runs (FSDP, DeepSpeed): the parameters (FSDP, ZeRO-3) and the optimizer state are split
across processes, so each checkpoint gathers the full state dict on the main process through
Accelerate and exports that; these checkpoints carry no resume state, so such a run restarts from
`ckpt:NAME` instead of resuming. See docs/training_at_scale.md for the launch configurations.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Collection

import torch

from workbench import registry
from workbench.errors import InputError, WorkbenchError
from workbench.models import resolve_spec
from workbench.paths import atomic_write_text, safe_child, subdir
from workbench.progress import Progress, progress_bar

from . import state as resume_state
from .config import TrainConfig
from .data import data_hash, load_jsonl, split_eval
from .methods import build_method
from .metrics import METRICS_FILE, MetricsLog, loss_figure, read_metrics
from .model import TrainableModel, export_hf, load_for_training, trainable_parameters

STOP_FILE = "STOP"
LOCK_FILE = ".lock"

log = logging.getLogger("trainers.loop")


# ---------------------------------------------------------------------- run folders

def runs_root() -> Path:
    return subdir("runs")


def run_dir(run: str) -> Path:
    """`WORKBENCH_HOME/runs/<run>`: config.yaml, metrics.jsonl, the job log, the STOP file."""
    return safe_child(runs_root(), run)


def request_stop(run: str) -> None:
    """Ask a running training to stop at the next optimizer step (it saves a checkpoint first)."""
    folder = run_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STOP_FILE).touch()


def default_run_name(method: str) -> str:
    return f"{method}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


@dataclass
class TrainResult:
    """What a run did: its final state, last checkpoint and metrics (a notebook renders `.figure()`)."""

    run: str
    state: str  # "finished" | "cancelled"
    step: int
    total_steps: int
    checkpoint: registry.Checkpoint | None
    metrics: list[dict[str, Any]] = field(repr=False)
    handle: Any = field(default=None, repr=False)  # the trained model in memory (with LoRA: unmerged)

    def to_frame(self):
        import pandas as pd

        rows = [{k: v for k, v in r.items() if k != "terms"} | r.get("terms", {})
                for r in self.metrics if r.get("event") in ("train", "eval")]
        return pd.DataFrame(rows)

    def figure(self):
        return loss_figure(self.metrics, title=f"{self.run}: loss")


# ---------------------------------------------------------------------- pieces

class _LossModule(torch.nn.Module):
    """The model and the method's modules as one module whose forward is the method's loss: the
    unit Accelerate wraps (DDP), so all of their parameters are synchronised."""

    def __init__(self, model: TrainableModel, extras: list[torch.nn.Module], method: Any):
        super().__init__()
        self.model = model.handle.hf_model
        self.extras = torch.nn.ModuleList(extras)
        self._handle = model.handle
        self._method = method

    @property
    def _no_split_modules(self) -> Collection[str] | None:
        """The model's decoder-layer classes: what FSDP's transformer-layer auto wrap shards by."""
        return getattr(self.model, "_no_split_modules", None)

    def forward(self, batch: dict[str, torch.Tensor]):
        return self._method.loss(self._handle, batch)


class _EpochShuffle(torch.utils.data.Sampler):
    """A permutation fixed by (seed, epoch): identical in every process, so Accelerate's sharding
    and a resumed run's skipping see the same order."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())

    def __len__(self) -> int:
        return self.n


class _Collate:
    def __init__(self, method: Any, tokenizer: Any, config: TrainConfig):
        self.method, self.tokenizer, self.config = method, tokenizer, config

    def __call__(self, records: list[dict]) -> dict[str, torch.Tensor]:
        return self.method.collate(records, self.tokenizer, self.config)


class _StopSignals:
    """SIGTERM / SIGINT set a flag (a second Ctrl-C interrupts at once); restored on exit."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _run_lock(folder: Path):
    """An exclusive lock on the run (released by the OS even on SIGKILL)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        yield
        return
    with open(folder / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"Run {folder.name!r} is being trained by another process; wait for it or cancel it.") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cpu_only() -> bool:
    from accelerate.utils import is_mps_available, is_npu_available, is_xpu_available

    return not (torch.cuda.is_available() or is_xpu_available() or is_npu_available() or is_mps_available())


def _on_main(accelerator, fn: Callable[[], Any]) -> Any:
    """Run `fn` on the main process and hand its result, or its user error, to every process."""
    from accelerate.utils import broadcast_object_list

    payload: list[Any] = [None]
    if accelerator.is_main_process:
        try:
            payload = [("ok", fn())]
        except WorkbenchError as exc:
            payload = [("error", exc)]
    if accelerator.num_processes > 1:
        broadcast_object_list(payload)
    kind, value = payload[0]
    if kind == "error":
        raise value
    return value


def _lineage(base_model: str) -> tuple[str, str, str | None]:
    """(root base model, exact parent spec, provenance note) of the model a run starts from."""
    spec = base_model.strip()
    if spec.startswith("ckpt:"):
        parent = registry.get(spec)
        return parent.base_model or parent.spec, parent.spec, resolve_spec(parent.spec).note
    return spec, spec, resolve_spec(spec).note


def _as_config(config: TrainConfig | str | Path | dict) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, dict):
        return TrainConfig.from_dict(config)
    return TrainConfig.from_yaml(config)


# ---------------------------------------------------------------------- the loop

def train(config: TrainConfig | str | Path | dict, progress: Progress | None = None) -> TrainResult:
    """Train `config.method` on `config.data` and register checkpoints; see the module docstring.

    Runs as one process, or as each of the processes `accelerate launch` starts. Returns on every
    process; the checkpoint is written by the main process only.
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs

    config = _as_config(config)
    method = build_method(config.method, config.method_args)
    fields = tuple(getattr(method, "required_fields", ("instruction", "output")))
    records = load_jsonl(config.data, fields, config.languages)
    if config.eval_data:
        eval_records = load_jsonl(config.eval_data, fields, config.languages)
    else:
        records, eval_records = split_eval(records, config.eval_fraction, config.seed)
    if config.report_to:
        from accelerate.utils import is_tensorboard_available

        if "tensorboard" in config.report_to and not is_tensorboard_available():
            raise InputError("report_to: tensorboard needs the tensorboard package (pip install tensorboard).")

    cpu = _cpu_only()
    if cpu and config.mixed_precision == "fp16":
        raise InputError("mixed_precision: fp16 needs a GPU (on CPUs Accelerate would train in float32 without "
                         "saying so); use bf16 or no.")
    _allow_new_precision(config.mixed_precision)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=getattr(method, "find_unused_parameters", False))
    accelerator = Accelerator(cpu=cpu, gradient_accumulation_steps=config.grad_accum,
                              mixed_precision=config.mixed_precision, kwargs_handlers=[ddp],
                              log_with=config.report_to or None)
    _follow_config(accelerator, config)
    run = _on_main(accelerator, lambda: config.output or default_run_name(config.method))
    config = config.replace(output=run)
    folder = run_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    with _run_lock(folder) if accelerator.is_main_process else contextlib.nullcontext():
        start = _on_main(accelerator, lambda: _prepare_run(config, accelerator.num_processes))
        loop = _Loop(config, method, records, eval_records, accelerator, start, progress)
        return loop.run()


def _allow_new_precision(mixed_precision: str) -> None:
    """Accelerate fixes the mixed precision for the life of a process. A single process that trains
    again with another precision (a notebook: fp32, then bf16) starts Accelerate's state afresh;
    processes that `accelerate launch` started train once and are left alone."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("num_processes") == 1 and state.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state()


def _follow_config(accelerator, config: TrainConfig) -> None:
    """The training configuration decides precision and clipping wherever the run is launched: say
    so when the launcher asked for another precision, and hand `max_grad_norm` to DeepSpeed, which
    clips inside its own step (Accelerate's `clip_grad_norm_` only reads the norm there)."""
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", config.mixed_precision)
    if launched != config.mixed_precision and accelerator.is_main_process:
        log.warning("The launcher asked for mixed_precision %s; the training configuration's %r is used "
                    "(set it with --set mixed_precision=...).", launched, config.mixed_precision)
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and plugin.deepspeed_config.get("gradient_clipping", "auto") == "auto":
        plugin.deepspeed_config["gradient_clipping"] = config.max_grad_norm


def _prepare_run(config: TrainConfig, num_processes: int) -> dict[str, Any]:
    """Main-process checks before training: resume target, lineage; clears a killed run's leftovers."""
    run = config.output
    registry.remove_partial(run)
    last = registry.latest(run)
    if last is not None and not config.resume:
        raise InputError(f"Run {run!r} already has checkpoints (latest: step {last.step}). Resume it "
                         "(resume: true / --resume) or choose another output name.")
    resume_from = None
    if config.resume and last is not None:
        if not (last.path / resume_state.RESUME_DIR / "trainer_state.json").exists():
            raise InputError(f"Checkpoint {last.name} has no resume state; start a new run from ckpt:{last.name} instead.")
        saved = TrainConfig.from_dict(last.config)
        changed = config.differences(saved)
        if changed:
            listing = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise InputError(f"Cannot resume {run!r} with a different configuration ({listing}). "
                             "Use the saved settings or start a new run.")
        saved_procs = json.loads((last.path / resume_state.RESUME_DIR / "trainer_state.json").read_text())["num_processes"]
        if saved_procs != num_processes:
            raise InputError(f"Run {run!r} was trained with {saved_procs} process(es); resume it with the same number "
                             f"(now {num_processes}) so the global batch and data order stay the same.")
        resume_from = str(last.path)
    base, parent, note = _lineage(config.base_model)
    return {"resume_from": resume_from, "base_model": base, "parent": parent, "note": note}


class _Loop:
    """One run's state; `run()` is the loop itself."""

    def __init__(self, config: TrainConfig, method: Any, records: list[dict], eval_records: list[dict],
                 accelerator, start: dict[str, Any], progress: Progress | None):
        from accelerate.utils import set_seed

        self.config, self.method, self.acc, self.progress = config, method, accelerator, progress
        self.run_name = config.output
        self.folder = run_dir(self.run_name)
        self.start = start
        self.resume_from = Path(start["resume_from"]) if start["resume_from"] else None
        self.data_hash = data_hash(records, eval_records)
        self.n_train, self.n_eval = len(records), len(eval_records)
        self.languages = sorted({r.get("lang", "?") for r in records})
        self.log = MetricsLog(self.folder / METRICS_FILE) if accelerator.is_main_process else None

        set_seed(config.seed)
        spec = str(self.resume_from) if self.resume_from and not config.lora else config.base_model
        self.model = load_for_training(spec, config, device=accelerator.device)
        self.extras = [m.to(accelerator.device) for m in (method.setup(self.model.handle, config, accelerator) or [])]
        if self.resume_from:
            self._restore_weights(self.resume_from)
        named = trainable_parameters(self.model)
        params = list(named.values()) + [p for m in self.extras for p in m.parameters() if p.requires_grad]
        if not params:
            raise InputError("Nothing to train: the model and the method have no trainable parameters.")
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        tokenizer = self.model.handle.tokenizer
        # The loader's own generator: starting to iterate then draws no number from the global RNG,
        # so a resumed run's dropout / sampling continues exactly where the checkpoint left it.
        loader = torch.utils.data.DataLoader(records, batch_size=config.batch_size, sampler=_EpochShuffle(len(records), config.seed),
                                             collate_fn=_Collate(method, tokenizer, config),
                                             generator=torch.Generator().manual_seed(config.seed))
        self.container = _LossModule(self.model, self.extras, method)
        self.container, self.optimizer, self.loader = accelerator.prepare(self.container, optimizer, loader)
        self.eval_loader = None
        if eval_records:
            eval_loader = torch.utils.data.DataLoader(eval_records, batch_size=config.batch_size, shuffle=False,
                                                      collate_fn=_Collate(method, tokenizer, config),
                                                      generator=torch.Generator().manual_seed(config.seed))
            self.eval_loader = accelerator.prepare(eval_loader)
        self.steps_per_epoch = max(1, math.ceil(len(self.loader) / config.grad_accum))
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.scheduler = _scheduler(config, self.optimizer, self.total_steps)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        if self.resume_from:
            self._restore_training_state(self.resume_from)
        self.last_saved = self.step if self.resume_from else -1
        self.last_eval: float | None = None
        self.evaluated_at_end = False
        self.checkpoint: registry.Checkpoint | None = registry.get(f"{self.run_name}@{self.step}") if self.resume_from and accelerator.is_main_process else None

    @property
    def sharded(self) -> bool:
        """Parameters (FSDP, ZeRO-3) or optimizer state (every ZeRO stage) split across processes."""
        from accelerate.utils import DistributedType

        return self.acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    # ------------------------------------------------------------------ resume

    def _restore_weights(self, folder: Path) -> None:
        resume = folder / resume_state.RESUME_DIR
        if self.config.lora:
            saved = resume_state.load_tensors(resume / "trainable.safetensors")
            params = trainable_parameters(self.model)
            if set(saved) != set(params):
                raise InputError(f"The LoRA weights in {folder} do not match this model's adapters.")
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(saved[name])
        if self.extras:
            saved = resume_state.load_tensors(resume / "extra_modules.safetensors")
            for i, module in enumerate(self.extras):
                module.load_state_dict({k.split(".", 1)[1]: v for k, v in saved.items() if k.split(".", 1)[0] == str(i)})
        if hasattr(self.method, "load_extra"):
            self.method.load_extra(folder)

    def _restore_training_state(self, folder: Path) -> None:
        resume = folder / resume_state.RESUME_DIR
        meta = json.loads((resume / "trainer_state.json").read_text())
        self.optimizer.load_state_dict(resume_state.optimizer_from_files(resume))
        self.scheduler.load_state_dict(meta["scheduler"])
        self.step, self.epoch, self.batch_in_epoch = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        resume_state.restore_rng(resume, self.acc.process_index)

    # ------------------------------------------------------------------ the loop

    def run(self) -> TrainResult:
        acc, config = self.acc, self.config
        if self.log:
            if self.resume_from:
                self.log.truncate_after(self.step)
            else:
                self.log.path.unlink(missing_ok=True)
            atomic_write_text(self.folder / "config.yaml", config.to_yaml())
            self.log.write("start", step=self.step, total_steps=self.total_steps, run=self.run_name, time=time.time(),
                           method=config.method, base_model=self.start["base_model"],
                           resumed_from=str(self.resume_from) if self.resume_from else None,
                           num_processes=acc.num_processes, distributed_type=acc.distributed_type.value,
                           n_train=self.n_train, n_eval=self.n_eval,
                           global_batch=config.batch_size * config.grad_accum * acc.num_processes)
        if config.report_to:
            acc.init_trackers(self.run_name, config={k: v for k, v in config.to_dict().items()
                                                     if isinstance(v, (int, float, str, bool))})
        state = "finished"
        with progress_bar(self.run_name, total=self.total_steps, initial=self.step, unit="step",
                          disable=not acc.is_main_process) as bar:
            try:
                if self.eval_loader is not None and self.step == 0:
                    self._evaluate()  # the untrained model's loss: the reference point of the curve
                with _StopSignals() as signals:
                    state = self._train(signals, bar)
                if self.eval_loader is not None and state == "finished" and not self.evaluated_at_end:
                    self._evaluate()
                if self.step != self.last_saved and self.step > 0:
                    self._save(final=state == "finished")
            except BaseException as exc:
                if self.log:
                    self.log.write("end", step=self.step, state="failed", error=f"{type(exc).__name__}: {exc}")
                raise
            finally:
                if acc.is_main_process:
                    (self.folder / STOP_FILE).unlink(missing_ok=True)  # a request is honoured once
                if config.report_to:
                    acc.end_training()
        if self.log:
            self.log.write("end", step=self.step, state=state,
                           checkpoint=self.checkpoint.name if self.checkpoint else None)
        metrics = read_metrics(self.folder / METRICS_FILE) if acc.is_main_process else []
        return TrainResult(self.run_name, state, self.step, self.total_steps, self.checkpoint, metrics, self.model.handle)

    def _train(self, signals: _StopSignals, bar: Progress) -> str:
        acc, config = self.acc, self.config
        self.container.train()
        self.t0 = time.time()
        window = _Window()
        while self.step < self.total_steps:
            batches = acc.skip_first_batches(self.loader, self.batch_in_epoch) if self.batch_in_epoch else self.loader
            batches.set_epoch(self.epoch)  # Accelerate re-seeds the sampler from its loader's epoch counter
            for batch in batches:
                with acc.accumulate(self.container):
                    loss, terms = self.container(batch)
                    acc.backward(loss)
                    if acc.sync_gradients and config.max_grad_norm > 0:
                        # the wrapped module's own parameters: what FSDP's clipping and DeepSpeed recognise
                        acc.clip_grad_norm_(self.container.parameters(), config.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.batch_in_epoch += 1
                window.add(loss.detach().float(), terms, batch)
                if not acc.sync_gradients:
                    continue
                lr = self.scheduler.get_last_lr()[0]
                self.scheduler.step()
                self.step += 1
                bar(self.step / self.total_steps, "")
                if self.step % config.log_every == 0 or self.step == self.total_steps:
                    self._log_train(window, lr, bar)
                    window = _Window()
                busy = time.time()
                if self.eval_loader is not None and config.eval_every and self.step % config.eval_every == 0:
                    self._evaluate()
                    self.evaluated_at_end = self.step == self.total_steps
                if config.save_every and self.step % config.save_every == 0 and self.step < self.total_steps:
                    self._save(final=False)
                window.started += time.time() - busy  # tokens/s counts training time only
                if self._stop_requested(signals):
                    return "cancelled"
                if self.step >= self.total_steps:
                    return "finished"
            self.epoch += 1
            self.batch_in_epoch = 0
        return "finished"

    def _stop_requested(self, signals: _StopSignals) -> bool:
        local = signals.requested or (self.folder / STOP_FILE).exists()
        flag = torch.tensor([1.0 if local else 0.0], device=self.acc.device)
        return bool(self.acc.reduce(flag, "sum").item() > 0)

    # ------------------------------------------------------------------ logging and evaluation

    def _log_train(self, window: "_Window", lr: float, bar: Progress) -> None:
        loss, terms, tokens, seconds = window.reduce(self.acc)
        record = {"step": self.step, "epoch": self.epoch, "loss": loss, "terms": terms, "lr": lr, "tokens": tokens,
                  "tokens_per_s": tokens / max(seconds, 1e-9), "elapsed_s": round(time.time() - self.t0, 2)}
        if self.log:
            self.log.write("train", **record)
        if self.config.report_to:
            self.acc.log({"train/loss": loss, "lr": lr, **{f"train/{k}": v for k, v in terms.items()}}, step=self.step)
        bar(self.step / self.total_steps, f"{self.run_name} loss {loss:.4f} lr {lr:.2e}")
        if self.progress and self.acc.is_main_process:
            self.progress(self.step / self.total_steps, f"step {self.step}/{self.total_steps}, loss {loss:.4f}")

    def _evaluate(self) -> None:
        """The evaluation loss, through the wrapped module: under FSDP / ZeRO-3 only its forward
        gathers the sharded weights."""
        self.container.eval()
        window = _Window()
        with torch.no_grad():
            for batch in self.eval_loader:
                loss, terms = self.container(batch)
                window.add(loss.float(), terms, batch)
        self.container.train()
        loss, terms, _, _ = window.reduce(self.acc)
        if self.log:
            self.log.write("eval", step=self.step, eval_loss=loss, terms=terms)
        if self.config.report_to:
            self.acc.log({"eval/loss": loss}, step=self.step)
        self.last_eval = loss

    # ------------------------------------------------------------------ checkpoints

    def _save(self, final: bool) -> None:
        """Register a checkpoint of the current step. All but a finished run's last checkpoint also
        hold the resume state (optimizer moments are twice the model's size, so the final one,
        which nothing resumes, leaves them out), except in sharded runs (see the module docstring)."""
        from accelerate.utils import gather_object

        acc = self.acc
        acc.wait_for_everyone()
        rngs = gather_object([resume_state.rng_state()])
        state = acc.get_state_dict(self.container)  # every process takes part; the main one gets it whole
        if acc.is_main_process:
            self.checkpoint = registry.save(self.run_name, self.step,
                                            lambda tmp: self._write(tmp, rngs, final or self.sharded, state),
                                            self._manifest())
            registry.prune(self.run_name, self.config.keep_last)
            self.log.write("checkpoint", step=self.step, name=self.checkpoint.name, spec=self.checkpoint.spec)
        self.last_saved = self.step
        acc.wait_for_everyone()

    def _write(self, tmp: Path, rngs: list[dict], final: bool, state: dict[str, torch.Tensor]) -> None:
        """The checkpoint folder from `state`, the container's full state dict (`model.*`, `extras.*`)."""
        note = f"{self.config.method} fine-tuning of {self.start['parent']}, step {self.step}."
        if self.start["note"]:
            note += " " + self.start["note"]
        export_hf(self.model, tmp, note, {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("model.")})
        extras = self._method_files(state)
        if extras:
            resume_state.save_method_state(extras, tmp)
        if final:
            return
        resume = tmp / resume_state.RESUME_DIR
        resume.mkdir()
        resume_state.optimizer_to_files(self.optimizer.state_dict(), resume)
        (resume / "trainer_state.json").write_text(json.dumps({
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "total_steps": self.total_steps, "num_processes": self.acc.num_processes,
            "scheduler": self.scheduler.state_dict()}, indent=1))
        for rank, rng in enumerate(rngs):
            resume_state.save_rng(rng, resume, rank)
        if self.config.lora:
            resume_state.save_tensors(trainable_parameters(self.model), resume / "trainable.safetensors")
        if self.extras:
            resume_state.save_tensors({f"{i}.{k}": v for i, m in enumerate(self.extras) for k, v in m.state_dict().items()},
                                      resume / "extra_modules.safetensors")

    def _method_files(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The method's `extra_files()`, with each of its modules' parameters read from `state`: the
        live parameter is only a shard under FSDP / ZeRO-3."""
        files = self.method.extra_files() if hasattr(self.method, "extra_files") else {}
        names = {id(p): f"extras.{i}.{n}" for i, m in enumerate(self.extras) for n, p in m.named_parameters()}
        return {k: state[names[id(v)]] if id(v) in names else v for k, v in files.items()}

    def _manifest(self) -> dict[str, Any]:
        last = next((r for r in reversed(read_metrics(self.folder / METRICS_FILE)) if r.get("event") == "train"), {})
        metrics = {"train_loss": last.get("loss"), "tokens_per_s": last.get("tokens_per_s"), **last.get("terms", {})}
        if self.last_eval is not None:
            metrics["eval_loss"] = self.last_eval
        return {"base_model": self.start["base_model"], "parent": self.start["parent"], "method": self.config.method,
                "config": self.config.to_dict(), "data_hash": self.data_hash, "metrics": metrics,
                "lora": self.config.lora, "total_steps": self.total_steps, "languages": self.languages,
                "n_train": self.n_train, "n_eval": self.n_eval, "num_processes": self.acc.num_processes}


class _Window:
    """Sums over the micro-batches since the last log line: loss, named terms, tokens, time."""

    def __init__(self):
        self.loss, self.count, self.tokens = 0.0, 0, 0
        self.terms: dict[str, float] = {}
        self.started = time.time()

    def add(self, loss: torch.Tensor, terms: dict[str, float], batch: dict[str, torch.Tensor]) -> None:
        self.loss += float(loss)
        self.count += 1
        mask = batch.get("attention_mask")
        self.tokens += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
        for k, v in terms.items():
            self.terms[k] = self.terms.get(k, 0.0) + float(v)

    def reduce(self, accelerator) -> tuple[float, dict[str, float], int, float]:
        """Means over every process's micro-batches, total tokens, elapsed seconds."""
        names = sorted(self.terms)
        values = torch.tensor([self.loss, self.count, self.tokens] + [self.terms[k] for k in names],
                              dtype=torch.float64, device=accelerator.device)
        if accelerator.num_processes > 1:
            values = accelerator.reduce(values, "sum")
        count = max(values[1].item(), 1.0)
        terms = {k: values[3 + i].item() / count for i, k in enumerate(names)}
        return values[0].item() / count, terms, int(values[2].item()), time.time() - self.started


def _scheduler(config: TrainConfig, optimizer, total_steps: int):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[config.scheduler]
    return get_scheduler(name, optimizer=optimizer, num_warmup_steps=round(config.warmup_ratio * total_steps),
                         num_training_steps=total_steps)
