"""Training at scale on CPUs: gradient checkpointing that keeps the methods' hooks, bf16 autocast,
the weights' dtype, sharded-run checkpoints, and the committed Accelerate launch configurations."""

import json
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from trainers.config import ConfigError, TrainConfig
from trainers.data import DEMO_FILE
from trainers.methods import build_method
from trainers.model import clean_state_dict, load_for_training
from workbench import engine, registry
from workbench.errors import InputError

ACCELERATE_DIR = Path(__file__).resolve().parent.parent / "examples" / "accelerate"
CONFIGS = sorted(ACCELERATE_DIR.glob("*.yaml"))


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def records():
    lines = DEMO_FILE.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[::37][:4]]


@pytest.fixture(scope="module")
def data(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------- configuration

def test_precision_fields_are_checked():
    with pytest.raises(ConfigError, match="dtype must be one of float32, bfloat16, float16 .got 'fp32'"):
        TrainConfig(dtype="fp32")
    with pytest.raises(ConfigError, match="mixed_precision must be one of no, fp16, bf16 .got 'bfloat16'"):
        TrainConfig(mixed_precision="bfloat16")
    with pytest.raises(ConfigError, match="fp16 needs dtype: float32"):
        TrainConfig(mixed_precision="fp16", dtype="float16")
    with pytest.raises(ConfigError, match="gradient_checkpointing must be bool"):
        TrainConfig(gradient_checkpointing="yes")
    cfg = TrainConfig().with_overrides(["dtype=bfloat16", "mixed_precision=bf16", "gradient_checkpointing=true"])
    assert (cfg.dtype, cfg.mixed_precision, cfg.gradient_checkpointing) == ("bfloat16", "bf16", True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_fp16_on_cpu_is_refused_before_loading(data):
    with pytest.raises(InputError, match="fp16 needs a GPU"):
        from trainers.loop import train

        train(TrainConfig(base_model="/nonexistent/model", data=str(data), mixed_precision="fp16"))


def test_dtype_reaches_the_loaded_weights(tiny_folders):
    folder = str(tiny_folders["gemma3"])
    model = load_for_training(folder, TrainConfig(base_model=folder, dtype="bfloat16"))
    assert {p.dtype for p in model.handle.hf_model.parameters()} == {torch.bfloat16}


# ---------------------------------------------------------------------- gradient checkpointing

METHOD_CASES = {
    "sft": ("sft", {}, False),
    "cc-tuning": ("cc-tuning", {}, False),
    "cc-tuning-lora": ("cc-tuning", {}, True),
    "dft-logits": ("dft", {"lc_layer": 0, "et_layer": 1}, False),
    "dft-feature": ("dft", {"signal": "feature", "lc_layer": 0, "et_layer": 1, "detach_english": False}, False),
}


def _loss_and_grads(folder: str, records: list[dict], method_name: str, method_args: dict, lora: bool,
                    checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    config = TrainConfig(base_model=folder, method=method_name, method_args=method_args, max_length=48, lora=lora,
                         lora_r=4, gradient_checkpointing=checkpointing)
    torch.manual_seed(0)
    model = load_for_training(folder, config)
    method = build_method(method_name, method_args)
    extras = method.setup(model.handle, config, None) or []
    batch = method.collate(records, model.handle.tokenizer, config)
    torch.manual_seed(1)  # CC-Tuning's Gumbel sample
    loss, _ = method.loss(model.handle, batch)
    loss.backward()
    params = dict(model.handle.hf_model.named_parameters())
    params.update({f"extras.{i}.{n}": p for i, m in enumerate(extras) for n, p in m.named_parameters()})
    return loss.detach(), {n: p.grad for n, p in params.items() if p.grad is not None}


@pytest.mark.parametrize("case", METHOD_CASES)
def test_checkpointing_gives_the_same_loss_and_gradients(tiny_folders, records, case):
    """CC-Tuning and DFT read (and CC-Tuning writes) activations through hooks inside the
    checkpointed layers: the recompute must see the same hooks as the forward."""
    method_name, method_args, lora = METHOD_CASES[case]
    folder = str(tiny_folders["gemma3"])
    loss, grads = _loss_and_grads(folder, records, method_name, method_args, lora, checkpointing=False)
    loss_ckpt, grads_ckpt = _loss_and_grads(folder, records, method_name, method_args, lora, checkpointing=True)
    torch.testing.assert_close(loss_ckpt, loss, atol=1e-5, rtol=0)
    assert grads_ckpt.keys() == grads.keys() and grads
    if lora:
        assert all("lora_" in n or n.startswith("extras.") for n in grads)
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], atol=1e-5, rtol=0, msg=name)


@pytest.mark.filterwarnings("ignore:A forward hook edited hook_scale/hook_normalized")  # expected: it edits one
@pytest.mark.parametrize("site", ["blocks.0.hook_attn_out", "blocks.0.ln1.hook_normalized"])
def test_the_backward_recomputes_layers_with_the_forward_hooks(tiny_folders, site):
    """A checkpointed layer runs twice, in the forward and inside backward, both times with the
    forward's hooks; a hook on a norm's hook_normalized also changes how the bridge computes it."""
    folder = str(tiny_folders["gemma3"])
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    counts, grads = {}, {}
    for checkpointing in (False, True):
        model = load_for_training(folder, TrainConfig(base_model=folder, gradient_checkpointing=checkpointing))
        calls: list[bool] = []

        def double(tensor, hook):
            calls.append(torch.is_grad_enabled())
            return tensor * 2.0

        logits = engine.forward(model.handle, ids, [(site, double)], grad=True)
        logits.float().pow(2).mean().backward()
        counts[checkpointing] = len(calls)
        grads[checkpointing] = {n: p.grad for n, p in model.handle.hf_model.named_parameters() if p.grad is not None}
        with torch.no_grad():
            engine.forward(model.handle, ids)
        assert len(calls) == counts[checkpointing]  # the hook is gone once the pass is over
    assert counts == {False: 1, True: 2}
    for name, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name], grad, atol=1e-5, rtol=0, msg=name)


def test_checkpointed_training_run_matches(tiny_folders, data):
    """The loop with checkpointing on reaches the same weights and Decision Maker (CC-Tuning)."""
    from trainers.loop import train
    from trainers.methods.cc_tuning.method import DECISION_KEY, read_state

    base = TrainConfig(method="cc-tuning", base_model=str(tiny_folders["gemma3"]), data=str(data), max_steps=2,
                       batch_size=2, max_length=48, lr=5e-3, seed=2)
    plain = train(base.replace(output="plain"))
    ckpt = train(base.replace(output="ckpt", gradient_checkpointing=True))
    a, b = load_file(str(plain.checkpoint.path / "model.safetensors")), load_file(str(ckpt.checkpoint.path / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=0)
    torch.testing.assert_close(read_state(ckpt.checkpoint.path)[DECISION_KEY], read_state(plain.checkpoint.path)[DECISION_KEY],
                               atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- bf16 autocast

def test_bf16_autocast_trains_on_cpu_and_keeps_float32_weights(tiny_folders, data, monkeypatch):
    from trainers.loop import train
    from trainers.methods import sft

    seen: list[torch.dtype] = []
    cross_entropy = sft.response_cross_entropy
    monkeypatch.setattr(sft, "response_cross_entropy", lambda logits, labels: seen.append(logits.dtype) or cross_entropy(logits, labels))
    base = TrainConfig(base_model=str(tiny_folders["gemma3"]), data=str(data), max_steps=6, batch_size=4,
                       max_length=48, lr=5e-3, seed=0)
    bf16 = train(base.replace(output="bf16", mixed_precision="bf16"))
    assert set(seen) == {torch.bfloat16}  # the forward ran under autocast
    seen.clear()
    fp32 = train(base.replace(output="fp32"))
    assert set(seen) == {torch.float32}
    losses = [m["loss"] for m in bf16.metrics if m["event"] == "train"]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.1
    reference = [m["loss"] for m in fp32.metrics if m["event"] == "train"]
    assert losses[0] == pytest.approx(reference[0], abs=0.05)  # the same model, rounded differently
    saved = load_file(str(bf16.checkpoint.path / "model.safetensors"))
    assert {v.dtype for v in saved.values()} == {torch.float32}


def test_bfloat16_weights_train_and_export_as_bfloat16(tiny_folders, data):
    from trainers.loop import train

    result = train(TrainConfig(base_model=str(tiny_folders["gemma3"]), data=str(data), max_steps=2, batch_size=2,
                               max_length=48, lr=5e-3, dtype="bfloat16", mixed_precision="bf16", output="half"))
    saved = load_file(str(result.checkpoint.path / "model.safetensors"))
    assert {v.dtype for v in saved.values()} == {torch.bfloat16}


# ---------------------------------------------------------------------- sharded checkpoints

def test_sharded_checkpoints_export_the_gathered_state_and_no_resume_state(tiny_folders, data, monkeypatch):
    """Under FSDP / ZeRO-3 the live parameters are shards: a checkpoint must be written from the
    state dict Accelerate gathers (here: a stand-in that differs from the live weights by 1), the
    method's Decision Maker included, and carry no resume state."""
    from accelerate import Accelerator

    from trainers import loop
    from trainers.methods.cc_tuning.method import DECISION_KEY, read_state

    gathered: list[dict[str, torch.Tensor]] = []
    original = Accelerator.get_state_dict

    def gather(self, model, unwrap=True):
        gathered.append({k: v + 1 for k, v in original(self, model, unwrap).items()})
        return gathered[-1]

    monkeypatch.setattr(Accelerator, "get_state_dict", gather)
    monkeypatch.setattr(loop._Loop, "sharded", property(lambda self: True))
    config = TrainConfig(method="cc-tuning", base_model=str(tiny_folders["gemma3"]), data=str(data), max_steps=2,
                         batch_size=2, max_length=48, lr=5e-3, save_every=1, keep_last=2, output="sharded")
    result = loop.train(config)
    first, last = (registry.get(f"sharded@{s}") for s in (1, 2))
    assert not (first.path / "resume").exists() and not (last.path / "resume").exists()
    saved = load_file(str(last.path / "model.safetensors"))
    state = gathered[-1]
    live = clean_state_dict(result.handle.hf_model)
    for name, value in saved.items():
        torch.testing.assert_close(value, live[name] + 1, atol=1e-6, rtol=0)
    torch.testing.assert_close(read_state(last.path)[DECISION_KEY], state["extras.0.proj.weight"])
    with pytest.raises(InputError, match="has no resume state"):
        loop.train(config.replace(resume=True))


def test_the_container_names_the_layers_fsdp_wraps(tiny_folders, data):
    from accelerate.utils.dataclasses import get_module_class_from_name

    from trainers.loop import _LossModule
    from trainers.methods.sft import SFT

    folder = str(tiny_folders["llama"])
    container = _LossModule(load_for_training(folder, TrainConfig(base_model=folder)), [], SFT())
    names = list(container._no_split_modules)
    assert names == ["LlamaDecoderLayer"]
    assert get_module_class_from_name(container, names[0]) is not None


# ---------------------------------------------------------------------- launch configurations

def test_the_five_launch_configurations_are_committed():
    assert {p.name for p in CONFIGS} == {"single_gpu.yaml", "multi_gpu_ddp.yaml", "fsdp.yaml", "deepspeed_zero3.yaml",
                                         "cpu_2proc.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_launch_configuration_is_what_accelerate_reads(path):
    """Each file loads as Accelerate's own config (unknown keys refused), every nested key is a
    launch option, and its header documents a command the workbench CLI accepts."""
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in ("compute_environment", "distributed_type", "num_processes", "num_machines", "machine_rank",
                "mixed_precision"):
        assert key in raw, key
    ClusterConfig.from_yaml_file(str(path))
    options = {action.dest for action in launch_command_parser()._actions}
    for section in ("fsdp_config", "deepspeed_config"):
        unknown = set(raw.get(section) or {}) - options
        assert not unknown, f"{path.name}: {section} keys Accelerate does not know: {unknown}"
    assert "gradient_accumulation_steps" not in (raw.get("deepspeed_config") or {})  # grad_accum decides
    command = _documented_command(path)
    assert f"accelerate launch --config_file examples/accelerate/{path.name} -m workbench train" in command
    assert _documented_config(command).mixed_precision == raw["mixed_precision"]  # the training config decides


def _documented_command(path: Path) -> str:
    """The command in the file's comment header, continuation lines joined."""
    header = path.read_text(encoding="utf-8").split("\ncompute_environment")[0]
    assert header.startswith("#")
    return " ".join(line.lstrip("# ").rstrip("\\ ") for line in header.splitlines()
                    if "accelerate launch" in line or line.startswith("#     "))


def _documented_config(command: str) -> TrainConfig:
    """The TrainConfig the `workbench train ...` part of a documented command describes."""
    import argparse

    import trainers.cli  # noqa: F401 - registers `train`
    from trainers.cli import build_config
    from workbench.cli import COMMANDS

    words = shlex.split(command)
    argv = words[words.index("workbench") + 2:]
    parser = argparse.ArgumentParser()
    COMMANDS["train"][1](parser)
    args = parser.parse_args(argv)
    args.config = str(ACCELERATE_DIR.parent.parent / args.config)
    return build_config(args)


def _launch_env(path: Path) -> dict[str, str]:
    """The environment `accelerate launch --config_file PATH` gives the training processes."""
    import os

    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(
        ["--config_file", str(path), "--main_process_port", "29555", "-m", "workbench", "train", "sft"]))
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        env = prepare_deepspeed_cmd_env(args)[1]
    else:
        env = prepare_multi_gpu_env(args)
    return {k: v for k, v in env.items() if os.environ.get(k) != v}


def test_fsdp_and_zero3_configurations_launch_as_documented():
    fsdp = _launch_env(ACCELERATE_DIR / "fsdp.yaml")
    assert fsdp["ACCELERATE_USE_FSDP"] == "true" and fsdp["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
    assert fsdp["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP" and fsdp["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert fsdp["FSDP_USE_ORIG_PARAMS"] == "true" and fsdp["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "false"
    assert fsdp["FSDP_ACTIVATION_CHECKPOINTING"] == "false"
    zero3 = _launch_env(ACCELERATE_DIR / "deepspeed_zero3.yaml")
    assert zero3["ACCELERATE_USE_DEEPSPEED"] == "true" and zero3["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
    assert zero3["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"
    assert zero3["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "false" and zero3["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert {"ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "ACCELERATE_GRADIENT_CLIPPING"}.isdisjoint(zero3)
    ddp = _launch_env(ACCELERATE_DIR / "cpu_2proc.yaml")
    assert ddp["ACCELERATE_MIXED_PRECISION"] == "no" and "ACCELERATE_USE_FSDP" not in ddp

