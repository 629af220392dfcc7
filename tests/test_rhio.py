"""RHIO: masked-head augmentation, control tokens through training and reload, contrastive decoding."""

import json

import pytest
import torch

import workbench
from probes.masking import generate_with_masked_heads
from trainers.methods import rhio
from workbench import engine
from workbench.datasets.faithfulness import load_faithfulness
from workbench.errors import InputError


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture()
def prepared(home, tiny_folders):
    spec = rhio.add_control_tokens(str(tiny_folders["gemma3"]), "rhio-base")
    return workbench.load(spec)


def _items(n=3):
    return load_faithfulness(langs=["en"])[:n]


def test_control_tokens_are_added_and_required(prepared, tiny_gemma):
    pos, neg = rhio.control_ids(prepared.tokenizer)
    assert pos != neg and prepared.hf_model.get_input_embeddings().weight.shape[0] > max(pos, neg)
    with pytest.raises(InputError, match="rhio prepare"):
        rhio.control_ids(tiny_gemma.tokenizer)
    assert prepared.encode(rhio.POS, prepend_bos=False) == [pos]  # one token, never split


def test_augmentation_masks_the_chosen_heads(tiny_gemma, tmp_path):
    items = _items()
    heads = [(1, 0), (1, 1), (1, 2), (1, 3)]
    out = rhio.augment(tiny_gemma, items, heads, max_new_tokens=8, out_path=tmp_path / "aug.jsonl", max_chars=200)
    records = [json.loads(l) for l in (tmp_path / "aug.jsonl").read_text().splitlines()]
    assert [r["output"] for r in records] == [it.answer for it in items]
    changed = 0
    for item, aug in zip(items, out):
        ref = generate_with_masked_heads(tiny_gemma, aug.instruction, heads, max_new_tokens=8)
        assert aug.negative == (ref.masked.strip() or "(no answer)")
        changed += ref.masked != ref.original
    assert changed > 0  # masking changed what the model says


def _manual_contrastive(handle, prompt, alpha, plausibility, steps):
    """Independent reference: full (no-cache) forwards of both streams at every step."""
    rows = [handle.encode(rhio.control_prompt(prompt, c) + "\n") for c in rhio.CONTROL_TOKENS]
    out = []
    for _ in range(steps):
        with torch.no_grad():
            logits = handle.hf_model(torch.tensor(rows), use_cache=False).logits[:, -1]
        z_pos, z_neg = logits[0], logits[1]
        scores = (1 + alpha) * z_pos - alpha * z_neg
        if plausibility:
            p = torch.softmax(z_pos, -1)
            scores[p < plausibility * p.max()] = float("-inf")
        nxt = int(scores.argmax())
        if nxt == handle.tokenizer.eos_token_id:
            break
        out.append(nxt)
        rows = [r + [nxt] for r in rows]
    return out


@pytest.mark.parametrize("alpha,plausibility", [(1.0, None), (0.5, 0.1), (2.0, 0.5)])
def test_contrastive_decoding_equals_formula(prepared, alpha, plausibility):
    prompt = "Documents:\n[1] cats\nthe cat sat on the mat\n\nQuestion: where is the cat?\nAnswer:"
    gen = rhio.contrastive_generate(prepared, prompt, alpha=alpha, plausibility=plausibility, max_new_tokens=8)
    assert gen.new_ids[0] == _manual_contrastive(prepared, prompt, alpha, plausibility, 8)


def test_alpha_zero_is_plain_pos_decoding(prepared):
    prompt = "Question: what is the best thing?\nAnswer:"
    cd = rhio.contrastive_generate(prepared, prompt, alpha=0.0, plausibility=None, max_new_tokens=10)
    assert cd.new_ids[0] == rhio.generate_with_control(prepared, prompt, rhio.POS, max_new_tokens=10).new_ids[0]


def test_rhio_training_keeps_control_tokens_through_save_and_reload(prepared, home, tiny_folders):
    from trainers.config import TrainConfig
    from trainers.loop import train

    items = _items(4)
    data = home / "rhio.jsonl"
    data.write_text("".join(json.dumps({"instruction": rhio.faithfulness_prompt(i.question, i.documents, 200),
                                        "output": i.answer[:80], "negative": "I think it is in Paris.",
                                        "lang": i.lang}) + "\n" for i in items))
    cfg = TrainConfig(method="rhio", base_model=prepared.facts.spec, data=str(data), max_steps=2, batch_size=2,
                      max_length=96, lr=1e-3, seed=0, output="rhio-test")
    result = train(cfg)
    reloaded = workbench.load(result.checkpoint.spec)
    assert rhio.control_ids(reloaded.tokenizer) == rhio.control_ids(prepared.tokenizer)
    ids = engine.as_ids(reloaded, rhio.control_prompt("Question: x?\nAnswer:", rhio.NEG) + "\n")
    trained = result.handle
    with torch.no_grad():
        torch.testing.assert_close(engine.forward(reloaded, ids), trained.hf_model(ids).logits, atol=1e-4, rtol=1e-4)


def test_rhio_loss_is_both_cross_entropies(prepared):
    from trainers.config import TrainConfig
    from trainers.methods.rhio.method import RHIO
    from trainers.methods.sft import SFT

    rec = {"instruction": "Question: where?\nAnswer:", "output": "in the park", "negative": "in Paris"}
    cfg = TrainConfig(max_length=64)
    method = RHIO()
    with torch.no_grad():
        loss, terms = method.loss(prepared, method.collate([rec], prepared.tokenizer, cfg))
        sft = SFT()
        pos, _ = sft.loss(prepared, sft.collate([{"instruction": rhio.control_prompt(rec["instruction"], rhio.POS),
                                                   "output": rec["output"]}], prepared.tokenizer, cfg))
        neg, _ = sft.loss(prepared, sft.collate([{"instruction": rhio.control_prompt(rec["instruction"], rhio.NEG),
                                                   "output": rec["negative"]}], prepared.tokenizer, cfg))
    assert loss.item() == pytest.approx(pos.item() + neg.item(), rel=1e-5)


def test_faithfulness_view(prepared, tiny_folders):
    import gradio as gr

    from workbench.datasets.faithfulness import load_faithfulness
    from trainers.methods.rhio.evaluation import evaluate_faithfulness, highlight
    from workbench.ui.tab_faithfulness import compare_answers, show_item

    item = load_faithfulness(langs=["en"])[0]
    assert item.question in show_item(item.id)
    marked = highlight("Goldfish remember for months. Zorblax the wizard invented them in 1066.", item.documents, "en")
    assert marked.count("<mark") == 1 and "Zorblax" in marked.split("<mark")[1]
    with pytest.raises(gr.Error, match="RHIO model"):
        compare_answers(str(tiny_folders["gemma3"]), " ", item.id, 1.0, 4, progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="No faithfulness item"):
        compare_answers(str(tiny_folders["gemma3"]), prepared.facts.spec, "nope", 1.0, 4, progress=lambda *a, **k: None)
    result = evaluate_faithfulness(prepared, [item], "contrastive", max_new_tokens=4, max_chars=200)
    assert set(result.summary()) >= {"support", "rougeL", "items"} and result.summary().iloc[0]["items"] == 1
