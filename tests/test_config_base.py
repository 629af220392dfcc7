"""The one YAML + `--set key=value` loader under the training and the unlearning pipeline configurations."""

import argparse

import pytest

from trainers.cli import build_config as build_train_config
from trainers.config import ConfigError, TrainConfig, YamlConfig
from trainers.methods.unlearning.cli import build_config as build_pipeline_config
from trainers.methods.unlearning.pipeline import PipelineConfigError, UnlearningPipelineConfig

CONFIGS = [(TrainConfig, ConfigError), (UnlearningPipelineConfig, PipelineConfigError)]
IDS = ["train", "pipeline"]


def test_both_configurations_share_one_loader():
    for cls, error in CONFIGS:
        assert issubclass(cls, YamlConfig) and cls.error is error and issubclass(error, ConfigError)
        for name in ("from_yaml", "from_dict", "read_yaml", "parse_assignments"):
            assert getattr(cls, name).__func__ is getattr(YamlConfig, name).__func__, name
        assert cls.with_overrides is YamlConfig.with_overrides


@pytest.mark.parametrize("cls, error", CONFIGS, ids=IDS)
@pytest.mark.parametrize("text, words", [
    ("batchsize: 3\nlr: 0.1\n", ["Unknown option(s) in", "'batchsize' (did you mean 'batch_size'?)", "Known options:"]),
    ("- a\n- list\n", ["must be a mapping of option: value (got list)"]),
    ("lr: [1\n", ["not valid YAML"]),
    ("", ["is empty"]),
    ("lr: fast\n", ["lr must be float (got 'fast' of type str)"]),
    ("seed: 1.5\n", ["seed must be int"]),
])
def test_yaml_refusals_read_the_same(tmp_path, cls, error, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(error) as info:
        cls.from_yaml(path)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("cls, error", CONFIGS, ids=IDS)
def test_missing_file(tmp_path, cls, error):
    with pytest.raises(error, match="Configuration file .* does not exist"):
        cls.from_yaml(tmp_path / "nope.yaml")


@pytest.mark.parametrize("cls, error", CONFIGS, ids=IDS)
def test_set_coerces_values(cls, error):
    config = cls().with_overrides(["lr=2e-5", "seed=3", "lora=false", "base_model=a: b: c", "batch_size=2"])
    # YAML reads 2e-5 as a string: the float field takes it as a number; text that is not YAML stays text
    assert (config.lr, config.seed, config.lora, config.base_model, config.batch_size) == (2e-5, 3, False, "a: b: c", 2)
    assert isinstance(config.lr, float)
    assert cls.parse_assignments(["x=", "y=[a, b]", "z = 1"]) == {"x": None, "y": ["a", "b"], "z": 1}


@pytest.mark.parametrize("cls, error", CONFIGS, ids=IDS)
def test_set_refusals(cls, error):
    with pytest.raises(error, match="Override 'seed' must look like key=value"):
        cls().with_overrides(["seed"])
    with pytest.raises(error, match="Override '=1' must look like key=value"):
        cls().with_overrides(["=1"])
    with pytest.raises(error, match=r"Unknown option\(s\) in the overrides: 'nonsense'"):
        cls().with_overrides(["nonsense=1"])
    with pytest.raises(error, match="batch_size must be int"):
        cls().with_overrides(["batch_size=four"])


def test_pipeline_fields_are_type_checked_now():
    with pytest.raises(PipelineConfigError, match="steps must be int"):
        UnlearningPipelineConfig(steps="many")
    with pytest.raises(PipelineConfigError, match="methods must be list"):
        UnlearningPipelineConfig(methods="ga")
    assert UnlearningPipelineConfig.from_dict({"inject_lr": "2e-3"}).inject_lr == 0.002


def _pipeline_args(**kw):
    flags = dict(config=None, set=[], base=None, entities=None, forget_entities=None, methods=None, steps=None,
                 lr=None, eval_every=None, eval_items=None, real_entities=None, seed=None, name=None)
    return argparse.Namespace(**{**flags, **kw})


def test_command_lines_apply_set_and_flags_together():
    # forget_entities=5 is only valid with the --entities flag: both are applied before the check
    config = build_pipeline_config(_pipeline_args(set=["forget_entities=5"], entities=6))
    assert (config.entities, config.forget_entities) == (6, 5)
    with pytest.raises(PipelineConfigError, match=r"Unknown option\(s\) in the command line: 'stepz'"):
        build_pipeline_config(_pipeline_args(set=["stepz=1"]))
    train = argparse.Namespace(method="tft", config=None, set=["max_steps=2", "eval_fraction=0.5", "eval_every=1"],
                               output="r", resume=False)
    config = build_train_config(train)
    assert (config.method, config.max_steps, config.eval_every, config.output) == ("tft", 2, 1, "r")
