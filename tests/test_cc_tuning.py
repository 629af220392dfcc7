"""CC-Tuning: the loss, the injection, the Transform Matrix and inference, each checked against a
hand-written computation on a plain Hugging Face copy of the same tiny model (no bridge, no hooks
of ours); and a checkpoint that reloads to identical generations."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from trainers.config import TrainConfig
from trainers.methods.cc_tuning.inference import CCTuningInference, cc_tuning_inference
from trainers.methods.cc_tuning.method import (
    DECISION_KEY,
    INJECT_HOOK,
    CCTuning,
    decision_maker_for,
    encode_prompt,
    injection_hook,
)
from trainers.model import load_for_training
from trainers.methods.cc_tuning.transform_matrix import fit_transform
from workbench import engine
from workbench.errors import InputError

RECORDS = [
    {"lang": "fr", "instruction": "le chat est sur le tapis", "output": "le chien court dans le parc",
     "instruction_en": "the cat sat on the mat"},
    {"lang": "de", "instruction": "die Katze sitzt", "output": "der Hund läuft",
     "instruction_en": "the dog ran in the park and the cat sat"},
    {"lang": "zh", "instruction": "猫坐在垫子上", "output": "狗在公园里跑",
     "instruction_en": "the cat"},
]
ARCHS = ["gemma3", "llama"]


def ffn_outputs(model) -> list[torch.nn.Module]:
    """The module whose output is added to the residual stream after each FFN (HF names)."""
    layers = model.model.layers
    if hasattr(layers[0], "post_feedforward_layernorm"):  # Gemma norms the FFN output first
        return [layer.post_feedforward_layernorm for layer in layers]
    return [layer.mlp for layer in layers]


def hf_reference(folder) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def hf_tag_outputs(model, ids, mask, tags) -> torch.Tensor:
    """(B, L, d) FFN outputs at the tag positions, read with plain torch hooks."""
    kept = []
    handles = [m.register_forward_hook(lambda mod, inp, out: kept.append(out)) for m in ffn_outputs(model)]
    try:
        model(input_ids=ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    rows = torch.arange(ids.shape[0])
    return torch.stack([k[rows, tags] for k in kept], dim=1)


def hf_logits_injected(model, ids, mask, tags, delta, **kwargs):
    """Logits with `delta` added to the input of decoder layer 1 at the tag positions."""
    rows = torch.arange(ids.shape[0])

    def pre(module, args, kw):
        hidden = args[0] if args else kw["hidden_states"]
        hidden = hidden.clone()
        hidden[rows, tags] += delta
        if args:
            return (hidden, *args[1:]), kw
        return args, {**kw, "hidden_states": hidden}

    handle = model.model.layers[1].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        return model(input_ids=ids, attention_mask=mask, **kwargs)
    finally:
        handle.remove()


def hand_cross_entropy(logits, labels) -> torch.Tensor:
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    target = labels[:, 1:]
    keep = target != -100
    return -logp[keep].gather(-1, target[keep][:, None]).mean()


@pytest.fixture(scope="module", params=ARCHS)
def trained(request, tiny_folders):
    """A private trainable copy (as the loop makes it), the method set up on it, and the plain HF reference."""
    folder = tiny_folders[request.param]
    config = TrainConfig(method="cc-tuning", base_model=str(folder), max_length=48)
    model = load_for_training(str(folder), config)
    method = CCTuning()
    method.setup(model.handle, config, None)
    model.handle.hf_model.eval()  # no dropout: the reference runs in eval mode too
    return model.handle, method, config, hf_reference(folder)


def test_loss_equals_hand_computation(trained):
    handle, method, config, ref = trained
    batch = method.collate(RECORDS, handle.tokenizer, config)
    method.decision_maker.train()  # Gumbel sampling, as in training
    torch.manual_seed(7)
    loss, terms = method.loss(handle, batch)

    with torch.no_grad():
        v = hf_tag_outputs(ref, batch["en_input_ids"], batch["en_attention_mask"], batch["en_tag"])
        tag_ids = batch["input_ids"][torch.arange(len(RECORDS)), batch["tag"]]
        e_tag = ref.get_input_embeddings()(tag_ids)
        scores = ((v + e_tag[:, None]).mean(1)) @ method.decision_maker.proj.weight.T
        torch.manual_seed(7)
        s = F.gumbel_softmax(scores, tau=1.0, hard=True)
        delta = (s[..., None] * v).sum(1)
        logits = hf_logits_injected(ref, batch["input_ids"], batch["attention_mask"], batch["tag"], delta).logits
        expected = hand_cross_entropy(logits, batch["labels"])
    assert s.sum(-1).eq(1).all() and ((s == 0) | (s == 1)).all()
    assert loss.item() == pytest.approx(float(expected), rel=1e-5, abs=1e-5)
    assert terms["ce"] == pytest.approx(float(expected), rel=1e-5, abs=1e-5)


def test_collate_tags_are_last_prompt_tokens(trained):
    handle, method, config, _ = trained
    batch = method.collate(RECORDS, handle.tokenizer, config)
    for row, record in enumerate(RECORDS):
        prompt = encode_prompt(handle.tokenizer, record["instruction"], config.max_length)
        assert batch["tag"][row] == len(prompt) - 1
        assert batch["input_ids"][row, : len(prompt)].tolist() == prompt
        assert (batch["labels"][row, : len(prompt)] == -100).all() and batch["labels"][row, len(prompt)] != -100
        english = encode_prompt(handle.tokenizer, record["instruction_en"], config.max_length)
        assert batch["en_tag"][row] == len(english) - 1
        assert batch["en_input_ids"][row, : len(english)].tolist() == english


def test_gradients_reach_the_decision_maker(trained):
    handle, method, config, _ = trained
    batch = method.collate(RECORDS, handle.tokenizer, config)
    method.decision_maker.train()
    handle.hf_model.zero_grad(set_to_none=True)
    method.decision_maker.zero_grad(set_to_none=True)
    loss, _ = method.loss(handle, batch)
    loss.backward()
    grad = method.decision_maker.proj.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    handle.hf_model.zero_grad(set_to_none=True)
    method.decision_maker.zero_grad(set_to_none=True)


def test_injection_only_at_the_tag_after_layer_0(trained):
    handle, method, config, ref = trained
    batch = method.collate(RECORDS, handle.tokenizer, config)
    ids, mask, tags = batch["input_ids"], batch["attention_mask"], batch["tag"]
    delta = torch.randn(len(RECORDS), handle.facts.d_model)
    names = ["blocks.0.hook_resid_post", INJECT_HOOK, "blocks.1.hook_resid_post"]

    def run(extra):
        seen = {}

        def keep(name):
            return lambda t, hook: seen.__setitem__(name, t.detach().clone())
        with torch.no_grad(), engine.hooks(handle, extra + [(n, keep(n)) for n in names]):
            logits = handle.hf_model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return logits, seen

    clean_logits, clean = run([])
    hooked_logits, hooked = run([injection_hook(tags, delta)])
    assert torch.equal(clean["blocks.0.hook_resid_post"], hooked["blocks.0.hook_resid_post"])
    diff = hooked[INJECT_HOOK] - clean[INJECT_HOOK]
    rows = torch.arange(len(RECORDS))
    torch.testing.assert_close(diff[rows, tags], delta)
    diff[rows, tags] = 0
    assert diff.abs().max() == 0  # nothing else moved
    for row, tag in enumerate(tags.tolist()):  # causal: positions before the tag are untouched above too
        assert torch.equal(clean["blocks.1.hook_resid_post"][row, :tag], hooked["blocks.1.hook_resid_post"][row, :tag])
    with torch.no_grad():
        expected = hf_logits_injected(ref, ids, mask, tags, delta).logits
    real = mask.bool()  # padding rows may see no key at all inside Gemma's sliding window
    torch.testing.assert_close(hooked_logits[real], expected[real], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(hooked_logits[real], clean_logits[real])


def test_transform_matrix_is_numpy_least_squares(trained):
    handle, method, config, ref = trained
    words = ["cat", "dog", "sun", "moon", "book", "house", "red", "blue", "green", "one", "two", "three",
             "water", "park", "mat", "paris", "london", "berlin"]
    pairs = [(f"le chat {a} et {b}", f"the cat {a} and {b}") for a in words[:6] for b in words[6:]][:36]
    fit = fit_transform(handle, pairs, max_length=config.max_length, batch_size=16)

    def stacked(prompts):  # one padded batch through the plain HF model
        from trainers.data import pad_batch
        encoded = [encode_prompt(handle.tokenizer, p, config.max_length) for p in prompts]
        batch = pad_batch(encoded, [len(e) for e in encoded], 0)
        tags = torch.tensor([len(e) - 1 for e in encoded])
        with torch.no_grad():
            out = hf_tag_outputs(ref, batch["input_ids"], batch["attention_mask"], tags)
        return out.double().numpy().reshape(-1, out.shape[-1])

    S, T = stacked([a for a, _ in pairs]), stacked([b for _, b in pairs])
    X = np.linalg.lstsq(S, T, rcond=None)[0]
    assert fit.matrix.shape == (handle.facts.d_model, handle.facts.d_model)
    assert fit.n_rows == len(pairs) * handle.n_layers and fit.rank == np.linalg.matrix_rank(S)
    np.testing.assert_allclose(S @ fit.matrix, S @ X, rtol=1e-4, atol=1e-4 * np.abs(T).max())
    assert fit.rank == handle.facts.d_model  # 72 rows of 64 columns: a unique solution
    np.testing.assert_allclose(fit.matrix, X, rtol=1e-3, atol=1e-3 * np.abs(X).max())
    with pytest.raises(InputError):
        fit_transform(handle, [])


def test_inference_equals_manual_injection(trained):
    handle, method, config, ref = trained
    torch.manual_seed(3)
    dm = decision_maker_for(handle)
    X = torch.randn(handle.facts.d_model, handle.facts.d_model) * 0.3
    ccti = CCTuningInference(handle, dm, X)
    prompt = "le chat est sur le tapis\n"
    ids = engine.as_ids(handle, prompt)
    tag = torch.tensor([ids.shape[1] - 1])
    with torch.no_grad():  # by hand: read u at the tag, transform, argmax choice, inject at prefill, decode greedily
        u = hf_tag_outputs(ref, ids, None, tag)
        v = u @ X
        e_tag = ref.get_input_embeddings()(ids[:, -1])
        layer = int((((v + e_tag[:, None]).mean(1)) @ dm.proj.weight.T).argmax(-1))
        delta = v[:, layer]
        out = hf_logits_injected(ref, ids, None, tag, delta, use_cache=True)
        expected_logits, cache, manual = [out.logits[:, -1]], out.past_key_values, []
        for _ in range(4):
            nxt = expected_logits[-1].argmax(-1)
            manual.append(int(nxt))
            out = ref(input_ids=nxt[:, None], cache=cache, use_cache=True)
            cache = out.past_key_values
            expected_logits.append(out.logits[:, -1])

    hooked = engine.generate_greedy(handle, prompt, 4, prefill_hooks=ccti.prefill_hooks(prompt), keep_logits=True)
    with ccti.active():
        active = engine.generate_greedy(handle, prompt, 4, keep_logits=True)
        inside_fp = handle.facts.fingerprint
        cache_in = engine.capture(handle, ids, [INJECT_HOOK])
    assert int(ccti.last_choice) == layer
    assert inside_fp != handle.facts.fingerprint and inside_fp.startswith(handle.facts.fingerprint)
    for gen in (hooked, active):
        assert gen.new_ids[0][: len(manual)] == manual[: len(gen.new_ids[0])]
        for got, want in zip(gen.step_logits, expected_logits):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    cache_out = engine.capture(handle, ids, [INJECT_HOOK])
    torch.testing.assert_close(cache_in[INJECT_HOOK][0, -1] - cache_out[INJECT_HOOK][0, -1], delta[0])
    with pytest.raises(InputError):
        CCTuningInference(handle, dm, X, choice="sometimes")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    return tmp_path


def test_checkpoint_reloads_to_identical_generations(home, tiny_folders):
    import workbench
    from trainers.loop import train
    from trainers.methods.cc_tuning.transform_matrix import TRANSFORM_FILE, transform_matrix
    from workbench import registry
    from workbench.cli import main
    from workbench.models import MODELS

    data = home / "pairs.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS * 3), encoding="utf-8")
    config = TrainConfig(method="cc-tuning", base_model=str(tiny_folders["gemma3"]), data=str(data), output="cc",
                         max_steps=2, save_every=1, batch_size=3, max_length=48, lr=1e-2)
    result = train(config)
    ckpt = result.checkpoint
    assert ckpt is not None and ckpt.method == "cc-tuning"

    with pytest.raises(InputError, match="transform-matrix"):
        CCTuningInference.from_checkpoint(workbench.load(ckpt.spec))
    fit = transform_matrix("cc", data)
    assert main(["transform-matrix", "cc", "--data", str(data)]) == 0  # the command refits the same matrix
    again = registry.get("cc")  # still listed: the manifest knows the new file
    assert any(f["path"] == TRANSFORM_FILE for f in again.manifest["files"])
    assert again.manifest["transform_matrix"]["n_pairs"] == len(RECORDS) * 3

    from safetensors.torch import load_file
    step1 = registry.get("cc@1")  # holds resume state: the loop's own copy of the trained module
    assert torch.equal(load_file(str(step1.path / "method_state.safetensors"))[DECISION_KEY],
                       load_file(str(step1.path / "resume" / "extra_modules.safetensors"))["0.proj.weight"])
    saved_dm = load_file(str(again.path / "method_state.safetensors"))[DECISION_KEY]
    assert not torch.equal(saved_dm, load_file(str(step1.path / "method_state.safetensors"))[DECISION_KEY])

    prompt = RECORDS[0]["instruction"] + "\n"
    handle = workbench.load(again.spec)
    with cc_tuning_inference(handle) as ccti:
        first = engine.generate_greedy(handle, prompt, 6, keep_logits=True)
        assert torch.equal(ccti.decision_maker.proj.weight.detach(), saved_dm)
        np.testing.assert_allclose(ccti.transform.numpy(), fit.matrix.astype(np.float32), rtol=1e-5, atol=1e-6)
    plain = engine.generate_greedy(handle, prompt, 6, keep_logits=True)
    assert not torch.equal(plain.step_logits[0], first.step_logits[0])
    MODELS.clear()
    reloaded = workbench.load(again.spec)
    assert reloaded is not handle
    with cc_tuning_inference(reloaded) as ccti:
        second = engine.generate_greedy(reloaded, prompt, 6, keep_logits=True)
    assert second.new_ids == first.new_ids
    for a, b in zip(first.step_logits, second.step_logits):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_clear_errors(home, tiny_folders):
    import workbench
    from trainers.methods.cc_tuning.transform_matrix import transform_matrix

    handle = workbench.load(str(tiny_folders["gemma3"]))
    with pytest.raises(InputError, match="not a checkpoint"):
        CCTuningInference.from_checkpoint(handle)
    with pytest.raises(InputError, match="CC-Tuning checkpoint"):
        CCTuningInference.from_checkpoint(handle, tiny_folders["gemma3"])
    with pytest.raises(InputError, match="No checkpoint"):
        transform_matrix("missing", "demo")
