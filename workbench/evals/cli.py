"""`workbench eval TASK` and `workbench globesumm`: the evaluation API from a terminal."""

from __future__ import annotations

import argparse

from workbench.cli import add_model_arguments, command, model_options
from workbench.evals.globesumm.data import PIPELINES
from workbench.datasets.tasks import list_tasks
from workbench.evals.harness import MODES
from workbench.evals.globesumm.mcms import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PIPELINES
from workbench.progress import progress_bar
from workbench.results import dumps


def _eval_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=list_tasks(), help="task name")
    p.add_argument("--model", default="gemma-3-270m", help="model spec (default: gemma-3-270m)")
    p.add_argument("--langs", default=None, help="comma-separated language codes (default: all with a sample)")
    p.add_argument("--n", type=int, default=None, help="first N items per language (default: all)")
    p.add_argument("--mode", choices=MODES, default="auto", help="how to score (default: auto)")
    p.add_argument("--no-cache", action="store_true", help="recompute instead of reading cached outputs")
    p.add_argument("--json", action="store_true", help="print every (language, metric) score as JSON")
    add_model_arguments(p)


def _eval_run(args) -> None:
    from workbench import load
    from workbench.evals.harness import evaluate

    with progress_bar(args.task) as report:
        result = evaluate(load(args.model, **model_options(args)), args.task, args.langs, n=args.n, mode=args.mode,
                          use_cache=not args.no_cache, progress=report)
    table = result.summary()
    if args.json:
        print(dumps(table, indent=1))
    else:
        print(f"{args.task} on {result.model} (headline metric: {result.metric}; 95% bootstrap CI)")
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


command("eval", "score a model on a multilingual task, per language, with confidence intervals")(
    (_eval_configure, _eval_run))


def _globesumm_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="gemma-3-270m", help="model spec (default: gemma-3-270m)")
    p.add_argument("--pipeline", nargs="+", choices=PIPELINES, default=list(DEFAULT_PIPELINES),
                   help="pipelines to run (default: all recurrent protocol)")
    p.add_argument("--events", default=None, help="GlobeSumm file (default: the committed sample)")
    p.add_argument("--max-events", type=int, default=None, help="only the first N events")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--max-prompt-tokens", type=int, default=None)
    p.add_argument("--chat", action="store_true", help="wrap prompts in the model's chat template")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--json", action="store_true", help="print every summary and its metrics as JSON")
    add_model_arguments(p)


def _globesumm_run(args) -> None:
    from workbench import load
    from workbench.evals.globesumm.data import load_events
    from workbench.errors import InputError
    from workbench.evals.globesumm.mcms import run_mcms

    events = load_events(args.events)
    if args.max_events is not None:
        if args.max_events < 1:
            raise InputError(f"--max-events must be at least 1, got {args.max_events}")
        events = events[: args.max_events]
    with progress_bar("globesumm") as report:
        result = run_mcms(load(args.model, **model_options(args)), events, args.pipeline, max_new_tokens=args.max_new_tokens,
                          max_prompt_tokens=args.max_prompt_tokens, chat=args.chat,
                          use_cache=not args.no_cache, progress=report)
    if args.json:
        print(dumps(result.rows, indent=1))
        return
    print(f"GlobeSumm MCMS on {result.model}: {len(events)} events, mean and 95% bootstrap CI")
    table = result.summary().pivot(index="metric", columns="pipeline", values="score")
    print(table[result.pipelines].to_string(float_format=lambda x: f"{x:.3f}"))


command("globesumm", "summarize GlobeSumm events with each MCMS pipeline and score the summaries")(
    (_globesumm_configure, _globesumm_run))
