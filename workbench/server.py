"""Serving the app: one shared model, a bounded queue, loopback by default."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# Probe requests hold the model's lock while they run, so more concurrent workers only queue up
# inside Python; a few workers keep the page responsive (model info, exports) while one probe runs.
CONCURRENCY_LIMIT = int(os.environ.get("WORKBENCH_CONCURRENCY", "4"))
QUEUE_SIZE = int(os.environ.get("WORKBENCH_QUEUE_SIZE", "64"))
MAX_UPLOAD = os.environ.get("WORKBENCH_MAX_UPLOAD", "5mb")


def build(model: str):
    from .ui.app import build_app

    app = build_app(model)
    app.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return app


def launch(model: str, host: str = "127.0.0.1", port: int = 7860, preload: bool = True, block: bool = True):
    """Load the model once (shared by every session), then serve the app."""
    if preload:
        from . import load
        from .progress import progress_bar

        with progress_bar(f"Loading {model}") as report:
            load(model, progress=report)
    app = build(model)
    app.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD, prevent_thread_lock=not block,
               show_error=False)
    return app
