"""Retrieval-head probe: the score against hand calculations on synthetic argmax traces, the
recorded trace against a full recompute (including a cropped sliding-window KV cache), and the
result objects."""

import json

import numpy as np
import pytest
import torch

from probes import retrieval as R
from workbench import engine
from workbench.datasets import haystack
from workbench.errors import InputError

# --------------------------------------------------------------------------- pure scoring

PROMPT = [1, 50, 10, 11, 12, 13, 51, 11, 52]  # needle = positions [2, 6): tokens 10 11 12 13
SPAN = (2, 6)


def test_score_trace_matches_hand_calculation():
    tokens = [11, 13, 99]  # three generated tokens
    attended = np.zeros((3, 2, 2), dtype=int)
    # (0, 0): copies 11 from pos 3, then 13 from pos 5, then looks at pos 4 (12 != 99) -> 2 hits
    attended[:, 0, 0] = [3, 5, 4]
    # (0, 1): token 11 also sits at pos 7, outside the needle -> never a hit
    attended[:, 0, 1] = [7, 7, 7]
    # (1, 0): inside the needle but on the wrong token (10, 12, 10) -> no hit
    attended[:, 1, 0] = [2, 4, 2]
    # (1, 1): one hit at step 1 (pos 5 holds 13), then a generated position beyond the prompt
    attended[:, 1, 1] = [8, 5, 10]
    scores = R.score_trace(attended, tokens, PROMPT, SPAN)
    expected = np.array([[2 / 4, 0.0], [0.0, 1 / 4]])
    np.testing.assert_allclose(scores, expected)


def test_keep_rule_and_mean_over_kept_trials():
    a = np.array([[0.5, 0.0], [0.25, 1.0]])
    b = np.array([[0.0, 0.0], [0.75, 0.5]])
    dropped = np.array([[9.0, 9.0], [9.0, 9.0]])
    recalls = [1.0, 0.6, 0.5]  # 0.5 is not > 0.5: dropped
    kept = [R.keep_trial(r) for r in recalls]
    assert kept == [True, True, False]
    np.testing.assert_allclose(R.aggregate([a, b, dropped], kept), [[0.25, 0.0], [0.5, 0.75]])
    assert np.isnan(R.aggregate([dropped], [False])).all()


def test_each_step_counts_at_most_once_and_span_bounds():
    # a whole-needle copy: each step attends to the token it emits -> score 1.0 exactly
    tokens = [10, 11, 12, 13]
    attended = np.array([2, 3, 4, 5]).reshape(4, 1, 1)
    assert R.score_trace(attended, tokens, PROMPT, SPAN)[0, 0] == pytest.approx(1.0)
    # the position right after the span (e = 6) is outside even if its token matched
    assert R.score_trace(np.full((1, 1, 1), 6), [51], PROMPT, SPAN)[0, 0] == 0.0
    with pytest.raises(ValueError, match="not inside"):
        R.score_trace(attended, tokens, PROMPT, (5, 20))
    with pytest.raises(ValueError, match="one \\(layers, heads\\) argmax row per generated token"):
        R.score_trace(attended, tokens[:2], PROMPT, SPAN)


def test_key_index_to_position_shift():
    # a sliding layer's decode step at position 30 sees 8 keys: positions 23..30
    assert R.to_prompt_positions(np.array([0, 7]), 8, 30).tolist() == [23, 30]
    # a layer (or cache) that sees every key needs no shift
    assert R.to_prompt_positions(np.array([0, 30]), 31, 30).tolist() == [0, 30]
    with pytest.raises(ValueError):
        R.to_prompt_positions(np.array([0]), 32, 30)


# --------------------------------------------------------------------------- recording


def _full_recompute_argmax(handle, ids):
    """Argmax over keys of every query row from one cache-free forward pass: (T, L, H)."""
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(handle.n_layers)]
    cache = engine.capture(handle, ids, names)
    return torch.stack([cache[n][0].argmax(-1).T for n in names], dim=1).numpy()


def _record(handle, prompt_ids, steps):
    rec = R.ArgmaxRecorder(handle, len(prompt_ids))
    tokens = []
    engine.generate_greedy(handle, prompt_ids, steps, fwd_hooks=rec.hooks(),
                        on_step=lambda s, nxt: tokens.append(int(nxt[0])))
    return rec, tokens


def test_recorded_trace_equals_full_recompute_with_sliding_cache(tiny_handle):
    """With the KV cache, the tiny Gemma's sliding layer (window 8) sees only the last keys;
    after the shift its argmax positions must equal those of a cache-free pass over the text."""
    h = tiny_handle
    prompt = h.encode("the cat sat on the mat and the dog ran in the park")
    steps = 6
    rec, tokens = _record(h, prompt, steps)
    trace = rec.trace()
    assert trace.shape == (len(tokens), h.n_layers, h.facts.n_heads)
    full_ids = torch.tensor([prompt + tokens[:-1]])
    expected = _full_recompute_argmax(h, full_ids)[len(prompt) - 1:]
    np.testing.assert_array_equal(trace, expected)
    # what the cache gave each decode step (documents transformers' behaviour)
    for layer, kind in enumerate(h.facts.layer_types or ["full_attention"] * h.n_layers):
        for call, n_keys in enumerate(rec.n_keys[layer]):
            query_pos = len(prompt) - 1 + call
            if kind == "sliding_attention" and call > 0:
                # DynamicSlidingWindowLayer keeps window-1 keys, plus the step's own key;
                # a cache that kept everything (query_pos + 1) would be handled as well
                assert n_keys in (h.facts.sliding_window, query_pos + 1)
            else:
                assert n_keys == query_pos + 1


def test_sliding_cache_really_is_cropped(tiny_gemma):
    """transformers 5.x crops sliding layers to window-1 cached keys (so the shift matters)."""
    h = tiny_gemma
    prompt = h.encode("the cat sat on the mat and the dog ran in the park")
    rec, _ = _record(h, prompt, 3)
    window = h.facts.sliding_window
    assert h.facts.layer_types[0] == "sliding_attention"
    assert rec.n_keys[0][1:] == [window, window]
    assert rec.n_keys[1][1:] == [len(prompt) + 1, len(prompt) + 2]


def _hand_trial(handle):
    prompt = handle.encode("the cat sat on the mat and the dog ran in the park")
    needle = haystack.Needle("en", "the cat sat on the mat", "where?", "on the mat", id="cat")
    return haystack.Trial(prompt, (1, 7), needle, "en", len(prompt) - 1, 0.0)


def test_run_trial_scores_its_own_trace(tiny_gemma):
    trial = _hand_trial(tiny_gemma)
    rec = R.run_trial(tiny_gemma, trial, max_new_tokens=5)
    assert rec.attended.shape == (len(rec.tokens), 2, 4)
    np.testing.assert_allclose(rec.scores, R.score_trace(rec.attended, rec.tokens, trial.prompt_ids, (1, 7)))
    plain = engine.generate_greedy(tiny_gemma, trial.prompt_ids, 5, stop_at_newline=True)
    assert rec.tokens.tolist()[: len(plain.new_ids[0])] == plain.new_ids[0]
    assert rec.kept == (rec.recall > 0.5)
    assert rec.window_sees_needle is False  # needle at 1..7, window 8 of a 12+-token prompt


def test_retrieval_scores_on_tiny_model(tiny_gemma, monkeypatch):
    """End to end on a tiny grid; recall is forced so the keep rule is exercised both ways."""
    recalls = iter([1.0, 0.0, 0.9, 0.2])
    monkeypatch.setattr(haystack, "rouge1_recall", lambda answer, ref, lang: next(recalls))
    res = R.retrieval_scores(tiny_gemma, "en", lengths=(200, 260), depths=(0.5,), n_needles=2,
                             use_cache=False, max_new_tokens=4)
    assert len(res.trials) == 4 and res.n_kept == 2 and res.n_dropped == 2
    kept = [t.scores for t in res.trials if t.kept]
    np.testing.assert_allclose(res.scores, np.mean(kept, axis=0))
    assert res.scores.shape == (2, 4)
    assert set(res.trials_frame()["kept"]) == {True, False}


def test_no_kept_trial_gives_nan_and_says_so(tiny_gemma, monkeypatch):
    monkeypatch.setattr(haystack, "rouge1_recall", lambda answer, ref, lang: 0.0)
    res = R.retrieval_scores(tiny_gemma, "fr", lengths=(200,), depths=(0.5,), n_needles=1,
                             use_cache=False, max_new_tokens=2)
    assert res.n_kept == 0 and np.isnan(res.scores).all()
    assert "No trial was kept" in res.note and res.top(3).empty
    res.figure()  # renders an empty heatmap without failing


def test_result_is_cached(tiny_gemma, tmp_path, monkeypatch):
    from workbench import cache

    monkeypatch.setattr(cache, "RESULTS", cache.ResultCache(root=tmp_path))
    args = dict(lengths=(200,), depths=(0.5,), n_needles=1, max_new_tokens=2)
    first = R.retrieval_scores(tiny_gemma, "de", **args)
    calls = []
    monkeypatch.setattr(R, "run_trial", lambda *a, **k: calls.append(1))
    second = R.retrieval_scores(tiny_gemma, "de", **args)
    assert second is first and not calls


@pytest.mark.parametrize("kwargs, message", [
    (dict(lang="xx"), "No haystack for language 'xx'"),
    (dict(lengths=()), "at least one context length"),
    (dict(depths=(1.5,)), "between 0 and 1"),
    (dict(n_needles=0), "n_needles"),
    (dict(n_needles=99), "needles must be between 1 and"),
    (dict(lengths=(10**6,)), "context_tokens can be at most"),
])
def test_bad_input_is_explained(tiny_gemma, kwargs, message):
    args = dict(lang="en", lengths=(200,), depths=(0.5,), n_needles=1, use_cache=False)
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        R.retrieval_scores(tiny_gemma, **args)


# --------------------------------------------------------------------------- result objects


def _result(lang, scores, kept=(True, False)):
    scores = np.asarray(scores, dtype=float)
    trials = []
    for i, k in enumerate(kept):
        trials.append(R.TrialRecord(
            lang=lang, needle_id=f"n{i}", context_tokens=256 * (i + 1), depth=0.5, prompt_tokens=280,
            needle_span=(100, 110), expected="x", answer="x" if k else "y", recall=1.0 if k else 0.0, kept=k,
            window_sees_needle=True, tokens=np.array([5, 6]), attended=np.zeros((2,) + scores.shape, dtype=np.int32),
            scores=scores if k else np.zeros_like(scores),
        ))
    return R.RetrievalResult("tiny", lang, scores, ("sliding_attention", "full_attention", "sliding_attention"),
                             8, trials, (256, 512), (0.5,), 1)


def test_result_frames_rank_and_threshold():
    res = _result("en", [[0.0, 0.3], [0.05, 0.5], [0.1, 0.2]])
    frame = res.to_frame()
    assert list(zip(frame["layer"], frame["head"]))[:3] == [(1, 1), (0, 1), (2, 1)]
    assert res.retrieval_heads() == [(1, 1), (0, 1), (2, 1)]  # 0.1 itself is not above 0.1
    assert res.top(2)["score"].tolist() == [0.5, 0.3]
    by_type = res.by_layer_type().set_index("layer_type")
    assert by_type.loc["full", "max_score"] == 0.5 and by_type.loc["sliding", "retrieval_heads"] == 2
    by_length = res.by_length()
    assert by_length["kept_trials"].tolist() == [1, 1, 0, 0]
    # the kept trial (scores == res.scores) had the needle inside the window
    by_window = res.by_window().set_index(["window_sees_needle", "layer_type"])
    assert by_window.loc[(True, "full"), "mean_score"] == pytest.approx(0.275)
    assert by_window.loc[(False, "sliding"), "kept_trials"] == 0
    json.dumps(res.to_json())
    assert res.figure().data[0].z.shape == (2, 3)
    with pytest.raises(InputError):
        res.top(0)


def test_language_comparison():
    a = _result("en", [[0.0, 0.3], [0.05, 0.5], [0.1, 0.2]])
    b = _result("de", [[0.4, 0.3], [0.05, 0.0], [0.1, 0.2]])
    cmp = R.LanguageComparison({"en": a, "de": b})
    frame = cmp.to_frame()
    assert list(frame.columns) == ["layer", "head", "layer_type", "en", "de"]
    assert frame.loc[(frame["layer"] == 0) & (frame["head"] == 0), "de"].item() == 0.4
    overlap = cmp.overlap(2)  # en top-2 {(1,1),(0,1)}, de top-2 {(0,0),(0,1)} -> 1/3
    assert overlap.loc["en", "de"] == pytest.approx(1 / 3) and overlap.loc["en", "en"] == 1.0
    assert cmp.correlation().shape == (2, 2)
    assert cmp.summary()["best_head"].tolist() == ["1.1", "0.0"]
    assert len(cmp.figure().data) == 2


def test_compare_languages_checks_every_language_first(tiny_gemma):
    with pytest.raises(InputError, match="'xx'"):
        R.compare_languages(tiny_gemma, ["en", "xx"], lengths=(200,), depths=(0.5,), n_needles=1)


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_gemma_sliding_layers_see_512_keys_and_trace_matches(gemma):
    """Gemma 3 270M: past 512 tokens a sliding layer's decode step sees 512 keys (511 cached plus
    its own) and the shifted argmax equals a cache-free recompute."""
    trial = R.make_trials(gemma, "en", (600,), (0.5,), 1)[0]
    rec, tokens = _record(gemma, trial.prompt_ids, 2)
    sliding = gemma.facts.layer_types.index("sliding_attention")
    full = gemma.facts.layer_types.index("full_attention")
    assert rec.n_keys[sliding][1] == 512 == gemma.facts.sliding_window
    assert rec.n_keys[full][1] == len(trial.prompt_ids) + 1
    expected = _full_recompute_argmax(gemma, torch.tensor([trial.prompt_ids + tokens[:-1]]))[len(trial.prompt_ids) - 1:]
    np.testing.assert_array_equal(rec.trace(), expected)
