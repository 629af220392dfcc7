"""XTransplant grid: the cache-sharing path vs the naive loop of independent runs, on the default
model, for the answer-probability grid and for the grid with 20-token generations.

The naive loop (`transplant_grid(..., fast=False)`) runs, per (source, target) pair, one auxiliary
run, one hooked prompt run and, when generating, one `ops.generate_greedy` call. The fast path
runs each auxiliary prompt and each prompt prefix once and all pairs of an item as one batch over
a shared KV cache. A few items and a subset of layers keep the naive side short; the fast path's
advantage grows with the number of pairs (a full 18 x 18 grid has 324 per item).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

N_ITEMS = 2
LAYERS = (0, 6, 12, 17)
TASK, LANG = "word_translation", "fr"


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run() -> list[dict]:
    import numpy as np

    import workbench
    from probes.transplant import transplant_grid
    from workbench.datasets.tasks import load_task

    handle = workbench.load("gemma-3-270m")
    items = load_task(TASK, LANG)[:N_ITEMS]
    common = dict(sources=LAYERS, targets=LAYERS, control=False, use_cache=False)
    transplant_grid(handle, items[:1], sources=[0], targets=[0], control=False, use_cache=False)  # warm up
    pairs = N_ITEMS * len(LAYERS) ** 2
    where = f"{N_ITEMS} {TASK}/{LANG} items x {len(LAYERS)}x{len(LAYERS)} pairs ({pairs} runs)"
    rows = []
    for scoring, extra, label in (
        ("probability", {}, "answer-probability grid"),
        ("generation", {"max_new_tokens": 20, "stop_at_newline": False}, "20-token generation grid"),
    ):
        fast, t_fast = _timed(lambda: transplant_grid(handle, items, scoring=scoring, **common, **extra))
        naive, t_naive = _timed(lambda: transplant_grid(handle, items, scoring=scoring, fast=False, **common, **extra))
        same = np.allclose(fast.p, naive.p, rtol=1e-3, atol=1e-9) and (fast.correct == naive.correct).all()
        if scoring == "generation":
            same = same and (fast.texts == naive.texts).all()
        rows.append({"name": f"xtransplant {label}: cache-sharing / naive loop", "ratio": t_fast / t_naive,
                     "detail": f"{t_fast:.1f}s vs {t_naive:.1f}s, {where}; results {'equal' if same else 'DIFFER'}"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']}: {row['ratio']:.3f}x  {row['detail']}")
