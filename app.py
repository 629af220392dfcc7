"""Start the workbench's web app: `workbench app`, and the Hugging Face Space entry point.

    python app.py [--model SPEC] [--host 127.0.0.1] [--port 7860] [--no-preload]
                  [--device auto|cpu|cuda|mps] [--dtype auto|float32|bfloat16|float16] [--device-map ...]

A Space sets WORKBENCH_DEVICE / WORKBENCH_DTYPE (e.g. bfloat16 for the fast mode) instead of flags.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("SPACE_ID"):
    # On a Hugging Face Space: public, so demo mode (capped inputs, no training), and the Space's
    # proxy needs the container's address rather than loopback.
    os.environ.setdefault("WORKBENCH_DEMO", "1")
    os.environ.setdefault("WORKBENCH_HOST", "0.0.0.0")


def main(argv: list[str] | None = None) -> int:
    """`workbench app` with `argv` (default: this command line's arguments)."""
    from workbench.cli import main as cli

    return cli(["app", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
