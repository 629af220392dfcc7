"""DFT: every loss term against its formula computed by hand on a plain Hugging Face copy of the
same tiny model (hidden states, final norm, unembedding, Gemma soft-capping written out), the
frozen lens, the early stop of lens passes and the entropy-profile layer choice."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from trainers.config import TrainConfig
from trainers.methods.dft import DFT, layers_from_entropy, residuals
from trainers.model import load_for_training
from workbench import engine
from workbench.errors import InputError

RECORDS = [
    {"lang": "fr", "instruction": "le chat est sur le tapis", "output": "le chien court",
     "instruction_en": "the cat sat on the mat", "output_en": "the dog runs in the park"},
    {"lang": "zh", "instruction": "猫坐在垫子上", "output": "狗在公园里跑",
     "instruction_en": "the cat sat", "output_en": "the dog ran"},
]
ARCHS = ["gemma3", "llama"]


@pytest.fixture(scope="module", params=ARCHS)
def model(request, tiny_folders):
    folder = tiny_folders[request.param]
    config = TrainConfig(method="dft", base_model=str(folder), max_length=48)
    trainable = load_for_training(str(folder), config)
    trainable.handle.hf_model.eval()
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return trainable.handle, config, ref


def hand_lens_logits(ref, hidden):
    """Final norm, unembedding and (Gemma) soft-capping, written out."""
    logits = ref.lm_head(ref.model.norm(hidden))
    cap = getattr(ref.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def hand_nll(logits, labels):
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    target = labels[:, 1:]
    keep = target != -100
    return -logp[keep].gather(-1, target[keep][:, None]).mean()


def layer_outputs(ref, ids, mask):
    """Each decoder layer's output (the residual stream before the final norm), by torch hooks."""
    kept = []
    hooks = [layer.register_forward_hook(lambda m, i, o: kept.append(o[0] if isinstance(o, tuple) else o))
             for layer in ref.model.layers]
    try:
        ref(input_ids=ids, attention_mask=mask)
    finally:
        for h in hooks:
            h.remove()
    return kept


def hand_pool(hidden, ids, n_prompt, bos):
    rows = []
    for r in range(hidden.shape[0]):
        positions = [p for p in range(n_prompt[r]) if int(ids[r, p]) != bos]
        rows.append(hidden[r, positions].mean(0))
    return torch.stack(rows)


def test_logits_terms_equal_their_formulas(model):
    handle, config, ref = model
    method = DFT(signal="logits", lc_layer=0, et_layer=1, tft_weight=1.0, lc_weight=0.5, et_weight=2.0)
    method.choose_layers(handle, [])
    batch = method.collate(RECORDS, handle.tokenizer, config)
    total, terms = method.loss(handle, batch)
    with torch.no_grad():
        tft = hand_nll(ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])
        out = ref(input_ids=batch["lc_input_ids"], attention_mask=batch["lc_attention_mask"], output_hidden_states=True)
        lc = hand_nll(hand_lens_logits(ref, out.hidden_states[1]), batch["lc_labels"])  # after layer 0
        # the lens after the last layer is the model's own output
        et = hand_nll(ref(input_ids=batch["et_input_ids"], attention_mask=batch["et_attention_mask"]).logits,
                      batch["et_labels"])
    assert terms["tft"] == pytest.approx(float(tft), rel=1e-5)
    assert terms["lc"] == pytest.approx(float(lc), rel=1e-5)
    assert terms["et"] == pytest.approx(float(et), rel=1e-5)
    assert total.item() == pytest.approx(float(tft + 0.5 * lc + 2.0 * et), rel=1e-5)


def test_logits_batches_teacher_force_english_after_the_target_prompt(model):
    handle, config, _ = model
    method = DFT(signal="logits", lc_layer=0, et_layer=1)
    batch = method.collate(RECORDS, handle.tokenizer, config)
    tok = handle.tokenizer
    for row, r in enumerate(RECORDS):
        prompt = [tok.bos_token_id] + tok(r["instruction"] + "\n", add_special_tokens=False)["input_ids"]
        for key, field in (("lc", "instruction_en"), ("et", "output_en")):
            english = tok(r[field], add_special_tokens=False)["input_ids"]
            ids = batch[f"{key}_input_ids"][row]
            assert ids[: len(prompt)].tolist() == prompt
            labels = batch[f"{key}_labels"][row]
            assert labels[labels != -100].tolist() == english  # the English text, no EOS


def test_feature_terms_equal_their_formulas(model):
    handle, config, ref = model
    method = DFT(signal="feature", lc_layer=0, et_layer=0)
    method.choose_layers(handle, [])
    batch = method.collate(RECORDS, handle.tokenizer, config)
    total, terms = method.loss(handle, batch)
    tok, bos = handle.tokenizer, handle.tokenizer.bos_token_id
    n_tgt = [1 + len(tok(r["instruction"] + "\n", add_special_tokens=False)["input_ids"]) for r in RECORDS]
    n_en = [1 + len(tok(r["instruction_en"] + "\n", add_special_tokens=False)["input_ids"]) for r in RECORDS]
    with torch.no_grad():
        tgt = layer_outputs(ref, batch["input_ids"], batch["attention_mask"])
        en = layer_outputs(ref, batch["en_input_ids"], batch["en_attention_mask"])
        h_i_tgt = hand_pool(tgt[0], batch["input_ids"], n_tgt, bos)
        h_i_en = hand_pool(en[0], batch["en_input_ids"], n_en, bos)
        h_last_en = hand_pool(en[-1], batch["en_input_ids"], n_en, bos)
        lc = (1 - F.cosine_similarity(h_i_en, h_i_tgt, dim=-1)).mean()
        et = (1 - F.cosine_similarity(h_last_en, h_i_tgt, dim=-1)).mean()  # j = 0 here
        tft = hand_nll(ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])
    assert terms["lc"] == pytest.approx(float(lc), rel=1e-4, abs=1e-6)
    assert terms["et"] == pytest.approx(float(et), rel=1e-4, abs=1e-6)
    assert terms["tft"] == pytest.approx(float(tft), rel=1e-5)
    assert total.item() == pytest.approx(float(tft + lc + et), rel=1e-5)


def test_feature_english_pass_is_detached_by_default(model):
    handle, config, _ = model
    for detach in (True, False):
        method = DFT(signal="feature", lc_layer=0, et_layer=1, tft_weight=0.0, detach_english=detach)
        method.choose_layers(handle, [])
        batch = method.collate(RECORDS, handle.tokenizer, config)
        seen = []
        hook = ("blocks.1.hook_resid_post", lambda t, hook: seen.append(t.requires_grad))
        with engine.hooks(handle, [hook]):
            method.loss(handle, batch)
        assert seen == [True, not detach]  # target pass, then the English pass


def test_lens_terms_send_no_gradient_into_the_lens(model):
    handle, config, _ = model
    method = DFT(signal="logits", lc_layer=0, et_layer=1, tft_weight=0.0)
    method.choose_layers(handle, [])
    batch = method.collate(RECORDS, handle.tokenizer, config)
    handle.hf_model.zero_grad(set_to_none=True)
    total, _ = method.loss(handle, batch)
    total.backward()
    lens = [p for m in (engine.final_norm(handle), handle.hf_model.get_output_embeddings()) for p in m.parameters()]
    embed = handle.hf_model.get_input_embeddings().weight
    tied = any(p is embed for p in lens)
    for p in lens:
        if not tied:
            assert p.grad is None or p.grad.abs().max() == 0
        assert p.requires_grad  # restored after the lens
    layer0 = next(p for n, p in handle.hf_model.named_parameters() if "layers.0." in n and p.dim() == 2)
    assert layer0.grad is not None and layer0.grad.abs().max() > 0
    handle.hf_model.zero_grad(set_to_none=True)


def test_lens_pass_stops_after_its_layer(model):
    handle, config, _ = model
    calls = []
    ids = engine.as_ids(handle, "the cat sat on the mat")
    with engine.hooks(handle, [("blocks.1.hook_resid_pre", lambda t, hook: calls.append(1))]):
        kept = residuals(handle, ids, None, [0])
    assert calls == [] and set(kept) == {0}
    cache = engine.capture(handle, ids, ["blocks.0.hook_resid_post"])
    torch.testing.assert_close(kept[0].detach(), cache["blocks.0.hook_resid_post"])


def test_layers_from_entropy_profile():
    # 18 layers: the bottom region is layers 1..5, the middle one 6..12
    profile = np.full(18, 10.0)
    profile[3:] -= 2.0   # the bottom drop enters layer 3
    profile[9:] -= 3.0   # the middle drop enters layer 9
    profile[15:] -= 5.0  # a late drop (outside both regions) is ignored
    assert layers_from_entropy(profile) == (3, 9)
    assert layers_from_entropy(np.arange(32.0, 0.0, -1.0)) == (1, 11)  # flat drops: first of each region
    assert layers_from_entropy([3.0, 2.0]) == (0, 1)
    assert layers_from_entropy([5.0, 4.0, 1.0, 0.5]) == (1, 2)
    with pytest.raises(InputError):
        layers_from_entropy([])


def test_default_layers_come_from_the_lens_entropy_profile(model, tmp_path):
    from probes.pivot import lens_entropy_profile

    handle, config, _ = model
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS), encoding="utf-8")
    method = DFT(signal="logits")
    method.setup(handle, config.replace(data=str(data)), None)
    profile = lens_entropy_profile(handle, [r["instruction"] for r in RECORDS])
    np.testing.assert_allclose(method.entropy_profile, profile, rtol=1e-6)
    assert (method.lc_layer, method.et_layer) == layers_from_entropy(profile)
    assert method.extra_files()["dft"]["lc_layer"] == method.lc_layer


def test_bad_options_are_refused(model):
    handle, _, _ = model
    with pytest.raises(InputError, match="signal"):
        DFT(signal="both")
    with pytest.raises(InputError, match="lc_weight"):
        DFT(lc_weight=-1)
    with pytest.raises(InputError, match="out of range"):
        DFT(lc_layer=7, et_layer=1).choose_layers(handle, [])
