"""The device and dtype policy (workbench/devices.py) on machines this one is not: CUDA with and
without bfloat16, MPS, the CPU; the environment's defaults; and every bad name refused in words."""

import argparse

import pytest
import torch

import workbench
from workbench import cache, devices, models
from workbench.errors import InputError, ModelLoadError


@pytest.fixture
def machine(monkeypatch):
    """Pretend to be another machine: machine(cuda=n_gpus, bf16=..., mps=...)."""
    monkeypatch.delenv(devices.DEVICE_ENV, raising=False)
    monkeypatch.delenv(devices.DTYPE_ENV, raising=False)

    def pretend(cuda: int = 0, bf16: bool = True, mps: bool = False, macos14: bool = True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: macos14)

    return pretend


@pytest.mark.parametrize("gpus, bf16, mps, device, dtype", [
    (1, True, False, "cuda", torch.bfloat16),  # an A100 / H100
    (1, False, False, "cuda", torch.float16),  # a T4 / V100: no native bfloat16
    (2, True, True, "cuda", torch.bfloat16),  # CUDA comes before MPS
    (0, True, True, "mps", torch.bfloat16),  # Apple silicon on macOS 14+
    (0, True, False, "cpu", torch.float32),  # the CPU: float32 unless asked
])
def test_auto_picks_the_fastest_device_and_its_precision(machine, gpus, bf16, mps, device, dtype):
    machine(cuda=gpus, bf16=bf16, mps=mps)
    where = devices.placement()
    assert (where.device.type, where.dtype) == (device, dtype)


def test_old_macos_mps_gets_float16(machine):
    machine(mps=True, macos14=False)
    assert devices.resolve_dtype("auto", devices.resolve_device("auto")) == torch.float16


@pytest.mark.parametrize("name, dtype", [
    ("float32", torch.float32), ("fp32", torch.float32), ("bfloat16", torch.bfloat16), ("BF16", torch.bfloat16),
    ("float16", torch.float16), ("fp16", torch.float16), ("torch.bfloat16", torch.bfloat16),
    (torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32),
])
def test_dtype_names_and_torch_dtypes(machine, name, dtype):
    machine()
    assert devices.resolve_dtype(name, torch.device("cpu")) == dtype


def test_bfloat16_on_the_cpu_is_asked_for_not_chosen(machine):
    machine()
    assert devices.placement(dtype="bf16") == devices.Placement(torch.device("cpu"), torch.bfloat16)
    assert devices.placement().dtype == torch.float32


def test_environment_gives_the_defaults(machine, monkeypatch):
    machine(cuda=1)
    monkeypatch.setenv(devices.DEVICE_ENV, "cpu")
    monkeypatch.setenv(devices.DTYPE_ENV, "bf16")
    assert devices.placement() == devices.Placement(torch.device("cpu"), torch.bfloat16)
    # an explicit choice beats the environment
    assert devices.placement("cuda:0", "float32") == devices.Placement(torch.device("cuda:0"), torch.float32)
    monkeypatch.setenv(devices.DEVICE_ENV, "auto")
    assert devices.placement().device.type == "cuda"


def test_bad_environment_is_refused_in_words(machine, monkeypatch):
    machine()
    monkeypatch.setenv(devices.DTYPE_ENV, "int4")
    with pytest.raises(InputError, match=r"Unknown dtype 'int4' \(from \$WORKBENCH_DTYPE\)"):
        devices.placement()


@pytest.mark.parametrize("device, dtype, error, message", [
    ("tpu", "auto", InputError, "Unknown device 'tpu': use auto, cpu, cuda"),
    ("gpu", "auto", InputError, "Unknown device 'gpu'"),
    ("cpu", "half-ish", InputError, "Unknown dtype 'half-ish': use auto, float32"),
    ("cpu", torch.int8, InputError, "Unsupported dtype torch.int8"),
    ("cuda", "auto", ModelLoadError, "no CUDA GPU"),
    ("cuda:0", "bf16", ModelLoadError, "no CUDA GPU"),
    ("mps", "auto", ModelLoadError, "MPS is not available"),
])
def test_bad_names_and_absent_devices_are_refused(machine, device, dtype, error, message):
    machine()
    with pytest.raises(error, match=message):
        devices.placement(device, dtype)


def test_a_gpu_number_beyond_the_machine_is_refused(machine):
    machine(cuda=2)
    assert devices.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ModelLoadError, match="has 2 CUDA GPU"):
        devices.resolve_device("cuda:2")


def test_load_refuses_before_reading_anything(machine, tiny_folders):
    machine()
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        workbench.load(str(tiny_folders["llama"]), device="cuda")


# --------------------------------------------------------------------------- device maps

def test_device_maps_from_text(tmp_path):
    assert devices.parse_device_map("auto") == "auto"
    assert devices.parse_device_map(' {"model.layers.0": 0, "lm_head": "cpu"} ') == {"model.layers.0": 0, "lm_head": "cpu"}
    path = tmp_path / "map.json"
    path.write_text('{"": "cpu"}')
    assert devices.parse_device_map(str(path)) == {"": "cpu"}
    assert devices.parse_device_map("") is None
    with pytest.raises(InputError, match="not one of auto, balanced"):
        devices.parse_device_map("everywhere")
    with pytest.raises(InputError, match="not valid JSON"):
        devices.parse_device_map("{model: 0}")
    path.write_text("[0, 1]")
    with pytest.raises(InputError, match="is a JSON object"):
        devices.parse_device_map(str(path))


def test_memory_budgets_from_text():
    assert devices.parse_max_memory("0=20GiB, cpu=60GiB") == {0: "20GiB", "cpu": "60GiB"}
    assert devices.parse_max_memory('{"1": "10GiB", "cpu": "1GiB"}') == {1: "10GiB", "cpu": "1GiB"}
    with pytest.raises(InputError, match="DEVICE=SIZE"):
        devices.parse_max_memory("20GiB")


def test_a_dispatched_model_follows_its_first_gpu(machine):
    machine(cuda=2, bf16=False)
    where = devices.placement(device_map={"model.layers.0": 1, "lm_head": 1}, max_memory="1=10GiB")
    assert (where.device, where.dtype, where.max_memory) == (torch.device("cuda:1"), torch.float16, {1: "10GiB"})
    cpu_only = devices.placement(device_map={"model": "cpu", "lm_head": "disk"}, offload_folder="~/off")
    assert (cpu_only.device, cpu_only.dtype) == (torch.device("cpu"), torch.float32)
    assert not cpu_only.offload_folder.startswith("~")
    assert devices.placement(device_map="auto").device.type == "cuda"


def test_device_map_combinations_are_checked(machine):
    machine()
    with pytest.raises(InputError, match="either a device"):
        devices.placement("cpu", device_map="auto")
    with pytest.raises(InputError, match="give a device_map too"):
        devices.placement(max_memory="cpu=1GiB")
    with pytest.raises(InputError, match="give a device_map too"):
        devices.placement(offload_folder="/tmp/x")


# --------------------------------------------------------------------------- what the policy feeds

def test_loaded_models_are_kept_apart_by_placement(machine, tiny_folders, monkeypatch):
    machine()
    folder = str(tiny_folders["qwen2"])
    fp32, bf16 = workbench.load(folder), workbench.load(folder, dtype="bf16")
    assert fp32 is workbench.load(folder, dtype=torch.float32, device="cpu") and bf16 is not fp32
    assert (fp32.facts.dtype, bf16.facts.dtype, bf16.facts.device, bf16.facts.device_map) == (
        "float32", "bfloat16", "cpu", None)
    assert next(bf16.hf_model.parameters()).dtype == torch.bfloat16
    monkeypatch.setenv(devices.DTYPE_ENV, "bfloat16")
    assert workbench.load(folder) is bf16


def test_results_of_another_dtype_are_never_reused(tiny_folders, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "RESULTS", cache.ResultCache(root=tmp_path))
    folder = str(tiny_folders["qwen2"])
    fp32, bf16 = workbench.load(folder), workbench.load(folder, dtype="bf16")
    runs = []
    for handle in (fp32, bf16, fp32):
        cache.cached("probe", handle, {"k": 1}, [1, 2], lambda: runs.append(handle.facts.dtype) or len(runs))
    assert runs == ["float32", "bfloat16"]
    same_weights = cache.RESULTS.key("f" * 16, "float32", "probe", {}), cache.RESULTS.key("f" * 16, "bfloat16", "probe", {})
    assert same_weights[0] != same_weights[1]


def test_app_defaults_reach_every_load(machine, tiny_folders):
    machine()
    folder = str(tiny_folders["qwen2"])
    try:
        models.set_defaults(dtype="bfloat16", device="auto")
        assert workbench.load(folder).facts.dtype == "bfloat16"
        assert workbench.load(folder, dtype="fp32").facts.dtype == "float32"  # the caller's word wins
        with pytest.raises(InputError, match="Unknown load option"):
            models.set_defaults(precision="bf16")
    finally:
        models.set_defaults()
    assert workbench.load(folder).facts.dtype == "float32"


def test_model_card_says_which_mode_produced_the_results(tiny_folders, monkeypatch):
    from dataclasses import replace

    from workbench.ui.model_card import model_card_markdown

    facts = workbench.load(str(tiny_folders["qwen2"])).facts
    assert "**Results computed in**: float32, on cpu" in model_card_markdown(facts)
    fast = replace(facts, dtype="bfloat16", device_map={"cpu": 16, "disk": 2})
    for amx in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
        card = model_card_markdown(fast)
        assert "bfloat16 (fast mode)" in card and "on cpu (layers: 16 on cpu, 2 on disk)" in card
        assert ("runs slower than float32 here" in card) is not amx
    assert "slower" not in model_card_markdown(replace(fast, device="cuda:0"))


def test_cli_model_flags(tiny_folders, capsys):
    from workbench.cli import add_model_arguments, main, model_options

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    args = parser.parse_args(["--dtype", "bf16", "--device-map", "auto", "--max-memory", "cpu=2GiB",
                              "--offload-folder", "/tmp/off"])
    assert model_options(args) == {"device": "auto", "dtype": "bf16", "device_map": "auto",
                                   "max_memory": "cpu=2GiB", "offload_folder": "/tmp/off"}
    assert main(["info", str(tiny_folders["qwen2"]), "--json", "--dtype", "bfloat16"]) == 0
    assert '"dtype": "bfloat16"' in capsys.readouterr().out
    assert main(["info", str(tiny_folders["qwen2"]), "--device", "tpu"]) == 2
    assert "Unknown device 'tpu'" in capsys.readouterr().err
    for command in (["app"], ["eval"], ["globesumm"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert "--device-map" in capsys.readouterr().out


def test_app_flags_become_the_defaults(monkeypatch):
    import app as app_module
    import workbench.server

    seen = {}
    monkeypatch.setattr(workbench.server, "launch", lambda model, host, port, preload: seen.update(
        defaults=dict(models._defaults)))
    try:
        assert app_module.main(["--no-preload", "--dtype", "bf16"]) == 0
    finally:
        models.set_defaults()
    assert seen["defaults"] == {"dtype": "bf16"}
