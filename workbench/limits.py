"""Demo-mode limits: one table of caps, checked at the public API of every probe and evaluation.

With `WORKBENCH_DEMO=1` (the public Space) each probe, evaluation and generation calls
`check(name, value)` on the sizes it is asked for, so a request is refused with the same message
whichever way it arrives (a tab, Compare, the HTTP API, a notebook on the Space). Locally nothing
is capped. `check_spec` keeps the demo on the default model and published checkpoints, and
`scrub` takes server paths and process ids out of the messages a stranger sees.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from .errors import InputError, ModelLoadError

# name -> (cap, what is counted): the one place demo caps live (README, "Reliability").
CAPS: dict[str, tuple[int, str]] = {
    "pivot_items": (60, "items in a pivot or representation run"),
    "pivot_shots": (5, "examples per prompt"),
    "grid_prompt_tokens": (128, "prompt tokens in the logit-lens grid"),
    "prompt_tokens": (1024, "prompt tokens for generation"),
    "max_new_tokens": (120, "new tokens per generation"),
    "context_tokens": (1024, "context tokens"),
    "retrieval_trials": (18, "trials"),
    "transplant_items": (12, "items per XTransplant grid"),
    "transplant_pairs": (81, "(source, target) layer pairs"),
    "eval_items": (20, "items per language"),
    "events": (2, "GlobeSumm events"),
    "entities": (40, "invented entities"),
}


def demo_mode() -> bool:
    """WORKBENCH_DEMO=1 (set on the public Space): capped inputs, no training, terse messages."""
    return os.environ.get("WORKBENCH_DEMO", "").lower() in {"1", "true", "yes"}


def cap(name: str) -> int:
    return CAPS[name][0]


def check(name: str, value: Any) -> None:
    """In demo mode, refuse `value` above the cap `name` (a readable InputError); else do nothing."""
    if not demo_mode() or value is None:
        return
    limit, what = CAPS[name]
    try:
        over = value > limit
    except TypeError:
        return  # not a number: the caller's own checks refuse it
    if over:
        raise InputError(f"The demo allows at most {limit} {what} (got {value}).")


def capped(name: str, value: int | None) -> int | None:
    """`value`, or the cap when `value` is None ("the default, all") in demo mode; checked."""
    if value is None:
        return cap(name) if demo_mode() else None
    check(name, value)
    return value


def check_spec(spec: str) -> None:
    """In demo mode only the default model and published checkpoints (`ckpt:NAME`) load; folders
    and hub names are refused without saying whether such a path exists."""
    from .default_model import DEFAULT_MODEL

    if not demo_mode():
        return
    spec = spec.strip() if isinstance(spec, str) else ""
    if spec == DEFAULT_MODEL or (spec.startswith("ckpt:") and len(spec) > 5):
        return
    raise ModelLoadError(f"The demo runs the default model ({DEFAULT_MODEL}) and published checkpoints "
                         "(ckpt:NAME) only; run the workbench locally to open other models.")


# --------------------------------------------------------------------------- messages

_PROC = re.compile(r"/proc/(?:self|\d+)\S*")
_ABSOLUTE = re.compile(r"(?<![\w.:/])(?:~|/)[\w.\-@+~]*(?:/[\w.\-@+~]*)+")


def _roots() -> list[str]:
    roots = []
    for get in (lambda: Path(os.environ.get("WORKBENCH_HOME") or Path.home() / ".cache" / "multilingual-workbench"), lambda: Path(__file__).resolve().parents[1], lambda: Path(tempfile.gettempdir()),
                lambda: Path(sys.prefix), lambda: Path.home()):
        try:
            path = get()
        except Exception:  # noqa: BLE001 - a root that cannot be named is simply not scrubbed
            continue
        roots += {str(path), str(Path(path).resolve())}
    return sorted({r for r in roots if len(r) > 1}, key=len, reverse=True)


def scrub(message: str) -> str:
    """In demo mode, `message` with server paths and process ids replaced by "<server>"; else as is."""
    if not demo_mode():
        return message
    for root in _roots():
        message = message.replace(root, "<server>")
    message = _PROC.sub("<server>", message)
    return _ABSOLUTE.sub("<server>", message)
