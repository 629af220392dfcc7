"""The pivot lens on the real default model (a few items, a few seconds)."""

import numpy as np
import pytest
import torch

from probes import pivot as lens
from probes.tokens import prefix_token_ids
from workbench import engine
from workbench.datasets.lexicon import load_concepts


@pytest.mark.slow
def test_gemma_last_layer_is_the_models_own_prediction(gemma):
    words = load_concepts(["fr", "zh", "en"]).head(8)
    result = lens.pivot(gemma, words, src_lang="fr", tgt_lang="zh", k_shot=2, use_cache=False)
    assert result.n_items + len(result.dropped) == 8 and result.n_items >= 4
    item = result.items[0]
    with torch.no_grad():
        probs = torch.softmax(engine.forward(gemma, engine.as_ids(gemma, item["prompt"]))[0, -1].double(), -1)
    for lang in result.languages:
        expected = float(probs[sorted(prefix_token_ids(gemma.tokenizer, item["words"][lang]))].sum())
        assert result.prob(lang)[0, -1] == pytest.approx(expected, abs=1e-4)
    # the model writes Chinese at the end, not at the start
    assert result.prob("zh")[:, -1].mean() > 0.1 > result.prob("zh")[:, 0].mean()
    assert np.median(result.rank[:, -1]) < np.median(result.rank[:, 0])
