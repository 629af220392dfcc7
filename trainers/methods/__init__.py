"""Training methods by name. Each is a class the one training loop drives (see trainers/loop.py):

    name: str; required_fields: tuple[str, ...]
    setup(handle, config, accelerator) -> list[nn.Module]   extra trainable modules
    collate(records, tokenizer, config) -> dict[str, Tensor]  labels -100 on prompt tokens
    loss(handle, batch) -> (Tensor, dict[str, float])          total loss, named terms
    extra_files() -> dict[str, Tensor | dict]; load_extra(folder)   state saved with checkpoints

A class is built from the configuration's `method_args` as keyword arguments. `collate` should be
deterministic (put randomness in `loss`) so a resumed run replays exactly; a method whose modules
may get no gradient in some step sets `find_unused_parameters = True` (DDP). To add a method, add
its (module, class) to ENTRIES. Modules are imported only when a method is asked for, so a method
whose module is missing or broken does not stop the others from working.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
from collections.abc import Mapping
from typing import Any, Iterator

from workbench.errors import InputError

log = logging.getLogger("trainers.methods")

# name -> (module, class)
ENTRIES: dict[str, tuple[str, str]] = {
    "sft": ("trainers.methods.sft", "SFT"),
    "tft": ("trainers.methods.sft", "TFT"),
    "cc-tuning": ("trainers.methods.cc_tuning.method", "CCTuning"),
    "dft": ("trainers.methods.dft", "DFT"),
    "rhio": ("trainers.methods.rhio.method", "RHIO"),
    "unlearn-ga": ("trainers.methods.unlearning.methods", "GA"),
    "unlearn-gd": ("trainers.methods.unlearning.methods", "GD"),
    "unlearn-kl": ("trainers.methods.unlearning.methods", "KL"),
    "unlearn-idk": ("trainers.methods.unlearning.methods", "IDK"),
    "unlearn-dpo": ("trainers.methods.unlearning.methods", "DPO"),
    "unlearn-npo": ("trainers.methods.unlearning.methods", "NPO"),
    "unlearn-npo-gd": ("trainers.methods.unlearning.methods", "NPOGD"),
}


class _LazyMethods(Mapping):
    """`METHODS[name]` imports the method's module on first use; iteration lists the methods
    whose module file exists."""

    def __getitem__(self, name: str) -> type:
        if name not in ENTRIES:
            raise InputError(f"Unknown training method {name!r}. Available: {', '.join(self)}.")
        module_name, class_name = ENTRIES[name]
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except Exception as exc:  # noqa: BLE001 - a broken method must not break the others
            raise InputError(f"Training method {name!r} is not available ({type(exc).__name__}: {exc}).") from exc

    def __iter__(self) -> Iterator[str]:
        return iter([n for n in ENTRIES if n in self])

    def __contains__(self, name: object) -> bool:
        return name in ENTRIES and importlib.util.find_spec(ENTRIES[name][0]) is not None

    def __len__(self) -> int:
        return len(list(iter(self)))


METHODS: Mapping[str, type] = _LazyMethods()


def available_methods() -> list[str]:
    """Names of the methods that import cleanly (for menus)."""
    names = []
    for name in METHODS:
        try:
            METHODS[name]
        except InputError as exc:
            log.warning("%s", exc)
            continue
        names.append(name)
    return names


def build_method(name: str, method_args: dict[str, Any] | None = None) -> Any:
    """An instance of method `name` with `method_args` as constructor keywords, checked first."""
    cls = METHODS[name]
    args = dict(method_args or {})
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [p for p, v in params.items() if v.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    unknown = [k for k in args if k not in accepted and not takes_any]
    if unknown:
        options = f"its options are {', '.join(accepted)}" if accepted else "it takes no options"
        raise InputError(f"Method {name!r} does not know method_args {', '.join(map(repr, unknown))}; {options}.")
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise InputError(f"Bad method_args for {name!r}: {exc}") from exc
