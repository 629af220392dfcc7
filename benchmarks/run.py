"""Run every `benchmarks/bench_*.py` and print one table of named ratios.

Each module exposes `run() -> list[dict]` with keys name, ratio, detail. Ratios compare two ways
of doing the same work measured side by side in one process, so they travel across machines
better than seconds do.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))


def main(selected: list[str]) -> None:
    rows = []
    for path in sorted(ROOT.glob("bench_*.py")):
        if selected and not any(s in path.stem for s in selected):
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"running {path.stem} ...", file=sys.stderr, flush=True)
        rows.extend(module.run())
    width = max((len(r["name"]) for r in rows), default=10)
    print(f"{'benchmark':<{width}}  {'ratio':>7}  detail")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['ratio']:>6.2f}x  {r['detail']}")


if __name__ == "__main__":
    main(sys.argv[1:])
