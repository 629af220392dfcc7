"""TrainConfig: YAML round trip, clear errors for unknown keys and bad values, CLI assembly."""

import argparse
from pathlib import Path

import pytest
import yaml

from trainers.cli import build_config
from trainers.config import ConfigError, TrainConfig
from trainers.methods import METHODS, build_method
from workbench.errors import InputError

# training configurations (other pipelines keep their own YAML files in the same folder)
EXAMPLES = [p for p in sorted((Path(__file__).resolve().parent.parent / "examples" / "configs").glob("*.yaml"))
            if "method" in (yaml.safe_load(p.read_text(encoding="utf-8")) or {})]


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(method="tft", lr=3e-5, max_steps=7, lora=True, languages=["fr", "zh"], method_args={"a": 1})
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert TrainConfig.from_yaml(path) == cfg


def test_yaml_float_without_dot_is_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\nwarmup_ratio: 0\n")  # PyYAML reads 1e-4 as a string
    cfg = TrainConfig.from_yaml(path)
    assert cfg.lr == pytest.approx(1e-4) and isinstance(cfg.lr, float)


@pytest.mark.parametrize("text, words", [
    ("batchsize: 4\n", ["batchsize", "did you mean 'batch_size'"]),
    ("lr: -1\n", ["lr", "greater than 0"]),
    ("lr: fast\n", ["lr", "float"]),
    ("batch_size: four\n", ["batch_size", "int"]),
    ("batch_size: 2.5\n", ["batch_size", "int"]),
    ("scheduler: cosin\n", ["scheduler", "cosine, linear, constant"]),
    ("warmup_ratio: 1.5\n", ["warmup_ratio", "[0, 1)"]),
    ("lora: maybe\n", ["lora", "bool"]),
    ("max_steps: 0\n", ["max_steps", "at least 1"]),
    ("eval_every: 5\n", ["eval_every", "eval_data", "eval_fraction"]),
    ("output: a/b\n", ["output", "plain run name"]),
    ("max_length: 4\n", ["max_length", "at least 8"]),
    ("- just\n- a list\n", ["mapping"]),
    ("lr: [1\n", ["not valid YAML"]),
    ("", ["empty"]),
])
def test_bad_yaml_gives_clear_message(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(path)
    for word in words:
        assert word in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")


def test_overrides_parse_values():
    cfg = TrainConfig().with_overrides(["max_steps=5", "lora=true", "lr=2e-5", "languages=[fr, de]"])
    assert (cfg.max_steps, cfg.lora, cfg.lr, cfg.languages) == (5, True, 2e-5, ["fr", "de"])
    with pytest.raises(ConfigError, match="key=value"):
        TrainConfig().with_overrides(["max_steps"])
    with pytest.raises(ConfigError, match="Unknown option"):
        TrainConfig().with_overrides(["nonsense=1"])


def test_resume_differences_ignore_bookkeeping():
    a = TrainConfig(max_steps=10)
    assert a.differences(a.replace(save_every=3, resume=True, eval_every=0)) == {}
    assert set(a.differences(a.replace(lr=1.0))) == {"lr"}


def _args(**kw):
    return argparse.Namespace(**{"method": "sft", "config": None, "set": [], "output": None, "resume": False, **kw})


def test_cli_builds_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_steps: 3\nbatch_size: 2\n")
    cfg = build_config(_args(method="tft", config=str(path), set=["lr=0.01"], output="run1", resume=True))
    assert (cfg.method, cfg.max_steps, cfg.batch_size, cfg.lr, cfg.output, cfg.resume) == ("tft", 3, 2, 0.01, "run1", True)


def test_cli_refuses_a_config_for_another_method(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: dft\n")
    with pytest.raises(ConfigError, match="configuration for 'dft', not 'sft'"):
        build_config(_args(config=str(path)))


def test_method_registry_and_args():
    assert {"sft", "tft"} <= set(METHODS)
    sft = build_method("sft", {"prompt_field": "instruction_en", "response_field": "output_en"})
    assert sft.required_fields == ("instruction_en", "output_en")
    with pytest.raises(InputError, match="does not know method_args 'temperature'"):
        build_method("sft", {"temperature": 1})
    with pytest.raises(InputError, match="takes no options"):
        build_method("tft", {"prompt_field": "x"})
    with pytest.raises(InputError, match="Unknown training method 'nope'"):
        build_method("nope")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_configs_load(path):
    cfg = TrainConfig.from_yaml(path)
    assert cfg.method in METHODS
    build_method(cfg.method, cfg.method_args)
