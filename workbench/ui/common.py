"""What every tab shares: turning errors into readable messages, progress, and file exports.

Tabs stay thin: parse inputs, call the same probe/trainer API a notebook uses, show the result.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import gradio as gr

from .. import limits
from ..errors import InputError, WorkbenchError, storage_message
from ..progress import Progress
from ..results import dumps

log = logging.getLogger("workbench.ui")


def friendly(fn: Callable) -> Callable:
    """Wrap a Gradio handler: user errors become a clear message, bugs a short one plus a log
    entry; never a stack trace in the page, and the app keeps serving."""

    checks = _field_checks(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            _check_fields(fn, checks, args, kwargs)
            return fn(*args, **kwargs)
        except gr.Error as exc:
            if limits.demo_mode():
                raise gr.Error(limits.scrub(str(exc.message or ""))) from None
            raise
        except (WorkbenchError, ValueError, KeyError, IndexError, FileNotFoundError) as exc:
            raise gr.Error(_message(exc)) from None
        except MemoryError:
            raise gr.Error("Out of memory: try fewer items, a shorter prompt or a smaller model.") from None
        except OSError as exc:
            message = storage_message(exc)
            if message is None:
                log.exception("Handler %s failed", getattr(fn, "__name__", fn))
                message = f"Internal error ({type(exc).__name__}): {_message(exc)}. See the server log."
            raise gr.Error(limits.scrub(message)) from None
        except Exception as exc:  # noqa: BLE001 - the UI must survive any bug
            log.exception("Handler %s failed", getattr(fn, "__name__", fn))
            raise gr.Error(f"Internal error ({type(exc).__name__}): {_message(exc)}. See the server log.") from None

    return wrapper


_TEXT = ("str", "str | None")
_TEXTS = ("list[str]", "list[str] | None")


def _field_checks(fn: Callable) -> dict[str, str]:
    """Parameter -> "text" or "texts" for the handler's parameters annotated `str` / `list[str]`:
    what an HTTP client may send there is checked before the handler runs."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    kinds = {}
    for p in params:
        annotation = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        if annotation in _TEXT:
            kinds[p.name] = "text"
        elif annotation in _TEXTS:
            kinds[p.name] = "texts"
    return kinds


def _check_fields(fn: Callable, checks: dict[str, str], args: tuple, kwargs: dict) -> None:
    """Raw HTTP payloads: null is allowed (an empty field), a text field must hold text a tokenizer
    can read (no lone surrogates), a list field a list of such texts; else a readable InputError."""
    from ..engine.inputs import check_text

    if not checks:
        return
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs).arguments
    except TypeError:
        return  # a wrong call: the handler's own error
    for name, kind in checks.items():
        value = bound.get(name)
        if value is None:
            continue
        what = name.replace("_", " ")
        if kind == "text":
            check_text(value, f"field '{what}'")
        else:
            if not isinstance(value, (list, tuple)):
                raise InputError(f"The field '{what}' must be a list of text, not {type(value).__name__}.")
            for item in value:
                check_text(item, f"field '{what}'")


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # lone surrogates cannot be sent to the page as UTF-8
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return limits.scrub(text.strip("'\"") if isinstance(exc, KeyError) else text)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def as_number(value: Any, what: str) -> float:
    """A form field as a finite float, or an InputError naming the field (empty, text, NaN, infinite)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{what} is required.")
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {_shown(value)}.") from None
    except OverflowError:  # an int beyond the float range
        raise InputError(f"{what} is far too large ({_shown(value)}).") from None
    if not math.isfinite(number):
        raise InputError(f"{what} must be a finite number, got {_shown(value)}.")
    return number


def as_int(value: Any, what: str, minimum: int | None = None) -> int:
    """A form field as a whole number (at least `minimum`), or an InputError naming the field."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        real = as_number(value, what)
        if real != int(real):
            raise InputError(f"{what} must be a whole number, got {_shown(value)}.")
        number = int(real)
    if minimum is not None and number < minimum:
        raise InputError(f"{what} must be at least {minimum}, got {number}.")
    return number


def require(obj: Any, kind: type | tuple[type, ...], message: str) -> Any:
    """`obj` when it is a `kind` (a result kept in the page's state), else InputError(message):
    an empty or foreign state means the step that computes it has not run."""
    if not isinstance(obj, kind):
        raise InputError(message)
    return obj


def upload_path(upload: Any) -> str:
    """The path of an uploaded file (a path string or Gradio's file object), or an InputError."""
    from ..engine.inputs import check_text

    path = upload if isinstance(upload, str) else getattr(upload, "name", None)
    if not isinstance(path, str):
        raise InputError(f"The upload must be a file, not {type(upload).__name__}.")
    return check_text(path, "upload's file name")


def progress_callback(progress: Any) -> Progress:
    """Adapt gr.Progress to the API's `progress(fraction, message)` callbacks."""

    def report(fraction: float, message: str = "") -> None:
        if progress is not None:
            progress(max(0.0, min(1.0, float(fraction))), desc=message)

    return report


def export_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "workbench-exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def export_rows(tables: Mapping[str, Any], stem: str, kind: str = "csv", document: Any = None) -> list[str]:
    """Every tab's downloads. CSV: each table in its own file, `{stem}-{name}`. JSON: one strict
    file of `document` (a result, written as its `to_json` document, loads back with
    `workbench.results.from_json`), or of the tables as records when there is no document."""
    if kind == "json":
        return [export_json(tables if document is None else document, stem)]
    return [export_frame(frame, f"{stem}-{name}", "csv") for name, frame in tables.items()]


def export_frame(frame, stem: str, kind: str = "csv") -> str:
    """Write a DataFrame as CSV or as JSON records for a gr.File download; returns the path."""
    if kind != "csv":
        return export_json(frame, stem)
    fd, name = tempfile.mkstemp(prefix=f"{stem}-", suffix=".csv", dir=export_dir())
    os.close(fd)
    # CRLF rows (RFC 4180) make the writer quote cells holding a bare "\r" too (tokens such as
    # "\r" are common in lens tables); with "\n" rows such a cell would split its row on reading.
    frame.to_csv(name, index=False, lineterminator="\r\n")
    return name


def export_json(obj: Any, stem: str) -> str:
    """Write results, frames and plain data as one strict JSON file (results as their documents,
    frames as records, NaN and infinities as null: any JSON parser reads it)."""
    return export_text(dumps(obj, indent=1), stem, "json")


def export_text(text: str, stem: str, suffix: str) -> str:
    """Write ready-made text (an HTML report, a JSON lines file) for download."""
    fd, name = tempfile.mkstemp(prefix=f"{stem}-", suffix=f".{suffix}", dir=export_dir())
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return name


def export_copy(path: str | Path) -> str:
    """A copy (same file name) of a file kept elsewhere, e.g. in the workbench home, in the export
    folder: Gradio only serves downloads from the temp dir or the working directory."""
    folder = tempfile.mkdtemp(prefix="copy-", dir=export_dir())
    return str(shutil.copy2(path, Path(folder) / Path(path).name))


def demo_mode() -> bool:
    """WORKBENCH_DEMO=1 (set on the public Space): capped inputs, no training (`workbench.limits`)."""
    return limits.demo_mode()
