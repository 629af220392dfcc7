"""The pivot lens against an independent computation from Hugging Face hidden states."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from probes import pivot as lens
from probes.tokens import prefix_token_ids
from workbench import cache
from workbench.errors import InputError

# Words the tiny tokenizer was trained on; "mat"/"Matte" and "park"/"Park" are dropped (one word
# inside the other, case-insensitive).
WORDS = pd.DataFrame({
    "concept": ["cat", "dog", "mat", "park", "water", "sun", "moon"],
    "en": ["cat", "dog", "mat", "park", "water", "sun", "moon"],
    "de": ["Katze", "Hund", "Matte", "Park", "Wasser", "Sonne", "Mond"],
    "zh": ["猫", "狗", "垫子", "公园", "水", "太阳", "月亮"],
})


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "RESULTS", cache.ResultCache(root=tmp_path))


def reference(tok, hf, prompt: str, sets: dict, answer_word: str):
    """Per layer: P(set) for each language, entropy (bits) and answer rank, computed from HF
    hidden states one prompt at a time (no padding, no hooks)."""
    ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
    full = [tok.bos_token_id] + tok(prompt + answer_word, add_special_tokens=False)["input_ids"]
    answer = full[len(ids)]
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_hidden_states=True)
        base = hf.base_model
        norm = getattr(base, "norm", None) or getattr(base, "ln_f")
        n_layers = hf.config.num_hidden_layers
        rows = []
        for layer in range(n_layers):
            h = out.hidden_states[layer + 1][0, -1]
            if layer < n_layers - 1:  # HF's last hidden state is already normed
                h = norm(h)
            logits = hf.get_output_embeddings()(h)
            cap = getattr(hf.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            if layer == n_layers - 1:
                torch.testing.assert_close(logits, out.logits[0, -1], atol=1e-4, rtol=1e-4)
            p = torch.softmax(logits.double(), -1)
            rows.append({
                **{lang: float(p[sorted(s)].sum()) for lang, s in sets.items()},
                "entropy": float(-(p * p.log()).sum() / math.log(2)),
                "rank": int((logits > logits[answer]).sum()) + 1,
            })
    return rows, answer


def test_lens_matches_hf_hidden_states(tiny_handle):
    result = lens.pivot(tiny_handle, WORDS, src_lang="de", tgt_lang="zh", k_shot=2, batch_size=3, use_cache=False)
    assert result.languages == ["de", "en", "zh"]
    assert [d.concept for d in result.dropped] == ["mat", "park"]
    assert result.n_items == 5 and result.probs.shape == (5, 2, 3)
    assert len({item["n_tokens"] for item in result.items}) > 1  # batches really were padded
    tok = AutoTokenizer.from_pretrained(tiny_handle.facts.path)
    hf = AutoModelForCausalLM.from_pretrained(tiny_handle.facts.path, dtype=torch.float32).eval()
    for i, item in enumerate(result.items):
        sets = {lang: prefix_token_ids(tiny_handle.tokenizer, word) for lang, word in item["words"].items()}
        rows, answer = reference(tok, hf, item["prompt"], sets, item["words"]["zh"])
        assert item["answer_id"] == answer
        for layer, row in enumerate(rows):
            for lang in result.languages:
                assert result.prob(lang)[i, layer] == pytest.approx(row[lang], abs=2e-5)
            assert result.entropy[i, layer] == pytest.approx(row["entropy"], abs=2e-4)
            assert result.rank[i, layer] == row["rank"]


def test_prompt_formats():
    rows = [{"concept": "a", "src": "eau", "tgt": "水", "en": "water", "sentence": "Je bois de l'___."},
            {"concept": "b", "src": "feu", "tgt": "火", "en": "fire", "sentence": "Le ___ brûle."}]
    assert lens.build_prompt("translation", "fr", "zh", rows[1:], rows[0]) == (
        'Français: "feu" - 中文: "火"\nFrançais: "eau" - 中文: "')
    assert lens.build_prompt("cloze", "fr", "fr", rows[1:], rows[0]) == (
        'Le ___ brûle.\nFrançais: "火"\n\nJe bois de l\'___.\nFrançais: "')
    assert lens.build_prompt("repetition", "zh", "zh", [], rows[0]) == '中文: "eau" - 中文: "'


def test_demos_are_reproducible_and_never_the_query():
    rows = lens.item_rows(WORDS, "translation", "de", "zh")
    for i in range(len(rows)):
        demos = lens.choose_demos(rows, i, "translation", 3, seed=7)
        assert demos == lens.choose_demos(rows, i, "translation", 3, seed=7)
        assert rows[i] not in demos and len({d["concept"] for d in demos}) == 3
    base = lens.choose_demos(rows, 0, "translation", 3, seed=0)
    assert any(lens.choose_demos(rows, 0, "translation", 3, seed=s) != base for s in range(1, 5))


def test_missing_words_are_dropped_and_counted(tiny_gemma):
    table = WORDS.copy()
    table.loc[1, "zh"] = None
    table.loc[4, "en"] = ""
    result = lens.pivot(tiny_gemma, table, src_lang="de", tgt_lang="zh", k_shot=1, use_cache=False)
    reasons = {d.concept: d.reason for d in result.dropped}
    assert reasons["dog"] == "missing the zh word" and reasons["water"] == "missing the en word"
    assert result.n_items + len(result.dropped) == len(table)
    assert list(result.dropped_frame().columns) == ["concept", "reason"]


def test_repetition_and_cloze(tiny_gemma):
    rep = lens.pivot(tiny_gemma, WORDS, "repetition", tgt_lang="zh", k_shot=2, use_cache=False)
    assert rep.languages == ["zh", "en"] and rep.role("zh") == "input = target"
    assert rep.items[0]["prompt"].count('中文: "') == 6
    cloze = pd.DataFrame({"concept": ["cat", "dog", "water"], "lang": "de",
                          "sentence": ["Die ___ sitzt.", "Der ___ läuft.", "Ich trinke ___."],
                          "answer": ["Katze", "Hund", "Wasser"], "en": ["cat", "dog", "water"]})
    res = lens.pivot(tiny_gemma, cloze, "cloze", tgt_lang="de", k_shot=1, use_cache=False)
    assert res.n_items == 3 and res.items[0]["prompt"].endswith('Deutsch: "')


def test_pairs_and_triples(tiny_gemma):
    res = lens.pivot(tiny_gemma, [("Katze", "cat"), ("Hund", "dog"), ("Sonne", "sun")], src_lang="de",
                     tgt_lang="en", k_shot=1, use_cache=False)
    assert res.languages == ["de", "en"] and res.items[0]["words"] == {"de": "Katze", "en": "cat"}
    res = lens.pivot(tiny_gemma, [("Katze", "猫", "cat"), ("Hund", "狗", "dog")], src_lang="de", tgt_lang="zh",
                     k_shot=1, use_cache=False)
    assert res.n_items == 2
    with pytest.raises(InputError, match="English"):
        lens.pivot(tiny_gemma, [("Katze", "猫"), ("Hund", "狗")], src_lang="de", tgt_lang="zh", k_shot=1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(task="summary", src_lang="de", tgt_lang="zh"), "Unknown task"),
    (dict(src_lang="de", tgt_lang="xx"), "Unknown language code 'xx'"),
    (dict(src_lang="de", tgt_lang="zh", k_shot=7), "larger than the data"),
    (dict(src_lang="de", tgt_lang="zh", k_shot=-1), "k_shot"),
    (dict(src_lang="fr", tgt_lang="zh"), "no fr words"),
    (dict(task="repetition", src_lang="de", tgt_lang="zh"), "one language"),
])
def test_bad_input(tiny_gemma, kwargs, message):
    with pytest.raises(InputError, match=message):
        lens.pivot(tiny_gemma, WORDS, **kwargs)


def test_empty_and_all_dropped(tiny_gemma):
    with pytest.raises(InputError, match="empty"):
        lens.pivot(tiny_gemma, [], src_lang="de", tgt_lang="zh")
    same = pd.DataFrame({"en": ["park", "Park"], "de": ["Park", "park"], "zh": ["公园", "公园"]})
    with pytest.raises(InputError, match="All 2 items were dropped"):
        lens.pivot(tiny_gemma, same, src_lang="de", tgt_lang="zh", k_shot=0)


def test_cache_skips_the_model(tiny_gemma, tmp_path, monkeypatch):
    calls = []
    real = lens.last_token_residuals
    monkeypatch.setattr(lens, "last_token_residuals", lambda *a: calls.append(1) or real(*a))
    first = lens.pivot(tiny_gemma, WORDS, src_lang="de", tgt_lang="zh", k_shot=1, batch_size=4)
    n = len(calls)
    assert n == 2
    lens.pivot(tiny_gemma, WORDS, src_lang="de", tgt_lang="zh", k_shot=1)
    monkeypatch.setattr(cache, "RESULTS", cache.ResultCache(root=cache.RESULTS.root))  # a new process: disk only
    again = lens.pivot(tiny_gemma, WORDS, src_lang="de", tgt_lang="zh", k_shot=1)
    assert len(calls) == n and np.array_equal(again.probs, first.probs)
    lens.pivot(tiny_gemma, WORDS, src_lang="de", tgt_lang="zh", k_shot=1, seed=1)
    assert len(calls) > n


def test_result_views(tiny_gemma):
    res = lens.pivot(tiny_gemma, WORDS, src_lang="de", tgt_lang="zh", k_shot=2, use_cache=False)
    summary = res.to_frame()
    assert set(summary["metric"]) == {"P(de)", "P(en)", "P(zh)", "entropy_bits", "answer_rank"}
    p_en = summary[summary["metric"] == "P(en)"]
    assert np.allclose(p_en["value"], res.prob("en").mean(axis=0))
    assert (p_en["lo"] <= p_en["value"]).all() and (p_en["value"] <= p_en["hi"]).all()
    per_item = res.to_frame(per_item=True)
    assert len(per_item) == res.n_items * res.n_layers and "word_zh" in per_item
    json.dumps(res.to_json())
    fig = res.figure()
    assert len(fig.data) == 2 * 5 and "5 items" in fig.layout.title.text


def test_mean_band_matches_scipy():
    from scipy import stats

    x = np.random.default_rng(0).random((12, 3))
    mean, lo, hi = lens.mean_band(x)
    ref_lo, ref_hi = stats.t.interval(0.95, 11, loc=x.mean(0), scale=stats.sem(x, axis=0))
    assert np.allclose(lo, ref_lo) and np.allclose(hi, ref_hi) and np.allclose(mean, x.mean(0))


def test_logit_lens_grid_matches_hf(tiny_gemma):
    prompt = "the cat sat on the mat"
    grid = lens.logit_lens_grid(tiny_gemma, prompt, top_k=3, use_cache=False)
    hf = AutoModelForCausalLM.from_pretrained(tiny_gemma.facts.path, dtype=torch.float32).eval()
    ids = torch.tensor([tiny_gemma.encode(prompt)])
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        for layer in range(2):
            h = out.hidden_states[layer + 1][0]
            logits = hf.get_output_embeddings()(hf.base_model.norm(h) if layer == 0 else h)
            logits = torch.tanh(logits / 30.0) * 30.0
            probs, top = torch.softmax(logits, -1).topk(3, dim=-1)
            assert np.array_equal(grid.top_ids[layer], top.numpy())
            assert np.allclose(grid.top_probs[layer], probs.numpy(), atol=1e-5)
    assert grid.top_ids.shape == (2, ids.shape[1], 3) and len(grid.tokens) == ids.shape[1]
    assert len(grid.to_frame()) == 2 * ids.shape[1] * 3
    fig = grid.figure()
    assert fig.data[0].z.shape == (2, ids.shape[1]) and "1. " in fig.data[0].customdata[0][0]
    with pytest.raises(InputError, match="top_k"):
        lens.logit_lens_grid(tiny_gemma, prompt, top_k=0)
    with pytest.raises(InputError, match="empty"):
        lens.logit_lens_grid(tiny_gemma, "  ")


def test_entropy_profile_is_the_mean_over_prompts(tiny_gemma):
    prompts = ["the cat sat", "le chat est sur le tapis", "猫"]
    profile = lens.lens_entropy_profile(tiny_gemma, prompts, batch_size=2)
    singles = [lens.lens_entropy_profile(tiny_gemma, [p]) for p in prompts]
    assert profile.shape == (2,) and np.allclose(profile, np.mean(singles, axis=0), atol=1e-4)
    ref = lens.pivot(tiny_gemma, WORDS, src_lang="de", tgt_lang="zh", k_shot=0, use_cache=False)
    direct = lens.lens_entropy_profile(tiny_gemma, [item["prompt"] for item in ref.items])
    assert np.allclose(direct, ref.entropy.mean(axis=0), atol=1e-4)
    with pytest.raises(InputError):
        lens.lens_entropy_profile(tiny_gemma, ["", " "])
