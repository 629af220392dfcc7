"""The training loop on a tiny model: SFT loss, checkpoints, exact resume, cancellation, lineage."""

import json

import pytest
import torch
from safetensors.torch import load_file

import workbench
from trainers.config import TrainConfig
from trainers.data import DEMO_FILE, DataError
from trainers.loop import request_stop, run_dir, train
from trainers.methods.sft import SFT
from trainers.model import clean_state_dict
from workbench import registry
from workbench.errors import InputError


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """10 demo records in three languages (short: tiny-model runs take a second)."""
    lines = DEMO_FILE.read_text(encoding="utf-8").splitlines()
    picked = [line for line in lines if '"task": "capital"' in line][:10:2] + \
             [line for line in lines if '"task": "opposite"' in line][:10:2]
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("\n".join(picked) + "\n", encoding="utf-8")
    return path


def _config(tiny_folders, data, **kw):
    base = dict(base_model=str(tiny_folders["gemma3"]), data=str(data), max_steps=4, batch_size=2,
                max_length=48, lr=5e-3, seed=1, warmup_ratio=0.25)
    return TrainConfig(**{**base, **kw})


def test_sft_loss_is_cross_entropy_on_response_tokens(tiny_folders, data):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_folders["gemma3"]
    handle = workbench.load(str(folder))
    records = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()[:3]]
    cfg = _config(tiny_folders, data, max_length=256)  # no truncation
    sft = SFT()
    with torch.no_grad():
        loss, terms = sft.loss(handle, sft.collate(records, handle.tokenizer, cfg))

    # independently: one unpadded sequence per record, plain HF model, sum of NLL over the response
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    total, count = 0.0, 0
    for r in records:
        prompt = [tok.bos_token_id] + tok(r["instruction"] + "\n", add_special_tokens=False)["input_ids"]
        response = tok(r["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt + response])).logits[0].double(), -1)
        for i, token in enumerate(response):
            total -= logp[len(prompt) - 1 + i, token].item()
            count += 1
    assert loss.item() == pytest.approx(total / count, abs=1e-5)
    assert terms == {"ce": pytest.approx(loss.item())}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_checkpoint_reloads_to_identical_logits(tiny_folders, data, lora):
    from transformers import AutoModelForCausalLM

    result = train(_config(tiny_folders, data, output="ck", max_steps=2, lora=lora, lora_r=4))
    assert result.state == "finished" and result.checkpoint.name == "ck@2"
    files = {p.name for p in result.checkpoint.path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]])
    trained = result.handle.hf_model.eval()
    with torch.no_grad():
        expected = trained(input_ids=ids).logits
        via_spec = workbench.load(result.checkpoint.spec).hf_model(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(result.checkpoint.path, dtype=torch.float32).eval()
        via_hf = plain(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_folders["gemma3"], dtype=torch.float32).eval()(input_ids=ids).logits
    tol = 1e-5 if lora else 0.0  # LoRA is merged into the weights: same function, different rounding
    torch.testing.assert_close(via_spec, expected, atol=tol, rtol=0)
    # plain Transformers computes attention in its own kernels: equal up to float rounding
    torch.testing.assert_close(via_hf, expected, atol=1e-5, rtol=0)
    if not lora:  # the saved tensors are the trained ones, bit for bit
        saved = load_file(str(result.checkpoint.path / "model.safetensors"))
        for name, value in clean_state_dict(trained).items():
            if name in saved:
                assert torch.equal(saved[name], value), name
    assert (base - expected).abs().max() > 1e-3  # training changed the model
    manifest = result.checkpoint.manifest
    assert manifest["method"] == "sft" and manifest["base_model"] == str(tiny_folders["gemma3"])
    assert manifest["config"]["lora"] is lora and len(manifest["data_hash"]) == 24
    assert not (result.checkpoint.path / "resume").exists()  # a finished run's last checkpoint


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_continues_exactly(tiny_folders, data, lora):
    """5 steps straight == 2 steps, stop, resume, 3 more: same weights, losses and step numbers.
    grad_accum 2 over 5 micro-batches per epoch makes the resume cross an epoch boundary, and LoRA
    dropout makes the result depend on the restored random state."""
    kw = dict(max_steps=5, grad_accum=2, lora=lora, lora_r=4, lora_dropout=0.2 if lora else 0.0)
    straight = train(_config(tiny_folders, data, output="straight", **kw))

    def stop_at_2(fraction, message):
        if message.startswith("step 2/"):
            request_stop("halves")

    first = train(_config(tiny_folders, data, output="halves", **kw), progress=stop_at_2)
    assert first.state == "cancelled" and first.step == 2
    assert [c.name for c in registry.list_checkpoints("halves")] == ["halves@2"]
    assert (first.checkpoint.path / "resume" / "optimizer.safetensors").exists()
    second = train(_config(tiny_folders, data, output="halves", resume=True, **kw))
    assert second.state == "finished" and second.step == 5

    a = load_file(str(straight.checkpoint.path / "model.safetensors"))
    b = load_file(str(second.checkpoint.path / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0)
    losses = lambda r: [(m["step"], m["loss"]) for m in r.metrics if m["event"] == "train"]  # noqa: E731
    assert [s for s, _ in losses(second)] == [1, 2, 3, 4, 5]
    for (_, x), (_, y) in zip(losses(straight), losses(second)):
        assert y == pytest.approx(x, abs=1e-6)
    starts = [m for m in second.metrics if m["event"] == "start"]
    assert [s["step"] for s in starts] == [0, 2]


def test_existing_run_and_changed_config_are_refused(tiny_folders, data):
    cfg = _config(tiny_folders, data, output="again", max_steps=4)
    train(cfg, progress=lambda f, m: request_stop("again") if m.startswith("step 1/") else None)
    with pytest.raises(InputError, match="already has checkpoints.*Resume it"):
        train(cfg)
    with pytest.raises(InputError, match=r"different configuration \(lr: 0.005 -> 0.1\)"):
        train(cfg.replace(resume=True, lr=0.1))


def test_eval_metrics_and_schedule(tiny_folders, data):
    result = train(_config(tiny_folders, data, output="ev", max_steps=4, eval_fraction=0.2, eval_every=2,
                           warmup_ratio=0.25, scheduler="linear"))
    train_rows = [m for m in result.metrics if m["event"] == "train"]
    assert [m["step"] for m in train_rows] == [1, 2, 3, 4]
    assert all(m["tokens_per_s"] > 0 and "ce" in m["terms"] for m in train_rows)
    # linear schedule, 1 warmup step of 4: lr factor 1/1 at step 1 (after 0 -> warmup), then 1, 2/3, 1/3
    assert [m["lr"] for m in train_rows] == pytest.approx([0.0, 5e-3, 5e-3 * 2 / 3, 5e-3 / 3])
    evals = [m for m in result.metrics if m["event"] == "eval"]
    assert [m["step"] for m in evals] == [0, 2, 4]
    assert result.checkpoint.metrics["eval_loss"] == pytest.approx(evals[-1]["eval_loss"])
    assert (run_dir("ev") / "config.yaml").exists()
    frame = result.to_frame()
    assert {"step", "loss", "eval_loss", "ce"} <= set(frame.columns)


def test_training_from_a_checkpoint_records_lineage(tiny_folders, data):
    parent = train(_config(tiny_folders, data, output="parent", max_steps=1))
    child = train(_config(tiny_folders, data, output="child", max_steps=1, base_model="ckpt:parent"))
    assert child.checkpoint.parent == "ckpt:parent@1"
    assert child.checkpoint.base_model == parent.checkpoint.base_model == str(tiny_folders["gemma3"])
    assert "fine-tuning of ckpt:parent@1" in workbench.load(child.checkpoint.spec).facts.note


def test_data_errors_come_before_loading_a_model(tmp_path, tiny_folders):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "lang": "fr"}\n')
    with pytest.raises(DataError, match="'output' on line"):
        train(TrainConfig(base_model="/nonexistent/model", data=str(bad)))
    with pytest.raises(InputError, match="not available|Unknown training method"):
        train(TrainConfig(method="nope", base_model="/nonexistent/model"))


def test_tensorboard_without_the_package_is_a_clear_error(monkeypatch, data):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: False)
    with pytest.raises(InputError, match="pip install tensorboard"):
        train(TrainConfig(base_model="/nonexistent/model", data=str(data), report_to=["tensorboard"]))
