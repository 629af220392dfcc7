"""User-facing errors: their message is shown as-is in the UI, the CLI and notebooks."""


class WorkbenchError(ValueError):
    """A problem the user can fix (bad input, missing file, unknown model); never a bug."""


class ModelLoadError(WorkbenchError):
    """A model spec could not be turned into a loaded model."""


class InputError(WorkbenchError):
    """A probe, trainer or evaluation was called with invalid parameters or data."""
