"""Result cache: memory first, then disk, keyed by (model fingerprint, dtype, probe, params, data hash).

A repeated request or a slider move that needs no new model run is answered from here. Entries on
disk are JSON (the result protocol's documents, `workbench.results.pack`), never pickle: reading
one runs no code. Each entry names the key it answers inside the payload, and key and payload are
signed together with an HMAC whose secret lives in WORKBENCH_HOME, so an entry copied over another
(a valid entry answering another request) or written elsewhere is ignored and recomputed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from collections import OrderedDict
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from . import distributed
from .errors import InputError
from .paths import atomic_write_bytes, subdir, workbench_home
from .results import pack, unpack

T = TypeVar("T")
RESULT_SHAPE = 2  # bump when a cached result class changes its fields: entries of the old shape are not read


def _canonical(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _canonical(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float):
        return repr(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def stable_hash(*parts: Any) -> str:
    """A hash of JSON-able parts (dataclasses, dicts, lists, numbers, strings) that is stable
    across processes, used for cache keys and data hashes."""
    blob = json.dumps(_canonical(list(parts)), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


class ResultCache:
    def __init__(self, root: Path | None = None, memory_items: int = 64):
        self._root = root
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self._memory_items = memory_items
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def root(self) -> Path:
        return self._root or subdir("results")

    def _secret(self) -> bytes:
        path = workbench_home() / ".cache-key"
        if not path.exists():
            atomic_write_bytes(path, secrets.token_bytes(32))
            os.chmod(path, 0o600)
        return path.read_bytes()

    def key(self, fingerprint: str, dtype: str, probe: str, params: Any, data: Any = None) -> str:
        """The weights' fingerprint (which also carries an inference mode such as CC-Tuning's) and
        the dtype they ran in: a bfloat16 result never answers for float32, even where the weights
        hash alike (a bfloat16 checkpoint loaded in float32)."""
        return f"{probe}-{stable_hash(RESULT_SHAPE, fingerprint, dtype, probe, params, data)}"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret(), payload, hashlib.sha256).hexdigest().encode("ascii")

    def get(self, key: str) -> Any | None:
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        path = self.path(key)
        if not path.exists():
            return None  # entries of older versions (*.pkl) are never read
        try:
            sig, _, payload = path.read_bytes().partition(b"\n")
        except OSError:
            return None
        if not hmac.compare_digest(sig, self._sign(payload)):
            return None  # not written by this installation
        try:
            entry = json.loads(payload, parse_constant=lambda c: None)
            if entry.get("key") != key:
                return None  # a valid entry, but for another request
            value = unpack(entry)
        except (ValueError, TypeError, KeyError, AttributeError, InputError):  # a class changed shape: recompute
            return None
        self._remember(key, value)
        return value

    def put(self, key: str, value: Any) -> None:
        self._remember(key, value)
        try:
            payload = json.dumps({"key": key, **pack(value)}, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError):
            return  # not a value a document can hold: kept in memory only
        try:
            atomic_write_bytes(self.path(key), self._sign(payload) + b"\n" + payload)
        except OSError:
            pass  # a full or read-only disk costs speed, not correctness

    def _remember(self, key: str, value: Any) -> None:
        with self._lock:
            self._memory[key] = value
            self._memory.move_to_end(key)
            while len(self._memory) > self._memory_items:
                self._memory.popitem(last=False)

    def get_or_compute(self, key: str, compute: Callable[[], T]) -> T:
        value = self.get(key)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        value = compute()
        self.put(key, value)
        return value


RESULTS = ResultCache()


def cached(probe: str, handle, params: Any, data: Any, compute: Callable[[], T], use_cache: bool = True) -> T:
    """Run `compute()` once per (model weights and dtype, probe, params, data); later calls read the cache.

    Under several processes (`accelerate launch`) the cache is not read, and only the main process
    stores the result: a read could hit on one process and miss on another, which would then wait
    in the sweep's gather (`workbench.distributed`) for processes that never join it."""
    if not use_cache:
        return compute()
    key = RESULTS.key(handle.facts.fingerprint, handle.facts.dtype, probe, params, data)
    if distributed.num_processes() > 1:
        value = compute()
        if distributed.is_main_process():
            RESULTS.put(key, value)
        return value
    return RESULTS.get_or_compute(key, compute)
