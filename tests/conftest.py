"""Shared fixtures: tiny models of each architecture, and the real default model (loaded once)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from workbench.tiny import ARCHITECTURES, build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """arch -> folder of a freshly built 2-layer model."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_model(arch, root / arch) for arch in ARCHITECTURES}


@pytest.fixture(scope="session", params=ARCHITECTURES)
def tiny_handle(request, tiny_folders):
    import workbench

    return workbench.load(str(tiny_folders[request.param]))


@pytest.fixture(scope="session")
def tiny_gemma(tiny_folders):
    import workbench

    return workbench.load(str(tiny_folders["gemma3"]))


@pytest.fixture(scope="session")
def gemma():
    """The real offline default model (converted once per machine, then loaded in seconds)."""
    import workbench

    return workbench.load("gemma-3-270m")
