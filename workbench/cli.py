"""The `workbench` command: the same API as the app and notebooks, from a terminal."""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from .errors import WorkbenchError, storage_message  # noqa: E402

COMMANDS: dict[str, tuple[str, callable, callable]] = {}


def command(name: str, help: str):
    """Register a subcommand: `configure(parser)` adds its arguments, `run(args)` does the work."""

    def wrap(pair):
        configure, run = pair
        COMMANDS[name] = (help, configure, run)
        return pair

    return wrap


def _info_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", default="gemma-3-270m", help="model spec")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")


def _info_run(args) -> None:
    from . import load
    from .progress import progress_bar

    with progress_bar("loading", disable=args.json) as report:
        handle = load(args.spec, progress=report)
    facts = handle.facts.to_dict()
    if not args.json:
        facts.pop("chat_template", None)
    print(json.dumps(facts, indent=2, default=str) if args.json else "\n".join(f"{k:>15}: {v}" for k, v in facts.items()))


command("info", "load a model and print its facts")((_info_configure, _info_run))


def _app_configure(p: argparse.ArgumentParser) -> None:
    # Environment defaults, read when the parser is built, let a Space or a container configure the app
    # without a command line (app.py sets WORKBENCH_HOST on a Space).
    p.add_argument("--model", default=os.environ.get("WORKBENCH_MODEL", "gemma-3-270m"),
                   help="model spec loaded at start: gemma-3-270m, a folder, ckpt:NAME or a hub name "
                        "(default: $WORKBENCH_MODEL or gemma-3-270m)")
    p.add_argument("--host", default=os.environ.get("WORKBENCH_HOST", "127.0.0.1"),
                   help="address to bind (default: $WORKBENCH_HOST or 127.0.0.1; use 0.0.0.0 only on purpose)")
    p.add_argument("--port", type=int, default=os.environ.get("WORKBENCH_PORT", "7860"),
                   help="port (default: $WORKBENCH_PORT or 7860)")
    p.add_argument("--no-preload", action="store_true", help="do not load the model before serving")


def _app_run(args) -> None:
    from .server import launch

    launch(args.model, host=args.host, port=args.port, preload=not args.no_preload)


command("app", "start the web app")((_app_configure, _app_run))


def _load_plugins() -> None:
    """Subcommands that live with their feature (trainers, evaluations) register on import."""
    import importlib
    import importlib.util

    for module in ("trainers.cli", "trainers.methods.cc_tuning.transform_matrix", "trainers.methods.unlearning.cli",
                   "trainers.methods.rhio.cli", "workbench.evals.cli"):
        if importlib.util.find_spec(module.split(".")[0]) and importlib.util.find_spec(module):
            importlib.import_module(module)


def main(argv: list[str] | None = None) -> int:
    _load_plugins()
    parser = argparse.ArgumentParser(prog="workbench", description="Multilingual interpretability workbench")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, configure, _) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command][2](args)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        message = storage_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
