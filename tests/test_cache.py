"""The result cache stores JSON documents, never pickle, and an entry answers only its own key."""

import shutil

import numpy as np
import pandas as pd
import pytest

from probes.pivot import LensGrid, logit_lens_grid
from workbench import cache


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    store = cache.ResultCache(root=tmp_path / "results")
    monkeypatch.setattr(cache, "RESULTS", store)
    return store


def _fresh(store):
    """The same folder seen by a new process: disk only."""
    return cache.ResultCache(root=store.root)


def test_values_round_trip_through_json(results):
    value = {"scores": [1.5, float("nan")], "table": pd.DataFrame({"a": [1, 2]}), "array": np.arange(6).reshape(2, 3)}
    results.put("probe-a", value)
    got = _fresh(results).get("probe-a")
    assert got["scores"][0] == 1.5 and np.isnan(got["scores"][1])
    pd.testing.assert_frame_equal(got["table"], value["table"])
    assert np.array_equal(got["array"], value["array"]) and got["array"].dtype == value["array"].dtype
    assert not list(results.root.glob("*.pkl"))
    assert results.path("probe-a").read_bytes().split(b"\n", 1)[1].startswith(b"{")


def test_a_swapped_entry_is_not_served_for_another_request(results, tiny_gemma, monkeypatch):
    first = logit_lens_grid(tiny_gemma, "the cat sat")
    second = logit_lens_grid(tiny_gemma, "a dog ran far away")
    files = sorted(results.root.glob("logit_lens_grid-*.json"))
    assert len(files) == 2
    by_prompt = {}
    for f in files:
        by_prompt[_fresh(results).get(f.stem).prompt] = f
    shutil.copy(by_prompt["a dog ran far away"], by_prompt["the cat sat"])  # B's valid entry over A's
    monkeypatch.setattr(cache, "RESULTS", _fresh(results))
    again = logit_lens_grid(tiny_gemma, "the cat sat")
    assert isinstance(again, LensGrid) and again.prompt == "the cat sat"
    assert again.to_json() == first.to_json() and second.prompt != again.prompt


def test_tampered_and_foreign_entries_are_recomputed(results):
    results.put("probe-b", [1, 2, 3])
    path = results.path("probe-b")
    sig, payload = path.read_bytes().split(b"\n", 1)
    path.write_bytes(sig + b"\n" + payload.replace(b"1", b"7"))
    assert _fresh(results).get("probe-b") is None
    path.write_bytes(b"0" * 64 + b"\n" + payload)
    assert _fresh(results).get("probe-b") is None
    assert _fresh(results).get_or_compute("probe-b", lambda: [4]) == [4]


def test_old_pickle_entries_are_never_loaded(results):
    results.root.mkdir(parents=True, exist_ok=True)
    (results.root / "probe-c.pkl").write_bytes(b"\x80\x04 not to be unpickled")
    assert _fresh(results).get("probe-c") is None
