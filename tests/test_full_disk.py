"""A full disk, for real: a child process whose file-size limit (RLIMIT_FSIZE) makes the kernel
refuse writes mid-file, the way a full disk does. Probes still answer, checkpoints are either
complete or absent, and the UI and CLI say what happened instead of showing a traceback."""

import json
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import json, os, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # get EFBIG from write() instead of a signal
    from workbench import registry
    from workbench.cache import ResultCache
    from workbench.ui.common import friendly
    import gradio as gr
    from workbench.cli import main

    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    out = {}

    cache = ResultCache()
    value = cache.get_or_compute("probe-key", lambda: list(range(5000)))   # pickles to > 4 KiB
    out["cache_answer_len"] = len(value)
    out["cache_files"] = sorted(p.name for p in cache.root.iterdir())

    def write(folder):
        (folder / "model.safetensors").write_bytes(b"x" * 100_000)
    try:
        registry.save("run", 1, write, {"method": "sft"})
        out["save"] = "no error"
    except OSError as exc:
        out["save"] = type(exc).__name__
    out["checkpoints"] = [c.name for c in registry.list_checkpoints()]
    out["run_folder"] = sorted(p.name for p in registry.run_folder("run").iterdir())

    @friendly
    def handler():
        registry.save("run", 2, write, {"method": "sft"})
    try:
        handler()
    except gr.Error as exc:
        out["ui"] = exc.message
    print(json.dumps(out))
    sys.stdout.flush()
""")


def test_full_disk_is_survived_and_explained(tmp_path):
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["cache_answer_len"] == 5000            # the probe's answer survives a failed cache write
    assert out["cache_files"] == []                    # and no partial cache file is left behind
    assert out["save"] == "OSError"
    assert out["checkpoints"] == [] and out["run_folder"] == []   # nothing half-written is listed or left
    assert "disk is full" in out["ui"] and "Traceback" not in out["ui"]


def test_cli_reports_a_full_disk(monkeypatch, capsys):
    import errno

    from workbench import cli

    def full(_args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/ckpt")

    monkeypatch.setitem(cli.COMMANDS, "info", (cli.COMMANDS["info"][0], cli.COMMANDS["info"][1], full))
    assert cli.main(["info"]) == 2
    err = capsys.readouterr().err
    assert "disk is full (/data/ckpt)" in err and "Traceback" not in err
