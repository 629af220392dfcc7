"""Training jobs in a separate process, and the Train tab's handlers: finish, cancel, SIGKILL."""

import json
import time

import gradio as gr
import pytest
from safetensors.torch import load_file

from trainers.config import TrainConfig
from trainers.jobs import TrainingJob
from trainers.loop import STOP_FILE, run_dir, train
from workbench import registry
from workbench.ui import tab_train


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WORKBENCH_DEMO", raising=False)
    return tmp_path / "home"


def _config(tiny_folders, **kw):
    base = dict(base_model=str(tiny_folders["gemma3"]), data="demo", languages=["de"], batch_size=2,
                max_length=32, lr=1e-3, max_steps=40)
    return TrainConfig(**{**base, **kw})


def _wait(predicate, timeout=300.0, every=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


def _start_args(tiny_folders, **kw):
    args = dict(method="sft", base=str(tiny_folders["gemma3"]), model_spec="", data_choice=tab_train.DEMO_CHOICE,
                upload=None, languages="fr", lr=1e-3, max_steps=3, batch_size=2, grad_accum=1, max_length=32,
                lora=True, lora_r=4, seed=0, run_name="ui-run")
    args.update(kw)
    return list(args.values())


def test_tab_starts_polls_and_finishes_a_job(tiny_folders):
    run, message, _ = tab_train.start_training(*_start_args(tiny_folders))
    assert run == "ui-run" and "Started" in message
    with pytest.raises(gr.Error, match="still training"):
        tab_train.start_training(*_start_args(tiny_folders, run_name="second"))
    _wait(lambda: not tab_train.JOBS[run].running)
    status, bar, figure, log, timer = tab_train.poll_training(run)
    assert "finished" in status and "ckpt:ui-run@3" in status, status + log
    assert "step 3 / 3" in bar and list(figure.data[0].x) == [1, 2, 3]
    assert registry.get("ui-run").step == 3
    assert tab_train.base_choices("gemma-3-270m") == ["gemma-3-270m", "ckpt:ui-run@3"]
    assert "ui-run@3" in set(tab_train.checkpoint_table()["name"])
    with pytest.raises(gr.Error, match="already has checkpoints"):
        tab_train.start_training(*_start_args(tiny_folders))


def test_tab_rejects_bad_input(tmp_path, tiny_folders, monkeypatch):
    with pytest.raises(gr.Error, match="Upload a JSONL"):
        tab_train.start_training(*_start_args(tiny_folders, data_choice=tab_train.UPLOAD_CHOICE))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "lang": "fr"}\n')
    with pytest.raises(gr.Error, match="'output' on line"):
        tab_train.start_training(*_start_args(tiny_folders, data_choice=tab_train.UPLOAD_CHOICE, upload=str(bad)))
    with pytest.raises(gr.Error, match="does not exist"):
        tab_train.start_training(*_start_args(tiny_folders, base=str(tmp_path / "no-model")))
    with pytest.raises(gr.Error, match="No checkpoint named 'ghost'"):
        tab_train.start_training(*_start_args(tiny_folders, base="ckpt:ghost"))
    with pytest.raises(gr.Error, match="Steps is required"):
        tab_train.start_training(*_start_args(tiny_folders, max_steps=None))
    with pytest.raises(gr.Error, match="lr must be greater than 0"):
        tab_train.start_training(*_start_args(tiny_folders, lr=0))
    with pytest.raises(gr.Error, match="No running training"):
        tab_train.cancel_training("nothing")
    monkeypatch.setenv("WORKBENCH_DEMO", "1")
    with pytest.raises(gr.Error, match="disabled in demo mode"):
        tab_train.start_training(*_start_args(tiny_folders))


def test_cancel_stops_cleanly_with_a_resumable_checkpoint(tiny_folders):
    job = TrainingJob.start(_config(tiny_folders, output="to-cancel", max_steps=400))
    _wait(lambda: job.status().step >= 2)
    job.cancel()
    status = job.wait(timeout=300)
    assert status.state == "cancelled" and status.returncode == 0, job.log_tail()
    ckpt = registry.get("to-cancel")
    assert ckpt.step == status.step >= 2 and (ckpt.path / "resume" / "trainer_state.json").exists()
    assert not (run_dir("to-cancel") / STOP_FILE).exists()
    assert "cancelled" in job.log_tail()


def test_sigkill_leaves_only_complete_checkpoints(tiny_folders):
    config = _config(tiny_folders, output="killed", save_every=1, keep_last=3, max_steps=8)
    job = TrainingJob.start(config)
    folder = registry.run_folder("killed")

    def writing():  # a checkpoint is being written: its hidden temp folder exists
        return folder.is_dir() and any(p.name.startswith(".step-") for p in folder.iterdir())

    _wait(writing, every=0.002)
    job.kill()
    assert job.status().state == "failed" and job.status().returncode == -9
    listed = registry.list_checkpoints("killed")
    for ckpt in listed:
        assert not ckpt.path.name.startswith(".")
        assert load_file(str(ckpt.path / "model.safetensors"))
        assert {f["path"] for f in ckpt.manifest["files"]} <= {str(p.relative_to(ckpt.path)) for p in ckpt.path.rglob("*")}
    # the killed run resumes from its last complete checkpoint, and the leftovers are cleared
    result = train(config.replace(resume=True, save_every=0))  # bookkeeping options may change
    starts = [r for r in result.metrics if r["event"] == "start"]
    assert starts[-1]["step"] == (listed[-1].step if listed else 0) and result.step == config.max_steps
    assert not any(p.name.startswith(".") for p in folder.iterdir())
    assert json.loads((result.checkpoint.path / "manifest.json").read_text())["step"] == config.max_steps


def test_tab_builds_inside_blocks():
    with gr.Blocks():
        spec = gr.Textbox(value="gemma-3-270m")
        tab_train.build(spec)
