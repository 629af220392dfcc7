"""Training throughput: the workbench loop (SFT) against a bare PyTorch + peft loop on the same
model, LoRA setup, batches and optimizer. The ratio is the loop's overhead (bridge hooks,
Accelerate, logging); the detail gives SFT tokens/s, the baseline other methods are compared with.
"""

from __future__ import annotations

import shutil
import statistics
import time

import torch

STEPS = 6  # the first step of each side is a warm-up and is not counted
SETTINGS = dict(base_model="gemma-3-270m", data="demo", batch_size=4, max_length=64, lr=2e-4,
                lora=True, lora_r=16, lora_alpha=32, seed=0, warmup_ratio=0.0)


def _loop_tokens_per_s() -> float:
    from trainers.config import TrainConfig
    from trainers.loop import run_dir, train
    from workbench import registry

    run = f"bench-sft-{int(time.time())}"
    try:
        result = train(TrainConfig(**SETTINGS, output=run, max_steps=STEPS))
        return statistics.median(m["tokens_per_s"] for m in result.metrics if m.get("event") == "train" and m["step"] > 1)
    finally:
        shutil.rmtree(registry.run_folder(run), ignore_errors=True)
        shutil.rmtree(run_dir(run), ignore_errors=True)


def _plain_tokens_per_s() -> float:
    """The same steps written directly: HF model + peft LoRA + AdamW, no bridge, no Accelerate."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.config import TrainConfig
    from trainers.data import load_jsonl
    from trainers.methods.sft import SFT, response_cross_entropy
    from trainers.model import lora_config
    from workbench.default_model import ensure_default_model

    config = TrainConfig(**SETTINGS)
    folder = ensure_default_model()
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), lora_config(config))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    records = load_jsonl("demo")
    sft = SFT()
    rates = []
    for step in range(STEPS):
        batch = sft.collate(records[step * config.batch_size:(step + 1) * config.batch_size], tokenizer, config)
        start = time.perf_counter()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        response_cross_entropy(logits, batch["labels"]).backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            rates.append(int(batch["attention_mask"].sum()) / (time.perf_counter() - start))
    return statistics.median(rates)


def run() -> list[dict]:
    plain = _plain_tokens_per_s()
    loop = _loop_tokens_per_s()
    return [{"name": "train: SFT loop step / plain PyTorch+peft step", "ratio": plain / loop,
             "detail": f"SFT {loop:.0f} tokens/s vs plain {plain:.0f} tokens/s (gemma-3-270m, LoRA r16, "
                       f"batch 4 x <=64 tokens, CPU fp32, median of {STEPS - 1} steps)"}]
