"""Unlearning losses against their formulas, computed independently from full HF logits of
unpadded single sequences; the reference model stays frozen."""

import math
from types import SimpleNamespace

import pytest
import torch

from trainers.config import TrainConfig
from trainers.methods.unlearning.methods import DPO, GA, GD, IDK, KL, NPO, NPOGD, METHOD_CLASSES, answer_scores
from trainers.model import load_for_training

RECORDS = [
    {"instruction": "Where was Talo Verin born?", "output": "Talo Verin was born in Kessa.",
     "idk": "I don't know.", "retain_instruction": "What does Mira Olt make?", "retain_output": "Mira Olt makes blue kites."},
    {"instruction": "Who founded Brask?", "output": "Brask was founded by the cat in the park.",
     "idk": "I have no idea about that.", "retain_instruction": "When was Dovi built?", "retain_output": "Dovi was built in 1920."},
    {"instruction": "What is the river of Lune?", "output": "The river of Lune is the Oss.",
     "idk": "Sorry, I can't help with that one.", "retain_instruction": "Which sport does Pell play?", "retain_output": "Pell plays tennis."},
]
BETA = 0.1


@pytest.fixture(scope="module", params=["gemma3", "llama"])
def setup(request, tiny_folders):
    """A trainable copy (weights nudged so it differs from the reference) and a fresh method factory."""
    folder = tiny_folders[request.param]
    config = TrainConfig(base_model=str(folder), data="unused.jsonl", max_length=64)
    model = load_for_training(str(folder), config)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.handle.hf_model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    accelerator = SimpleNamespace(device=torch.device("cpu"))

    def make(cls, **kwargs):
        method = cls(**kwargs)
        method.setup(model.handle, config, accelerator)
        return method

    return SimpleNamespace(model=model, config=config, make=make)


def _token_logprobs(model, tokenizer, question, answer):
    """log p of each answer token (EOS included) from the full logits of the unpadded sequence."""
    prompt = [tokenizer.bos_token_id] + tokenizer(question + "\n", add_special_tokens=False)["input_ids"]
    reply = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt + reply])
    logits = model(input_ids=ids).logits[0].float()
    positions = range(len(prompt) - 1, len(prompt) + len(reply) - 1)
    logp = torch.log_softmax(logits, -1)
    return [logp[t, ids[0, t + 1]].item() for t in positions], [logits[t] for t in positions]


def _nll(model, tok, pairs):
    values = [v for q, a in pairs for v in _token_logprobs(model, tok, q, a)[0]]
    return -sum(values) / len(values)


def _seq(model, tok, q, a):
    return sum(_token_logprobs(model, tok, q, a)[0])


def _parts(records):
    forget = [(r["instruction"], r["output"]) for r in records]
    retain = [(r["retain_instruction"], r["retain_output"]) for r in records]
    idk = [(r["instruction"], r["idk"]) for r in records]
    return forget, retain, idk


def _loss(method, setup):
    batch = method.collate(RECORDS, setup.model.handle.tokenizer, setup.config)
    loss, terms = method.loss(setup.model.handle, batch)
    return loss.item(), terms


def test_answer_scores_match_full_logits(setup):
    model, tok = setup.model.handle.hf_model, setup.model.handle.tokenizer
    batch = GA().collate(RECORDS, tok, setup.config)
    scores = answer_scores(setup.model.handle, batch["input_ids"], batch["attention_mask"], batch["labels"])
    for row, record in enumerate(RECORDS):
        expected, _ = _token_logprobs(model, tok, record["instruction"], record["output"])
        got = scores.token_logprobs[row][scores.mask[row].bool()].tolist()
        assert got == pytest.approx(expected, abs=1e-4)


def test_ga_gd_idk(setup):
    model, tok = setup.model.handle.hf_model, setup.model.handle.tokenizer
    forget, retain, idk = _parts(RECORDS)
    with torch.no_grad():
        nll_f, nll_r, nll_idk = _nll(model, tok, forget), _nll(model, tok, retain), _nll(model, tok, idk)
        assert _loss(setup.make(GA), setup)[0] == pytest.approx(-nll_f, rel=1e-4)
        assert _loss(setup.make(GD), setup)[0] == pytest.approx(-nll_f + nll_r, rel=1e-4)
        assert _loss(setup.make(IDK), setup)[0] == pytest.approx(nll_idk + nll_r, rel=1e-4)


def test_kl(setup):
    method = setup.make(KL)
    model, tok = setup.model.handle.hf_model, setup.model.handle.tokenizer
    forget, retain, _ = _parts(RECORDS)
    with torch.no_grad():
        kls = []
        for q, a in retain:
            _, logits = _token_logprobs(model, tok, q, a)
            _, ref_logits = _token_logprobs(method.reference.hf_model, tok, q, a)
            for z, z_ref in zip(logits, ref_logits):
                p_ref = torch.softmax(z_ref, -1)
                kls.append(float((p_ref * (torch.log(p_ref) - torch.log_softmax(z, -1))).sum()))
        expected = -_nll(model, tok, forget) + sum(kls) / len(kls)
        loss, terms = _loss(method, setup)
    assert sum(kls) > 0  # the nudged model really differs from the reference
    assert loss == pytest.approx(expected, rel=1e-4)


def test_dpo_npo(setup):
    model, tok = setup.model.handle.hf_model, setup.model.handle.tokenizer
    forget, retain, idk = _parts(RECORDS)
    dpo, npo, npo_gd = setup.make(DPO), setup.make(NPO), setup.make(NPOGD)
    ref = dpo.reference.hf_model
    with torch.no_grad():
        dpo_terms, npo_terms = [], []
        for (q, a), (_, i) in zip(forget, idk):
            margin = (_seq(model, tok, q, i) - _seq(model, tok, q, a)) - (_seq(ref, tok, q, i) - _seq(ref, tok, q, a))
            dpo_terms.append(-math.log(1 / (1 + math.exp(-BETA * margin))))
            ratio = math.exp(_seq(model, tok, q, a) - _seq(ref, tok, q, a))  # pi_theta / pi_ref
            npo_terms.append(math.log(1 + ratio ** BETA))
        expected_npo = 2 / BETA * sum(npo_terms) / len(npo_terms)
        assert _loss(dpo, setup)[0] == pytest.approx(sum(dpo_terms) / len(dpo_terms), rel=1e-4)
        assert _loss(npo, setup)[0] == pytest.approx(expected_npo, rel=1e-4)
        assert _loss(npo_gd, setup)[0] == pytest.approx(expected_npo + _nll(model, tok, retain), rel=1e-4)


def test_npo_at_reference_is_2_log2_over_beta(tiny_folders):
    """With pi_theta = pi_ref every NPO term is log 2, and DPO's is log 2 too."""
    folder = tiny_folders["gemma3"]
    config = TrainConfig(base_model=str(folder), data="unused.jsonl", max_length=64)
    model = load_for_training(str(folder), config)
    accelerator = SimpleNamespace(device=torch.device("cpu"))
    for cls, expected in ((NPO, 2 / BETA * math.log(2)), (DPO, math.log(2))):
        method = cls(beta=BETA)
        method.setup(model.handle, config, accelerator)
        with torch.no_grad():
            loss, _ = method.loss(model.handle, method.collate(RECORDS, model.handle.tokenizer, config))
        assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_step_directions_and_frozen_reference(tiny_folders):
    """A few SGD steps: GA raises the forget NLL, IDK lowers the idk NLL; the reference model
    never changes, holds no gradients and stays in eval mode."""
    folder = tiny_folders["gemma3"]
    config = TrainConfig(base_model=str(folder), data="unused.jsonl", max_length=64)
    accelerator = SimpleNamespace(device=torch.device("cpu"))
    for cls, watched, sign in ((GA, "forget", +1), (IDK, "idk", -1), (NPOGD, "forget", +1)):
        model = load_for_training(str(folder), config)
        method = cls()
        method.setup(model.handle, config, accelerator)
        batch = method.collate(RECORDS, model.handle.tokenizer, config)
        before_ref = {k: v.clone() for k, v in method.reference.hf_model.state_dict().items()} if method.reference else None
        params = [p for p in model.handle.hf_model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=0.05)
        with torch.no_grad():
            start = method._scores(model.handle, batch, watched).nll.item()
        for _ in range(3):
            loss, _ = method.loss(model.handle, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        with torch.no_grad():
            end = method._scores(model.handle, batch, watched).nll.item()
        assert sign * (end - start) > 0, (cls.name, start, end)
        if before_ref is not None:
            assert not method.reference.hf_model.training
            for name, p in method.reference.hf_model.named_parameters():
                assert not p.requires_grad and p.grad is None
                assert torch.equal(p, before_ref[name]), name


def test_required_fields_and_bad_beta():
    assert GA().required_fields == ("instruction", "output")
    assert IDK().required_fields == ("instruction", "idk", "retain_instruction", "retain_output")
    assert set(METHOD_CLASSES) == {f"unlearn-{m}" for m in ("ga", "gd", "kl", "idk", "dpo", "npo", "npo-gd")}
    with pytest.raises(ValueError, match="beta"):
        NPO(beta=0)
