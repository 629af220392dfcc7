"""bfloat16, the fast mode: every hook that writes a vector casts it to the hooked tensor, and every
engine path and probe agrees with float32 within the tolerances stated here.

Tolerances on the tiny models (seeded, so the numbers are fixed; measured with margin):
- logit lens, every layer and position of four prompts: top-1 token equal in at least 90% of rows
  (measured 92-100% per prompt), max |dP| of the lens probabilities below 0.01 (measured <= 0.0032);
- model logits: max |dP| below 0.01 (measured <= 0.0024); continuation log-probabilities within 0.1
  (measured <= 0.042);
- greedy decoding: the same first 4 tokens; later tokens may part (qwen2 parts at the 6th);
- pivot curves: max |dP| below 2e-3 (measured <= 2.5e-4).

Retrieval heads on the default model are not in the suite: too slow in bf16 on a CPU without
native bfloat16. Measured by hand on the notebook's setting (256 tokens, 3 English needles): the
heads above 0.1 are L5H1, L11H2, L5H2 in both dtypes (float32 90 s, bf16 105 s).
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import workbench
from browser import ARTIFACTS
from probes import masking
from probes import pivot as lens
from probes import retrieval
from probes.transplant import transplant_grid
from probes.transplant.runs import replace_hooks
from trainers.methods.cc_tuning.method import add_at_tags, injection_hook
from workbench import engine
from workbench.datasets.lexicon import load_concepts
from workbench.datasets.tasks import load_task
from workbench.tiny import ARCHITECTURES

PROMPTS = ["the cat sat on the mat and the dog ran in the park", "le chat est sur le tapis et le chien court dans le parc",
           "猫坐在垫子上，狗在公园里跑", 'Français: "chat" - English: "cat"\nDeutsch: "Hund" - English: "']
WORDS = pd.DataFrame({"concept": ["cat", "dog", "water", "sun", "moon"], "en": ["cat", "dog", "water", "sun", "moon"],
                      "de": ["Katze", "Hund", "Wasser", "Sonne", "Mond"], "zh": ["猫", "狗", "水", "太阳", "月亮"]})
GREEDY_SAME_STEPS = 4


def pair(folder) -> tuple[workbench.ModelHandle, workbench.ModelHandle]:
    return workbench.load(str(folder)), workbench.load(str(folder), dtype="bfloat16")


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


# --------------------------------------------------------------------------- hooks that write vectors

@pytest.fixture(scope="module")
def bf16(tiny_folders):
    return workbench.load(str(tiny_folders["gemma3"]), dtype="bfloat16")


def test_a_float32_transplant_vector_enters_a_bf16_model(bf16):
    ids = engine.as_ids(bf16, PROMPTS[0])
    vector = torch.randn(1, bf16.facts.d_model)  # float32, as a source read in another precision would be
    seen = {}
    keep = (engine.hook_name(1, "mlp"), lambda t, hook: seen.update(out=t))
    logits = engine.forward(bf16, ids, [*replace_hooks("mlp", [1], vector, position=-1), keep])
    assert seen["out"].dtype == torch.bfloat16 and torch.equal(seen["out"][0, -1], vector[0].to(torch.bfloat16))
    cast_first = engine.forward(bf16, ids, replace_hooks("mlp", [1], vector.to(torch.bfloat16), position=-1))
    assert logits.dtype == torch.bfloat16 and torch.equal(logits, cast_first)


def test_a_float32_cc_tuning_delta_enters_a_bf16_model_and_keeps_its_gradient(bf16):
    ids = engine.as_ids(bf16, PROMPTS[1])
    tags = torch.tensor([ids.shape[1] - 1])
    delta = torch.randn(1, bf16.facts.d_model, requires_grad=True)
    logits = engine.forward(bf16, ids, [injection_hook(tags, delta)], grad=True)
    torch.testing.assert_close(logits, engine.forward(bf16, ids, [injection_hook(tags, delta.detach().bfloat16())]),
                               atol=0, rtol=0)
    logits.float().logsumexp(-1).sum().backward()
    assert delta.grad is not None and delta.grad.dtype == torch.float32 and delta.grad.abs().sum() > 0
    row = torch.zeros(1, 3, 4, dtype=torch.bfloat16)
    assert add_at_tags(row, torch.tensor([2]), torch.ones(1, 4)).dtype == torch.bfloat16


@pytest.mark.parametrize("mode", masking.MASK_MODES)
def test_masking_works_in_bf16(bf16, mode):
    """Uniform masking finds the masked keys by the dtype's own minimum: in bf16 the masked head
    attends uniformly to exactly the keys the causal and sliding-window masks allow."""
    ids = engine.as_ids(bf16, PROMPTS[0])
    heads = [(0, 1), (1, 2)]
    names = [engine.hook_name(layer, "pattern") for layer in (0, 1)]
    masked = engine.capture(bf16, ids, names, fwd_hooks=masking.masking_hooks(bf16, heads, mode))
    plain = engine.capture(bf16, ids, names)
    if mode == "uniform":
        for (layer, head), name in zip(heads, names):
            pattern = masked[name][0, head].float()  # (query, key)
            allowed = plain[name][0, head] > 0
            expected = allowed.float() / allowed.sum(-1, keepdim=True)
            torch.testing.assert_close(pattern, expected, atol=1e-2, rtol=0)
    out = masking.generate_with_masked_heads(bf16, PROMPTS[0], heads, mode=mode, max_new_tokens=4)
    assert len(out.original_ids) == len(out.masked_ids) == 4


def test_lens_reads_float32_residuals_in_a_bf16_model(bf16):
    ids = engine.as_ids(bf16, PROMPTS[0])
    resid = engine.residual_stream(bf16, ids)
    from_fp32 = engine.lens_logits(bf16, resid.float())
    assert from_fp32.dtype == torch.bfloat16
    torch.testing.assert_close(from_fp32, engine.lens_logits(bf16, resid), atol=0, rtol=0)
    streamed = [engine.lens_reduce(bf16, r, top_k=3) for r in (resid.float(), resid)]
    assert torch.equal(streamed[0].top_ids, streamed[1].top_ids)


# --------------------------------------------------------------------------- agreement on tiny models

@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_engine_path_agrees_with_float32(tiny_folders, arch):
    fp32, bf16 = pair(tiny_folders[arch])
    assert (fp32.facts.dtype, bf16.facts.dtype) == ("float32", "bfloat16")
    agree, lens_dp = [], 0.0
    for prompt in PROMPTS:
        ids = engine.as_ids(fp32, prompt)
        a, b = (engine.forward(h, ids) for h in (fp32, bf16))
        assert b.dtype == torch.bfloat16
        assert (a.softmax(-1) - b.float().softmax(-1)).abs().max() < 0.01
        la, lb = (engine.lens_logits(h, engine.residual_stream(h, ids)).float() for h in (fp32, bf16))
        agree.append((la.argmax(-1) == lb.argmax(-1)).float().mean().item())
        lens_dp = max(lens_dp, (la.softmax(-1) - lb.softmax(-1)).abs().max().item())
        conts = [[5, 6, 7], [8], [9, 10]]
        (sa, _), (sb, _) = (engine.score_continuations(h, ids, conts) for h in (fp32, bf16))
        torch.testing.assert_close(sb, sa, atol=0.1, rtol=0)
        ga, gb = (engine.generate_greedy(h, ids, 8).new_ids[0] for h in (fp32, bf16))
        diverge = first_difference(ga, gb)
        assert diverge is None or diverge >= GREEDY_SAME_STEPS, (prompt, ga, gb)
    assert min(agree) >= 0.9 and lens_dp < 0.01, (agree, lens_dp)


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_probes_agree_with_float32(tiny_folders, arch):
    fp32, bf16 = pair(tiny_folders[arch])
    a, b = (lens.pivot(h, WORDS, src_lang="de", tgt_lang="zh", k_shot=1, use_cache=False) for h in (fp32, bf16))
    assert np.abs(a.probs - b.probs).max() < 2e-3
    trial = dict(lengths=(200,), depths=(0.5,), n_needles=1, max_new_tokens=4, use_cache=False)
    a, b = (retrieval.retrieval_scores(h, "en", **trial) for h in (fp32, bf16))
    np.testing.assert_array_equal(b.trials[0].tokens, a.trials[0].tokens)
    np.testing.assert_allclose(b.trials[0].scores, a.trials[0].scores, atol=0.26)  # one step of four may move
    items = load_task("capitals", "fr")[:2]
    a, b = (transplant_grid(h, items, sources=[0, 1], targets=[1], max_new_tokens=4, use_cache=False)
            for h in (fp32, bf16))
    np.testing.assert_allclose(np.log(b.p), np.log(a.p), atol=0.1)
    np.testing.assert_allclose(np.log(b.baseline_p), np.log(a.baseline_p), atol=0.1)


# --------------------------------------------------------------------------- the default model
# Each slow test writes what it measured to test-artifacts/bf16_agreement.json.

def record(name: str, **numbers) -> None:
    path = ARTIFACTS / "bf16_agreement.json"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    report = json.loads(path.read_text()) if path.exists() else {}
    report[name] = numbers
    path.write_text(json.dumps(report, indent=1))


@pytest.fixture(scope="module")
def gemma_bf16():
    return workbench.load("gemma-3-270m", dtype="bfloat16")


@pytest.mark.slow
def test_default_model_pivot_curves_in_bf16(gemma, gemma_bf16):
    """fr->zh on the first 8 committed concepts (6 pass the token-set filter). Measured: the mean
    curves part by at most |dP| 0.0082 (French), single items' curves by at most 0.029."""
    words = load_concepts(["fr", "zh", "en"]).head(8)
    a, b = (lens.pivot(h, words, src_lang="fr", tgt_lang="zh", k_shot=2, use_cache=False) for h in (gemma, gemma_bf16))
    assert a.n_items == b.n_items == 6
    curves = {lang: float(np.abs(a.prob(lang).mean(0) - b.prob(lang).mean(0)).max()) for lang in a.languages}
    items = float(np.abs(a.probs - b.probs).max())
    record("pivot fr->zh, 6 items", mean_curve_max_dP=curves, item_max_dP=items)
    assert max(curves.values()) < 0.03 and items < 0.1


@pytest.mark.slow
def test_default_model_lens_top1_in_bf16(gemma, gemma_bf16):
    """Logit lens at the last position of every layer of six real prompts (108 rows). Measured: the
    bf16 top-1 token equals float32's in 102 of 108 rows (94.4%), in all six at the last layer;
    max |dP| 0.066."""
    prompts = ["The capital of France is", "Le chat est assis sur le tapis et le chien",
               "Die Katze sitzt auf der Matte, und der Hund", "猫坐在垫子上，狗在",
               'Français: "chat" - English: "cat"\nFrançais: "eau" - English: "', "Once upon a time, there was a"]
    tops = []
    for handle in (gemma, gemma_bf16):
        resid = torch.cat([engine.residual_stream(handle, engine.as_ids(handle, p), at=-1) for p in prompts], 1)
        tops.append(engine.lens_logits(handle, resid).argmax(-1))  # (layers, prompts)
    same = (tops[0] == tops[1]).float()
    record("lens top-1, 6 prompts x 18 layers", share=same.mean().item(), last_layer=same[-1].mean().item())
    assert same.mean() >= 0.9 and same[-1].all(), same.mean(1)
