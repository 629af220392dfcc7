"""Training throughput: the workbench loop (SFT) against a bare PyTorch + peft loop on the same
model, LoRA setup, batches and optimizer. The ratio is the loop's overhead (bridge hooks,
Accelerate, logging) in CPU seconds per token, which a busy machine disturbs less than wall time;
the detail gives SFT tokens/s (wall), the baseline the other methods are compared with.

A second row runs the same loop under bf16 autocast (`mixed_precision: bf16`, float32 weights) and
gives its wall seconds per token over the float32 run's: below 1 where bf16 pays (GPUs with bf16
tensor cores), often above 1 on CPUs without bf16 matrix units.
"""

from __future__ import annotations

import shutil
import time

import torch

STEPS = 6  # the first step of each side is a warm-up and is not counted
SETTINGS = dict(base_model="gemma-3-270m", data="demo", batch_size=4, max_length=64, lr=2e-4,
                lora=True, lora_r=16, lora_alpha=32, seed=0, warmup_ratio=0.0)


def _loop(**changes) -> tuple[float, float]:
    """(CPU seconds per token, wall tokens/s) of `trainers.loop.train` with SETTINGS and `changes`,
    steps 2..STEPS."""
    from trainers.config import TrainConfig
    from trainers.loop import run_dir, train
    from workbench import registry

    run = f"bench-sft-{int(time.time())}"
    marks: list[float] = []
    try:
        result = train(TrainConfig(**{**SETTINGS, **changes}, output=run, max_steps=STEPS),
                       progress=lambda fraction, message: marks.append(time.process_time()))
        rows = [m for m in result.metrics if m.get("event") == "train"]
    finally:
        shutil.rmtree(registry.run_folder(run), ignore_errors=True)
        shutil.rmtree(run_dir(run), ignore_errors=True)
    tokens = sum(m["tokens"] for m in rows[1:])
    wall = sum(m["tokens"] / m["tokens_per_s"] for m in rows[1:])
    return (marks[-1] - marks[0]) / tokens, tokens / wall


def _plain() -> tuple[float, float]:
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
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    records = load_jsonl("demo")
    sft = SFT()
    tokens, cpu, wall = 0, 0.0, 0.0
    for step in range(STEPS):
        batch = sft.collate(records[step::STEPS][: config.batch_size], tokenizer, config)
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        response_cross_entropy(logits, batch["labels"]).backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            tokens += int(batch["attention_mask"].sum())
            cpu += time.process_time() - start_cpu
            wall += time.perf_counter() - start_wall
    return cpu / tokens, tokens / wall


def run() -> list[dict]:
    plain_cpu, plain_rate = _plain()
    loop_cpu, loop_rate = _loop()
    _, bf16_rate = _loop(mixed_precision="bf16")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    setting = f"{SETTINGS['base_model']}, LoRA r16, batch 4 x <=64 tokens, {STEPS - 1} steps each"
    return [{"name": "train: SFT loop / plain PyTorch+peft (CPU s per token)", "ratio": loop_cpu / plain_cpu,
             "detail": f"SFT {loop_rate:.1f} tokens/s vs plain {plain_rate:.1f} tokens/s wall ({setting}, fp32)"},
            {"name": "training step bf16 autocast / fp32 (wall s per token)", "ratio": loop_rate / bf16_rate,
             "detail": f"bf16 {bf16_rate:.1f} vs fp32 {loop_rate:.1f} tokens/s wall on {device} ({setting})"}]
