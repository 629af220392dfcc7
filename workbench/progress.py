"""The one progress convention: long calls take `progress(fraction, message)`, and a terminal
command turns those calls into a tqdm bar with `progress_bar`, so every API reports the same way
to the app (Gradio), a notebook and a terminal."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

Progress = Callable[[float, str], None]

DESCRIPTION_WIDTH = 70  # longer messages are cut so the bar stays on one line


@contextmanager
def progress_bar(desc: str = "", *, total: int = 100, initial: int = 0, unit: str = "%",
                 disable: bool = False) -> Iterator[Progress]:
    """A tqdm bar of `total` units driven by the `Progress` callback it yields: `fraction` 1.0 fills
    it, a non-empty `message` becomes its description. The bar is closed however the block ends."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable)

    def report(fraction: float, message: str) -> None:
        if message:
            bar.set_description(message[:DESCRIPTION_WIDTH])
        bar.update(max(0, round(fraction * total) - bar.n))

    try:
        yield report
    finally:
        bar.close()
