"""User-facing errors: their message is shown as-is in the UI, the CLI and notebooks."""

import errno


class WorkbenchError(ValueError):
    """A problem the user can fix (bad input, missing file, unknown model); never a bug."""


class ModelLoadError(WorkbenchError):
    """A model spec could not be turned into a loaded model."""


class InputError(WorkbenchError):
    """A probe, trainer or evaluation was called with invalid parameters or data."""


_DISK_FULL = {"ENOSPC", "EDQUOT", "EFBIG"}
_NOT_WRITABLE = {"EACCES", "EROFS", "EPERM"}


def storage_message(exc: BaseException) -> str | None:
    """A readable sentence for a failed write (full disk, quota, size limit, read-only folder), or
    None when `exc` is not such a failure. Writes are atomic, so nothing half-written stays behind."""
    name = errno.errorcode.get(getattr(exc, "errno", None) or -1, "")
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if name in _DISK_FULL:
        return (f"The disk is full{where}: nothing was written. Free some space or set WORKBENCH_HOME "
                "to a folder on a larger disk, then try again.")
    if name in _NOT_WRITABLE:
        return f"Cannot write{where}: permission denied or read-only. Set WORKBENCH_HOME to a writable folder."
    return None
