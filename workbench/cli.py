"""The `workbench` command: the same API as the app and notebooks, from a terminal."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

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


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that say where and in which precision a command's model runs, the same on every
    command that loads one; `model_options(args)` turns them into `workbench.load` arguments."""
    g = p.add_argument_group("where the model runs")
    g.add_argument("--device", default="auto",
                   help="auto (a CUDA GPU, then MPS, then the CPU), cpu, cuda, cuda:N or mps "
                        "(default: $WORKBENCH_DEVICE or auto)")
    g.add_argument("--dtype", default="auto",
                   help="auto (bfloat16 on a GPU that has it, else float16; float32 on the CPU), float32 / fp32, "
                        "bfloat16 / bf16 (the fast mode), float16 / fp16 (default: $WORKBENCH_DTYPE or auto)")
    g.add_argument("--device-map", default=None,
                   help="spread a model bigger than one device with Accelerate: auto, balanced, sequential, a JSON "
                        'object such as {"model.layers.20": "cpu", "lm_head": 0} (targets: GPU numbers, cpu, disk) '
                        "or a JSON file holding one")
    g.add_argument("--max-memory", default=None, help="memory per device for --device-map, e.g. 0=20GiB,cpu=60GiB")
    g.add_argument("--offload-folder", default=None, help="where --device-map keeps the layers it sends to disk")


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `workbench.load` keyword arguments given by `add_model_arguments`' flags."""
    return {"device": args.device, "dtype": args.dtype, "device_map": args.device_map,
            "max_memory": args.max_memory, "offload_folder": args.offload_folder}


def _info_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", default="gemma-3-270m", help="model spec")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    add_model_arguments(p)


def _info_run(args) -> None:
    from . import load
    from .progress import progress_bar
    from .results import dumps

    with progress_bar("loading", disable=args.json) as report:
        handle = load(args.spec, progress=report, **model_options(args))
    facts = handle.facts.to_dict()
    if not args.json:
        facts.pop("chat_template", None)
    print(dumps(facts, indent=2) if args.json else "\n".join(f"{k:>15}: {v}" for k, v in facts.items()))


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
    add_model_arguments(p)


def _app_run(args) -> None:
    from . import models
    from .server import launch

    models.set_defaults(**model_options(args))  # every tab's load(spec) opens the model this way
    launch(args.model, host=args.host, port=args.port, preload=not args.no_preload)


command("app", "start the web app")((_app_configure, _app_run))


def _load_plugins() -> None:
    """Subcommands that live with their feature (trainers, evaluations, probe sweeps) register on import."""
    import importlib
    import importlib.util

    for module in ("trainers.cli", "trainers.methods.cc_tuning.transform_matrix", "trainers.methods.unlearning.cli",
                   "trainers.methods.rhio.cli", "workbench.evals.cli", "probes.cli"):
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
