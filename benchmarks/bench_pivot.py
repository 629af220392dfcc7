"""The pivot lens sweep (all layers, last position, token-set probabilities, entropy, answer rank)
vs one plain Transformers forward pass of the same padded batch, which unembeds every position of
the last layer only. Same converted folder, same process, interleaved repeats."""

from __future__ import annotations

import time

import torch


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run() -> list[dict]:
    from transformers import AutoModelForCausalLM

    import workbench
    from probes import pivot as lens
    from probes.tokens import prefix_token_ids
    from workbench.datasets.lexicon import load_concepts
    from workbench.default_model import ensure_default_model

    handle = workbench.load("gemma-3-270m")
    hf = AutoModelForCausalLM.from_pretrained(ensure_default_model(), dtype=torch.float32).eval()
    rows = lens.item_rows(load_concepts(["fr", "zh", "en"]), "translation", "fr", "zh")[:16]
    prompts = [lens.build_prompt("translation", "fr", "zh", lens.choose_demos(rows, i, "translation", 4, 0), row)
               for i, row in enumerate(rows)]
    batch = [handle.encode(p) for p in prompts]
    width = max(len(b) for b in batch)
    ids = torch.tensor([b + [handle.tokenizer.pad_token_id] * (width - len(b)) for b in batch])
    sets = [[prefix_token_ids(handle.tokenizer, row[key]) for row in rows] for key in ("src", "en", "tgt")]
    answers = [lens.answer_token(handle, b, p, row["tgt"]) for b, p, row in zip(batch, prompts, rows)]

    def sweep():
        lens.lens_statistics(handle, lens.last_token_residuals(handle, batch), sets, answers)

    with torch.no_grad():
        hf(ids)  # warm-up
        sweep()
        plain, ours = [], []
        for _ in range(3):  # interleaved, so load changes hit both sides
            plain.append(_best(lambda: hf(ids).logits, repeat=1))
            ours.append(_best(sweep, repeat=1))
    plain_s, ours_s = min(plain), min(ours)
    return [{
        "name": "pivot lens sweep, all layers / plain HF forward",
        "ratio": ours_s / plain_s,
        "detail": (f"{ours_s:.2f}s vs {plain_s:.2f}s, batch {tuple(ids.shape)}, "
                   f"{handle.n_layers} layers x last position"),
    }]
