"""One boot path: the shared cache, the trainers, the unlearning reference model and the RHIO
vocabulary surgery load models the same way, and refuse the same specs with the same messages."""

import pytest
import torch

import workbench
from trainers.config import TrainConfig
from trainers.methods.rhio.control_tokens import add_control_tokens
from trainers.methods.unlearning.methods import load_reference
from trainers.model import load_for_training
from workbench import models
from workbench.errors import ModelLoadError
from workbench.models import ModelHandle, boot, resolve_folder

PROMPT = "the cat sat on the mat and the dog"


def _logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


def test_tiny_folder_boots_uncached(tiny_folders):
    folder = str(tiny_folders["llama"])
    calls = []
    handle = boot(folder, progress=lambda fraction, message: calls.append((fraction, message)))
    assert isinstance(handle, ModelHandle) and handle is not workbench.load(folder)
    assert (handle.facts.source, handle.facts.n_layers, handle.facts.architecture) == ("folder", 2, "LlamaForCausalLM")
    assert calls[-1][0] == 1.0 and not handle.hf_model.training
    assert resolve_folder(folder)[1] == tiny_folders["llama"].resolve()


def test_wrap_sees_the_model_before_the_bridge(tiny_folders):
    seen = []

    def wrap(hf_model):
        seen.append((hf_model, any("_original_component" in k for k in hf_model.state_dict())))

    handle = boot(str(tiny_folders["gemma3"]), wrap=wrap)
    (wrapped, bridged), = seen
    assert wrapped is handle.hf_model and not bridged
    assert any("_original_component" in k for k in handle.hf_model.state_dict())


def test_trainer_cache_and_reference_see_the_same_model(tiny_folders):
    folder = str(tiny_folders["gemma3"])
    cached = workbench.load(folder)
    trainable = load_for_training(folder, TrainConfig(base_model=folder))
    assert trainable.handle is not cached and trainable.handle.hf_model.training
    trainable.handle.hf_model.eval()
    ids = cached.encode(PROMPT)
    assert trainable.handle.encode(PROMPT) == ids
    assert trainable.handle.facts.fingerprint == cached.facts.fingerprint
    expected = _logits(cached.hf_model, ids)
    torch.testing.assert_close(_logits(trainable.handle.hf_model, ids), expected, atol=0, rtol=0)
    reference = load_reference(folder).hf_model
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    torch.testing.assert_close(_logits(reference, ids), expected, atol=1e-5, rtol=1e-5)


def test_lora_is_injected_before_the_bridge(tiny_folders):
    folder = str(tiny_folders["llama"])
    trainable = load_for_training(folder, TrainConfig(base_model=folder, lora=True, lora_r=2))
    assert trainable.lora
    names = [n for n, p in trainable.handle.hf_model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


LOADERS = {
    "cache": lambda spec: workbench.load(spec),
    "boot": lambda spec: boot(spec),
    "trainer": lambda spec: load_for_training(spec, TrainConfig()),
    "reference": lambda spec: load_reference(spec),
    "control-tokens": lambda spec: add_control_tokens(spec, "never-saved"),
}


@pytest.mark.parametrize("loader", list(LOADERS), ids=list(LOADERS))
def test_hub_name_offline_is_refused_alike(loader, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache; the hub is switched off"):
        LOADERS[loader]("some-org/not-a-model")


@pytest.mark.parametrize("loader", list(LOADERS), ids=list(LOADERS))
def test_unreachable_hub_is_refused_alike(loader, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=2.0: False)
    with pytest.raises(ModelLoadError, match="cannot be reached"):
        LOADERS[loader]("some-org/not-a-model")


@pytest.mark.parametrize("loader", list(LOADERS), ids=list(LOADERS))
def test_pickle_only_folder_is_refused_alike(loader, tiny_folders, tmp_path):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_folders["llama"], folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        LOADERS[loader](str(folder))
