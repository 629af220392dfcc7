"""Every --json output is strict JSON: NaN and infinities are null, never bare tokens."""

import json

import pytest

from workbench.cli import main


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def test_eval_json_is_strict_with_undefined_intervals(tiny_folders, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    # A generation metric has no chance level: NaN in the table, printed as a bare NaN before.
    assert main(["eval", "capitals", "--model", str(tiny_folders["gemma3"]), "--langs", "en", "--n", "1",
                 "--mode", "generate", "--json", "--device", "cpu"]) in (0, None)
    rows = _strict(capsys.readouterr().out)
    assert rows and {"lang", "metric", "score"} <= set(rows[0]) and rows[0]["chance"] is None


def test_info_json_is_strict(tiny_folders, capsys):
    assert main(["info", str(tiny_folders["llama"]), "--json", "--device", "cpu"]) in (0, None)
    facts = _strict(capsys.readouterr().out)
    assert facts["n_layers"] == 2


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_dumps_writes_null_for_non_finite_numbers(value):
    from workbench.results import dumps

    assert _strict(dumps({"x": value, "rows": [1.0, value]})) == {"x": None, "rows": [1.0, None]}
