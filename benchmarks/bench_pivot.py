"""The pivot lens and the logit-lens grid, each measured side by side in one process:

- the pivot sweep (all layers, last position, set probabilities, entropy, answer rank) vs one plain
  Transformers forward pass of the same padded batch, which unembeds every position of the last
  layer only;
- the streamed lens (`engine.lens_reduce`) vs the row-chunked full-vocabulary lens it replaced
  (kept below as the reference), in time, in agreement and in peak memory (RSS high-water mark of
  one subprocess per variant);
- bf16 vs fp32 weights on this CPU, with the agreement next to each ratio.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

GRID_PROMPT = 'The capital of France is Paris. Français: "eau" - 中文: "水"\nFrançais: "soleil" - 中文: "'  # 33 tokens
LONG_TOKENS = 2000


# --------------------------------------------------------------------------- reference: the lens before streaming
# Today's implementation until the streamed lens replaced it: rows in chunks of 2**26 logits, each
# chunk's full (rows, vocab) logits materialised. Kept only to measure against; not used elsewhere.

_OLD_LOGIT_BUDGET = 2 ** 26


def _old_chunks(n_rows: int, vocab: int):
    step = max(1, _OLD_LOGIT_BUDGET // max(1, vocab))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


@torch.no_grad()
def old_lens_statistics(handle, resid, token_sets, answers) -> dict[str, np.ndarray]:
    from workbench import engine

    n_layers, batch, d_model = resid.shape
    flat = resid.reshape(n_layers * batch, d_model)
    item = torch.arange(n_layers * batch) % batch
    index, mask = [], []
    for sets in token_sets:
        width = max(1, max(len(s) for s in sets))
        idx = torch.zeros(batch, width, dtype=torch.long)
        msk = torch.zeros(batch, width)
        for b, ids in enumerate(sets):
            idx[b, :len(ids)] = torch.tensor(sorted(ids), dtype=torch.long)
            msk[b, :len(ids)] = 1.0
        index.append(idx)
        mask.append(msk)
    answer = torch.tensor(list(answers), dtype=torch.long)
    probs = torch.zeros(n_layers * batch, len(index))
    entropy = torch.zeros(n_layers * batch)
    rank = torch.zeros(n_layers * batch, dtype=torch.long)
    for part in _old_chunks(n_layers * batch, handle.facts.d_vocab):
        logits = engine.lens_logits(handle, flat[part]).float()
        rows = item[part]
        target = logits.gather(1, answer[rows][:, None])
        rank[part] = (logits > target).sum(-1) + 1
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        p = (logits - lse).exp_()
        dot = torch.bmm(p.unsqueeze(1), logits.unsqueeze(2)).reshape(-1)
        entropy[part] = (lse.reshape(-1) - dot).clamp_(min=0) / math.log(2)
        for k, (idx, msk) in enumerate(zip(index, mask)):
            probs[part, k] = (p.gather(1, idx[rows]) * msk[rows]).sum(-1)
    return {"probs": probs.reshape(n_layers, batch, -1).numpy(), "entropy": entropy.reshape(n_layers, batch).numpy(),
            "rank": rank.reshape(n_layers, batch).numpy()}


@torch.no_grad()
def old_grid_top(handle, resid, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    from workbench import engine

    n_layers, n_pos, d_model = resid.shape
    flat = resid.reshape(n_layers * n_pos, d_model)
    top_ids = torch.zeros(n_layers * n_pos, top_k, dtype=torch.long)
    top_probs = torch.zeros(n_layers * n_pos, top_k)
    for part in _old_chunks(n_layers * n_pos, handle.facts.d_vocab):
        logp = torch.log_softmax(engine.lens_logits(handle, flat[part]).float(), dim=-1)
        values, indices = logp.topk(top_k, dim=-1)
        top_ids[part], top_probs[part] = indices, values.exp()
    return top_ids.reshape(n_layers, n_pos, top_k).numpy(), top_probs.reshape(n_layers, n_pos, top_k).numpy()


# --------------------------------------------------------------------------- measuring

@torch.no_grad()
def _float64(handle, resid, token_sets=None, top_k: int = 5) -> dict[str, np.ndarray]:
    """The lens in float64 from the float32 logits, a few rows at a time: the yardstick both
    implementations are held to."""
    from workbench import engine

    n_layers, batch, _ = resid.shape
    parts = []
    for layer in range(n_layers):
        logp = torch.log_softmax(engine.lens_logits(handle, resid[layer]).double(), dim=-1)  # (batch, vocab)
        p = logp.exp()
        row = {"entropy": -(p * logp).sum(-1), "top_probs": p.topk(top_k, dim=-1).values}
        if token_sets is not None:
            row["probs"] = torch.stack([torch.stack([p[b, sorted(ids)].sum() for b, ids in enumerate(per_item)])
                                        for per_item in token_sets], -1)
        parts.append(row)
    return {key: torch.stack([r[key] for r in parts]).numpy() / (math.log(2) if key == "entropy" else 1)
            for key in parts[0]}



def _interleaved(fns: dict, rounds: int = 3) -> tuple[dict[str, float], list]:
    """Best time of each function over rounds that alternate between them, so load changes hit
    all; and each function's last result."""
    out = {name: fn() for name, fn in fns.items()}  # warm-up
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}, list(out.values())


def _off(got: dict, ref: dict, key: str) -> str:
    return f"{np.abs(got[key] - ref[key]).max():.1e}"


def _grid_resid(handle, ids):
    from workbench import engine

    with torch.no_grad():
        return engine.residual_stream(handle, ids)[:, 0]


def _peak(variant: str) -> dict:
    """Run in a subprocess: the grid's lens on a 2,000-token prompt, and the RSS high-water mark
    it adds above the state after the forward pass (Linux `clear_refs` resets the mark)."""
    import workbench
    from workbench import engine

    handle = workbench.load("gemma-3-270m")
    text = GRID_PROMPT
    while len(handle.encode(text)) < LONG_TOKENS:
        text += " " + GRID_PROMPT
    ids = torch.tensor([handle.encode(text)[:LONG_TOKENS]])
    resid = _grid_resid(handle, ids)[-1:]  # the last layer's 2,000 positions: 2,000 lens rows
    lens = (lambda r: old_grid_top(handle, r, 5)) if variant == "old" else (lambda r: engine.lens_reduce(handle, r, top_k=5))
    lens(resid[:, :1])  # one-time allocations (thread pools, kernels) before the mark is reset
    status = lambda: dict(re.findall(r"(Vm\w+):\s+(\d+) kB", Path("/proc/self/status").read_text()))  # noqa: E731
    Path("/proc/self/clear_refs").write_text("5")
    base = int(status()["VmRSS"])
    lens(resid)
    return {"peak_mb": (int(status()["VmHWM"]) - base) / 1024, "base_mb": base / 1024, "rows": resid.shape[1]}


def _peak_in_subprocess(variant: str) -> dict:
    """glibc would serve blocks under its dynamic mmap threshold (up to 32 MB) from pages the
    forward pass left resident, hiding them from the RSS mark; a fixed 64 kB threshold maps every
    tensor afresh, so the mark sees each variant's real peak (and its timing means nothing)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, __file__, "--peak", variant], capture_output=True, text=True, check=True,
                         env=env, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> list[dict]:
    from transformers import AutoModelForCausalLM

    import workbench
    from probes import pivot as lens
    from probes.tokens import prefix_token_ids
    from workbench import engine
    from workbench.datasets.lexicon import load_concepts
    from workbench.default_model import ensure_default_model

    handle = workbench.load("gemma-3-270m")
    half = workbench.load("gemma-3-270m", dtype=torch.bfloat16)
    hf = AutoModelForCausalLM.from_pretrained(ensure_default_model(), dtype=torch.float32).eval()
    rows = lens.item_rows(load_concepts(["fr", "zh", "en"]), "translation", "fr", "zh")[:16]
    prompts = [lens.build_prompt("translation", "fr", "zh", lens.choose_demos(rows, i, "translation", 4, 0), row)
               for i, row in enumerate(rows)]
    batch = [handle.encode(p) for p in prompts]
    width = max(len(b) for b in batch)
    ids = torch.tensor([b + [handle.tokenizer.pad_token_id] * (width - len(b)) for b in batch])
    sets = [[prefix_token_ids(handle.tokenizer, row[key]) for row in rows] for key in ("src", "en", "tgt")]
    answers = [lens.answer_token(handle, b, p, row["tgt"]) for b, p, row in zip(batch, prompts, rows)]
    resid = lens.last_token_residuals(handle, batch)
    grid_ids = engine.as_ids(handle, GRID_PROMPT)

    def sweep(h):
        return lens.lens_statistics(h, lens.last_token_residuals(h, batch), sets, answers)

    def grid(h):
        return lens._grid(h, GRID_PROMPT, grid_ids, 5)

    def old_grid():
        return old_grid_top(handle, _grid_resid(handle, grid_ids), 5)

    with torch.no_grad():
        t, _ = _interleaved({"plain": lambda: hf(ids).logits, "sweep": lambda: sweep(handle)})
        ts, (new_s, old_s) = _interleaved({"new": lambda: lens.lens_statistics(handle, resid, sets, answers),
                                           "old": lambda: old_lens_statistics(handle, resid, sets, answers)})
        tg, (new_g, (old_ids, old_probs)) = _interleaved({"new": lambda: grid(handle), "old": old_grid})
        # bf16 runs about ten times slower on a CPU without native bf16 arithmetic: one timed round
        th, (s32, s16, g32, g16) = _interleaved({"sweep32": lambda: sweep(handle), "sweep16": lambda: sweep(half),
                                                 "grid32": lambda: grid(handle), "grid16": lambda: grid(half)},
                                                rounds=1)
    ref_s, ref_g = _float64(handle, resid, sets), _float64(handle, _grid_resid(handle, grid_ids))
    peak = {variant: _peak_in_subprocess(variant) for variant in ("new", "old")}
    return [
        {"name": "pivot lens sweep, all layers / plain HF forward", "ratio": t["sweep"] / t["plain"],
         "detail": (f"{t['sweep']:.2f}s vs {t['plain']:.2f}s, batch {tuple(ids.shape)}, "
                    f"{handle.n_layers} layers x last position")},
        {"name": "pivot lens statistics, streamed / row-chunked (old)", "ratio": ts["new"] / ts["old"],
         "detail": (f"{ts['new']:.2f}s vs {ts['old']:.2f}s, {handle.n_layers * len(batch)} rows; vs float64: "
                    f"max |dP| {_off(new_s, ref_s, 'probs')} vs {_off(old_s, ref_s, 'probs')}, "
                    f"max |dH| {_off(new_s, ref_s, 'entropy')} vs {_off(old_s, ref_s, 'entropy')} bits; "
                    f"ranks equal {np.mean(new_s['rank'] == old_s['rank']):.1%}")},
        {"name": "logit-lens grid, streamed / row-chunked (old)", "ratio": tg["new"] / tg["old"],
         "detail": (f"{tg['new']:.2f}s vs {tg['old']:.2f}s, {grid_ids.shape[1]} tokens x "
                    f"{handle.n_layers} layers, top-5; ids equal {np.mean(new_g.top_ids == old_ids):.1%}; "
                    f"vs float64: max |dp| {_off({'top_probs': new_g.top_probs}, ref_g, 'top_probs')} vs "
                    f"{_off({'top_probs': old_probs}, ref_g, 'top_probs')}")},
        {"name": f"lens peak memory, {LONG_TOKENS}-token prompt, streamed / old", "ratio":
            peak["new"]["peak_mb"] / peak["old"]["peak_mb"],
         "detail": (f"{peak['new']['peak_mb']:.0f} MB vs {peak['old']['peak_mb']:.0f} MB above the "
                    f"{peak['old']['base_mb']:.0f} MB after the forward pass (RSS high-water mark, one subprocess "
                    f"each; the last layer's {peak['old']['rows']} positions, top-5)")},
        {"name": "pivot lens sweep, bf16 / fp32", "ratio": th["sweep16"] / th["sweep32"],
         "detail": (f"{th['sweep16']:.2f}s vs {th['sweep32']:.2f}s; max |dP| per item "
                    f"{np.abs(s16['probs'] - s32['probs']).max():.3f}, of the mean curves "
                    f"{np.abs(s16['probs'].mean(1) - s32['probs'].mean(1)).max():.3f}")},
        {"name": "logit-lens grid, bf16 / fp32", "ratio": th["grid16"] / th["grid32"],
         "detail": (f"{th['grid16']:.2f}s vs {th['grid32']:.2f}s; top-1 lens token equal "
                    f"{np.mean(g16.top_ids[..., 0] == g32.top_ids[..., 0]):.1%}")},
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--peak"]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        print(json.dumps(_peak(sys.argv[2])))
