"""Retrieval-head scoring vs plain greedy generation on the same trials: time, and peak memory
as the context grows (each measured in a fresh process, peak RSS counted from after loading)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

LENGTHS_TIME = (256, 1024)
LENGTHS_MEMORY = (512, 1024, 2048, 4096)
ROOT = Path(__file__).resolve().parent.parent


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM), so loading the model does not count."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _memory_child(mode: str, length: int) -> None:
    """Run one trial (plain or scored) and print the peak RSS it added, in MB."""
    import torch

    import workbench
    from probes import retrieval as R
    from workbench import engine

    handle = workbench.load("gemma-3-270m")
    trial = R.make_trials(handle, "en", (length,), (0.5,), 1)[0]
    engine.generate_greedy(handle, handle.encode("warm up"), 2, stop_at_newline=True)
    _reset_peak()
    before = _status_mb("VmRSS")
    with torch.no_grad():
        if mode == "plain":
            engine.generate_greedy(handle, trial.prompt_ids, 8, stop_at_newline=True)
        else:
            R.run_trial(handle, trial, max_new_tokens=8)
    print(json.dumps({"added_mb": _status_mb("VmHWM") - before, "tokens": len(trial.prompt_ids)}))


def _memory(mode: str, length: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "memory", mode, str(length)], stdout=subprocess.PIPE, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> list[dict]:
    import workbench
    from probes import retrieval as R
    from workbench import engine

    handle = workbench.load("gemma-3-270m")
    trials = R.make_trials(handle, "en", LENGTHS_TIME, (0.5,), 1)
    engine.generate_greedy(handle, handle.encode("warm up"), 2, stop_at_newline=True)  # builds the stop set once
    plain, scored = [], []
    for trial in trials:
        best_p = best_s = float("inf")
        for _ in range(2):  # interleaved so machine load hits both sides alike
            t = time.perf_counter()
            engine.generate_greedy(handle, trial.prompt_ids, R.MAX_NEW_TOKENS, stop_at_newline=True)
            best_p = min(best_p, time.perf_counter() - t)
            t = time.perf_counter()
            R.run_trial(handle, trial)
            best_s = min(best_s, time.perf_counter() - t)
        plain.append(best_p)
        scored.append(best_s)
    p, s = sum(plain), sum(scored)
    n = len(trials)
    rows = [
        {"name": "retrieval scoring / plain greedy (same trials)", "ratio": s / p,
         "detail": f"{s:.1f}s vs {p:.1f}s over {n} trials of {', '.join(map(str, LENGTHS_TIME))} tokens"},
    ]
    for length in LENGTHS_MEMORY:
        base, probe = _memory("plain", length), _memory("probe", length)
        kept_patterns = handle.n_layers * handle.facts.n_heads * probe["tokens"] ** 2 * 4 / 2**20  # what keeping every layer's (H, T, T) map costs
        rows.append({
            "name": f"peak memory, scoring / plain greedy, {length} tokens", "ratio": probe["added_mb"] / base["added_mb"],
            "detail": f"{probe['added_mb']:.0f} MB vs {base['added_mb']:.0f} MB above the loaded model "
                      f"(keeping all attention maps would add {kept_patterns:.0f} MB)",
        })
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "memory":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        _memory_child(sys.argv[2], int(sys.argv[3]))
    else:
        for row in run():
            print(f"{row['name']}: {row['ratio']:.2f}x  {row['detail']}")
