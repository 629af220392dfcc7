"""The real offline default model (Gemma 3 270M, dequantized 4-bit): parity with Hugging Face."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench import engine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hf_gemma(gemma):
    return AutoModelForCausalLM.from_pretrained(gemma.facts.path, dtype=torch.float32).eval()


def test_facts(gemma):
    f = gemma.facts
    assert (f.n_layers, f.n_heads, f.n_kv_heads, f.d_model) == (18, 4, 1, 640)
    assert f.d_vocab == 262144 and f.source == "default" and "dequantized" in f.note
    assert f.layer_types.count("full_attention") == 3


def test_logits_match_hf(gemma, hf_gemma):
    ids = engine.as_ids(gemma, "La capitale de la France est")
    with torch.no_grad():
        ref = hf_gemma(ids).logits
    ours = engine.forward(gemma, ids)
    # Same weights, same kernels: equal up to float32 summation order.
    torch.testing.assert_close(ours, ref, atol=1e-3, rtol=1e-4)


def test_greedy_matches_hf(gemma, hf_gemma):
    ids = engine.as_ids(gemma, "The capital of France is")
    gen = engine.generate_greedy(gemma, ids, max_new_tokens=16)
    with torch.no_grad():
        ref = hf_gemma.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1]:].tolist()
    assert gen.new_ids[0] == ref[: len(gen.new_ids[0])]
    assert len(gen.new_ids[0]) == 16 or ref[len(gen.new_ids[0])] in engine.stop_ids(gemma, False)


def test_lens_last_layer_equals_logits(gemma):
    ids = engine.as_ids(gemma, "Le chat est sur le")
    resid = engine.residual_stream(gemma, ids, layers=[17], at=[-1])
    lens = engine.lens_logits(gemma, resid[0, :, 0])
    torch.testing.assert_close(lens, engine.forward(gemma, ids)[:, -1], atol=1e-3, rtol=1e-4)
