"""The engine against independent computations: plain Hugging Face forwards without hooks or
caches, and hand-written loops. Plus the rule that nothing outside the engine runs the model."""

import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench import engine
from workbench.errors import InputError

PROMPTS = ["the cat sat on the mat", "a dog", "the house of the dog ran far away"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hf(tiny_gemma):
    return AutoModelForCausalLM.from_pretrained(tiny_gemma.facts.path, dtype=torch.float32).eval()


def _rows(handle):
    return [handle.encode(p) for p in PROMPTS]


def test_hook_names_are_spelled_in_one_place(tiny_gemma):
    assert engine.hook_name(1, "resid_post") == "blocks.1.hook_resid_post"
    assert engine.hook_name(0, "pattern") == "blocks.0.attn.hook_pattern"
    assert engine.resid_names(tiny_gemma, [-1]) == ["blocks.1.hook_resid_post"]
    for site in engine.SITES:
        assert engine.hook_name(0, site) in tiny_gemma.bridge.hook_dict
    with pytest.raises(InputError, match="Unknown site 'mlp_in'"):
        engine.hook_name(0, "mlp_in")


def test_capture_last_token_of_padded_rows_equals_hf_hidden_states(tiny_gemma, hf):
    ids, last = engine.pad_rows(tiny_gemma, _rows(tiny_gemma))
    got = engine.residual_stream(tiny_gemma, ids, layers=[0], at=last)[0]  # (batch, d)
    for r, row in enumerate(_rows(tiny_gemma)):
        with torch.no_grad():
            hidden = hf(torch.tensor([row]), output_hidden_states=True).hidden_states[1]  # after block 0
        torch.testing.assert_close(got[r], hidden[0, -1], atol=1e-5, rtol=1e-5)


def test_capture_positions_from_the_attention_mask(tiny_gemma):
    ids, last = engine.pad_rows(tiny_gemma, _rows(tiny_gemma))
    mask = torch.zeros_like(ids)
    for r, position in enumerate(last.tolist()):
        mask[r, : position + 1] = 1
    name = engine.hook_name(1, "mlp_out")
    by_mask = engine.capture(tiny_gemma, ids, [name], at="last", attention_mask=mask)[name]
    full = engine.capture(tiny_gemma, ids, [name], attention_mask=mask)[name]
    torch.testing.assert_close(by_mask, full[torch.arange(len(PROMPTS)), last])


def test_capture_stops_after_the_deepest_layer_it_needs(tiny_gemma):
    ids = engine.as_ids(tiny_gemma, PROMPTS[0])
    fired = []
    spy = [(engine.hook_name(1, "resid_pre"), lambda t, hook: fired.append(hook.name))]
    early = engine.capture(tiny_gemma, ids, [engine.hook_name(0, "resid_post")], fwd_hooks=spy)
    assert fired == []  # block 1 never ran
    full = engine.capture(tiny_gemma, ids, [engine.hook_name(0, "resid_post")], stop_after=None, fwd_hooks=spy)
    assert len(fired) == 1  # (under its canonical name, blocks.1.hook_in)
    torch.testing.assert_close(early["blocks.0.hook_resid_post"], full["blocks.0.hook_resid_post"])
    with pytest.raises(InputError, match="cannot stop"):
        engine.capture(tiny_gemma, ids, ["blocks.0.hook_resid_post"], stop_after=0, logits=True)


def test_capture_with_and_without_gradients(tiny_gemma):
    ids = engine.as_ids(tiny_gemma, PROMPTS[0])
    name = engine.hook_name(1, "resid_post")
    plain = engine.capture(tiny_gemma, ids, [name])[name]
    assert not plain.requires_grad
    kept = engine.capture(tiny_gemma, ids, [name], grad=True)[name]
    assert kept.requires_grad
    kept.sum().backward()
    embed = tiny_gemma.hf_model.get_input_embeddings().weight
    assert embed.grad is not None and embed.grad.abs().sum() > 0
    tiny_gemma.hf_model.zero_grad(set_to_none=True)


def test_label_logprobs_equal_full_log_softmax(tiny_gemma, hf):
    ids, _ = engine.pad_rows(tiny_gemma, _rows(tiny_gemma))
    labels = torch.full_like(ids, engine.IGNORE_INDEX)
    labels[0, 3:5] = ids[0, 3:5]
    labels[2, 1:7] = ids[2, 1:7]
    token_lp, mask, logits = engine.label_logprobs(tiny_gemma, ids, labels, keep_logits=True)
    with torch.no_grad():
        ref = torch.log_softmax(hf(ids).logits.float(), -1)
    for r, t in zip(*torch.nonzero(labels[:, 1:] != engine.IGNORE_INDEX, as_tuple=True)):
        assert token_lp[r, t].item() == pytest.approx(ref[r, t, ids[r, t + 1]].item(), abs=1e-5)
    assert mask.sum() == 8 and logits.shape == (8, tiny_gemma.facts.d_vocab)
    assert token_lp[1].abs().sum() == 0  # an unlabelled row scores nothing


def test_score_continuations_equal_full_forwards(tiny_gemma, hf):
    prompt = engine.as_ids(tiny_gemma, PROMPTS[0])
    continuations = [[11], [12, 13, 14], [15, 16]]
    logprob, greedy = engine.score_continuations(tiny_gemma, prompt, continuations)
    for k, cont in enumerate(continuations):
        ids = torch.cat([prompt, torch.tensor([cont])], dim=1)
        with torch.no_grad():
            ref = torch.log_softmax(hf(ids).logits.float(), -1)[0]
        n = prompt.shape[1]
        expected = sum(ref[n - 1 + i, tok].item() for i, tok in enumerate(cont))
        assert logprob[0, k].item() == pytest.approx(expected, abs=1e-4)
        assert bool(greedy[0, k]) == all(int(ref[n - 1 + i].argmax()) == tok for i, tok in enumerate(cont))


def test_decode_with_a_custom_step_equals_a_hand_written_loop(tiny_gemma, hf):
    """The step function decides; the loop (KV cache, stops) is the engine's."""
    def second_best(logits):
        return logits.topk(2, dim=-1).indices[:, 1]

    prompt = engine.as_ids(tiny_gemma, PROMPTS[2])
    got = engine.decode(tiny_gemma, prompt, max_new_tokens=6, step=second_best)
    ids = prompt.clone()
    expected = []
    stops = engine.stop_ids(tiny_gemma, stop_at_newline=False)
    for _ in range(6):
        with torch.no_grad():
            tok = int(hf(ids).logits[0, -1].topk(2).indices[1])
        if tok in stops:
            break
        expected.append(tok)
        ids = torch.cat([ids, torch.tensor([[tok]])], dim=1)
    assert got.new_ids[0] == expected


def test_dropping_finished_rows_changes_no_row(tiny_gemma):
    bos = tiny_gemma.tokenizer.bos_token_id
    prompt = torch.tensor([[bos, 20 + r, 40 + 2 * r, 60 + 3 * r] for r in range(3)])
    cache, logits = engine.prefill(tiny_gemma, prompt)
    free, _ = engine.continue_decoding(tiny_gemma, engine.fork(cache, torch.arange(3)), logits, 6, frozenset())

    def stop_lengths(tok):
        return [row.index(tok) if tok in row else len(row) for row in free]

    # a stop token that ends the rows at different steps
    tok = next(tok for row in free for tok in row if len(set(stop_lengths(tok))) > 1)
    stops = frozenset({tok})
    kept, _ = engine.continue_decoding(tiny_gemma, engine.fork(cache, torch.arange(3)), logits, 6, stops)
    dropped, _ = engine.continue_decoding(tiny_gemma, engine.fork(cache, torch.arange(3)), logits, 6, stops,
                                          drop_finished=True)
    assert dropped == kept and [len(row) for row in kept] == stop_lengths(tok)
    for row in range(3):
        alone, _ = engine.continue_decoding(tiny_gemma, engine.fork(cache, torch.tensor([row])),
                                            logits[row:row + 1], 6, stops)
        assert alone[0] == kept[row]


FORWARD_CALL = re.compile(r"\.hf_model\(|\.base_model\(|\.generate\(|\bmodel\(\s*input_ids=|original_model\(")


def test_no_forward_calls_outside_the_engine():
    """Every probe, method and evaluation runs the model through workbench.engine."""
    offenders = []
    for folder in ("workbench", "probes", "trainers"):
        for path in (ROOT / folder).rglob("*.py"):
            if (ROOT / "workbench" / "engine") in path.parents:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if FORWARD_CALL.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_handle_methods_are_the_engine(tiny_gemma):
    """The handle's notebook methods give exactly what the engine's functions give."""
    prompt = PROMPTS[0]
    ids = engine.as_ids(tiny_gemma, prompt)
    assert torch.equal(tiny_gemma.logits(prompt), engine.forward(tiny_gemma, ids))
    resid = tiny_gemma.residuals(prompt, layers=[0, 1])
    assert torch.equal(resid, engine.residual_stream(tiny_gemma, ids, [0, 1]))
    assert torch.equal(tiny_gemma.lens(resid[-1]), engine.lens_logits(tiny_gemma, resid[-1]))
    name = engine.hook_name(0, "mlp_out")
    assert torch.equal(tiny_gemma.capture(prompt, [name], at=-1)[name], engine.capture(tiny_gemma, ids, [name], at=-1)[name])
    assert tiny_gemma.greedy(prompt, 4).new_ids == engine.generate_greedy(tiny_gemma, ids, 4).new_ids
    got = tiny_gemma.score(prompt, [[5, 6]])
    want = engine.score_continuations(tiny_gemma, ids, [[5, 6]])
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("prompt, message", [
    (None, "The prompt is empty"),
    ("abc \ud800", "lone surrogate '\\\\ud800' at position 4"),
    (3.5, "must be text or a list of token ids, not float"),
    ([1, "a"], "must be text or a list of token ids"),
])
def test_bad_prompts_get_a_message(tiny_gemma, prompt, message):
    with pytest.raises(InputError, match=message):
        engine.as_ids(tiny_gemma, prompt)
    if isinstance(prompt, str):
        with pytest.raises(InputError, match="lone surrogate"):
            tiny_gemma.encode(prompt)
