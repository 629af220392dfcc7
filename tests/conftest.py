"""Shared fixtures: tiny models of each architecture, and the real default model (loaded once)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from workbench.tiny import ARCHITECTURES, build_tiny_model  # noqa: E402

# Property tests draw the same examples on every run by default, so CI is reproducible;
# HYPOTHESIS_PROFILE=explore draws new ones each run, for hunting bugs locally.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


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


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium; tests using it are skipped only where no chromium is installed
    (`make test` installs it, so CI always runs them)."""
    from browser import CHROMIUM_ARGS, chromium_path

    path = chromium_path()
    if path is None:
        pytest.skip("chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def live_app():
    """The real app on the default model, served on loopback for the whole session."""
    from browser import free_port

    from workbench.server import build

    import workbench

    workbench.load("gemma-3-270m")
    app = build("gemma-3-270m")
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()
