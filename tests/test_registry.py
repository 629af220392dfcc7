"""Checkpoint registry: atomic writes, names, listing only complete checkpoints, pruning."""

import json

import pytest

from workbench import registry
from workbench.registry import CheckpointError


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _writer(payload: bytes = b"weights"):
    def write(folder):
        (folder / "model.safetensors").write_bytes(payload)
        (folder / "config.json").write_text("{}")
        (folder / "resume").mkdir()
        (folder / "resume" / "state.json").write_text("{}")
    return write


def _save(run="r", step=1, **manifest):
    return registry.save(run, step, _writer(), {"base_model": "base", "method": "sft", "parent": "base", **manifest})


def test_save_list_get_resolve():
    a = _save(step=5)
    b = _save(step=10, metrics={"train_loss": 1.5})
    assert [c.name for c in registry.list_checkpoints()] == ["r@5", "r@10"]
    assert registry.get("r").name == "r@10" and registry.get("r@5").path == a.path
    assert registry.get("ckpt:r@10").path == registry.resolve("r") == b.path
    assert b.spec == "ckpt:r@10" and b.metrics == {"train_loss": 1.5} and b.method == "sft"
    manifest = json.loads((b.path / "manifest.json").read_text())
    assert {"name", "run", "step", "created", "base_model", "parent", "method", "files"} <= set(manifest)
    assert {f["path"] for f in manifest["files"]} == {"model.safetensors", "config.json", "resume/state.json"}


def test_unknown_names_are_explained():
    _save(run="alpha", step=2)
    with pytest.raises(CheckpointError, match="No checkpoint named 'beta'.*Registered runs: alpha"):
        registry.get("beta")
    with pytest.raises(CheckpointError, match="has no checkpoint at step 3; it has steps 2"):
        registry.get("alpha@3")
    with pytest.raises(CheckpointError, match="must be a step number"):
        registry.get("alpha@x")
    for bad in ("../escape", "a/b", ".."):
        with pytest.raises(CheckpointError):
            registry.get(bad)


def test_failed_write_leaves_nothing_listed():
    def broken(folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        registry.save("r", 1, broken, {})
    assert registry.list_checkpoints() == []
    assert not any(registry.run_folder("r").iterdir())


def test_incomplete_folders_are_not_listed(home):
    good = _save(step=1)
    # a folder without manifest (e.g. copied by hand, or an old crash) and one with a truncated file
    (registry.run_folder("r") / registry.step_folder_name(2)).mkdir()
    bad = _save(step=3)
    (bad.path / "model.safetensors").write_bytes(b"w")
    hidden = registry.run_folder("r") / ".step-00000004.tmp-x"
    hidden.mkdir()
    (hidden / "manifest.json").write_text("{}")
    assert [c.name for c in registry.list_checkpoints()] == [good.name]
    assert registry.remove_partial("r") == 1 and not hidden.exists()


def test_prune_and_delete():
    for step in (1, 2, 3, 4):
        _save(step=step)
    removed = registry.prune("r", keep_last=2)
    assert [c.step for c in removed] == [1, 2]
    assert [c.step for c in registry.list_checkpoints("r")] == [3, 4]
    registry.delete("r@4")
    assert registry.get("r").step == 3


def test_model_specs_resolve_through_the_registry():
    from workbench.models import resolve_spec

    ckpt = _save(step=7)
    resolved = resolve_spec("ckpt:r")
    assert resolved.source == "checkpoint" and resolved.path == str(ckpt.path)


def test_checkpoints_command_lists_the_registry(capsys):
    from workbench.cli import main

    assert main(["checkpoints"]) == 0
    assert "No checkpoints" in capsys.readouterr().out
    _save(run="listed", step=3, metrics={"train_loss": 0.25})
    assert main(["checkpoints"]) == 0
    out = capsys.readouterr().out
    assert "ckpt:listed@3" in out and "0.25" in out
    assert main(["checkpoints", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "listed@3"
