"""The workbench's view of a model equals Hugging Face's own: logits, greedy text, logit lens."""

import time

import pytest
import torch
from transformers import AutoModelForCausalLM

import workbench
from workbench import engine
from workbench.errors import InputError, ModelLoadError

PROMPT = "the cat sat on the mat and the dog"


def _hf(handle):
    return AutoModelForCausalLM.from_pretrained(handle.facts.path, dtype=torch.float32).eval()


def test_facts(tiny_handle):
    f = tiny_handle.facts
    assert f.n_layers == 2 and f.n_heads == 4 and f.d_model == 64
    assert f.n_params == sum(p.numel() for p in tiny_handle.hf_model.parameters())
    assert len(f.fingerprint) == 16


def test_logits_match_hf(tiny_handle):
    hf = _hf(tiny_handle)
    ids = engine.as_ids(tiny_handle, PROMPT)
    ours = engine.forward(tiny_handle, ids)
    with torch.no_grad():
        ref = hf(ids).logits
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_greedy_matches_hf_generate(tiny_handle):
    hf = _hf(tiny_handle)
    ids = engine.as_ids(tiny_handle, PROMPT)
    gen = engine.generate_greedy(tiny_handle, ids, max_new_tokens=12)
    with torch.no_grad():
        ref = hf.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
    ref_new = ref[0, ids.shape[1]:].tolist()
    eos = tiny_handle.tokenizer.eos_token_id
    if eos in ref_new:
        ref_new = ref_new[: ref_new.index(eos)]
    assert gen.new_ids[0] == ref_new


def test_generation_builds_no_autograd_graph(tiny_gemma):
    """Generation is inference: no graph may grow along the KV cache, step after step."""
    grad_on = []
    engine.generate_greedy(tiny_gemma, PROMPT, max_new_tokens=3,
                        on_step=lambda step, nxt: grad_on.append(torch.is_grad_enabled()))
    assert grad_on and not any(grad_on)


def test_lens_last_layer_is_final_logits(tiny_handle):
    ids = engine.as_ids(tiny_handle, PROMPT)
    resid = engine.residual_stream(tiny_handle, ids)
    lens = engine.lens_logits(tiny_handle, resid[-1])
    torch.testing.assert_close(lens, engine.forward(tiny_handle, ids), atol=1e-4, rtol=1e-4)


def test_lens_middle_layer_matches_hf_hidden_states(tiny_handle):
    hf = _hf(tiny_handle)
    ids = engine.as_ids(tiny_handle, PROMPT)
    with torch.no_grad():
        hidden = hf(ids, output_hidden_states=True).hidden_states  # [embed, layer0, layer1 (normed)]
        base = hf.base_model
        norm = getattr(base, "norm", None) or getattr(base, "ln_f")
        ref = hf.get_output_embeddings()(norm(hidden[1]))
        cap = getattr(hf.config, "final_logit_softcapping", None)
        if cap:
            ref = torch.tanh(ref / cap) * cap
        lens = engine.lens_logits(tiny_handle, engine.residual_stream(tiny_handle, ids, layers=[0])[0])
    torch.testing.assert_close(lens, ref, atol=1e-5, rtol=1e-5)


def test_hooks_are_removed_after_use(tiny_gemma):
    ids = engine.as_ids(tiny_gemma, PROMPT)
    before = engine.forward(tiny_gemma, ids)
    zero = lambda t, hook: torch.zeros_like(t)  # noqa: E731
    hooked = engine.forward(tiny_gemma, ids, fwd_hooks=[("blocks.0.hook_mlp_out", zero)])
    assert not torch.allclose(before, hooked)
    torch.testing.assert_close(engine.forward(tiny_gemma, ids), before)


def test_prefill_hooks_only_touch_the_prompt(tiny_gemma):
    seen = []
    record = lambda t, hook: seen.append(t.shape[1])  # noqa: E731
    engine.generate_greedy(tiny_gemma, PROMPT, max_new_tokens=4, prefill_hooks=[("blocks.1.hook_mlp_out", record)])
    assert len(seen) == 1 and seen[0] > 1


def test_run_with_cache_keeps_only_named(tiny_gemma):
    ids = engine.as_ids(tiny_gemma, PROMPT)
    cache = engine.capture(tiny_gemma, ids, ["blocks.1.hook_mlp_out"], at=[-1], logits=True)
    logits = cache.logits
    assert list(cache) == ["blocks.1.hook_mlp_out"] and cache["blocks.1.hook_mlp_out"].shape == (1, 1, 64)


def test_bad_inputs(tiny_gemma):
    with pytest.raises(InputError, match="empty"):
        engine.as_ids(tiny_gemma, "   ")
    with pytest.raises(InputError, match="out of range"):
        engine.check_layer(tiny_gemma, 5)
    with pytest.raises(InputError, match="at most"):
        engine.as_ids(tiny_gemma, list(range(5)) * 200)
    with pytest.raises(InputError, match="Unknown hook"):
        engine.forward(tiny_gemma, engine.as_ids(tiny_gemma, PROMPT), fwd_hooks=[("blocks.9.nope", lambda t, h: t)])


# --------------------------------------------------------------------------- loading errors

def test_unknown_hub_name_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache"):
        workbench.load("some-org/not-a-model")
    assert time.time() - start < 2


def test_unreachable_hub_fails_fast(monkeypatch):
    from workbench import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=2.0: False)
    start = time.time()
    with pytest.raises(ModelLoadError, match="cannot be reached"):
        workbench.load("some-org/not-a-model")
    assert time.time() - start < 2


def test_missing_folder():
    with pytest.raises(ModelLoadError, match="does not exist"):
        workbench.load("./no/such/folder")


def test_unknown_user_home_is_explained():
    with pytest.raises(ModelLoadError, match="does not exist"):
        workbench.load("~no-such-user-xyz/model")


def test_wrong_file_type(tmp_path):
    f = tmp_path / "model.txt"
    f.write_text("hello")
    with pytest.raises(ModelLoadError, match="is a file"):
        workbench.load(str(f))


def test_pickle_only_folder_is_refused(tmp_path, tiny_folders):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_folders["llama"], folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        workbench.load(str(folder))


def test_corrupt_safetensors(tmp_path, tiny_folders):
    import shutil

    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_folders["llama"], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        workbench.load(str(folder))
