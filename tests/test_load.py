"""Load: 8 concurrent clients send probe requests to the real app for a bounded time.

Loopback only; the loop stops by itself after WORKBENCH_LOAD_SECONDS (default 60). The figures
(p50/p95 latency, peak memory) are written to test-artifacts/load.json for the README.
"""

import json
import os
import statistics
import threading
import time

import pytest

from browser import ARTIFACTS

pytestmark = pytest.mark.slow

CLIENTS = 8
SECONDS = float(os.environ.get("WORKBENCH_LOAD_SECONDS", "60"))
PROMPTS = [f'Français: "{fr}" - English: "{en}"\nFrançais: "{q}" - English: "'
           for fr, en, q in [("chat", "cat", "chien"), ("eau", "water", "soleil"), ("livre", "book", "maison"),
                             ("rouge", "red", "bleu"), ("main", "hand", "pied"), ("lune", "moon", "étoile"),
                             ("pain", "bread", "lait"), ("arbre", "tree", "fleur"), ("porte", "door", "fenêtre"),
                             ("ville", "city", "village"), ("mer", "sea", "montagne"), ("nuit", "night", "jour")]]


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_concurrent_probe_requests(live_app, monkeypatch):
    import warnings

    from gradio_client import Client

    from workbench import models

    models.load("gemma-3-270m")  # other tests may have pushed it out of the LRU; load it once, up front
    boots = []
    real_boot = models.boot
    monkeypatch.setattr(models, "boot", lambda *a, **k: boots.append(a) or real_boot(*a, **k))

    latencies: list[float] = []
    errors: list[str] = []
    peak = [_rss_mb()]
    deadline = time.time() + SECONDS
    lock = threading.Lock()

    def client_loop(index: int) -> None:
        client = Client(live_app, verbose=False)
        i = index
        while time.time() < deadline:
            prompt = f"{i}. {PROMPTS[i % len(PROMPTS)]}"  # never the same prompt twice: no cache hits
            i += CLIENTS
            start = time.time()
            try:
                client.predict("gemma-3-270m", prompt, 5, api_name="/logit_lens_grid")
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(time.time() - start)

    def sample_memory() -> None:
        while time.time() < deadline + 5:
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.5)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SECONDS + 300)
    qs = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else latencies * 19
    report = {"clients": CLIENTS, "seconds": SECONDS, "requests": len(latencies), "errors": len(errors),
              "p50_s": round(statistics.median(latencies), 3) if latencies else None,
              "p95_s": round(qs[18], 3) if latencies else None, "peak_rss_mb": round(peak[0]),
              "model_loads_during_test": len(boots)}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(report, indent=1))
    warnings.warn(f"load test: {report}")  # shows in the pytest summary, so CI logs carry the figures
    assert not errors, errors[:3]
    assert len(latencies) >= CLIENTS
    assert not boots  # the app shares the one loaded model; no request loaded another copy
