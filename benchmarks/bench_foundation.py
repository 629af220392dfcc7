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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import workbench
    from workbench import engine
    from workbench.default_model import ensure_default_model
    from workbench.models import MODELS

    folder = ensure_default_model()
    workbench.load("gemma-3-270m")  # imports and page cache warm for both sides

    def plain_load():
        AutoTokenizer.from_pretrained(folder)
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)

    def wb_load():
        MODELS.clear()
        return workbench.load("gemma-3-270m")

    plain = _best(plain_load, repeat=2)
    model_only = _best(lambda: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), repeat=2)
    wb = _best(wb_load, repeat=2)
    handle = workbench.load("gemma-3-270m")
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    text = ("Le chat est assis sur le tapis et regarde la fenêtre ouverte du salon pendant que la pluie tombe "
            "doucement sur le jardin, et les enfants lisent des livres dans la cuisine chaude et calme. ") * 2
    ids = torch.tensor([handle.encode(text)[:56]] * 8)
    names = [f"blocks.{l}.hook_resid_post" for l in range(handle.n_layers)]
    noop = [(n, lambda t, hook: t) for n in names]
    with torch.no_grad():
        hf(ids)
        engine.forward(handle, ids, fwd_hooks=noop)
        plain_fwd, hooked_fwd = [], []
        for _ in range(3):  # interleaved so machine load hits both sides alike
            plain_fwd.append(_best(lambda: hf(ids).logits, repeat=1))
            hooked_fwd.append(_best(lambda: engine.forward(handle, ids, fwd_hooks=noop), repeat=1))
    p, h = min(plain_fwd), min(hooked_fwd)
    return [
        {"name": "load: workbench.load / HF model + tokenizer", "ratio": wb / plain,
         "detail": f"{wb:.2f}s vs {plain:.2f}s (bridge, facts and weight fingerprint included)"},
        {"name": "load: workbench.load / HF model alone", "ratio": wb / model_only,
         "detail": f"{wb:.2f}s vs {model_only:.2f}s (HF loads safetensors lazily; Gemma's 262k tokenizer dominates)"},
        {"name": "forward with 18 hooks / plain HF forward", "ratio": h / p,
         "detail": f"{h:.2f}s vs {p:.2f}s, batch {tuple(ids.shape)}"},
    ]
