"""Foundation costs vs plain Transformers on the same converted folder: loading, hooked forward."""

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
    from workbench import ops
    from workbench.default_model import ensure_default_model
    from workbench.models import MODELS

    folder = ensure_default_model()
    hf_load = _best(lambda: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), repeat=2)

    def wb_load():
        MODELS.clear()
        workbench.load("gemma-3-270m")

    wb = _best(wb_load, repeat=2)
    handle = workbench.load("gemma-3-270m")
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    texts = ["Le chat est assis sur le tapis et regarde la fenêtre ouverte du salon"] * 8
    ids = torch.stack([torch.tensor(handle.encode(t))[:56] for t in texts])
    names = [f"blocks.{l}.hook_resid_post" for l in range(handle.n_layers)]
    noop = [(n, lambda t, hook: t) for n in names]
    with torch.no_grad():
        hf(ids)  # warm-up
        plain = _best(lambda: hf(ids).logits)
        hooked = _best(lambda: ops.forward(handle, ids, fwd_hooks=noop))
    return [
        {"name": "load: workbench.load / AutoModelForCausalLM", "ratio": wb / hf_load,
         "detail": f"{wb:.2f}s vs {hf_load:.2f}s (includes the bridge and the weight fingerprint)"},
        {"name": "forward with 18 hooks / plain HF forward", "ratio": hooked / plain,
         "detail": f"{hooked:.2f}s vs {plain:.2f}s, batch {tuple(ids.shape)}"},
    ]
