"""Training cost of CC-Tuning and DFT against SFT: time per optimizer step (loss, backward, AdamW)
on one model copy, the same batches of the demo set and the same LoRA setup, the methods
interleaved step by step. On a CPU the clock is this process's CPU time on one thread, so other
processes on a shared machine do not distort the comparison; on a GPU it is wall time after a
synchronize.
Ratio = the method's best step time / SFT's; tokens/s counts the target-language batch's tokens
(the same batches for every method)."""

from __future__ import annotations

import os
import time

import torch

SPEC = os.environ.get("BENCH_TRAIN_MODEL", "gemma-3-270m")
ROUNDS = int(os.environ.get("BENCH_TRAIN_STEPS", "3"))


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def run() -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure()
    finally:
        torch.set_num_threads(threads)


def _measure() -> list[dict]:
    from trainers.config import TrainConfig
    from trainers.data import load_jsonl
    from trainers.methods import build_method
    from trainers.model import load_for_training, trainable_parameters

    config = TrainConfig(method="sft", base_model=SPEC, data="demo", batch_size=4, max_length=64, lora=True,
                         lora_r=16, lora_alpha=32, seed=0)
    model = load_for_training(SPEC, config)
    handle = model.handle
    methods = {"sft": build_method("sft"), "cc-tuning": build_method("cc-tuning"),
               "dft (logits)": build_method("dft", {"signal": "logits"})}
    params = list(trainable_parameters(model).values())
    for method in methods.values():  # DFT picks its layers from the lens entropy profile here
        extras = method.setup(handle, config.replace(method=method.name), None)
        params += [p for m in extras for p in m.parameters()]
    dft = methods["dft (logits)"]
    methods["dft (feature)"] = build_method("dft", {"signal": "feature", "lc_layer": dft.lc_layer,
                                                    "et_layer": dft.et_layer})
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    records = load_jsonl("demo", ("instruction", "output", "instruction_en", "output_en"))
    batches = [records[i * 37 % len(records):][:config.batch_size] for i in range(ROUNDS + 1)]
    times: dict[str, list[float]] = {name: [] for name in methods}
    tokens: list[int] = []
    for round_, chosen in enumerate(batches):
        for name, method in methods.items():
            batch = method.collate(chosen, handle.tokenizer, config)
            start = _clock(handle.device)
            loss, _ = method.loss(handle, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            elapsed = _clock(handle.device) - start
            if round_:  # the first round warms up
                times[name].append(elapsed)
                if name == "sft":
                    tokens.append(int(batch["attention_mask"].sum()))
    mean_tokens = sum(tokens) / len(tokens)
    sft = min(times["sft"])
    clock = "GPU wall" if handle.device.type == "cuda" else "CPU"
    rows = [{"name": "train step: sft (LoRA r16, batch 4)", "ratio": 1.0,
             "detail": f"{sft:.2f} {clock} s/step, {mean_tokens / sft:.0f} tokens/s on {SPEC}"}]
    for name in ("cc-tuning", "dft (logits)", "dft (feature)"):
        t = min(times[name])
        layers = f"; layers i={dft.lc_layer}, j={dft.et_layer}" if name.startswith("dft") else ""
        rows.append({"name": f"train step: {name} / sft", "ratio": t / sft,
                     "detail": f"{t:.2f} vs {sft:.2f} {clock} s/step, {mean_tokens / t:.0f} tokens/s{layers}"})
    return rows
