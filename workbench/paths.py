"""Where the workbench keeps its files, and how it writes them without leaving half-written ones."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import WorkbenchError

PACKAGE_DATA = Path(__file__).resolve().parent / "data"  # small data sets that ship with the package


def workbench_home() -> Path:
    """`WORKBENCH_HOME`, or `~/.cache/multilingual-workbench`: converted models, caches, checkpoints."""
    root = Path(os.environ.get("WORKBENCH_HOME") or Path.home() / ".cache" / "multilingual-workbench")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkbenchError(f"Cannot create the workbench folder {root}: {exc.strerror}. "
                             "Set WORKBENCH_HOME to a writable folder.") from exc
    if not os.access(root, os.W_OK):
        raise WorkbenchError(f"The workbench folder {root} is not writable. Set WORKBENCH_HOME to a writable folder.")
    return root


def subdir(name: str) -> Path:
    path = workbench_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp folder next to `final`; on success rename it into place, on failure delete it.

    Readers therefore see either no folder or a complete one. If another process finished the same
    folder first, its result is kept and ours is discarded.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if final.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def safe_child(root: Path, name: str) -> Path:
    """`root / name`, refusing names that would escape `root` (`..`, absolute paths, separators)."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise WorkbenchError(f"Invalid name {name!r}: use letters, digits, '-', '_' and '.' only.")
    if len(name.encode("utf-8", "surrogatepass")) > 255:
        raise WorkbenchError(f"Invalid name {name[:40]!r}...: names are at most 255 bytes long.")
    child = (Path(root) / name).resolve()
    if child.parent != Path(root).resolve():
        raise WorkbenchError(f"Invalid name {name!r}: it would leave {root}.")
    return child
