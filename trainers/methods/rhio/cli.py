"""`workbench rhio prepare|augment|evaluate`: the RHIO pipeline around `workbench train rhio`."""

from __future__ import annotations

import argparse

from workbench.cli import command
from workbench.results import dumps


def _configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="step", required=True)
    prep = sub.add_parser("prepare", help="register a copy of a model with [POS]/[NEG] control tokens")
    prep.add_argument("--base", default="gemma-3-270m")
    prep.add_argument("--name", default="rhio-base")
    aug = sub.add_parser("augment", help="masked-retrieval-head answers next to the faithful references")
    aug.add_argument("--model", default="gemma-3-270m")
    aug.add_argument("--out", required=True, help="JSON lines to write (training data for `workbench train rhio`)")
    aug.add_argument("--top-k", type=int, default=4, help="mask the k best retrieval heads")
    aug.add_argument("--heads-lang", default="en", help="language of the retrieval-head scores to use")
    aug.add_argument("--langs", default=None, help="comma-separated languages of the faithfulness sample")
    aug.add_argument("--n", type=int, default=None, help="at most this many items")
    aug.add_argument("--mode", default="uniform", choices=["uniform", "zero"])
    ev = sub.add_parser("evaluate", help="support and ROUGE-L of a model's answers on the faithfulness sample")
    ev.add_argument("--model", required=True)
    ev.add_argument("--system", default="plain", choices=["plain", "pos", "contrastive"])
    ev.add_argument("--alpha", type=float, default=1.0)
    ev.add_argument("--langs", default=None)
    ev.add_argument("--n", type=int, default=None)


def _run(args) -> None:
    import workbench
    from workbench.datasets.faithfulness import load_faithfulness
    from workbench.progress import progress_bar

    from trainers.methods import rhio

    langs = args.langs.split(",") if getattr(args, "langs", None) else None
    if args.step == "prepare":
        print(rhio.add_control_tokens(args.base, args.name))
        return
    items = load_faithfulness(langs=langs)[: args.n]
    handle = workbench.load(args.model)
    if args.step == "augment":
        from probes.retrieval import retrieval_scores

        heads = [tuple(h) for h in retrieval_scores(handle, lang=args.heads_lang).top(args.top_k)[["layer", "head"]]
                 .itertuples(index=False)]
        with progress_bar("augment") as report:
            rhio.augment(handle, items, heads, args.mode, out_path=args.out, progress=report)
        print(f"wrote {len(items)} records to {args.out} (masked heads {heads})")
    else:
        from trainers.methods.rhio.evaluation import evaluate_faithfulness

        with progress_bar("evaluate") as report:
            result = evaluate_faithfulness(handle, items, args.system, args.alpha, progress=report)
        print(dumps(result.summary().iloc[0].to_dict(), indent=1))


command("rhio", "RHIO pipeline: prepare control tokens, augment with masked retrieval heads, evaluate")((_configure, _run))
