"""Training cost of CC-Tuning and DFT against SFT: seconds per optimizer step (loss, backward, AdamW)
on the same model copy, the same batches of the demo set and the same LoRA setup, with the
methods interleaved step by step so that load changes hit all of them. Ratio = method / SFT time
per step; tokens/s counts the target-language batch's tokens (the same for every method)."""

from __future__ import annotations

import os
import statistics
import time

import torch

SPEC = os.environ.get("BENCH_TRAIN_MODEL", "gemma-3-270m")
STEPS = int(os.environ.get("BENCH_TRAIN_STEPS", "3"))


def run() -> list[dict]:
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
    batches = [records[i * 37 % len(records):][:config.batch_size] for i in range(STEPS + 1)]
    times: dict[str, list[float]] = {name: [] for name in methods}
    tokens = 0
    for step, records_ in enumerate(batches):
        for name, method in methods.items():
            batch = method.collate(records_, handle.tokenizer, config)
            start = time.perf_counter()
            loss, _ = method.loss(handle, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step:  # the first round warms up
                times[name].append(time.perf_counter() - start)
                tokens += int(batch["attention_mask"].sum()) if name == "sft" else 0
    sft = statistics.median(times["sft"])
    rows = [{"name": "train step: sft (LoRA, 4 x 64 tokens)", "ratio": 1.0,
             "detail": f"{sft:.2f} s/step, {tokens / sum(times['sft']):.0f} tokens/s on {SPEC}"}]
    for name in ("cc-tuning", "dft (logits)", "dft (feature)"):
        t = statistics.median(times[name])
        layers = f", layers i={dft.lc_layer} j={dft.et_layer}" if name.startswith("dft") else ""
        rows.append({"name": f"train step: {name} / sft", "ratio": t / sft,
                     "detail": f"{t:.2f} s/step vs {sft:.2f} s/step, {tokens / sum(times[name]):.0f} tokens/s{layers}"})
    return rows
