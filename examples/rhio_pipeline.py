"""The whole RHIO pipeline on the default model, small enough for a CPU (about half an hour on two
cores): control tokens, masked-head augmentation, SFT and RHIO training, and the faithfulness table
(base / SFT / RHIO / RHIO + contrastive decoding) written to docs/rhio_results.csv.

    python examples/rhio_pipeline.py [--train 16] [--eval 12] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

import workbench  # noqa: E402
from probes.retrieval import retrieval_scores  # noqa: E402
from trainers.methods import rhio  # noqa: E402
from trainers.config import TrainConfig  # noqa: E402
from trainers.loop import train  # noqa: E402
from workbench.datasets.faithfulness import load_faithfulness  # noqa: E402
from trainers.methods.rhio.evaluation import evaluate_faithfulness  # noqa: E402

MAX_CHARS = 700  # documents per prompt, so training fits max_length 320


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--train", type=int, default=16)
    p.add_argument("--eval", type=int, default=12)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--top-k", type=int, default=4)
    args = p.parse_args()
    out = Path("docs")
    out.mkdir(exist_ok=True)
    items = load_faithfulness(langs=["en", "fr", "zh"])
    eval_items = items[::3][: args.eval]
    train_items = [it for it in items if it not in eval_items][: args.train]

    base = workbench.load("gemma-3-270m")
    scores = retrieval_scores(base, lang="en", lengths=(256, 512), depths=(0.25, 0.75), n_needles=2)
    heads = [tuple(h) for h in scores.top(args.top_k)[["layer", "head"]].itertuples(index=False)]
    print("masked heads:", heads, flush=True)
    prepared = rhio.add_control_tokens("gemma-3-270m", "rhio-base")
    aug = rhio.augment(base, train_items, heads, max_new_tokens=40, max_chars=MAX_CHARS,
                       out_path=out / "rhio_augmented.jsonl")
    print("augmented", len(aug), flush=True)
    data = out / "rhio_augmented.jsonl"
    common = dict(data=str(data), max_steps=args.steps, batch_size=2, max_length=320, lr=2e-4, lora=True, seed=0)
    sft = train(TrainConfig(method="sft", base_model=prepared, output="rhio-sft", **common))
    rh = train(TrainConfig(method="rhio", base_model=prepared, output="rhio", **common))
    rows = []
    for label, spec, system in [("base", "gemma-3-270m", "plain"), ("SFT", sft.checkpoint.spec, "plain"),
                                ("RHIO [POS]", rh.checkpoint.spec, "pos"),
                                ("RHIO + contrastive (a=1)", rh.checkpoint.spec, "contrastive")]:
        handle = workbench.load(spec)
        result = evaluate_faithfulness(handle, eval_items, system, max_new_tokens=40, max_chars=MAX_CHARS)
        rows.append({**result.summary().iloc[0].to_dict(), "system": label})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "rhio_results.csv", index=False)
    (out / "rhio_run.json").write_text(json.dumps({"heads": heads, "train_items": len(train_items),
                                                   "eval_items": len(eval_items), "steps": args.steps}, indent=1))
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
