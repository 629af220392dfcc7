"""Demo mode (`WORKBENCH_DEMO=1`): one table of caps (`workbench.limits`), bound at the public API.

Every UI handler (found by introspection, as `test_ui_handlers_fuzz.py` does) is called in demo
mode with over-cap values and must refuse with a readable message; Compare and the probes' own
API cannot bypass the caps; folder and hub specs are refused; messages name no server path, no
other run and no process id (locally they stay helpful); training checks its base model before it
starts and a refused start leaves WORKBENCH_HOME unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import gradio as gr
import pytest

from workbench import limits

from test_ui_handlers_fuzz import HANDLERS  # noqa: E402  (tests/ is on sys.path)

CONCEPTS = "Concept list (committed)"
DEMO_REFUSAL = "The demo allows at most"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def models(tiny_folders, tmp_path_factory):
    """Tiny models: gemma3, gpt2 and a gemma3 with a 2048-token context (long prompts)."""
    long = tmp_path_factory.mktemp("demo") / "long-gemma3"
    shutil.copytree(tiny_folders["gemma3"], long)
    config = json.loads((long / "config.json").read_text())
    config["max_position_embeddings"] = 2048
    (long / "config.json").write_text(json.dumps(config))
    return {"g": str(tiny_folders["gemma3"]), "gpt2": str(tiny_folders["gpt2"]), "long": str(long)}


@pytest.fixture
def demo(monkeypatch, home, models):
    """Demo mode, with the tiny test models let through the spec check (the caps are under test)."""
    monkeypatch.setenv("WORKBENCH_DEMO", "1")
    allowed = set(models.values())
    original = limits.check_spec
    monkeypatch.setattr(limits, "check_spec", lambda spec: None if spec.strip() in allowed else original(spec))
    return models


def refused(fn, *args, **kwargs) -> str:
    with pytest.raises(gr.Error) as info:
        fn(*args, **kwargs)
    message = info.value.message
    assert message and not message.startswith("Internal error") and "Traceback" not in message, message
    return message


# --------------------------------------------------------------------------- every handler, over the caps

def _retrieval_result(m):
    import dataclasses

    import numpy as np

    from workbench.ui import tab_retrieval

    result = tab_retrieval.run_scores(m["g"], "en", "200", "0.5", 1)[-1]
    # the tiny model never recalls a needle: give every head a score so the top-k heads exist
    return dataclasses.replace(result, scores=np.full(result.scores.shape, 0.5))


def _grids(m):
    from workbench.ui import tab_transplant

    return tab_transplant.run_grids(m["g"], "capitals", ["fr"], "task default", "mlp", "overall", 0, "0, 1",
                                    "probability", 3, 3, False, 0, 0)[4]


LONG_PROMPT = "the cat sat on the mat " * 200  # > 1024 tokens of the tiny tokenizer

# handler -> calls (each a function of the models giving (args, the cap it must hit))
OVER_CAP = {
    "tab_pivot.run_pivot": [
        lambda m: ((m["g"], CONCEPTS, None, "translation", "fr", "zh", 1, 0, 61), "pivot_items"),
        lambda m: ((m["g"], CONCEPTS, None, "translation", "fr", "zh", 6, 0, 20), "pivot_shots")],
    "tab_pivot.run_grid": [lambda m: ((m["long"], "the cat " * 100, 3), "grid_prompt_tokens")],
    "tab_pivot.run_map": [lambda m: ((m["g"], CONCEPTS, None, "en, fr", "{word}", 61, "pca", 0), "pivot_items")],
    "tab_retrieval.run_scores": [
        lambda m: ((m["long"], "en", "2048", "0.5", 1), "context_tokens"),
        lambda m: ((m["g"], "en", "200, 300, 400", "0.1, 0.5, 0.9", 3), "retrieval_trials")],
    "tab_retrieval.run_compare": [lambda m: ((m["g"], ["en", "de"], "200, 300", "0.1, 0.5, 0.9", 2),
                                             "retrieval_trials")],
    "tab_retrieval.needle_prompt": [lambda m: ((m["long"], "en", 2000), "context_tokens")],
    "tab_retrieval.run_masking": [
        lambda m: ((m["long"], LONG_PROMPT, "0.1", "zero", 3), "prompt_tokens"),
        lambda m: ((m["g"], "the cat", "0.1", "zero", 500), "max_new_tokens")],
    "tab_retrieval.mask_top_k": [lambda m: ((m["g"], _retrieval_result(m), 1, "the cat", "zero", 500),
                                            "max_new_tokens")],
    "tab_transplant.run_grids": [
        lambda m: ((m["g"], "capitals", ["fr"], "task default", "mlp", "overall", 0, "all", "probability", 3, 13,
                    False, 0, 0), "transplant_items"),
        lambda m: ((m["g"], "capitals", ["fr"], "task default", "mlp", "overall", 0, "all", "generation", 500, 3,
                    False, 0, 0), "max_new_tokens")],
    "tab_transplant.show_cell": [lambda m: ((m["g"], _grids(m), "fr", 1, 0, 500), "max_new_tokens")],
    "tab_faithfulness.compare_answers": [lambda m: ((m["g"], m["g"], _faith_item(), 1.0, 500), "max_new_tokens")],
    "tab_unlearning.prepare_training_data": [lambda m: ((41, 1, 0), "entities")],
    "tab_evaluate.run_eval": [lambda m: ((m["g"], "capitals", ["fr"], 21, "auto"), "eval_items")],
    "tab_evaluate.run_globesumm": [
        lambda m: ((m["long"], ["all"], 3, None, 8, False), "events"),
        lambda m: ((m["long"], ["all"], 1, None, 500, False), "max_new_tokens")],
    "tab_compare.run_compare": [
        lambda m: (([m["g"], m["gpt2"]], "", "pivot", "capitals", "fr", "zh", 100), "pivot_items"),
        lambda m: (([m["g"], m["gpt2"]], "", "evaluate", "capitals", "fr", "de", 30), "eval_items"),
        lambda m: (([m["g"], m["gpt2"]], "", "transplant", "capitals", "fr", "de", 13), "transplant_items")],
}
# handlers that take no size: they show, export or re-plot what was computed under the caps
NO_SIZE = {"tab_pivot.export_pivot", "tab_pivot.replot_map", "tab_pivot.export_map", "tab_retrieval.export_scores",
           "tab_transplant.task_languages", "tab_transplant.show_heatmap", "tab_transplant.export_grids",
           "tab_train.poll_training", "tab_train.cancel_training", "tab_train.checkpoint_table",
           "tab_faithfulness.show_item", "tab_unlearning.show_results", "tab_evaluate.task_languages",
           "tab_evaluate.export_eval", "tab_evaluate.show_summary", "tab_evaluate.export_globesumm",
           "tab_compare.export_compare", "tab_train.start_training"}  # training: refused outright, below


def _faith_item() -> str:
    from workbench.ui import tab_faithfulness

    return tab_faithfulness.item_choices()[0][1]


def test_every_handler_is_capped_or_takes_no_size():
    assert set(HANDLERS) == set(OVER_CAP) | NO_SIZE, sorted(set(HANDLERS) ^ (set(OVER_CAP) | NO_SIZE))


@pytest.mark.parametrize("name, k", [(n, k) for n, calls in OVER_CAP.items() for k in range(len(calls))])
def test_over_cap_requests_are_refused(demo, name, k):
    args, cap = OVER_CAP[name][k](demo)
    message = refused(HANDLERS[name], *args)
    limit, what = limits.CAPS[cap]
    assert f"{DEMO_REFUSAL} {limit} {what}" in message, message


def test_training_is_refused_in_demo_mode(demo, home):
    from workbench.ui import tab_train

    assert "disabled in demo mode" in refused(tab_train.start_training, "sft", demo["g"], "", tab_train.DEMO_CHOICE,
                                              None, "", 1e-4, 1, 1, 1, 16, False, 2, 0, "")


def test_an_empty_item_count_means_the_capped_default(demo):
    """`/evaluate` with n empty used to run all 45 items of a language."""
    from workbench.ui import tab_evaluate

    out = tab_evaluate.run_eval(demo["g"], "capitals", ["fr"], None, "probability")
    assert set(out[-1].to_frame()["n"]) == {limits.cap("eval_items")}
    assert limits.capped("eval_items", None) == 20


def test_compare_and_the_api_cannot_bypass_the_caps(demo):
    """The caps bind inside the probes: Compare's views, and the API called directly, are refused too."""
    import workbench
    from probes.pivot import logit_lens_grid, pivot
    from probes.masking import generate_with_masked_heads
    from probes.retrieval import retrieval_scores
    from probes.transplant import transplant_grid
    from workbench.compare import VIEWS, compare
    from workbench.datasets.lexicon import load_concepts
    from workbench.datasets.tasks import load_task
    from workbench.evals.harness import evaluate

    handle = workbench.load(demo["g"])
    long = workbench.load(demo["long"])
    checks = [
        (lambda: compare([demo["g"], demo["gpt2"]], "pivot", {"n_items": 100}), "pivot_items"),
        (lambda: compare([handle, handle], "evaluate", {"n": 30}), "eval_items"),
        # a view's own run, without compare()'s check: the probe refuses
        (lambda: VIEWS["pivot"].run(handle, {**VIEWS["pivot"].defaults, "n_items": 100}, None), "pivot_items"),
        (lambda: VIEWS["evaluate"].run(handle, {**VIEWS["evaluate"].defaults, "n": 30}, None), "eval_items"),
        (lambda: VIEWS["transplant"].run(handle, {**VIEWS["transplant"].defaults, "n_items": 13}, None),
         "transplant_items"),
        (lambda: pivot(handle, load_concepts(["fr", "zh", "en"]).head(61), src_lang="fr", tgt_lang="zh"),
         "pivot_items"),
        (lambda: evaluate(handle, "capitals", ["fr"], n=21), "eval_items"),
        (lambda: transplant_grid(handle, load_task("capitals", "fr")[:13]), "transplant_items"),
        (lambda: retrieval_scores(long, "en", [2048], [0.5], 1), "context_tokens"),
        (lambda: generate_with_masked_heads(long, LONG_PROMPT, [(0, 0)], "zero", 3), "prompt_tokens"),
        (lambda: logit_lens_grid(long, "the cat " * 100), "grid_prompt_tokens"),
    ]
    for call, cap in checks:
        with pytest.raises(workbench.errors.InputError, match=f"{DEMO_REFUSAL} {limits.cap(cap)} "):
            call()


def test_caps_do_not_apply_locally(monkeypatch, models):
    monkeypatch.delenv("WORKBENCH_DEMO", raising=False)
    limits.check("pivot_items", 10**6)
    assert limits.capped("eval_items", None) is None


# --------------------------------------------------------------------------- specs and messages

def _server_strings(home: Path) -> list[str]:
    return [str(home), str(Path(__file__).resolve().parents[1]), "/etc", "/proc", str(os.getpid())]


def test_demo_refuses_folder_and_hub_specs_alike(monkeypatch, home, models, tmp_path):
    from workbench.ui import app, tab_pivot

    monkeypatch.setenv("WORKBENCH_DEMO", "1")
    specs = ["/etc", str(tmp_path / "no-such-folder"), models["g"], "/proc/self", "~root", "org/some-model",
             "./models", str(home)]
    messages = {refused(tab_pivot.run_grid, spec, "the cat", 3) for spec in specs}
    messages |= {refused(app.load_model, spec) for spec in specs}
    assert len(messages) == 1, messages  # the same words, whether or not the path exists
    message = messages.pop()
    assert "default model" in message and "ckpt:" in message
    for text in _server_strings(home) + [models["g"], "exist"]:
        assert text not in message


def test_unknown_checkpoint_lists_no_runs_in_demo_mode(monkeypatch, home, models):
    from workbench import registry
    from workbench.ui import tab_pivot

    registry.save("secret-run", 1, lambda folder: shutil.copytree(models["g"], folder, dirs_exist_ok=True), {})
    monkeypatch.setenv("WORKBENCH_DEMO", "1")
    message = refused(tab_pivot.run_grid, "ckpt:nosuchrun", "the cat", 3)
    assert "nosuchrun" in message and "secret-run" not in message
    for text in _server_strings(home):
        assert text not in message
    monkeypatch.delenv("WORKBENCH_DEMO")  # locally: the helpful listing and folder
    local = refused(tab_pivot.run_grid, "ckpt:nosuchrun", "the cat", 3)
    assert "secret-run" in local and str(home) in local


def test_local_messages_stay_helpful(monkeypatch, home, tmp_path):
    from workbench.ui import tab_pivot

    monkeypatch.delenv("WORKBENCH_DEMO", raising=False)
    missing = str(tmp_path / "no-such-folder")
    assert f"{missing} does not exist" in refused(tab_pivot.run_grid, missing, "the cat", 3)
    assert "no config.json" in refused(tab_pivot.run_grid, "/etc", "the cat", 3)


def test_unlearning_data_step_names_no_server_folder(monkeypatch, home):
    from workbench.ui import tab_unlearning

    monkeypatch.setenv("WORKBENCH_DEMO", "1")
    _, message = tab_unlearning.prepare_training_data(3, 1, 0)
    assert str(home) not in message and "Files are in" not in message
    monkeypatch.delenv("WORKBENCH_DEMO")
    _, message = tab_unlearning.prepare_training_data(3, 1, 1)
    assert f"Files are in {home}" in message


def test_scrub_removes_paths_and_process_ids(monkeypatch, home):
    monkeypatch.setenv("WORKBENCH_DEMO", "1")
    text = limits.scrub(f"{home}/x.json, /proc/{os.getpid()}/fd and /srv/app/models/m are broken; ratio 1/2")
    assert str(home) not in text and str(os.getpid()) not in text and "/srv" not in text and "1/2" in text
    monkeypatch.delenv("WORKBENCH_DEMO")
    assert limits.scrub(f"{home}/x") == f"{home}/x"


# --------------------------------------------------------------------------- training validates first

def _pickle_only(models, tmp_path) -> str:
    folder = tmp_path / "pickle-only"
    folder.mkdir()
    shutil.copy(Path(models["g"]) / "config.json", folder)
    (folder / "pytorch_model.bin").write_bytes(b"not really")
    return str(folder)


def _bad_config(models, tmp_path) -> str:
    folder = tmp_path / "bad-config"
    shutil.copytree(models["g"], folder)
    (folder / "config.json").write_text("{ not json")
    return str(folder)


def _snapshot(home: Path) -> dict[str, int]:
    return {p.relative_to(home).as_posix(): (p.stat().st_size if p.is_file() else -1) for p in home.rglob("*")}


@pytest.mark.parametrize("base, words", [("/etc", "no config.json"), (_pickle_only, "pickle"),
                                         (_bad_config, "cannot be read"), ("ckpt:ghost", "No checkpoint named"),
                                         ("org/not-cached-model", "not in the Hugging Face cache")])
def test_training_refuses_a_base_model_that_cannot_load(monkeypatch, home, models, tmp_path, base, words):
    from trainers.config import TrainConfig
    from trainers.jobs import TrainingJob
    from workbench import registry
    from workbench.errors import WorkbenchError
    from workbench.ui import tab_train

    monkeypatch.delenv("WORKBENCH_DEMO", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = base(models, tmp_path) if callable(base) else base
    registry.root()  # the standing folders of a used home
    home_before, jobs_before = _snapshot(home), dict(tab_train.JOBS)
    message = refused(tab_train.start_training, "sft", spec, "", tab_train.DEMO_CHOICE, None, "", 1e-4, 1, 1, 1,
                      16, False, 2, 0, "refused-run")
    assert words in message and "Started" not in message
    with pytest.raises(WorkbenchError, match=words):
        TrainingJob.start(TrainConfig(base_model=spec, data="demo", max_steps=1, output="refused-api"))
    assert tab_train.JOBS == jobs_before
    assert _snapshot(home) == home_before
