"""One command for a machine with a GPU: every probe and one training step of every method on the
default model, on CUDA in bfloat16 and float32, each compared with the CPU float32 result, with
times and peak GPU memory. Without a GPU it says so and runs the CPU reference part, so the script
itself is checked everywhere.

    python benchmarks/gpu_check.py [--model gemma-3-270m] [--quick]

Tolerances (stated, not tuned after the fact): float32 on CUDA vs CPU — lens probabilities within
1e-3 and the same greedy tokens; bfloat16 — lens probabilities within 0.05, pivot curves within
0.05, top-1 lens tokens equal on at least 80% of (layer, position) cells, one training step's loss
within 2% of the CPU float32 loss.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "Français: \"fleur\" - 中文: \""
TOL = {"float32": {"prob": 1e-3, "curve": 1e-3, "top1": 0.99, "loss": 1e-3},
       "bfloat16": {"prob": 0.05, "curve": 0.05, "top1": 0.80, "loss": 0.02}}
METHODS = ("sft", "tft", "cc-tuning", "dft", "unlearn-ga", "unlearn-npo")


def _timed(fn: Callable[[], Any], device: str) -> tuple[Any, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


@torch.no_grad()
def probes(handle, quick: bool) -> dict[str, Any]:
    """What each probe returns on one handle, as arrays to compare across devices and dtypes."""
    from probes.pivot import logit_lens_grid, pivot
    from probes.transplant import transplant_grid
    from workbench import engine
    from workbench.datasets.lexicon import load_concepts
    from workbench.datasets.tasks import load_task

    ids = engine.as_ids(handle, PROMPT)
    resid = engine.residual_stream(handle, ids)[:, 0]
    lens = torch.softmax(engine.lens_logits(handle, resid).float(), -1)
    out = {
        "lens_probs": lens.max(-1).values.cpu().numpy(),
        "lens_top1": lens.argmax(-1).cpu().numpy(),
        "greedy": np.array(engine.generate_greedy(handle, ids, 12).new_ids[0]),
        "grid_top1": logit_lens_grid(handle, PROMPT, use_cache=False).top_ids[..., 0],
    }
    n = 12 if quick else 40
    run = pivot(handle, load_concepts(["en", "fr", "zh"]).head(n), "translation", src_lang="fr", tgt_lang="zh",
                use_cache=False)
    out["pivot_curves"] = np.stack([run.prob(lang).mean(axis=0) for lang in ("fr", "en", "zh")])
    items = load_task("capitals", "fr")[: 4 if quick else 10]
    grid = transplant_grid(handle, items, sources=[3, 9], targets=[3, 9], use_cache=False)
    out["transplant_acc"] = np.asarray(grid.accuracy(), dtype=float)
    return out


def train_losses(spec: str, device: str, dtype: str) -> dict[str, float]:
    """One step's loss (before the update) of every method on the same batch."""
    from trainers.config import TrainConfig
    from trainers.data import load_jsonl
    from trainers.methods import build_method
    from trainers.model import load_for_training

    losses = {}
    for name in METHODS:
        config = TrainConfig(method=name, base_model=spec, data="demo", batch_size=2, max_length=48, lora=True,
                             lora_r=8, seed=0)  # float32 weights; bf16 runs under autocast, as mixed_precision does
        method = build_method(name)
        model = load_for_training(spec, config, device=device)
        method.setup(model.handle, config, SimpleNamespace(device=torch.device(device)))
        records = _records(load_jsonl("demo", ("instruction", "output", "instruction_en", "output_en")))
        batch = {k: v.to(model.handle.device) for k, v in method.collate(records[:2], model.handle.tokenizer, config).items()}
        with torch.autocast(device_type=device.split(":")[0], dtype=getattr(torch, dtype), enabled=dtype != "float32"):
            loss, _ = method.loss(model.handle, batch)
        loss.backward()
        losses[name] = float(loss.detach())
    return losses


def _records(records: list[dict]) -> list[dict]:
    """Demo records with the unlearning methods' fields filled from the demo's own pairs."""
    return [{**r, "retain_instruction": records[(i + 1) % len(records)]["instruction"],
             "retain_output": records[(i + 1) % len(records)]["output"], "idk": "I don't know."}
            for i, r in enumerate(records)]


def compare(name: str, ref: dict[str, Any], got: dict[str, Any], dtype: str) -> list[str]:
    tol, lines = TOL[dtype], []
    dprob = float(np.abs(ref["lens_probs"] - got["lens_probs"]).max())
    top1 = float((ref["grid_top1"] == got["grid_top1"]).mean())
    dcurve = float(np.abs(ref["pivot_curves"] - got["pivot_curves"]).max())
    dacc = float(np.abs(ref["transplant_acc"] - got["transplant_acc"]).max())
    same_greedy = np.array_equal(ref["greedy"], got["greedy"])
    checks = [("lens max |dP|", dprob, dprob <= tol["prob"]), ("grid top-1 agreement", top1, top1 >= tol["top1"]),
              ("pivot curves max |dP|", dcurve, dcurve <= tol["curve"]),
              ("transplant accuracy max |d|", dacc, dtype == "bfloat16" or dacc == 0.0),
              ("greedy tokens equal", float(same_greedy), dtype == "bfloat16" or same_greedy)]
    for label, value, ok in checks:
        lines.append(f"  {name:<22} {label:<28} {value:8.4f}  {'ok' if ok else 'OUT OF TOLERANCE'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--quick", action="store_true", help="fewer items (a smoke test)")
    parser.add_argument("--no-train", action="store_true", help="probes only")
    args = parser.parse_args(argv)
    import workbench

    report: list[str] = []
    cpu = workbench.load(args.model, device="cpu", dtype="float32")
    ref, seconds = _timed(lambda: probes(cpu, args.quick), "cpu")
    report.append(f"cpu float32: probes {seconds:.1f} s")
    ref_losses = None if args.no_train else train_losses(args.model, "cpu", "float32")
    if not torch.cuda.is_available():
        print("No CUDA GPU on this machine: ran the CPU float32 reference only.")
        print("\n".join(report))
        if ref_losses:
            print("  one-step losses: " + ", ".join(f"{k} {v:.3f}" for k, v in ref_losses.items()))
        return 0
    failures = 0
    for dtype in ("float32", "bfloat16"):
        torch.cuda.reset_peak_memory_stats()
        handle = workbench.load(args.model, device="cuda", dtype=dtype)
        got, seconds = _timed(lambda: probes(handle, args.quick), "cuda")
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
        report.append(f"cuda {dtype}: probes {seconds:.1f} s, peak GPU memory {peak:.0f} MiB")
        lines = compare(f"cuda {dtype}", ref, got, dtype)
        if ref_losses:
            torch.cuda.reset_peak_memory_stats()
            losses, seconds = _timed(lambda: train_losses(args.model, "cuda", dtype), "cuda")
            peak = torch.cuda.max_memory_allocated() / 2 ** 20
            report.append(f"cuda {dtype}: one step of {len(losses)} methods {seconds:.1f} s, peak {peak:.0f} MiB")
            for name, loss in losses.items():
                rel = abs(loss - ref_losses[name]) / max(abs(ref_losses[name]), 1e-9)
                ok = rel <= TOL[dtype]["loss"]
                lines.append(f"  cuda {dtype:<17} loss {name:<23} {rel:8.4f}  {'ok' if ok else 'OUT OF TOLERANCE'}")
        failures += sum("OUT OF TOLERANCE" in line for line in lines)
        report.extend(lines)
        workbench.models.MODELS.clear()
    print("\n".join(report))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
