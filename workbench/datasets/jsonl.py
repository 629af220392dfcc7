"""Reading JSON-lines files with errors that name the file and line, shared by every loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def json_objects(path: str | Path, error: type[Exception]) -> Iterator[tuple[int, dict]]:
    """Yield `(line_number, record)` for each non-blank line of `path`.

    A line that is not JSON, not a JSON object, or a file that is not UTF-8 text raises `error`
    (the loader's own exception type) with a message that says which file and line to fix.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path.name}, line {number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise error(f"{where}: not valid JSON ({exc.msg}).") from None
                if not isinstance(record, dict):
                    raise error(f"{where}: expected a JSON object, got {type(record).__name__}.")
                yield number, record
    except UnicodeDecodeError:
        raise error(f"{path.name} is not UTF-8 text.") from None
