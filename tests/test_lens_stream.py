"""The streamed lens reader (`engine.lens_reduce`) against the full-vocabulary lens: same set
probabilities, entropy, top-k and rank for any chunking, soft-capping included, and no
intermediate larger than one (row chunk x vocabulary chunk) block."""

import math

import pytest
import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from workbench import engine
from workbench.engine import lens as lens_module
from workbench.errors import InputError

PROMPTS = ["the cat sat on the mat", "le chat est sur le tapis", "猫坐在垫子上"]


def _resid(handle):
    """(n_layers, n_prompts, d_model): the last position of every prompt at every layer."""
    ids, last = engine.pad_rows(handle, [handle.encode(p) for p in PROMPTS])
    return engine.residual_stream(handle, ids, at=last)


def _sets(vocab: int):
    """(n_prompts, 2 sets, width) ids padded with -1; one set straddles the first chunk boundaries."""
    sets = torch.full((len(PROMPTS), 2, 4), -1, dtype=torch.long)
    sets[:, 0, :3] = torch.tensor([[3, 6, 7], [0, 13, 14], [5, vocab - 1, 20]])
    sets[:, 1, :4] = torch.tensor([[40, 41, 2, vocab - 2], [8, 9, 10, 11], [1, 2, 3, 4]])
    return sets


def _direct(handle, resid, sets=None, answers=None, k=1):
    """Everything from the full (rows, vocab) lens logits."""
    logits = engine.lens_logits(handle, resid).float()
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    top_p, top_i = logp.topk(k, dim=-1)
    out = {"entropy": -(p * logp).sum(-1) / math.log(2), "top_ids": top_i, "top_probs": top_p.exp()}
    if sets is not None:
        sets = sets.expand(*resid.shape[:-1], *sets.shape[-2:])
        picked = p.unsqueeze(-2).expand(*sets.shape[:-1], p.shape[-1]).gather(-1, sets.clamp(min=0))
        out["set_probs"] = (picked * (sets >= 0)).sum(-1)
    if answers is not None:
        target = logits.gather(-1, answers.expand(resid.shape[:-1])[..., None])
        out["rank"] = (logits > target).sum(-1) + 1
    return out


@pytest.mark.parametrize("vocab_chunk, row_chunk", [(7, 1), (7, 4), (64, 5), (10 ** 6, 10 ** 6)])
def test_streamed_statistics_equal_the_full_lens(tiny_handle, vocab_chunk, row_chunk):
    resid = _resid(tiny_handle)
    vocab = tiny_handle.hf_model.get_output_embeddings().weight.shape[0]
    assert vocab % 7  # a ragged last chunk
    sets, answers = _sets(vocab), torch.tensor([3, 17, vocab - 1])
    got = engine.lens_reduce(tiny_handle, resid, top_k=5, token_sets=sets, answers=answers,
                             vocab_chunk=vocab_chunk, row_chunk=row_chunk)
    want = _direct(tiny_handle, resid, sets, answers, 5)
    assert got.set_probs.shape == (tiny_handle.n_layers, len(PROMPTS), 2)
    for key in ("set_probs", "entropy", "top_probs"):
        torch.testing.assert_close(getattr(got, key), want[key], atol=1e-5, rtol=0)
    assert torch.equal(got.top_ids, want["top_ids"])
    assert torch.equal(got.rank, want["rank"])


def test_top_k_alone_and_the_exact_rank_recount(tiny_gemma, monkeypatch):
    resid = _resid(tiny_gemma)
    vocab = tiny_gemma.hf_model.get_output_embeddings().weight.shape[0]
    answers = torch.tensor([3, 17, vocab - 1])
    full = engine.lens_reduce(tiny_gemma, resid, top_k=4, answers=answers, vocab_chunk=7)
    alone = engine.lens_reduce(tiny_gemma, resid, top_k=4, entropy=False, vocab_chunk=7)
    assert alone.entropy is None and alone.rank is None and alone.set_probs is None
    assert torch.equal(alone.top_ids, full.top_ids) and torch.allclose(alone.top_probs, full.top_probs)
    # an answer logit that disagrees with its own vocabulary slice (kernels that round by shape):
    # the first count is off, the rank is counted again against the slice's value
    real = lens_module._answer_logits
    monkeypatch.setattr(lens_module, "_answer_logits", lambda *a: real(*a) + 1e9)
    recounted = engine.lens_reduce(tiny_gemma, resid, answers=answers, vocab_chunk=7)
    assert full.rank.max() > 1 and torch.equal(recounted.rank, full.rank)
    assert torch.equal(full.rank, _direct(tiny_gemma, resid, answers=answers)["rank"])


def test_soft_capping_is_applied(tiny_gemma, monkeypatch):
    config = tiny_gemma.hf_model.config.get_text_config()
    assert config.final_logit_softcapping == 30.0
    resid = _resid(tiny_gemma)
    seen = {}
    for cap in (30.0, 0.5, None):  # 0.5 squeezes the logits hard enough to see
        monkeypatch.setattr(config, "final_logit_softcapping", cap)
        seen[cap] = engine.lens_reduce(tiny_gemma, resid, top_k=3, vocab_chunk=7)
        want = _direct(tiny_gemma, resid, k=3)
        for key in ("entropy", "top_probs"):
            torch.testing.assert_close(getattr(seen[cap], key), want[key], atol=1e-5, rtol=0)
    assert (seen[0.5].entropy > seen[None].entropy + 0.01).all()


class _Largest(TorchDispatchMode):
    """Records the largest tensor any op allocates (outputs sharing an input's storage are views)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in pytree.tree_leaves((args, kwargs))
                  if isinstance(a, torch.Tensor)}
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.largest = max(self.largest, t.numel())
        return out


def test_no_intermediate_grows_with_the_vocabulary(tiny_gemma):
    resid = _resid(tiny_gemma)
    d_model, vocab = resid.shape[-1], tiny_gemma.hf_model.get_output_embeddings().weight.shape[0]
    sets, answers = _sets(vocab), torch.tensor([3, 17, vocab - 1])
    with _Largest() as seen:
        engine.lens_reduce(tiny_gemma, resid, top_k=3, token_sets=sets, answers=answers, vocab_chunk=7, row_chunk=2)
    # the norm's output (rows x d_model) is the largest block; a logit row would be 2 x 384
    assert seen.largest <= 2 * max(7, d_model) < 2 * vocab
    with _Largest() as seen:
        engine.lens_logits(tiny_gemma, resid)
    assert seen.largest >= resid.shape[0] * resid.shape[1] * vocab  # the check sees the full lens


def test_bad_chunks(tiny_gemma):
    resid = _resid(tiny_gemma)
    with pytest.raises(InputError, match="vocab_chunk"):
        engine.lens_reduce(tiny_gemma, resid, vocab_chunk=0)
    with pytest.raises(InputError, match="at least one"):
        engine.lens_reduce(tiny_gemma, resid[:, :0])
