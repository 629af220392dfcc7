"""`workbench pivot`, `workbench retrieval` and `workbench transplant`: the sweeps from a terminal.

Each loads the model, runs the probe, prints its summary and writes its JSON document to `--out`.
Under `accelerate launch --num_processes N` the probe splits its items between the processes and
gathers the outputs (`workbench.distributed`); only the main process prints and writes, and what
it writes is the one-process result (docs/sweeps.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from workbench.cli import add_model_arguments, command, model_options
from workbench.datasets import haystack
from workbench.datasets.tasks import get_task, list_tasks
from workbench.errors import InputError
from workbench.models import ModelHandle
from workbench.progress import Progress, progress_bar
from workbench.results import Result

from probes.retrieval import MAX_NEW_TOKENS, retrieval_scores
from probes.transplant import MODES, SCORINGS, transplant_grid
from probes.transplant.cases import DIRECTIONS
from probes.transplant.runs import TRANSPLANT_SITES


def _model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="gemma-3-270m",
                   help="model spec: gemma-3-270m, a folder, ckpt:NAME or a hub name (default: gemma-3-270m)")


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="where to write the result's JSON document")
    p.add_argument("--no-cache", action="store_true", help="recompute instead of reading a cached result")
    add_model_arguments(p)


def _sweep(args: argparse.Namespace, name: str, run: Callable[[ModelHandle, Progress], Result]) -> None:
    """Load, run, and on the main process print the summary and write the document atomically."""
    from workbench import distributed, load
    from workbench.paths import atomic_write_text

    main = distributed.is_main_process()  # first: under accelerate launch this gives each process its GPU
    with progress_bar("loading", disable=not main) as report:
        handle = load(args.model, progress=report, **model_options(args))
    with progress_bar(name, disable=not main) as report:
        result = run(handle, report)
    if main:
        atomic_write_text(Path(args.out), result.to_json())
        print(result.summary().to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        print(f"wrote {args.out}")


def _first(items: Any, n: int | None) -> Any:
    """The first `n` items (rows of a table) of `--n`, or all of them."""
    if n is None:
        return items
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}.")
    return items[:n]


# --------------------------------------------------------------------------- pivot

def _pivot_configure(p: argparse.ArgumentParser) -> None:
    _model(p)
    # probes.pivot is imported when the command runs: its tokenizer tools would slow every command's start
    p.add_argument("--task", default="translation", help="translation, repetition or cloze (default: translation)")
    p.add_argument("--src", default=None, help="input language code (translation only), e.g. fr")
    p.add_argument("--tgt", required=True, help="target language code, e.g. zh")
    p.add_argument("--words", default=None,
                   help="a word-list CSV as the app takes it (cloze: sentence,answer columns); default: the "
                        "committed concept list (cloze: the committed sentences)")
    p.add_argument("--n", type=int, default=None, help="first N items (default: all)")
    p.add_argument("--k-shot", type=int, default=4, help="examples per prompt (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the examples' choice (default: 0)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass (default: 16)")
    _output(p)


def _pivot_items(args: argparse.Namespace):
    import pandas as pd

    from workbench.datasets import lexicon

    try:
        if args.task == "cloze":
            table = (pd.read_csv(args.words, dtype=str, keep_default_na=False) if args.words
                     else lexicon.load_cloze([args.tgt]))
        elif args.words:
            table = lexicon.parse_word_csv(args.words)
        else:
            table = lexicon.load_concepts(list(dict.fromkeys([args.src or args.tgt, args.tgt, "en"])))
    except (lexicon.LexiconError, OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(str(exc)) from None
    return _first(table, args.n)


def _pivot_run(args: argparse.Namespace) -> None:
    from probes.pivot import pivot

    items = _pivot_items(args)
    _sweep(args, "pivot", lambda handle, report: pivot(
        handle, items, args.task, src_lang=args.src, tgt_lang=args.tgt, k_shot=args.k_shot, seed=args.seed,
        batch_size=args.batch_size, use_cache=not args.no_cache, progress=report))


command("pivot", "latent-language lens over a word list (English pivot), split over accelerate processes")(
    (_pivot_configure, _pivot_run))


# --------------------------------------------------------------------------- retrieval heads

def _retrieval_configure(p: argparse.ArgumentParser) -> None:
    _model(p)
    p.add_argument("--lang", default="en", choices=haystack.available_languages(),
                   help="haystack language (default: en)")
    p.add_argument("--lengths", type=int, nargs="+", default=list(haystack.DEFAULT_LENGTHS),
                   help=f"context lengths in tokens (default: {' '.join(map(str, haystack.DEFAULT_LENGTHS))})")
    p.add_argument("--depths", type=float, nargs="+", default=list(haystack.DEFAULT_DEPTHS),
                   help=f"needle depths, 0 to 1 (default: {' '.join(map(str, haystack.DEFAULT_DEPTHS))})")
    p.add_argument("--needles", type=int, default=haystack.DEFAULT_NEEDLES,
                   help=f"needles per (length, depth) (default: {haystack.DEFAULT_NEEDLES})")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS,
                   help=f"answer length cap (default: {MAX_NEW_TOKENS})")
    _output(p)


def _retrieval_run(args: argparse.Namespace) -> None:
    _sweep(args, "retrieval", lambda handle, report: retrieval_scores(
        handle, args.lang, args.lengths, args.depths, args.needles, use_cache=not args.no_cache, progress=report,
        max_new_tokens=args.max_new_tokens))


command("retrieval", "retrieval-head scores on a needle-in-a-haystack grid, split over accelerate processes")(
    (_retrieval_configure, _retrieval_run))


# --------------------------------------------------------------------------- XTransplant

def _transplant_configure(p: argparse.ArgumentParser) -> None:
    _model(p)
    short = [t for t in list_tasks() if get_task(t).kind != "summarization"]  # a short answer to score
    p.add_argument("--task", required=True, choices=short, help="task, e.g. word_translation")
    p.add_argument("--lang", required=True, help="language of the task's items, e.g. fr")
    p.add_argument("--n", type=int, default=None, help="first N items (default: all)")
    p.add_argument("--site", choices=TRANSPLANT_SITES, default="mlp", help="activation moved (default: mlp)")
    p.add_argument("--mode", choices=MODES, default="overall",
                   help="overall: every (source, target) pair; targetfirst: every source into --target-layer")
    p.add_argument("--target-layer", type=int, default=None, help="the target layer of --mode targetfirst")
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="source (and, for overall, target) layers (default: every layer)")
    p.add_argument("--scoring", choices=SCORINGS, default="probability", help="how to score (default: probability)")
    p.add_argument("--direction", choices=DIRECTIONS, default=None,
                   help="en->x or x->en (default: x->en for the culture task, en->x otherwise)")
    p.add_argument("--no-control", action="store_true", help="skip the mismatched-source control")
    _output(p)


def _transplant_run(args: argparse.Namespace) -> None:
    from workbench.datasets.tasks import TaskDataError, load_task

    try:
        items = load_task(args.task, args.lang)
    except TaskDataError as exc:
        raise InputError(str(exc)) from None
    items = _first(items, args.n)
    _sweep(args, "transplant", lambda handle, report: transplant_grid(
        handle, items, site=args.site, mode=args.mode, target_layer=args.target_layer, control=not args.no_control,
        scoring=args.scoring, use_cache=not args.no_cache, progress=report, direction=args.direction,
        sources=args.layers, targets=args.layers if args.mode == "overall" else None))


command("transplant", "XTransplant grid over (source, target) layers, split over accelerate processes")(
    (_transplant_configure, _transplant_run))
