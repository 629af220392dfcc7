"""Property-based tests of every Gradio handler of the app's tabs (issue 10).

Every `@friendly` handler of `workbench/ui/tab_*.py` is found by introspection (a new handler is
fuzzed automatically) and called with arbitrary odd inputs built from its parameter names and
annotations. The contract checked for each call:

1. it returns normally, or raises `gr.Error` with a readable message that is not the
   "Internal error" text `friendly` reserves for unexpected exceptions;
2. a refused request changes nothing in WORKBENCH_HOME (file names and sizes; the `results/`
   cache and `.cache-key` excepted, which a successful probe may write);
3. after the fuzzing, one valid call on the same handler still works.

The Train tab's `start_training` launches a real process, so it is only given inputs that must be
refused. Only tiny models are used; examples naming the real default model are skipped.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import math
import os
import shutil
import types
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from workbench.default_model import DEFAULT_MODEL
from workbench.ui.common import friendly

REPO = Path(__file__).resolve().parents[1]
TAB_MODULES = sorted(p.stem for p in (REPO / "workbench" / "ui").glob("tab_*.py"))
_FRIENDLY_CODE = friendly(lambda: None).__code__
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, print_blob=True,
                phases=[Phase.explicit, Phase.generate] + ([] if os.environ.get("FUZZ_NO_SHRINK") else [Phase.shrink]),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.filter_too_much])
# Launches a training process: fuzzed separately, with inputs that must be refused only.
NOT_FUZZED = {"tab_train.start_training"}


def discover_handlers() -> dict[str, types.FunctionType]:
    """'tab_x.name' -> every function of a tab module wrapped by `friendly`."""
    handlers = {}
    for module_name in TAB_MODULES:
        module = importlib.import_module(f"workbench.ui.{module_name}")
        for attr, fn in vars(module).items():
            if (inspect.isfunction(fn) and getattr(fn, "__code__", None) is _FRIENDLY_CODE
                    and fn.__module__ == module.__name__):
                handlers[f"{module_name}.{attr}"] = fn
    return handlers


HANDLERS = discover_handlers()


# --------------------------------------------------------------------------- inputs

SPEC_PARAMS = {"spec", "base_spec", "rhio_spec", "model_spec", "base"}
RESULT_PARAMS = {"result", "comp", "grids"}
LIST_PARAMS = {"langs", "pipelines", "models"}
NUMBER_PARAMS = {"n", "n_events", "max_new_tokens"}  # unannotated numbers
BOOL_PARAMS = {"control", "chat", "lora"}

ODD_STRINGS = ["", " ", "\n\t", "../../etc/passwd", "/etc/passwd", "~nobody/x", "0", "-1", "1e309", "nan",
               "inf", "-0", "3.5", "1,2,3", "0-1:0", "5-2", "all:0", "all:-1", "{word}", "\x00", "\u202e",
               "ckpt:", "ckpt:../../x", "ckpt:nope", "NUL", "a" * 300, "😀" * 50, "森林", "1.1, 99.99",
               "0.1, 0.99", "None", "null", "[]", "{}", "<script>alert(1)</script>"]
# what a raw HTTP client can send that the page never would: null, lone surrogates (JSON carries
# them, UTF-8 cannot encode them), lists, dicts and numbers where text is expected
RAW_PAYLOADS = [None, "abc \ud800", "\udcff", ["a", 1], [], {"a": 1}, 3.5, -7, True]
ODD_NUMBERS = [0, -1, 1, 2, 0.5, -0.0, 1e300, -1e300, 10**30, -(10**30), float("nan"), float("inf"),
               float("-inf"), None, 3, 7, 1.5]


def odd_text() -> st.SearchStrategy:
    return st.one_of(
        st.text(max_size=30),
        st.sampled_from(ODD_STRINGS),
        # far beyond any context window
        st.text(min_size=1, max_size=3).map(lambda s: s * 3000),
        st.integers(-10**6, 10**6).map(str),
        st.floats().map(str),
        st.sampled_from(RAW_PAYLOADS),
        st.text(max_size=10).map(lambda s: s + "\ud800"),  # not UTF-8 encodable
    )


def odd_number() -> st.SearchStrategy:
    return st.one_of(st.sampled_from(ODD_NUMBERS), st.integers(-100, 100), st.integers(),
                     st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(RAW_PAYLOADS))


def _choices(ctx) -> dict[str, list]:
    """Valid values of named parameters: mixed in so the fuzzing gets past the first checks."""
    from probes import masking, representation as rep, transplant as xt
    from probes import pivot as lens
    from probes.transplant.cases import DIRECTIONS
    from workbench.compare import VIEWS
    from workbench.datasets import haystack, lexicon
    from workbench.evals.globesumm.data import PIPELINES
    from workbench.datasets.tasks import list_tasks
    from workbench.evals.harness import MODES
    from workbench.ui import tab_faithfulness, tab_pivot, tab_transplant

    langs = sorted(set(haystack.available_languages()) | set(list(lexicon.LANGUAGES)[:6]))
    return {
        "source": list(tab_pivot.SOURCES),
        "task": list(lens.TASKS) + list_tasks(),
        "lang": langs, "src_lang": langs, "tgt_lang": langs, "second_lang": langs, "langs": langs,
        "languages": ["en, fr", "en fr de", "fr;zh", "en"],
        "template": ["{word}", "The word {word}", "no placeholder"],
        "kind": ["csv", "json"],
        "method": list(rep.METHODS),
        "mode": list(masking.MASK_MODES) + list(xt.MODES) + list(MODES),
        "direction": [tab_transplant.TASK_DEFAULT, *DIRECTIONS],
        "site": ["mlp", "attn"],
        "scoring": list(xt.SCORINGS),
        "metric": ["accuracy", "change in P(gold)"],
        "view": list(VIEWS),
        "item_id": [i for _, i in tab_faithfulness.item_choices()[:3]],
        "name": [ctx.unlearning_run],
        "pipelines": list(PIPELINES), "pipeline": list(PIPELINES),
        "event": ctx.events,
        "lengths": ["200", "120, 200", "1000000", "0", "-5"],
        "depths": ["0.5", "0, 1", "2", "-1"],
        "heads": ["0.1", "1.3, 0.0", "9.9", "0.99"],
        "layers": ["all", "0, 1", "0-1", "all:2"],
        "extra": [ctx.gpt2, f"{ctx.gemma}, {ctx.gpt2}"],
        "prompt": ["the cat sat on the mat", "Français: \"chat\" - English: \""],
    }


def spec_strategy(ctx) -> st.SearchStrategy:
    """A tiny model folder most of the time, sometimes junk text."""
    junk = st.one_of(odd_text(), st.sampled_from(["ckpt:nope", "/nonexistent/model", "org/model-that-is-not-cached",
                                                  str(ctx.home), str(REPO), "."]))
    return st.one_of(st.sampled_from([ctx.gemma, ctx.gpt2, ctx.long, ctx.rhio]), st.sampled_from([ctx.gemma, ctx.gpt2]),
                     junk)


def upload_strategy(ctx) -> st.SearchStrategy:
    def random_file(data: bytes) -> str:
        path = ctx.scratch / f"upload-{len(list(ctx.scratch.iterdir()))}.bin"
        path.write_bytes(data)
        return str(path)

    return st.one_of(st.none(), st.just(str(ctx.scratch / "no-such-file.csv")), st.just(str(ctx.scratch)),
                     st.sampled_from(RAW_PAYLOADS),
                     st.binary(max_size=300).map(random_file),
                     st.text(max_size=200).map(lambda t: random_file(t.encode("utf-8", "surrogatepass"))))


def junk_object() -> st.SearchStrategy:
    return st.one_of(st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                     st.dictionaries(st.sampled_from(["fr", "en"]), st.text(max_size=3), max_size=2),
                     st.builds(object), st.just(pd.DataFrame()))


def strategy_for(param: inspect.Parameter, ctx) -> st.SearchStrategy:
    name, annotation = param.name, str(param.annotation)
    valid = ctx.choices.get(name)
    if name in SPEC_PARAMS:
        return spec_strategy(ctx)
    if name == "upload":
        return upload_strategy(ctx)
    if name in RESULT_PARAMS:
        real = ctx.results.get(name, [])
        return st.one_of(st.none(), junk_object(), *([st.sampled_from(real)] if real else []))
    if name == "models":
        return st.one_of(st.none(), st.lists(st.one_of(spec_strategy(ctx), odd_text()), max_size=5))
    if name in LIST_PARAMS or annotation.startswith("list"):
        items = st.one_of(st.sampled_from(valid), odd_text()) if valid else odd_text()
        return st.one_of(st.none(), st.lists(items, max_size=4), st.just([]))
    if name in BOOL_PARAMS or annotation == "bool":
        return st.one_of(st.booleans(), st.none(), st.sampled_from([0, 1, "yes", ""]))
    if name in NUMBER_PARAMS or annotation in ("float", "int"):
        return odd_number()
    if valid:
        return st.one_of(st.sampled_from(valid), odd_text())
    return odd_text()


def fuzzed_params(fn) -> list[inspect.Parameter]:
    """Every parameter but `progress` (left to its default, as Gradio does)."""
    return [p for p in inspect.signature(fn).parameters.values() if p.name != "progress"]


def names_default_model(value) -> bool:
    if isinstance(value, (list, tuple)):
        return any(names_default_model(v) for v in value)
    return isinstance(value, str) and DEFAULT_MODEL in value


# --------------------------------------------------------------------------- the contract


def snapshot(home: Path) -> dict[str, int]:
    """Relative path -> size (-1 for folders) of everything in the home but the result cache."""
    out = {}
    for path in home.rglob("*"):
        rel = path.relative_to(home)
        if rel.parts[0] == "results" or rel.name == ".cache-key":
            continue
        out[rel.as_posix()] = path.stat().st_size if path.is_file() else -1
    return out


def call_checked(fn, kwargs: dict, home: Path):
    """Call a handler; return its output, or the gr.Error it raised after checking the contract.
    Any other exception propagates (and fails the test)."""
    before = snapshot(home)
    try:
        return fn(**kwargs)
    except gr.Error as exc:
        message = str(exc.message or "")
        shown = {k: _short(v) for k, v in kwargs.items()}
        assert message.strip(), f"{fn.__name__}{shown} raised an empty gr.Error"
        assert not message.startswith("Internal error"), f"{fn.__name__}{shown}: {message}"
        assert "Traceback" not in message, message
        after = snapshot(home)
        assert after == before, (f"{fn.__name__}{shown} was refused ({message}) but changed the home: "
                                 f"added {sorted(set(after) - set(before))}, removed {sorted(set(before) - set(after))}, "
                                 f"resized {[k for k in before if k in after and before[k] != after[k]]}")
        return exc


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ctx(tiny_folders, tmp_path_factory):
    """Tiny models, a fresh WORKBENCH_HOME, a saved unlearning run and one real result of each kind."""
    from trainers.methods import rhio
    from trainers.methods.unlearning.results import UnlearningResults

    root = tmp_path_factory.mktemp("fuzz")
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_HOME", str(root / "home"))
    mp.delenv("WORKBENCH_DEMO", raising=False)
    long = root / "long-gemma3"
    shutil.copytree(tiny_folders["gemma3"], long)  # a longer context for faithfulness and GlobeSumm prompts
    config = json.loads((long / "config.json").read_text())
    config["max_position_embeddings"] = 2048
    (long / "config.json").write_text(json.dumps(config))
    scratch = root / "scratch"
    scratch.mkdir()
    ctx = types.SimpleNamespace(home=root / "home", scratch=scratch, gemma=str(tiny_folders["gemma3"]),
                                gpt2=str(tiny_folders["gpt2"]), long=str(long), events=[], results={})
    ctx.home.mkdir()
    table = pd.read_csv(REPO / "docs" / "unlearning_results.csv")
    ctx.unlearning_run = "fuzz-run"
    UnlearningResults(ctx.unlearning_run, table, pd.DataFrame({"id": ["none"]}), notes=["fuzz"]).save()
    ctx.rhio = rhio.add_control_tokens(ctx.long, "fuzz-rhio")  # ckpt:fuzz-rhio, with [POS] / [NEG]
    ctx.real = real_results(ctx)
    ctx.events = list(ctx.real["globesumm"][4]["choices"])
    ctx.results = {"result": [ctx.real[k][-1] for k in ("pivot", "map", "scores", "eval", "globesumm")],
                   "grids": [ctx.real["grids"][4]], "comp": [ctx.real["compare"][-1]]}
    ctx.choices = _choices(ctx)
    yield ctx
    from workbench.ui import tab_train

    for job in tab_train.JOBS.values():
        if job.running:
            job.process.kill()
    mp.undo()


def real_results(ctx) -> dict:
    from workbench.ui import tab_compare, tab_evaluate, tab_pivot, tab_retrieval, tab_transplant

    g = ctx.gemma
    scores = tab_retrieval.run_scores(g, "en", "200", "0.5", 1)
    result = scores[-1]
    # the tiny model never recalls a needle: give every head a score so the top-k heads exist
    scores = (*scores[:-1], dataclasses.replace(result, scores=np.full(result.scores.shape, 0.5)))
    return {
        "pivot": tab_pivot.run_pivot(g, "Concept list (committed)", None, "translation", "fr", "zh", 1, 0, 4),
        "map": tab_pivot.run_map(g, "Concept list (committed)", None, "en, fr", "{word}", 4, "pca", 1),
        "scores": scores,
        "grids": tab_transplant.run_grids(g, "capitals", ["fr"], "task default", "mlp", "overall", 0, "all",
                                          "probability", 3, 4, True, 0, 0),
        "eval": tab_evaluate.run_eval(g, "xnli", ["en"], 2, "auto"),
        "globesumm": tab_evaluate.run_globesumm(ctx.long, ["all"], 1, None, 8, False),
        "compare": tab_compare.run_compare([g, ctx.gpt2], "", "pivot", "capitals", "fr", "zh", 6),
    }


# One valid call per handler: after the fuzzing, the app must still serve it.
VALID_CALLS = {
    "tab_pivot.run_pivot": lambda c: dict(spec=c.gemma, source="Concept list (committed)", upload=None,
                                          task="repetition", src_lang="en", tgt_lang="fr", k_shot=1, seed=0,
                                          max_items=4),
    "tab_pivot.export_pivot": lambda c: dict(result=c.real["pivot"][-1], kind="csv"),
    "tab_pivot.run_grid": lambda c: dict(spec=c.gemma, prompt="the cat sat", top_k=3),
    "tab_pivot.run_map": lambda c: dict(spec=c.gemma, source="Concept list (committed)", upload=None,
                                        languages="en, de", template="{word}", max_items=3, method="pca", layer=0),
    "tab_pivot.replot_map": lambda c: dict(result=c.real["map"][-1], layer=1, method="pca"),
    "tab_pivot.export_map": lambda c: dict(result=c.real["map"][-1], layer=1),
    "tab_retrieval.run_scores": lambda c: dict(spec=c.gemma, lang="fr", lengths="200", depths="0.5", n_needles=1),
    "tab_retrieval.run_compare": lambda c: dict(spec=c.gemma, langs=["en", "de"], lengths="200", depths="0.5",
                                                n_needles=1),
    "tab_retrieval.export_scores": lambda c: dict(result=c.real["scores"][-1], kind="json"),
    "tab_retrieval.needle_prompt": lambda c: dict(spec=c.gemma, lang="en", length=200),
    "tab_retrieval.run_masking": lambda c: dict(spec=c.gemma, prompt="the cat sat", heads="0.1", mode="zero",
                                                max_new_tokens=3),
    "tab_retrieval.mask_top_k": lambda c: dict(spec=c.gemma, result=c.real["scores"][-1], k=2, prompt="the cat",
                                               mode="uniform", max_new_tokens=3),
    "tab_transplant.task_languages": lambda c: dict(task="capitals"),
    "tab_transplant.run_grids": lambda c: dict(spec=c.gemma, task="capitals", langs=["fr"], direction="task default",
                                               site="attn", mode="targetfirst", target_layer=1, layers="0, 1",
                                               scoring="probability", max_new_tokens=3, max_items=3, control=True,
                                               n_sample=1, seed=0),
    "tab_transplant.show_heatmap": lambda c: dict(grids=c.real["grids"][4], lang="fr", metric="change in P(gold)"),
    "tab_transplant.show_cell": lambda c: dict(spec=c.gemma, grids=c.real["grids"][4], lang="fr", source=1, target=0,
                                               max_new_tokens=3),
    "tab_transplant.export_grids": lambda c: dict(grids=c.real["grids"][4], kind="json", n_sample=0, seed=1),
    "tab_train.poll_training": lambda c: dict(run=""),
    "tab_train.cancel_training": None,  # a valid cancel needs a running job: covered by test_start_training_refuses
    "tab_train.checkpoint_table": lambda c: dict(),
    "tab_faithfulness.show_item": lambda c: dict(item_id=c.choices["item_id"][0]),
    "tab_faithfulness.compare_answers": lambda c: dict(base_spec=c.rhio, rhio_spec=c.rhio,
                                                       item_id=c.choices["item_id"][0], alpha=1.0, max_new_tokens=2),
    "tab_unlearning.show_results": lambda c: dict(name=c.unlearning_run),
    "tab_unlearning.prepare_training_data": lambda c: dict(entities=3, forget_entities=1, seed=0),
    "tab_evaluate.task_languages": lambda c: dict(task="xnli"),
    "tab_evaluate.run_eval": lambda c: dict(spec=c.gemma, task="capitals", langs=["fr"], n=2, mode="auto"),
    "tab_evaluate.export_eval": lambda c: dict(result=c.real["eval"][-1], kind="json"),
    "tab_evaluate.run_globesumm": lambda c: dict(spec=c.long, pipelines=["all"], n_events=1, upload=None,
                                                 max_new_tokens=4, chat=False),
    "tab_evaluate.show_summary": lambda c: dict(result=c.real["globesumm"][-1], event=c.events[0], pipeline="all"),
    "tab_evaluate.export_globesumm": lambda c: dict(result=c.real["globesumm"][-1], kind="csv"),
    "tab_compare.run_compare": lambda c: dict(models=[c.gemma], extra=c.gpt2, view="evaluate", task="capitals",
                                              lang="fr", second_lang="de", n_items=2),
    "tab_compare.export_compare": lambda c: dict(comp=c.real["compare"][-1]),
}


def test_every_handler_is_found_and_has_a_valid_call():
    """Introspection finds the handlers of every tab; a new handler must get a valid call here."""
    assert {name.split(".")[0] for name in HANDLERS} == set(TAB_MODULES)
    assert len(HANDLERS) >= 30
    missing = sorted(set(HANDLERS) - NOT_FUZZED - set(VALID_CALLS))
    assert not missing, f"add a valid call to VALID_CALLS for {missing}"


@pytest.mark.parametrize("name", sorted(set(HANDLERS) - NOT_FUZZED))
def test_handler_contract(name, ctx):
    fn = HANDLERS[name]
    params = fuzzed_params(fn)
    valid = VALID_CALLS[name](ctx) if VALID_CALLS.get(name) else {}
    # each argument is the valid one about half of the time, so that the fuzzing gets past the first
    # check and most examples corrupt only one or two fields
    strategies = {p.name: st.one_of(st.just(valid[p.name]), strategy_for(p, ctx)) if p.name in valid
                  else strategy_for(p, ctx) for p in params}

    @FUZZ
    @given(data=st.data())
    def fuzz(data):
        kwargs = {p: data.draw(s, label=p) for p, s in strategies.items()}
        assume(not any(names_default_model(v) for v in kwargs.values()))
        call_checked(fn, kwargs, ctx.home)

    fuzz()
    # the app keeps serving: one valid call still works
    if VALID_CALLS.get(name) is not None:
        out = call_checked(fn, VALID_CALLS[name](ctx), ctx.home)
        assert not isinstance(out, gr.Error), f"{name} refused a valid call after the fuzzing: {out.message}"


# --------------------------------------------------------------------------- training: refusals only


def _train_kwargs(ctx) -> dict:
    from workbench.ui import tab_train

    return dict(method="sft", base=ctx.gemma, model_spec="", data_choice=tab_train.DEMO_CHOICE, upload=None,
                languages="", lr=1e-4, max_steps=1, batch_size=1, grad_accum=1, max_length=16, lora=False,
                lora_r=2, seed=0, run_name="")


def _bad_training_field(ctx) -> st.SearchStrategy:
    """(field, value) pairs that must each make start_training refuse."""
    from workbench.ui import tab_train

    bad_numbers = st.sampled_from([None, "", float("nan"), float("inf"), -float("inf"), -1, 0, "abc", -1e300])
    bad_upload = upload_strategy(ctx).filter(lambda u: u is None or not str(u).endswith(".bin"))
    return st.one_of(
        st.tuples(st.sampled_from(["lr", "max_steps", "batch_size", "grad_accum", "lora_r"]), bad_numbers),
        st.tuples(st.just("max_length"), st.sampled_from([None, float("nan"), 0, 7, -5, float("inf")])),
        st.tuples(st.just("seed"), st.sampled_from([None, "", -1, float("nan"), float("inf")])),
        st.tuples(st.just("method"), odd_text().filter(lambda m: not isinstance(m, str) or m.strip() not in _methods())),
        st.tuples(st.just("base"), st.sampled_from(["/nonexistent/model", "ckpt:nope", str(REPO / "README.md"),
                                                    "../../etc/passwd", str(REPO), "/etc", "abc \ud800", ["x"]])),
        st.tuples(st.just("upload"), bad_upload),
        st.tuples(st.just("languages"), st.sampled_from(["xx", "klingon", "../..", "zz, yy"])),
        st.tuples(st.just("run_name"), st.sampled_from(["../x", "a/b", ".hidden", "x@y"])),
    )


def _methods() -> list[str]:
    from trainers.methods import available_methods

    return list(available_methods())


def test_start_training_refuses_bad_inputs(ctx):
    from workbench.ui import tab_train

    fn = tab_train.start_training
    strategy = st.lists(_bad_training_field(ctx), min_size=1, max_size=3)

    @FUZZ
    @given(bad=strategy)
    def fuzz(bad):
        kwargs = _train_kwargs(ctx)
        for field, value in bad:
            kwargs[field] = value
            if field == "upload":
                kwargs["data_choice"] = tab_train.UPLOAD_CHOICE
        jobs = dict(tab_train.JOBS)
        out = call_checked(fn, kwargs, ctx.home)
        started = [job for run, job in tab_train.JOBS.items() if run not in jobs]
        for job in started:  # never leave a training process behind
            job.process.kill()
            job.process.wait(60)
        assert isinstance(out, gr.Error), f"start_training accepted {bad!r} and started {[j.run for j in started]}"

    fuzz()
    assert not [run for run, job in tab_train.JOBS.items() if job.running]


# --------------------------------------------------------------------------- regressions found by the fuzzing


def _refused(fn, *args) -> str:
    with pytest.raises(gr.Error) as info:
        fn(*args)
    message = info.value.message
    assert not message.startswith("Internal error"), message
    return message


@pytest.mark.parametrize("value, words", [(None, "required"), (float("inf"), "finite"), (float("nan"), "finite"),
                                          (2.5, "whole number"), ("abc", "a number")])
def test_number_fields_are_checked_before_use(ctx, value, words):
    """int(None), int(inf) and float(10**400) used to escape as 'Internal error (TypeError/OverflowError)'."""
    from workbench.ui import tab_evaluate, tab_retrieval, tab_unlearning

    assert words in _refused(tab_retrieval.needle_prompt, ctx.gemma, "en", value)
    assert words in _refused(tab_unlearning.prepare_training_data, value, 1, 0)
    assert words in _refused(tab_evaluate.run_globesumm, ctx.long, ["all"], 1, None, value, False)


def test_training_refuses_empty_and_infinite_numbers(ctx):
    from workbench.ui import tab_train

    for field, value, words in [("max_length", None, "Max tokens is required"), ("lr", float("inf"), "finite"),
                                ("batch_size", float("nan"), "finite"), ("lr", 10**400, "far too large")]:
        kwargs = _train_kwargs(ctx)
        kwargs[field] = value
        before = dict(tab_train.JOBS)
        with pytest.raises(gr.Error, match=words):
            tab_train.start_training(**kwargs)
        assert tab_train.JOBS == before


@pytest.mark.parametrize("junk", ["", 45, [41], {"fr": "x"}, object()])
def test_foreign_state_reads_as_not_computed_yet(ctx, junk):
    """A state holding anything but the expected result used to raise AttributeError/TypeError."""
    from workbench.ui import tab_compare, tab_evaluate, tab_pivot, tab_retrieval, tab_transplant

    assert "Run the pivot lens first" in _refused(tab_pivot.export_pivot, junk, "csv")
    assert "representation map first" in _refused(tab_pivot.export_map, junk, 0)
    assert tab_pivot.replot_map(junk, 0, "pca")[1] is None
    assert "retrieval scores first" in _refused(tab_retrieval.export_scores, junk, "csv")
    assert "retrieval scores first" in _refused(tab_retrieval.mask_top_k, ctx.gemma, junk, 1, "x", "zero", 2)
    assert "Run the grid first" in _refused(tab_transplant.show_heatmap, junk, "fr", "accuracy")
    assert "Run the grid first" in _refused(tab_transplant.export_grids, junk, "csv", 0, 0)
    assert "Run an evaluation first" in _refused(tab_evaluate.export_eval, junk, "csv")
    assert "Run GlobeSumm first" in _refused(tab_evaluate.export_globesumm, junk, "csv")
    assert "Run a comparison first" in _refused(tab_compare.export_compare, junk)
    assert "Run GlobeSumm first" in _refused(tab_evaluate.show_summary, junk, "event", "all")


def test_names_too_long_for_the_file_system(ctx):
    """A 3000-character model spec or run name used to fail with 'Internal error (OSError): File name too long'."""
    from workbench.ui import tab_pivot, tab_unlearning

    assert "is not a model folder" in _refused(tab_pivot.run_grid, "0" * 3000, "the cat", 3)
    assert "at most 255 bytes" in _refused(tab_unlearning.show_results, "4" * 300)


def test_generation_stops_when_the_context_is_full(ctx):
    """A huge max_new_tokens used to decode past the context window: GPT-2's learned positions run
    out there, and 10**9 steps never end."""
    import workbench
    from workbench import engine

    handle = workbench.load(ctx.gpt2)
    prompt = [5] * (handle.facts.n_ctx - 4)
    gen = engine.generate_greedy(handle, prompt, 10**9)
    assert 1 <= len(gen.new_ids[0]) <= 5


def test_huge_entity_counts_are_refused_at_once_and_leave_no_folder(ctx):
    """prepare_training_data(10**15, ...) used to draw names until the syllables ran out (minutes),
    then left an empty data folder in the home."""
    from workbench.ui import tab_unlearning

    before = snapshot(ctx.home)
    assert "at most 5000" in _refused(tab_unlearning.prepare_training_data, 10**15, 1, 0)
    assert snapshot(ctx.home) == before
