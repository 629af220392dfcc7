"""Start the workbench's web app (also the Hugging Face Space entry point).

    python app.py [--model SPEC] [--host 127.0.0.1] [--port 7860]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
if os.environ.get("SPACE_ID"):
    # On a Hugging Face Space: public, so demo mode (capped inputs, no training), and the Space's
    # proxy needs the container's address rather than loopback.
    os.environ.setdefault("WORKBENCH_DEMO", "1")
    os.environ.setdefault("WORKBENCH_HOST", "0.0.0.0")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Multilingual interpretability workbench (web app)")
    parser.add_argument("--model", default=os.environ.get("WORKBENCH_MODEL", "gemma-3-270m"),
                        help="model spec loaded at start: gemma-3-270m, a folder, ckpt:NAME or a hub name")
    parser.add_argument("--host", default=os.environ.get("WORKBENCH_HOST", "127.0.0.1"),
                        help="address to bind (default 127.0.0.1; use 0.0.0.0 only on purpose)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("WORKBENCH_PORT", "7860")))
    parser.add_argument("--no-preload", action="store_true", help="do not load the model before serving")
    args = parser.parse_args(argv)

    from workbench.server import launch

    launch(args.model, host=args.host, port=args.port, preload=not args.no_preload)


if __name__ == "__main__":
    main()
