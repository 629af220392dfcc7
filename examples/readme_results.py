"""Reproduce the README's result sections on the default model (cached: a second run is instant).

    python examples/readme_results.py retrieval     # heatmaps in English and Chinese
    python examples/readme_results.py transplant    # XTransplant grids fr/ru, upper bound, strategy
    python examples/readme_results.py compare       # base vs CC-Tuning vs DFT checkpoints

Figures go to docs/img/, tables to docs/*.csv; each section prints its table.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

import workbench  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"
IMG = DOCS / "img"


def _png(fig, name: str, width: int = 1100, height: int = 520) -> None:
    """Plotly figure to PNG when kaleido is installed (`pip install kaleido`; only these figure
    scripts use it), otherwise to an interactive HTML file of the same name."""
    IMG.mkdir(parents=True, exist_ok=True)
    try:
        fig.write_image(str(IMG / name), width=width, height=height, scale=1)
    except (ImportError, ValueError, RuntimeError) as exc:
        html = (IMG / name).with_suffix(".html")
        fig.write_html(str(html), include_plotlyjs="cdn")
        print(f"no PNG ({type(exc).__name__}: {exc}); wrote {html} instead")


def retrieval() -> None:
    from probes.retrieval import retrieval_scores

    handle = workbench.load("gemma-3-270m")
    for lang in ("en", "zh"):
        result = retrieval_scores(handle, lang=lang, lengths=(256, 512, 1024), depths=(0.1, 0.5, 0.9), n_needles=3)
        print(lang, result.note)
        print(result.top(5).to_string(index=False))
        _png(result.figure(), f"retrieval_{lang}.png", 1800, 640)


def transplant() -> None:
    from probes.transplant import scaling_strategy, transplant_grid, upper_bound
    from workbench.datasets.tasks import load_task

    handle = workbench.load("gemma-3-270m")
    layers = [0, 3, 6, 9, 12, 15, 17]
    grids = {lang: transplant_grid(handle, load_task("word_translation", lang)[:24], sources=layers, targets=layers,
                                   scoring="generation")
             for lang in ("fr", "ru")}
    for lang, grid in grids.items():
        _png(grid.figure(), f"transplant_{lang}.png")
    bound = upper_bound(grids)
    strategy = scaling_strategy(grids)
    table = bound.merge(strategy, on=["task", "lang", "site", "direction", "scoring", "chance"])
    table.to_csv(DOCS / "transplant_results.csv", index=False)
    print(bound.to_string(index=False))
    print(strategy.to_string(index=False))


def compare() -> None:
    from workbench.compare import compare as compare_models

    specs = ["gemma-3-270m", "ckpt:cc-tuning-demo", "ckpt:dft-demo"]
    frames = []
    for view, params in [("pivot", {"src_lang": "fr", "tgt_lang": "zh", "n_items": 60}),
                         ("evaluate", {"task": "capitals", "langs": ["en", "fr", "de", "zh"], "n": 30}),
                         ("evaluate", {"task": "mkqa", "langs": ["en", "fr", "zh"], "n": 20})]:
        result = compare_models(specs, view, params)
        name = params.get("task", view)
        frames.append(result.to_frame().assign(view=name))
        print(name, result.to_frame().to_string(index=False), sep="\n")
        _png(result.figure(), f"compare_{name}.png")
    pd.concat(frames).to_csv(DOCS / "compare_results.csv", index=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=["retrieval", "transplant", "compare"])
    args = parser.parse_args()
    {"retrieval": retrieval, "transplant": transplant, "compare": compare}[args.section]()
