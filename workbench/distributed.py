"""Sweeps split between the processes of an `accelerate launch`: each process computes its share
of the work items and every process gets all the outputs back, in the original order, so the
result it assembles is the one a single process would have built.

A probe asks `share(n)` which of its `n` items (or batches) to compute, computes those, and hands
the outputs to `Share.gather`. In a single process (the app, a notebook, a plain `workbench`
command) the share is every item and gathering returns the outputs unchanged.
"""

from __future__ import annotations

import atexit
import functools
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, TypeVar

T = TypeVar("T")


def _state():
    """Accelerate's process state (one process outside `accelerate launch`). On a machine without
    an accelerator it must be asked for CPU processes, else Accelerate reports every launched
    process as a lone one (the trainers' `Accelerator(cpu=...)` asks the same way)."""
    from accelerate import PartialState
    from accelerate.utils import get_torch_accelerator_backend

    state = PartialState(cpu=get_torch_accelerator_backend()[0] is None)
    if state.num_processes > 1:
        _close_at_exit()
    return state


@functools.cache
def _close_at_exit() -> None:
    """Close the process group before the interpreter's teardown, where gloo's threads can abort a
    process whose work is done."""
    import torch.distributed as dist

    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())


def num_processes() -> int:
    """How many processes share a sweep: 1 outside `accelerate launch`."""
    return _state().num_processes


def is_main_process() -> bool:
    """Whether this process writes files and caches: under `accelerate launch` the others only
    compute. Called before a model loads, it also gives each launched process its own GPU."""
    return _state().is_main_process


def share_positions(n: int, index: int, count: int, strided: bool = False) -> range:
    """The positions among `n` items that process `index` of `count` computes: a contiguous block
    (the first `n % count` processes take one more), or every `count`-th item from `index`, which
    balances the work when the cost of the items grows or shrinks along the list."""
    if not 0 <= index < count:
        raise ValueError(f"Process {index} is not one of {count}.")
    if strided:
        return range(index, n, count)
    size, extra = divmod(n, count)
    start = index * size + min(index, extra)
    return range(start, start + size + (index < extra))


def in_order(n: int, pairs: Iterable[tuple[int, T]]) -> list[T]:
    """The outputs of (position, output) pairs from every share, put back in position order."""
    out: list[Any] = [None] * n
    seen = [False] * n
    for position, value in pairs:
        out[position], seen[position] = value, True
    if not all(seen):
        raise RuntimeError(f"The gathered shares cover {sum(seen)} of {n} items.")
    return out


@dataclass(frozen=True)
class Share:
    """The positions of `n` work items that this process computes."""

    n: int
    positions: range

    def gather(self, outputs: Sequence[T]) -> list[T]:
        """All `n` outputs in position order, on every process, from this process's outputs (one
        per position of its share). Every process must call it, the same number of times."""
        if len(outputs) != len(self.positions):
            raise ValueError(f"{len(outputs)} outputs for a share of {len(self.positions)} items.")
        if num_processes() == 1:
            return list(outputs)
        from accelerate.utils import gather_object

        return in_order(self.n, gather_object(list(zip(self.positions, outputs))))


def share(n: int, *, strided: bool = False) -> Share:
    """This process's share of `n` work items (all of them in a single process)."""
    state = _state()
    return Share(n, share_positions(n, state.process_index, state.num_processes, strided))
