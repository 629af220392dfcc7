"""A model bigger than one device: Accelerate dispatches it (here some layers on the CPU, some on
disk under an offload folder), the bridge wraps the dispatched model, and every engine path and
probe gives what the same model gives loaded plainly, within 1e-5."""

import numpy as np
import pandas as pd
import pytest
import torch

import workbench
from probes import pivot as lens
from probes import retrieval
from probes.transplant import transplant_grid
from workbench import engine
from workbench.datasets.tasks import load_task
from workbench.models import boot

PROMPT = "the cat sat on the mat and the dog ran in the park"
WORDS = pd.DataFrame({"concept": ["cat", "dog", "water", "sun"], "en": ["cat", "dog", "water", "sun"],
                      "de": ["Katze", "Hund", "Wasser", "Sonne"], "zh": ["猫", "狗", "水", "太阳"]})
TOL = dict(atol=1e-5, rtol=1e-5)


def split_map(n_layers: int) -> dict[str, str]:
    """The first half of the layers on the CPU, the rest and the final norm on disk."""
    half = n_layers // 2
    placed = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "disk", "lm_head": "cpu"}
    placed.update({f"model.layers.{i}": "cpu" if i < half else "disk" for i in range(n_layers)})
    return placed


@pytest.fixture(scope="module", params=["gemma3", "llama"])
def pair(request, tiny_folders, tmp_path_factory):
    """(plain, offloaded) handles of one tiny model."""
    folder = str(tiny_folders[request.param])
    offloaded = workbench.load(folder, device_map=split_map(2), offload_folder=tmp_path_factory.mktemp("offload"))
    return workbench.load(folder), offloaded


def test_the_dispatched_model_is_described_and_hashed_like_the_plain_one(pair):
    plain, offloaded = pair
    assert offloaded is not plain and offloaded.facts.device_map == {"cpu": 1, "disk": 1}
    assert plain.facts.device_map is None and offloaded.facts.device == "cpu" == str(offloaded.device)
    assert any(p.device.type == "meta" for p in offloaded.hf_model.parameters())  # really on disk
    assert offloaded.facts.fingerprint == plain.facts.fingerprint


def test_forward_lens_and_greedy_match(pair):
    plain, offloaded = pair
    ids = engine.as_ids(plain, PROMPT)
    torch.testing.assert_close(engine.forward(offloaded, ids), engine.forward(plain, ids), **TOL)
    every_layer = [engine.lens_logits(h, engine.residual_stream(h, ids)) for h in (plain, offloaded)]
    assert every_layer[0].shape[0] == plain.n_layers
    torch.testing.assert_close(every_layer[1], every_layer[0], **TOL)
    assert (engine.generate_greedy(offloaded, PROMPT, 12).new_ids == engine.generate_greedy(plain, PROMPT, 12).new_ids)


def test_kv_forks_and_scoring_match(pair):
    """Continuations over forks of one prompt's KV cache, and labelled tokens' log-probabilities."""
    plain, offloaded = pair
    ids = engine.as_ids(plain, PROMPT)
    conts = [[5, 6, 7], [8], [9, 10]]
    for a, b in zip(engine.score_continuations(offloaded, ids, conts), engine.score_continuations(plain, ids, conts)):
        torch.testing.assert_close(a, b, **TOL)
    labels = ids.clone()
    labels[:, :4] = engine.IGNORE_INDEX
    (a, *_), (b, *_) = (engine.label_logprobs(h, ids, labels) for h in (offloaded, plain))
    torch.testing.assert_close(a, b, **TOL)


def test_probes_match(pair):
    plain, offloaded = pair
    a, b = (lens.pivot(h, WORDS, src_lang="de", tgt_lang="zh", k_shot=1, use_cache=False) for h in pair)
    np.testing.assert_allclose(b.probs, a.probs, **TOL)
    np.testing.assert_allclose(b.entropy, a.entropy, **TOL)
    np.testing.assert_array_equal(b.rank, a.rank)

    trial = dict(lengths=(200,), depths=(0.5,), n_needles=1, max_new_tokens=4, use_cache=False)
    a, b = (retrieval.retrieval_scores(h, "en", **trial) for h in pair)
    for x, y in zip(a.trials, b.trials):
        np.testing.assert_array_equal(y.tokens, x.tokens)
        np.testing.assert_array_equal(y.attended, x.attended)
        np.testing.assert_allclose(y.scores, x.scores, **TOL)

    items = load_task("capitals", "fr")[:2]
    a, b = (transplant_grid(h, items, sources=[0, 1], targets=[1], scoring="generation", max_new_tokens=4,
                            use_cache=False) for h in pair)
    for name in ("baseline_p", "p", "control_p"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), **TOL)
    np.testing.assert_array_equal(b.texts, a.texts)


@pytest.mark.slow
def test_default_model_with_layers_on_disk(gemma, tmp_path):
    """Gemma 3 270M with its last 2 of 18 layers and its final norm on disk: lens and greedy match."""
    placed = split_map(gemma.n_layers)
    placed.update({f"model.layers.{i}": "cpu" if i < gemma.n_layers - 2 else "disk" for i in range(gemma.n_layers)})
    offloaded = boot("gemma-3-270m", device_map=placed, offload_folder=tmp_path)  # not the shared LRU
    assert offloaded.facts.device_map == {"cpu": 16, "disk": 2}
    assert offloaded.facts.fingerprint == gemma.facts.fingerprint
    ids = engine.as_ids(gemma, 'Français: "chat" - English: "cat"\nFrançais: "eau" - English: "')
    every_layer = [engine.lens_logits(h, engine.residual_stream(h, ids, at=-1)) for h in (gemma, offloaded)]
    torch.testing.assert_close(every_layer[1], every_layer[0], **TOL)
    assert engine.generate_greedy(offloaded, ids, 4).new_ids == engine.generate_greedy(gemma, ids, 4).new_ids
