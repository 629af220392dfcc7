"""The result protocol: every result type offers it, and its JSON is strict and gives the same
result back (same arrays, frames and figure), on tiny models or, where the probe is slow, on
hand-made data."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from workbench import cache, results
from workbench.results import REGISTRY, ResultFormatError, ResultProtocol

TRANSPLANT = {"task": "capitals", "lang": "fr", "n_items": 4, "layers": [0, 1]}


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache, "RESULTS", cache.ResultCache(root=tmp_path_factory.mktemp("results")))
        yield


# --------------------------------------------------------------------------- one builder per type

def _pivot(handle):
    from probes.pivot import pivot
    from workbench.datasets.lexicon import load_concepts

    return pivot(handle, load_concepts(["fr", "de", "en"]).head(8), src_lang="fr", tgt_lang="de", k_shot=2)


def _lens_grid(handle):
    from probes.pivot import logit_lens_grid

    return logit_lens_grid(handle, "the cat sat on the mat", top_k=3)


def _representation(handle):
    from probes.representation import representation_map

    prompts = {"en": ["water", "fire", "house"], "fr": ["eau", "feu", "maison"]}
    return representation_map(handle, prompts, method="pca")


def _retrieval(handle):
    from probes.retrieval import retrieval_scores

    return retrieval_scores(handle, "en", lengths=[200], depths=[0.5], n_needles=1, max_new_tokens=4)


def _languages(handle):
    from probes.retrieval import compare_languages

    return compare_languages(handle, ["en", "de"], lengths=[200], depths=[0.5], n_needles=1, max_new_tokens=4)


def _masking(handle):
    from probes.masking import generate_with_masked_heads

    return generate_with_masked_heads(handle, "the cat sat on the", [(0, 1), (1, 0)], "zero", max_new_tokens=4)


def _transplant_run(handle):
    from probes.transplant import transplant
    from workbench.datasets.tasks import load_task

    items = load_task("capitals", "fr")
    return transplant(handle, items[0], 0, 1, max_new_tokens=3, aux_item=items[1])


def _transplant_grid(handle):
    from probes.transplant import transplant_grid
    from workbench.datasets.tasks import load_task

    return transplant_grid(handle, load_task("capitals", "fr")[:3], scoring="generation", sources=[0, 1],
                           targets=[1], max_new_tokens=2)


def _evaluation(handle):
    from workbench.evals.harness import evaluate

    return evaluate(handle, "capitals", ["en", "fr"], n=2)


def _faithfulness(handle):
    from trainers.methods.rhio.evaluation import evaluate_faithfulness
    from workbench.datasets.faithfulness import load_faithfulness

    return evaluate_faithfulness(handle, load_faithfulness(langs=["en"])[:2], "plain", max_new_tokens=4,
                                 max_chars=200)


def _comparison(handle):
    from workbench.compare import compare

    return compare([handle, handle], "transplant", TRANSPLANT)


def _mcms(handle):
    """By hand: the pipelines need a long-context model; NaN metrics (no key facts) included."""
    from workbench.evals.globesumm.data import SummaryRun
    from workbench.evals.globesumm.mcms import METRICS, MCMSResult

    runs = [SummaryRun("all", "en", ["p1"], ["a fire"]), SummaryRun("recurrent", "en", ["p1", "p2"], ["x", "fire"])]
    rows = [{"event": "e1", "pipeline": run.pipeline, "lang": "en", "summary": run.summary, "reference": None,
             "calls": len(run.outputs), "truncated": False,
             **{m: math.nan if m == "omission" else 0.25 * (i + 1) for m in METRICS}} for i, run in enumerate(runs)]
    return MCMSResult("hand", ["all", "recurrent"], 8, 100, rows, runs)


def _model_evaluation(handle):
    from trainers.methods.unlearning.evaluation import summarize_items

    def items(name, ratios):
        return pd.DataFrame({"set": name, "rougeL_recall": 0.5, "probability": 0.25, "truth_ratio": ratios})

    scored = pd.concat([items("forget", [0.5, 2.0]), items("retain", [0.2, 0.6]), items("real_world", [0.5, 0.5])])
    return summarize_items(scored, items("forget", [1.0, 3.0]), model="hand")


def _unlearning(handle):
    from trainers.methods.unlearning.results import UnlearningResults

    rows = []
    for track in ("injected", "pretrained"):
        first = {"track": track, "method": "none", "step": 0, "forget.rougeL_recall": 0.8, "forget.probability": 0.8,
                 "target.rougeL_recall": 0.8, "target.probability": 0.8, "model_utility": 0.6,
                 "forget_quality.forget": 1e-4 if track == "injected" else math.nan,
                 "forget_quality.target": 1e-3 if track == "injected" else math.nan}
        rows += [first, {**first, "method": "npo", "step": 4, "forget.rougeL_recall": 0.2, "model_utility": 0.5}]
    items = pd.DataFrame({"id": ["a", "b"], "score": [0.5, math.nan]})
    return UnlearningResults("hand", pd.DataFrame(rows), items, None, ["a note"], {"base_model": "tiny"})


BUILDERS = {
    "PivotResult": _pivot, "LensGrid": _lens_grid, "RepresentationResult": _representation,
    "RetrievalResult": _retrieval, "LanguageComparison": _languages, "MaskedGeneration": _masking,
    "TransplantRun": _transplant_run, "TransplantGrid": _transplant_grid, "EvalResult": _evaluation,
    "FaithfulnessResult": _faithfulness, "Comparison": _comparison, "MCMSResult": _mcms,
    "ModelEvaluation": _model_evaluation, "UnlearningResults": _unlearning,
}


NOT_RESULTS = {"TrainResult": "a training run's outcome: it holds the trained model in memory"}


def test_every_result_class_is_a_registered_result_and_tested():
    """Import every module of the three packages; a class with rows and a figure is a result."""
    import importlib
    import inspect
    import pkgutil

    import probes
    import trainers
    import workbench

    drawn = set()
    for package in (workbench, probes, trainers):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith("__main__"):
                module = importlib.import_module(info.name)
                drawn |= {cls for _, cls in inspect.getmembers(module, inspect.isclass)
                          if cls.__module__ == module.__name__ and cls is not ResultProtocol
                          and hasattr(cls, "to_frame") and hasattr(cls, "figure")}
    assert {cls.__name__ for cls in drawn if not issubclass(cls, results.Result)} == set(NOT_RESULTS)
    assert set(REGISTRY) - {"Sample"} == set(BUILDERS)


# --------------------------------------------------------------------------- the protocol, per type

def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _assert_same_values(a, b):
    """Field by field: arrays and frames equal (NaN equal to NaN), nested results alike."""
    for f in dataclasses.fields(a):
        if not f.compare:
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)
        elif isinstance(x, pd.DataFrame):
            pd.testing.assert_frame_equal(x, y)
        elif isinstance(x, list) and x and isinstance(x[0], results.Result):
            for u, v in zip(x, y):
                _assert_same_values(u, v)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_protocol_and_json_round_trip(name, tiny_gemma):
    result = BUILDERS[name](tiny_gemma)
    assert type(result).__name__ == name
    assert isinstance(result, ResultProtocol)
    assert isinstance(result.model, str) and isinstance(result.params, dict)
    assert isinstance(result.summary(), pd.DataFrame) and isinstance(result.to_frame(), pd.DataFrame)

    text = result.to_json()
    doc = _strict(text)  # a strict parser reads it: no NaN or Infinity tokens
    assert doc["type"] == name and doc["version"] == results.FORMAT_VERSION

    back = results.from_json(text)
    assert type(back) is type(result)
    assert type(result).from_json(text).to_json() == text
    assert back.to_json() == text
    _assert_same_values(result, back)
    assert back.model == result.model and back.params == result.params
    pd.testing.assert_frame_equal(back.to_frame(), result.to_frame())
    pd.testing.assert_frame_equal(back.summary(), result.summary())
    assert back.figure().to_json() == result.figure().to_json()


def test_views_of_a_figure_round_trip(tiny_gemma):
    grid = _transplant_grid(tiny_gemma)
    back = type(grid).from_json(grid.to_json())
    assert back.figure(metric="delta_p").to_json() == grid.figure(metric="delta_p").to_json()
    assert back.texts.dtype == object and back.texts.shape == grid.texts.shape
    rep = _representation(tiny_gemma)
    assert type(rep).from_json(rep.to_json()).figure(layer=0).to_json() == rep.figure(layer=0).to_json()


def test_comparison_draws_each_models_own_figure(tiny_gemma):
    comp = _comparison(tiny_gemma)
    own = [r.figure() for r in comp.results]
    fig = comp.figure()
    assert len(fig.data) == sum(len(f.data) for f in own)
    assert [t.z.tolist() for t in fig.data] == [t.z.tolist() for f in own for t in f.data]
    assert fig.data[0].xaxis != fig.data[-1].xaxis  # one panel per model
    left, right = fig.layout.xaxis.domain, fig.layout[f"xaxis{fig.data[-1].xaxis[1:]}"].domain
    assert left[1] < right[0]


# --------------------------------------------------------------------------- the codec on its own

@dataclasses.dataclass
class Sample(results.Result):
    """Every kind of value the document format carries."""

    model: str
    values: np.ndarray
    table: pd.DataFrame
    pair: tuple
    keyed: dict
    rows: list
    words: np.ndarray
    x: float = math.nan
    cache: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def params(self) -> dict:
        return {}

    def to_frame(self) -> pd.DataFrame:
        return self.table

    def summary(self) -> pd.DataFrame:
        return self.table.head(1)

    def figure(self):
        import plotly.graph_objects as go

        return go.Figure(go.Heatmap(z=self.values))


def _sample() -> Sample:
    words = np.empty((2, 2), dtype=object)
    words[:] = [["a", None], ["c", "d"]]
    table = pd.DataFrame({"s": ["x", None], "v": [1.5, np.nan], "i": [1, 2], "b": [True, False],
                          "o": [(1, 2), [3]]}, index=[5, 5])
    return Sample("m", np.array([[1.0, np.nan], [-np.inf, 2]], dtype=np.float32), table, (1, (2, "z")),
                  {(1, 2): "k", 3: np.float64(0.5)}, [{"p": math.inf, "q": np.int64(3)}], words, cache={"k": 1})


def test_codec_restores_every_kind_of_value():
    sample = _sample()
    text = sample.to_json()
    doc = _strict(text)
    assert doc["values"] == [[1.0, None], [None, 2.0]] and doc["x"] is None  # NaN and infinities as null
    assert "cache" not in doc
    back = Sample.from_json(text)
    assert back.to_json() == text
    assert back.values.dtype == np.float32 and np.isnan(back.values[1, 0])  # an infinity in an array: NaN
    assert back.pair == (1, (2, "z")) and back.keyed == {(1, 2): "k", 3: 0.5}
    assert back.rows == [{"p": math.inf, "q": 3}] and math.isnan(back.x) and back.cache == {}
    assert back.words.tolist() == [["a", None], ["c", "d"]]
    pd.testing.assert_frame_equal(back.table, sample.table)
    assert back.table["o"].tolist() == [(1, 2), [3]]


def test_exports_bundle_results_and_tables():
    sample = _sample()
    bundle = _strict(results.dumps({"results": [sample], "rows": sample.table}))
    assert bundle["results"][0]["type"] == "Sample" and bundle["rows"][1]["v"] is None


@pytest.mark.parametrize("text, message", [
    ('{"type": "Sample", "version": 1, "x": NaN}', "strict JSON"),
    ("[1, 2]", "Not a workbench result"),
    ("not json", "Not a JSON document"),
    ('{"type": "Sample", "version": 99}', "version 99"),
    ('{"type": "Nope", "version": 1}', "Unknown result type 'Nope'"),
    ('{"type": "Nope", "version": 1, "module": "os"}', "may name classes of workbench, probes, trainers only"),
    ('{"type": "Sample", "version": 1, "model": "m"}', "do not fit Sample"),
])
def test_bad_documents_are_refused(text, message):
    with pytest.raises(ResultFormatError, match=message):
        results.from_json(text)


def test_a_document_of_another_type_is_refused(tiny_gemma):
    with pytest.raises(ResultFormatError, match="holds a Sample, not a PivotResult"):
        type(_pivot(tiny_gemma)).from_json(_sample().to_json())


def test_a_registered_class_loads_from_its_module_name():
    text = _mcms(None).to_json()
    cls = REGISTRY.pop("MCMSResult")
    try:
        assert _strict(text)["module"] == "workbench.evals.globesumm.mcms"
        assert type(results.from_json(text)) is cls
        with pytest.raises(ResultFormatError, match="No class MCMSResult"):
            results.from_json(text.replace('"module": "workbench.evals.globesumm.mcms"',
                                           '"module": "workbench.evals.nothing_here"'))
    finally:
        REGISTRY["MCMSResult"] = cls


def test_a_second_class_with_a_registered_name_is_refused():
    with pytest.raises(TypeError, match="Two result types are named Sample"):
        type("Sample", (results.Result,), {"__module__": "elsewhere"})
