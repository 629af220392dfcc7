"""Bad input, property-based: every public entry point answers garbage with a clear
WorkbenchError (a ValueError) — never a crash of another kind — and changes nothing on disk."""

import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench import engine
from workbench.errors import WorkbenchError
from workbench.models import resolve_spec
from workbench.paths import safe_child

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
odd_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=200)


@FAST
@given(name=odd_text)
def test_safe_child_never_escapes(tmp_path, name):
    try:
        child = safe_child(tmp_path, name)
    except WorkbenchError:
        return
    assert child.parent == tmp_path.resolve()


@FAST
@given(spec=st.text(alphabet=string.ascii_letters + string.digits + "-_/.~: ", max_size=40))
def test_model_specs_resolve_or_explain(spec):
    if spec.strip() in {"gemma-3-270m", ""} or spec.strip().startswith("ckpt:"):
        return
    try:
        resolve_spec(spec)
    except WorkbenchError as exc:
        assert str(exc)


@FAST
@given(prompt=odd_text)
def test_any_prompt_encodes_or_explains(tiny_gemma, prompt):
    try:
        ids = engine.as_ids(tiny_gemma, prompt)
    except WorkbenchError as exc:
        assert "empty" in str(exc) or "tokens" in str(exc)
        return
    assert ids.shape[0] == 1 and ids.shape[1] >= 1


def test_prompt_beyond_context_is_refused(tiny_gemma):
    with pytest.raises(WorkbenchError, match="reads at most"):
        engine.as_ids(tiny_gemma, "word " * 5000)


@FAST
@given(layer=st.integers(min_value=-50, max_value=50))
def test_layers_in_range_or_explained(tiny_gemma, layer):
    try:
        assert 0 <= engine.check_layer(tiny_gemma, layer) < tiny_gemma.n_layers
    except WorkbenchError as exc:
        assert "out of range" in str(exc)


@FAST
@given(head=st.integers(min_value=-10, max_value=10))
def test_heads_in_range_or_explained(tiny_gemma, head):
    try:
        assert 0 <= engine.check_head(tiny_gemma, head) < tiny_gemma.facts.n_heads
    except WorkbenchError as exc:
        assert "out of range" in str(exc)


@FAST
@given(text=odd_text)
def test_word_csv_parser(text):
    from workbench.datasets.lexicon import parse_word_csv

    try:
        frame = parse_word_csv(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert len(frame.columns) >= 2


@FAST
@given(lines=st.lists(odd_text, min_size=0, max_size=5))
def test_training_jsonl(tmp_path_factory, lines):
    from trainers.data import load_jsonl

    path = tmp_path_factory.mktemp("jsonl") / "data.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    before = sorted(os.listdir(path.parent))
    try:
        load_jsonl(path)
    except WorkbenchError as exc:
        assert str(exc)
    assert sorted(os.listdir(path.parent)) == before


@FAST
@given(text=odd_text)
def test_training_config_yaml(tmp_path_factory, text):
    from trainers.config import TrainConfig

    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        TrainConfig.from_yaml(path)
    except WorkbenchError as exc:
        assert str(exc)


@FAST
@given(lines=st.lists(odd_text, min_size=0, max_size=4))
def test_task_files(tmp_path_factory, lines):
    from workbench.datasets.tasks import load_task

    path = tmp_path_factory.mktemp("task") / "xnli.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        load_task("xnli", "fr", path=path)
    except ValueError as exc:
        assert str(exc)


@FAST
@given(text=odd_text)
def test_globesumm_files(tmp_path_factory, text):
    from workbench.evals.globesumm.data import load_events

    path = tmp_path_factory.mktemp("gs") / "events.jsonl"
    path.write_text(text, encoding="utf-8")
    try:
        load_events(path)
    except ValueError as exc:
        assert str(exc)


@FAST
@given(text=odd_text)
def test_faithfulness_files(tmp_path_factory, text):
    from workbench.datasets.faithfulness import load_faithfulness

    path = tmp_path_factory.mktemp("fa") / "items.jsonl"
    path.write_text(text, encoding="utf-8")
    try:
        load_faithfulness(path)
    except ValueError as exc:
        assert str(exc)


def test_checkpoint_names_cannot_escape():
    from workbench import registry

    for bad in ["../etc", "/abs", "a/b", "..", ""]:
        with pytest.raises(WorkbenchError):
            registry.get(bad)


def test_missing_checkpoint_is_explained():
    import workbench

    with pytest.raises(WorkbenchError, match="(?i)checkpoint"):
        workbench.load("ckpt:no-such-run")


def test_unwritable_home_is_explained(monkeypatch, tmp_path):
    from workbench.paths import workbench_home

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    monkeypatch.setenv("WORKBENCH_HOME", str(locked / "home"))
    if os.geteuid() == 0:  # root ignores permissions; simulate with a file in the way
        monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "file"))
        (tmp_path / "file").write_text("not a folder")
    with pytest.raises(WorkbenchError, match="WORKBENCH_HOME"):
        workbench_home()
