"""`workbench unlearn`: the whole entity-level unlearning pipeline from a terminal.

    workbench unlearn --base gemma-3-270m --entities 4 --methods ga,npo --steps 8
    workbench unlearn --config examples/configs/unlearning.yaml --set lora=false --csv out.csv --png out.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.cli import command

from trainers.methods.unlearning.methods import SHORT_NAMES

# command-line flag -> pipeline option
FLAGS = {"base": "base_model", "entities": "entities", "forget_entities": "forget_entities", "methods": "methods",
         "steps": "steps", "lr": "lr", "name": "name", "eval_every": "eval_every", "eval_items": "eval_items",
         "real_entities": "real_entities", "seed": "seed"}


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of pipeline options (see examples/configs/unlearning.yaml)")
    p.add_argument("--base", help="base model spec (default gemma-3-270m)")
    p.add_argument("--entities", type=int, help="number of invented entities")
    p.add_argument("--forget-entities", dest="forget_entities", type=int, help="how many of them to forget")
    p.add_argument("--methods", type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
                   help=f"comma-separated unlearning methods ({','.join(SHORT_NAMES)})")
    p.add_argument("--steps", type=int, help="optimizer steps per unlearning run")
    p.add_argument("--lr", type=float, help="unlearning learning rate")
    p.add_argument("--eval-every", dest="eval_every", type=int, help="also evaluate every N steps (0: final only)")
    p.add_argument("--eval-items", dest="eval_items", type=int, help="at most N questions per evaluation set")
    p.add_argument("--real-entities", dest="real_entities", type=lambda s: [e.strip() for e in s.split(",") if e.strip()],
                   help="real entities for the pre-trained track, comma-separated ('' to skip it)")
    p.add_argument("--seed", type=int)
    p.add_argument("--name", help="results name (WORKBENCH_HOME/unlearning/NAME)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any pipeline option")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is much faster on an oversubscribed machine)")
    p.add_argument("--csv", help="also write the results table to this CSV file")
    p.add_argument("--png", help="also write the forget-quality / model-utility scatter to this PNG (needs kaleido)")
    p.add_argument("--comparison-png", dest="comparison_png", help="also write the injected-vs-pre-trained plot to this PNG")


def build_config(args: argparse.Namespace):
    """The pipeline configuration a command line describes: file, then --set, then flags."""
    from trainers.methods.unlearning.pipeline import UnlearningPipelineConfig

    config = UnlearningPipelineConfig.from_yaml(args.config) if args.config else UnlearningPipelineConfig()
    updates = UnlearningPipelineConfig.parse_assignments(args.set)
    updates.update({option: getattr(args, flag) for flag, option in FLAGS.items() if getattr(args, flag, None) is not None})
    return config.with_overrides(updates, source="the command line")


def _run(args: argparse.Namespace) -> None:
    import pandas as pd

    from trainers.methods.unlearning.pipeline import run_pipeline
    from workbench.progress import progress_bar

    config = build_config(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with progress_bar("unlearning") as report:
        results = run_pipeline(config, progress=report)
    with pd.option_context("display.width", 200, "display.max_columns", 12, "display.float_format", "{:.3g}".format):
        columns = ["track", "method", "step", "forget.rougeL_recall", "target.rougeL_recall", "target.probability",
                   "forget_quality.forget", "forget_quality.target", "model_utility"]
        print(results.table[[c for c in columns if c in results.table]].to_string(index=False))
    for note in results.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        results.table.to_csv(args.csv, index=False)
    for path, figure in ((args.png, results.figure), (args.comparison_png, results.comparison_figure)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            figure().write_image(path, scale=2)


command("unlearn", "entity-level unlearning: inject invented entities, unlearn with each method, evaluate")((_configure, _run))
