"""Scale-out is real: `accelerate launch` with 2 CPU processes (gloo) reaches the same weights as
one process with the same global batch (2 x 2 micro-batches vs 1 x 2 accumulated). The launch
uses the committed examples/accelerate/cpu_2proc.yaml."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainers.config import TrainConfig
from trainers.data import DEMO_FILE
from trainers.loop import train
from workbench import registry

CPU_2PROC = Path(__file__).resolve().parent.parent / "examples" / "accelerate" / "cpu_2proc.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(ckpt):
    return load_file(str(ckpt.path / "model.safetensors"))


def test_two_processes_match_one_process_with_accumulation(tmp_path, monkeypatch, tiny_folders):
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(DEMO_FILE.read_text(encoding="utf-8").splitlines()[::23][:12]) + "\n", encoding="utf-8")
    base = TrainConfig(base_model=str(tiny_folders["gemma3"]), data=str(data), max_steps=3, batch_size=2,
                       max_length=40, lr=1e-2, seed=3, warmup_ratio=0.0)
    config = tmp_path / "two.yaml"
    config.write_text(base.replace(output="two").to_yaml())

    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
               "--main_process_port", str(_free_port()), "-m", "workbench", "train", "sft", "--config", str(config)]
    env = {**os.environ, "WORKBENCH_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    one = train(base.replace(output="one", grad_accum=2))
    two = registry.get("two")
    start = json.loads((home / "runs" / "two" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["num_processes"] == 2 and start["global_batch"] == 4 and two.manifest["num_processes"] == 2
    assert start["distributed_type"] == "MULTI_CPU"  # torchrun processes on CPUs, gloo

    a, b = _weights(one.checkpoint), _weights(two)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=2e-5, rtol=1e-4)
    two_losses = [json.loads(line)["loss"] for line in (home / "runs" / "two" / "metrics.jsonl").read_text().splitlines()
                  if '"event": "train"' in line]
    one_losses = [m["loss"] for m in one.metrics if m["event"] == "train"]
    assert two_losses == pytest.approx(one_losses, abs=1e-4)

    # the comparison can fail: half the global batch gives other weights
    half = train(base.replace(output="half"))
    c = _weights(half.checkpoint)
    assert max((c[n] - a[n]).abs().max().item() for n in a) > 1e-3
