"""Sweeps split between processes: the share/gather helper in one process, the cache rule under
several, and one `accelerate launch` with 2 CPU processes (gloo) running `workbench pivot`,
`retrieval` and `transplant`, whose written documents equal the one-process results bit for bit."""

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import workbench
from probes.pivot import pivot
from probes.retrieval import retrieval_scores
from probes.transplant import transplant_grid
from workbench import cache, distributed
from workbench.datasets.lexicon import load_concepts
from workbench.datasets.tasks import load_task
from workbench.results import from_json

CPU_2PROC = Path(__file__).resolve().parent.parent / "examples" / "accelerate" / "cpu_2proc.yaml"


# --------------------------------------------------------------------------- the helper, one process

@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("n,count", [(0, 2), (1, 3), (5, 2), (7, 3), (9, 3), (4, 8)])
def test_shares_partition_the_items(n, count, strided):
    shares = [distributed.share_positions(n, index, count, strided) for index in range(count)]
    assert sorted(p for s in shares for p in s) == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    if not strided:
        assert [p for s in shares for p in s] == list(range(n))  # blocks follow one another


@pytest.mark.parametrize("strided", [False, True])
def test_order_restored_from_simulated_shares(strided):
    items = [f"item {i}" for i in range(11)]
    gathered = []  # what gather_object returns: each process's (position, output) pairs, process by process
    for index in range(3):
        gathered += [(p, items[p].upper()) for p in distributed.share_positions(len(items), index, 3, strided)]
    assert distributed.in_order(len(items), gathered) == [item.upper() for item in items]
    with pytest.raises(RuntimeError, match="cover 10 of 11"):
        distributed.in_order(len(items), gathered[1:])


def test_one_process_shares_everything_and_gathers_unchanged():
    mine = distributed.share(5, strided=True)
    assert distributed.num_processes() == 1 and distributed.is_main_process()
    assert mine.positions == range(5)
    outputs = [{"i": i} for i in range(5)]
    assert mine.gather(outputs) == outputs
    with pytest.raises(ValueError, match="4 outputs for a share of 5"):
        mine.gather(outputs[:4])


@pytest.mark.parametrize("main", [True, False])
def test_cache_under_several_processes_never_reads_and_only_the_main_process_stores(
        tmp_path, monkeypatch, tiny_gemma, main):
    store = cache.ResultCache(tmp_path / "results")
    monkeypatch.setattr(cache, "RESULTS", store)
    calls = []
    compute = lambda: calls.append(1) or {"value": len(calls)}  # noqa: E731
    assert cache.cached("probe", tiny_gemma, {}, [1], compute) == {"value": 1}
    assert cache.cached("probe", tiny_gemma, {}, [1], compute) == {"value": 1}  # one process: read back
    monkeypatch.setattr(distributed, "num_processes", lambda: 2)
    monkeypatch.setattr(distributed, "is_main_process", lambda: main)
    other = cache.RESULTS.key(tiny_gemma.facts.fingerprint, tiny_gemma.facts.dtype, "probe", {}, [2])
    assert cache.cached("probe", tiny_gemma, {}, [1], compute) == {"value": 2}  # a hit, yet computed
    assert cache.cached("probe", tiny_gemma, {}, [2], compute) == {"value": 3}
    assert store.path(other).exists() is main


# --------------------------------------------------------------------------- the commands

SWEEPS = ("pivot", "retrieval", "transplant")


def _commands(model: str, out: dict[str, Path]) -> list[list[str]]:
    cpu = ["--device", "cpu"]
    return [
        ["pivot", model, "--src", "fr", "--tgt", "zh", "--n", "12", "--k-shot", "2", "--batch-size", "4",
         "--out", str(out["pivot"]), *cpu],
        ["retrieval", model, "--lengths", "200", "--depths", "0.2", "0.5", "0.8", "--needles", "1",
         "--max-new-tokens", "6", "--out", str(out["retrieval"]), *cpu],
        ["transplant", model, "--task", "word_translation", "--lang", "fr", "--n", "3", "--layers", "0", "1",
         "--out", str(out["transplant"]), *cpu],
    ]


def _references(model: str, threads: int) -> dict:
    """The in-memory results the commands above stand for, computed with `threads` CPU threads
    (CPU kernels split their sums by thread count, which moves float32 results by ~1e-6)."""
    handle = workbench.load(model, device="cpu")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return {
            "pivot": pivot(handle, load_concepts(["fr", "zh", "en"])[:12], "translation", src_lang="fr",
                           tgt_lang="zh", k_shot=2, batch_size=4, use_cache=False),
            "retrieval": retrieval_scores(handle, "en", [200], [0.2, 0.5, 0.8], 1, use_cache=False,
                                          max_new_tokens=6),
            "transplant": transplant_grid(handle, load_task("word_translation", "fr")[:3], sources=[0, 1],
                                          targets=[0, 1], use_cache=False),
        }
    finally:
        torch.set_num_threads(before)


def _assert_written(path: Path, one) -> None:
    """The document at `path` holds `one`: equal arrays and frames and the same document, bit for
    bit and in the same order (XTransplant's wall time aside)."""
    two = from_json(path.read_text(encoding="utf-8"))
    if hasattr(one, "seconds"):
        two = dataclasses.replace(two, seconds=one.seconds)
    for f in dataclasses.fields(one):
        if isinstance(getattr(one, f.name), np.ndarray):
            np.testing.assert_array_equal(getattr(two, f.name), getattr(one, f.name), err_msg=f.name, strict=True)
    pd.testing.assert_frame_equal(two.to_frame(), one.to_frame(), check_exact=True)
    pd.testing.assert_frame_equal(two.summary(), one.summary(), check_exact=True)
    assert two.to_json() == one.to_json()


def test_commands_write_the_result_in_one_process(tmp_path, monkeypatch, tiny_folders, capsys):
    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    model = str(tiny_folders["gemma3"])
    out = {name: tmp_path / f"{name}.json" for name in SWEEPS}
    for argv in _commands(model, out):
        assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("wrote ") == 3 and "answer_rank" in printed and "retrieval_heads" in printed
    for name, one in _references(model, torch.get_num_threads()).items():
        _assert_written(out[name], one)
    assert main(["pivot", model, "--tgt", "zh", "--n", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err


# --------------------------------------------------------------------------- 2 processes = 1 process

# Runs the commands one after another in each launched process (one launch, one model load),
# printing every share a probe takes, so the test sees the work was split.
LAUNCHED = """
import json, sys
from workbench import distributed
from workbench.cli import main

take = distributed.share
def share(n, **kwargs):
    mine = take(n, **kwargs)
    print("SHARE", json.dumps([distributed._state().process_index, n, list(mine.positions)]), flush=True)
    return mine
distributed.share = share
for argv in json.loads(sys.argv[1]):
    if main(argv):
        sys.exit(1)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_write_the_one_process_results(tmp_path, tiny_folders):
    model = str(tiny_folders["gemma3"])
    out = {name: tmp_path / f"{name}.json" for name in SWEEPS}
    script = tmp_path / "sweeps.py"
    script.write_text(LAUNCHED)
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
                           "--main_process_port", str(_free_port()), str(script), json.dumps(_commands(model, out))],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 3  # only the main process writes

    shares: dict[int, list[tuple[int, list[int]]]] = {0: [], 1: []}  # process -> (n, positions) per sweep
    for line in re.findall(r"^SHARE (.*)$", done.stdout, flags=re.M):
        index, n, positions = json.loads(line)
        shares[index].append((n, positions))
    assert len(shares[0]) == len(shares[1]) == 3
    for (n, first), (m, second) in zip(shares[0], shares[1]):  # each sweep split its items between both
        assert n == m and first and second and sorted(first + second) == list(range(n))

    for name, one in _references(model, threads=1).items():  # one thread, as each launched process runs
        _assert_written(out[name], one)
