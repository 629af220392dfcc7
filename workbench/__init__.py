"""Multilingual interpretability workbench: one API for the web app, notebooks and the Space."""

from .default_model import DEFAULT_MODEL
from .errors import InputError, ModelLoadError, WorkbenchError
from .models import ModelFacts, ModelHandle, load

__all__ = ["DEFAULT_MODEL", "InputError", "ModelLoadError", "WorkbenchError", "ModelFacts", "ModelHandle", "load"]
