"""`workbench train METHOD --config FILE` and `workbench checkpoints`.

Multi-process / multi-GPU / multi-node training is the same command under `accelerate launch`:

    accelerate launch --multi_gpu --num_processes 2 -m workbench train sft --config examples/configs/sft_demo.yaml

(on a machine without GPUs this starts two CPU processes that synchronise over gloo).
"""

from __future__ import annotations

import argparse

from workbench.cli import command
from workbench.results import dumps

from .config import ConfigError, TrainConfig
from .methods import METHODS


def _train_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("method", help=f"training method ({', '.join(METHODS)})")
    p.add_argument("--config", help="YAML file of training options (see examples/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one option, e.g. --set max_steps=20 (repeatable)")
    p.add_argument("--output", help="run name (checkpoints are registered as ckpt:NAME)")
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The configuration a `workbench train` command line describes: file, then --set, then flags."""
    values = TrainConfig.read_yaml(args.config) if args.config else {"method": args.method}
    config = TrainConfig.from_dict(values, source=args.config or "the command line")
    declared = values.get("method")
    if declared and declared != args.method:
        raise ConfigError(f"{args.config} is a configuration for {declared!r}, not {args.method!r}.")
    updates = {**TrainConfig.parse_assignments(args.set), "method": args.method}
    if args.output:
        updates["output"] = args.output
    if args.resume:
        updates["resume"] = True
    return config.with_overrides(updates)


def _train_run(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from .loop import train

    result = train(build_config(args))
    if PartialState().is_main_process:
        where = f"checkpoint {result.checkpoint.spec}" if result.checkpoint else "no checkpoint"
        print(f"{result.state}: run {result.run}, step {result.step}/{result.total_steps}, {where}")
        if result.state == "cancelled":
            print(f"Continue it with: workbench train {args.method} --config ... --output {result.run} --resume")


command("train", "fine-tune a model (sft, tft, cc-tuning, dft, ...) and register checkpoints")((_train_configure, _train_run))


def _checkpoints_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", help="only this run's checkpoints")
    p.add_argument("--json", action="store_true", help="print the manifests as JSON")


def _checkpoints_run(args: argparse.Namespace) -> None:
    from workbench import registry

    ckpts = registry.list_checkpoints(args.run)
    if args.json:
        print(dumps([c.manifest for c in ckpts], indent=2))
        return
    if not ckpts:
        print(f"No checkpoints in {registry.root()}.")
        return
    print(f"{'spec':<36} {'method':<10} {'base model':<24} {'created':<25} train loss")
    for c in ckpts:
        loss = c.metrics.get("train_loss")
        print(f"{c.spec:<36} {c.method:<10} {c.base_model[-24:]:<24} {c.created:<25} {loss if loss is None else round(loss, 4)}")


command("checkpoints", "list the registered checkpoints")((_checkpoints_configure, _checkpoints_run))
