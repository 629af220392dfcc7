"""Configurations read from YAML and `--set key=value`, checked before any model loads.

`YamlConfig` is the one reader and override parser every configuration dataclass shares (the
training configuration here, the unlearning pipeline's), so both accept the same syntax and refuse
unknown keys and wrong types with the same messages. `TrainConfig` is what every trainer (SFT,
CC-Tuning, DFT, ...) reads; options that only one method understands go in `method_args` and are
passed to that method's constructor.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Self

import yaml

from workbench.errors import InputError

SCHEDULERS = ("cosine", "linear", "constant")
MIXED_PRECISION = ("no", "fp16", "bf16")
DTYPES = ("float32", "bfloat16", "float16")
DEMO_DATA = "demo"

# Fields that change no computed number: a resumed run may change them freely (gradient
# checkpointing recomputes the same activations; tests/test_trainer_scale.py checks the gradients).
BOOKKEEPING_FIELDS = frozenset({"resume", "eval_every", "save_every", "keep_last", "log_every", "report_to",
                                "gradient_checkpointing"})


class ConfigError(InputError):
    """A configuration that cannot run, with the reason in words."""


class YamlConfig:
    """Base of the configuration dataclasses: built from YAML, a dict or `key=value` overrides,
    with numeric strings coerced for float fields, every field's type checked, then `validate()`.
    Subclasses are dataclasses; `error` is the exception they raise."""

    error: ClassVar[type[ConfigError]] = ConfigError

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = _coerce_float(getattr(self, f.name), hints[f.name])
            setattr(self, f.name, value)
            if not _matches(value, hints[f.name]):
                raise self.error(f"{f.name} must be {_type_name(hints[f.name])} (got {value!r} of type "
                                 f"{type(value).__name__}).")
        self.validate()

    def validate(self) -> None:
        """Raise `error` naming the first field with a wrong value (types are checked already)."""

    @classmethod
    def from_dict(cls, values: Any, source: str = "the configuration") -> Self:
        if not isinstance(values, dict):
            raise cls.error(f"{source} must be a mapping of option: value (got {type(values).__name__}).")
        known = {f.name for f in fields(cls)}
        unknown = [k for k in values if k not in known]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), known, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise cls.error(f"Unknown option(s) in {source}: {', '.join(hints)}. Known options: {', '.join(sorted(known))}.")
        return cls(**values)

    @classmethod
    def read_yaml(cls, path: str | Path) -> Any:
        """The parsed contents of a configuration file (not yet checked to be a mapping)."""
        path = Path(path)
        if not path.is_file():
            raise cls.error(f"Configuration file {path} does not exist.")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise cls.error(f"{path} is not valid YAML: {exc}") from None
        if values is None:
            raise cls.error(f"Configuration file {path} is empty.")
        return values

    @classmethod
    def from_yaml(cls, path: str | Path) -> Self:
        return cls.from_dict(cls.read_yaml(path), source=str(path))

    @classmethod
    def parse_assignments(cls, assignments: Sequence[str]) -> dict[str, Any]:
        """`key=value` strings as a dict; values are read as YAML (`true`, `2e-5`, `[fr, de]`), an
        empty value is None, and text that is not valid YAML stays a string."""
        updates: dict[str, Any] = {}
        for item in assignments:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise cls.error(f"Override {item!r} must look like key=value.")
            try:
                updates[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError:
                updates[key.strip()] = raw
        return updates

    def with_overrides(self, assignments: Sequence[str] | Mapping[str, Any], source: str = "the overrides") -> Self:
        """A copy with `key=value` strings (see `parse_assignments`) or a dict applied."""
        updates = dict(assignments) if isinstance(assignments, Mapping) else self.parse_assignments(assignments)
        return type(self).from_dict({**self.to_dict(), **updates}, source=source)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


@dataclass
class TrainConfig(YamlConfig):
    """Everything a training run needs. `batch_size` is per process and per micro-batch: the
    global batch is batch_size x grad_accum x number of processes."""

    method: str = "sft"
    base_model: str = "gemma-3-270m"
    data: str = DEMO_DATA
    output: str = ""
    eval_data: str | None = None
    eval_fraction: float = 0.0
    languages: list[str] | None = None
    lr: float = 1e-4
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 256
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str = "all-linear"
    seed: int = 0
    eval_every: int = 0
    save_every: int = 0
    keep_last: int = 2
    log_every: int = 1
    warmup_ratio: float = 0.0
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    report_to: list[str] = field(default_factory=list)
    resume: bool = False
    method_args: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ConfigError naming the first field with a wrong value."""
        _positive(self, "lr", "batch_size", "grad_accum", "epochs", "lora_r", "lora_alpha", "log_every")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1 (got {self.max_steps}); leave it empty to train for `epochs`.")
        for name in ("eval_every", "save_every", "keep_last", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more (got {getattr(self, name)}).")
        if self.keep_last < 1:
            raise ConfigError("keep_last must be at least 1: the last checkpoint is always kept.")
        for name in ("eval_fraction", "warmup_ratio", "lora_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1) (got {value}).")
        if self.max_length < 8:
            raise ConfigError(f"max_length must be at least 8 tokens (got {self.max_length}).")
        if self.max_grad_norm < 0:
            raise ConfigError(f"max_grad_norm must be 0 (no clipping) or more (got {self.max_grad_norm}).")
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _choice("dtype", self.dtype, DTYPES)
        if self.mixed_precision == "fp16" and self.dtype != "float32":
            raise ConfigError(f"mixed_precision: fp16 needs dtype: float32 (got {self.dtype!r}): its gradient scaler "
                              "refuses float16 gradients. For half-precision weights use dtype: bfloat16.")
        for name in ("method", "base_model", "data"):
            if not getattr(self, name).strip():
                raise ConfigError(f"{name} must not be empty.")
        if self.output and ("/" in self.output or "\\" in self.output or "@" in self.output or self.output.startswith(".")):
            raise ConfigError(f"output {self.output!r} must be a plain run name (letters, digits, '-', '_', '.'; no '/' or '@').")
        if self.eval_every and not (self.eval_data or self.eval_fraction > 0):
            raise ConfigError("eval_every needs an evaluation set: set eval_data (a JSONL file) or eval_fraction > 0.")
        if self.eval_data and self.eval_fraction:
            raise ConfigError("Give either eval_data or eval_fraction, not both.")

    def replace(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)

    def differences(self, other: "TrainConfig", ignore: frozenset[str] = BOOKKEEPING_FIELDS) -> dict[str, tuple]:
        """Fields whose values differ, except `ignore`: what a resumed run must not change."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (theirs[k], mine[k]) for k in mine if k not in ignore and mine[k] != theirs[k]}


# ---------------------------------------------------------------------- helpers

def _coerce_float(value: Any, hint: Any) -> Any:
    """YAML reads `1e-4` (no dot) as a string: accept numeric strings for float fields."""
    if isinstance(value, str) and (hint is float or float in typing.get_args(hint)):
        try:
            return float(value)
        except ValueError:
            pass  # reported by the type check with the field's name
    return value


def _positive(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value <= 0:
            raise ConfigError(f"{name} must be greater than 0 (got {value}).")


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)} (got {value!r}).")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)

