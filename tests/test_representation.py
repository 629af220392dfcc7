"""The representation map: residuals equal HF hidden states, merge scores on hand-made points."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from probes import representation as rep
from workbench import cache
from workbench.errors import InputError

PROMPTS = {
    "en": ["cat", "dog", "park", "water"],
    "de": ["Katze", "Hund", "Park", "Wasser"],
    "zh": ["猫", "狗", "公园", "水"],
}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "RESULTS", cache.ResultCache(root=tmp_path))


@pytest.fixture(scope="module")
def umap_result(tiny_folders):
    """The one UMAP fit of the suite (numba compiles for 12-18 s on the first fit in a process)."""
    import workbench

    result = rep.representation_map(workbench.load(str(tiny_folders["gemma3"])), PROMPTS, method="umap",
                                    use_cache=False)
    return result, result.coords(1)


def test_residuals_equal_hf_hidden_states(tiny_gemma):
    result = rep.representation_map(tiny_gemma, PROMPTS, method="pca", batch_size=5, use_cache=False)
    assert result.residuals.shape == (2, 12, 64)
    hf = AutoModelForCausalLM.from_pretrained(tiny_gemma.facts.path, dtype=torch.float32).eval()
    for n, prompt in enumerate(result.prompts):
        with torch.no_grad():
            hidden = hf(torch.tensor([tiny_gemma.encode(prompt)]), output_hidden_states=True).hidden_states
            np.testing.assert_allclose(result.residuals[0, n], hidden[1][0, -1].numpy(), atol=1e-5)
            # HF norms its last hidden state; the residual stream is kept before the final norm
            normed = hf.base_model.norm(torch.from_numpy(result.residuals[1, n]))
            np.testing.assert_allclose(normed.numpy(), hidden[2][0, -1].numpy(), atol=1e-4)
    assert result.languages == ["en"] * 4 + ["de"] * 4 + ["zh"] * 4 and result.concepts[4:8] == [0, 1, 2, 3]


def test_merge_scores_on_hand_made_points():
    # Layer 0: two languages far apart, translations unrelated -> silhouette high, retrieval at chance or below.
    # Layer 1: each translation sits next to its source -> retrieval perfect, languages mixed.
    rng = np.random.default_rng(0)
    concepts = rng.normal(size=(5, 8)) * 10
    layer0 = np.concatenate([rng.normal(size=(5, 8)) + 50 * np.eye(8)[0], rng.normal(size=(5, 8)) - 50 * np.eye(8)[0]])
    layer1 = np.concatenate([concepts, concepts + rng.normal(size=(5, 8)) * 0.01])
    scores = rep.merge_scores(np.stack([layer0, layer1]), ["a"] * 5 + ["b"] * 5, list(range(5)) * 2)
    assert scores.loc[0, "language_silhouette"] > 0.8 and scores.loc[1, "language_silhouette"] < 0.1
    assert scores.loc[1, "retrieval_accuracy"] == 1.0 and scores.loc[0, "retrieval_accuracy"] <= 0.6


def test_pca_projection_and_memo(tiny_gemma):
    result = rep.representation_map(tiny_gemma, PROMPTS, method="pca", use_cache=False)
    xy = result.coords(0)
    assert xy.shape == (12, 2) and result.coords(0) is xy  # the slider re-plots, it does not re-project
    unit = rep._unit(result.residuals[0].astype(np.float64))
    # PCA coordinates preserve the projection onto the top-2 principal directions
    u, s, _ = np.linalg.svd(unit - unit.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(xy), np.abs(u[:, :2] * s[:2]), atol=1e-6)
    frame = result.points_frame(1)
    assert list(frame.columns) == ["layer", "language", "concept", "prompt", "x", "y"]
    fig = result.figure(1)
    assert sum(len(trace.x) for trace in fig.data) == 12 and "layer 1" in fig.layout.title.text
    assert len(result.to_frame()) == 2 and len(result.scores_figure().data) == 2
    with pytest.raises(InputError, match="out of range"):
        result.coords(2)


def test_cached_result_switches_method_without_rerun(tiny_gemma):
    first = rep.representation_map(tiny_gemma, PROMPTS, method="pca")
    second = rep.representation_map(tiny_gemma, PROMPTS, method="umap")
    assert second.residuals is first.residuals and second.method == "umap" and first.method == "pca"


def test_umap(umap_result):
    result, xy = umap_result
    assert xy.shape == (12, 2) and np.isfinite(xy).all()
    assert result.coords(1) is xy


@pytest.mark.parametrize("prompts, method, message", [
    ({"en": ["a", "b", "c"]}, "pca", "at least two languages"),
    ({"en": ["a", "b", "c"], "fr": ["a", "b"]}, "pca", "parallel"),
    ({"en": ["a", "b"], "fr": ["a", "b"]}, "pca", "at least 3"),
    ({"en": ["a", "b", " "], "fr": ["a", "b", "c"]}, "pca", "empty"),
    (PROMPTS, "tsne", "Unknown projection"),
])
def test_bad_input(tiny_gemma, prompts, method, message):
    with pytest.raises(InputError, match=message):
        rep.representation_map(tiny_gemma, prompts, method=method)
