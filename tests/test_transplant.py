"""XTransplant against an independent reference, and the grid's fast path against single runs.

The reference is a plain Hugging Face model loaded a second time from the tiny model's folder, with
ordinary torch forward hooks on its modules: nothing of the workbench's hooks, caches or engine.
"""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from probes.transplant import (
    TransplantGrid,
    control_partners,
    scaling_strategy,
    transplant,
    transplant_grid,
    upper_bound,
)
from probes.transplant.cases import answer_for, make_case
from probes.transplant.runs import run_rows
from workbench.engine import prefix
from workbench import engine
from workbench.datasets.tasks import load_task
from workbench.errors import InputError

# The HF module whose output is `blocks.{l}.hook_{site}_out` on each architecture.
MODULES = {
    ("gemma3", "mlp"): "post_feedforward_layernorm",
    ("gemma3", "attn"): "post_attention_layernorm",
    ("llama", "mlp"): "mlp",
    ("llama", "attn"): "self_attn",
}


class Reference:
    """XTransplant written out by hand on an independent HF model."""

    def __init__(self, folder, arch):
        self.model = AutoModelForCausalLM.from_pretrained(folder).eval()
        self.arch = arch

    def module(self, layer, site):
        return getattr(self.model.model.layers[layer], MODULES[(self.arch, site)])

    @staticmethod
    def _main(output):
        return output[0] if isinstance(output, tuple) else output

    @torch.no_grad()
    def source(self, ids, layer, site):
        seen = {}

        def keep(m, i, o):
            seen["v"] = self._main(o)[0, -1].clone()

        handle = self.module(layer, site).register_forward_hook(keep)
        self.model(ids)
        handle.remove()
        return seen["v"]

    def replacing(self, layer, site, vector, position):
        def hook(m, i, o):
            main = self._main(o).clone()
            main[:, position] = vector
            return (main, *o[1:]) if isinstance(o, tuple) else main
        return self.module(layer, site).register_forward_hook(hook)

    @torch.no_grad()
    def generate(self, ids, layer, site, vector, n, eos):
        """Greedy: the prefill with the replacement at the last prompt position, decode steps without."""
        handle = self.replacing(layer, site, vector, ids.shape[1] - 1)
        out = self.model(ids, use_cache=True)
        handle.remove()
        past, tokens = out.past_key_values, []
        nxt = out.logits[:, -1].argmax(-1)
        for _ in range(n):
            if int(nxt) in eos:
                break
            tokens.append(int(nxt))
            out = self.model(nxt[:, None], cache=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1)
        return tokens

    @torch.no_grad()
    def logits(self, ids, layer=None, site="mlp", vector=None, position=None):
        """Logits of one plain forward; with a layer, its site output at `position` replaced."""
        handle = self.replacing(layer, site, vector, position) if layer is not None else None
        logits = self.model(ids).logits[0]
        if handle is not None:
            handle.remove()
        return logits

    def option_logprobs(self, ids, continuations, layer=None, site="mlp", vector=None):
        """Sum of log-probabilities of each continuation, one plain forward per continuation."""
        length, out = ids.shape[1], []
        for cont in continuations:
            full = torch.cat([ids, torch.tensor([list(cont)])], dim=1)
            logp = torch.log_softmax(self.logits(full, layer, site, vector, length - 1), -1)
            out.append(sum(float(logp[length - 1 + k, tok]) for k, tok in enumerate(cont)))
        return out


@pytest.fixture(scope="module")
def items():
    return load_task("capitals", "fr")[:3]


def _handle_and_reference(tiny_folders, arch):
    import workbench

    return workbench.load(str(tiny_folders[arch])), Reference(tiny_folders[arch], arch)


@pytest.mark.parametrize("arch,site", [("gemma3", "mlp"), ("gemma3", "attn"), ("llama", "mlp"), ("llama", "attn")])
def test_transplant_equals_hand_written_hooks(tiny_folders, items, arch, site):
    handle, ref = _handle_and_reference(tiny_folders, arch)
    item, s, t = items[0], 0, 1
    case = make_case(item, "en->x")
    main, aux = engine.as_ids(handle, case.item.prompt), engine.as_ids(handle, case.aux_prompt)
    vector = ref.source(aux, s, site)
    run = transplant(handle, item, s, t, site=site, max_new_tokens=6, stop_at_newline=False)
    eos = {handle.tokenizer.eos_token_id}
    assert run.transplanted.text == handle.decode(ref.generate(main, t, site, vector, 6, eos))
    answer = answer_for(handle, case.item)
    expected = np.exp(ref.option_logprobs(main, answer.tokens, t, site, vector))
    np.testing.assert_allclose(run.transplanted.option_p, expected, rtol=1e-4, atol=1e-12)
    # The baseline is the untouched model, and the transplant changes something.
    untouched = np.exp(ref.option_logprobs(main, answer.tokens))
    np.testing.assert_allclose(run.baseline.option_p, untouched, rtol=1e-4, atol=1e-12)
    assert not np.allclose(run.transplanted.option_p, run.baseline.option_p, rtol=1e-3, atol=0)


def test_only_the_last_prompt_position_and_only_the_prefill_change(tiny_folders, items):
    """Teacher-force the engine's generated tokens through the reference with the replacement at
    the last prompt position only: every decode step's argmax is the generated token, so decode
    steps saw no replacement; and earlier positions' logits equal the untouched model's."""
    handle, ref = _handle_and_reference(tiny_folders, "gemma3")
    for item in items:
        case = make_case(item, "en->x")
        main = engine.as_ids(handle, case.item.prompt)
        vector = ref.source(engine.as_ids(handle, case.aux_prompt), 1, "mlp")
        out = run_rows(handle, prefix(handle, main), "mlp", [0], vector[None], [[5]], max_new_tokens=8)
        new, last = out.new_ids[0], main.shape[1] - 1
        full = torch.cat([main, torch.tensor([new], dtype=torch.long)], dim=1)
        touched = ref.logits(full, 0, "mlp", vector, last)
        assert len(new) == 8 and touched[last:-1].argmax(-1).tolist() == new
        untouched = ref.logits(full)
        torch.testing.assert_close(touched[:last], untouched[:last])
        assert not torch.allclose(touched[last], untouched[last])


@pytest.mark.parametrize("scoring", ["probability", "generation"])
def test_fast_grid_equals_independent_runs(tiny_gemma, items, scoring):
    kwargs = dict(sources=[0, 1], targets=[0, 1], scoring=scoring, max_new_tokens=5, use_cache=False)
    fast = transplant_grid(tiny_gemma, items, batch_size=3, **kwargs)
    plain = transplant_grid(tiny_gemma, items, fast=False, **kwargs)
    for name in ("baseline_p", "p", "control_p"):
        np.testing.assert_allclose(getattr(fast, name), getattr(plain, name), rtol=1e-4, atol=1e-12)
    for name in ("baseline_correct", "correct", "control_correct"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(plain, name))
    if scoring == "generation":
        assert fast.baseline_texts == plain.baseline_texts
        np.testing.assert_array_equal(fast.texts, plain.texts)
        np.testing.assert_array_equal(fast.control_texts, plain.control_texts)


def test_grid_cells_equal_single_runs(tiny_gemma, items):
    grid = transplant_grid(tiny_gemma, items, sources=[0, 1], targets=[1], scoring="generation",
                           max_new_tokens=5, use_cache=False)
    partners = control_partners(items)
    for n, item in enumerate(items):
        for s in (0, 1):
            run = transplant(tiny_gemma, item, s, 1, max_new_tokens=5)
            cell = grid.cell(s, 1).iloc[n]
            assert (cell["baseline_output"], cell["output"]) == (run.baseline.text, run.transplanted.text)
            assert cell["p_gold"] == pytest.approx(run.transplanted.p_gold, rel=1e-4)
            assert cell["baseline_p_gold"] == pytest.approx(run.baseline.p_gold, rel=1e-4)
            control = transplant(tiny_gemma, item, s, 1, max_new_tokens=5, aux_item=items[partners[n]])
            assert cell["control_source"] == items[partners[n]].id == control.aux_item_id
            assert cell["control_output"] == control.transplanted.text
            assert cell["control_p_gold"] == pytest.approx(control.transplanted.p_gold, rel=1e-4)


def test_targetfirst_and_culture_direction(tiny_gemma):
    items = load_task("globalopinion", "de")[:2]
    grid = transplant_grid(tiny_gemma, items, mode="targetfirst", target_layer=1, use_cache=False)
    assert grid.direction == "x->en" and grid.lang == "de" and grid.targets == [1] and grid.sources == [0, 1]
    assert grid.items[0].prompt == items[0].english_prompt and grid.aux_prompts[0] == items[0].prompt
    assert grid.correct.shape == (2, 2, 1)
    assert grid.chance_level == pytest.approx(np.mean([1 / len(i.choices) for i in items]))
    frame = grid.to_frame()
    assert list(frame[["source", "target"]].itertuples(index=False, name=None)) == [(0, 1), (1, 1)]
    assert {"accuracy", "control_accuracy", "delta_p_gold", "control_delta_p_gold", "chance"} <= set(frame.columns)
    fig = grid.figure()
    assert len(fig.data) == 2  # matched and control heatmaps side by side


def test_control_partner_has_another_gold():
    items = load_task("word_translation", "fr")[:4]
    partners = control_partners(items)
    assert all(p != i and items[p].golds[0] != items[i].golds[0] for i, p in enumerate(partners))
    with pytest.raises(InputError, match="at least two"):
        control_partners(items[:1])


def test_bad_inputs(tiny_gemma, items):
    with pytest.raises(InputError, match="site"):
        transplant_grid(tiny_gemma, items, site="resid")
    with pytest.raises(InputError, match="mode"):
        transplant_grid(tiny_gemma, items, mode="sourcefirst")
    with pytest.raises(InputError, match="target_layer"):
        transplant_grid(tiny_gemma, items, mode="targetfirst")
    with pytest.raises(InputError, match="out of range"):
        transplant(tiny_gemma, items[0], 0, 7)
    with pytest.raises(InputError, match="No items"):
        transplant_grid(tiny_gemma, [])
    with pytest.raises(InputError, match="one language"):
        transplant_grid(tiny_gemma, items[:1] + load_task("capitals", "de")[:1])
    with pytest.raises(InputError, match="English"):
        transplant(tiny_gemma, load_task("capitals", "en")[0], 0, 1)
    with pytest.raises(InputError, match="direction"):
        transplant(tiny_gemma, items[0], 0, 1, direction="fr->en")
    with pytest.raises(InputError, match="short answer"):
        transplant(tiny_gemma, load_task("xlsum", "fr")[0], 0, 1)


def _grid(correct, control, baseline, ids):
    """A grid built by hand (no model) for the read-outs."""
    n, S, T = correct.shape
    items = load_task("word_translation", "fr")[:n]
    assert len(ids) == n
    return TransplantGrid(
        model="hand", task="word_translation", lang="fr", site="mlp", direction="en->x", mode="overall",
        scoring="probability", sources=[3, 5], targets=[1, 2][:T], items=items, aux_prompts=[""] * n,
        control_ids=[items[0].id] * n, chance=np.full(n, 0.25), baseline_correct=np.array(baseline, bool),
        baseline_p=np.zeros(n), correct=correct, p=np.zeros(correct.shape), control_correct=control,
        control_p=np.zeros(correct.shape), baseline_texts=None, texts=None, control_texts=None, seconds=0.0)


def test_upper_bound_and_strategy_read_outs():
    # 4 items, sources [3, 5] x targets [1, 2].
    correct = np.zeros((4, 2, 2), bool)
    correct[0, 0, 1] = correct[1, 1, 0] = correct[2, 1, 0] = True  # item 3 never right
    control = np.zeros((4, 2, 2), bool)
    control[:, 0, 0] = True  # the control's pair (3, 1) is right everywhere
    grid = _grid(correct, control, [1, 0, 0, 0], [0, 1, 2, 3])
    bound = upper_bound(grid).iloc[0]
    assert bound["upper_bound"] == 0.75 and bound["control_upper_bound"] == 1.0
    assert bound["best_pair"] == "5->1" and bound["best_pair_accuracy"] == 0.5
    assert bound["control_best_pair"] == "3->1" and bound["baseline"] == 0.25 and bound["chance"] == 0.25

    from workbench.datasets.tasks import split_items

    sample, _ = split_items(grid.items, 2, seed=0)
    in_sample = np.array([it.id in {s.id for s in sample} for it in grid.items])
    strategy = scaling_strategy(grid, n_sample=2, seed=0).iloc[0]
    assert (strategy["n_sample"], strategy["n_unseen"]) == (2, 2)
    # Recompute the choice by hand on the sample: accuracy per pair, ties -> smallest t, largest s.
    acc = correct[in_sample].mean(0)
    pairs = sorted(((acc[i, j], -[1, 2][j], [3, 5][i]) for i in range(2) for j in range(2)), reverse=True)
    s, t = pairs[0][2], -pairs[0][1]
    assert strategy["pair"] == f"{s}->{t}"
    i, j = [3, 5].index(s), [1, 2].index(t)
    assert strategy["unseen_accuracy"] == correct[~in_sample][:, i, j].mean()
    assert strategy["baseline_unseen"] == np.array([1, 0, 0, 0], bool)[~in_sample].mean()
    assert strategy["control_pair"] == "3->1" and strategy["control_unseen_accuracy"] == 1.0


def test_read_outs_without_control_leave_control_columns_empty():
    correct = np.ones((2, 2, 1), bool)
    grid = _grid(correct, None, [0, 0], [0, 1])
    grid.control_correct = grid.control_p = grid.control_ids = None
    bound = upper_bound(grid).iloc[0]
    assert bound["best_pair"] == "5->1" and np.isnan(bound["control_upper_bound"])
    with pytest.raises(InputError, match="without the mismatched-source control"):
        grid.accuracy(control=True)


@pytest.mark.slow
def test_default_model_fast_cell_equals_single_run(gemma):
    items = load_task("word_translation", "fr")[:2]
    grid = transplant_grid(gemma, items, sources=[6], targets=[10], control=False, use_cache=False)
    run = transplant(gemma, items[0], 6, 10, max_new_tokens=1)
    assert grid.p[0, 0, 0] == pytest.approx(run.transplanted.p_gold, rel=1e-3)
    assert grid.baseline_p[0] == pytest.approx(run.baseline.p_gold, rel=1e-3)
