"""Training data: JSON lines with the papers' fields, checked with messages that point at the line.

A record has `instruction` and `output` in the target language, `lang` (a language code), the
English prompt `instruction_en` and, for DFT, the English response `output_en`. Methods declare
which fields they need; the loader refuses files that lack them before any model is loaded.
This module also turns (prompt, response) pairs into padded batches with the prompt masked out.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable, Sequence

import torch

from workbench.cache import stable_hash
from workbench.datasets.jsonl import json_objects
from workbench.engine import IGNORE_INDEX
from workbench.errors import InputError
from workbench.paths import PACKAGE_DATA

DEMO_FILE = PACKAGE_DATA / "train" / "demo.jsonl"


class DataError(InputError):
    """Training data that cannot be used, with the file and line at fault."""


def resolve_data_path(data: str | Path) -> Path:
    """`demo` names the committed demo set; anything else is a path to a JSONL file."""
    return DEMO_FILE if str(data) == "demo" else Path(data).expanduser()


def check_language(code: str) -> str:
    """Return `code` if CLDR knows it as a language (`fr`, `zh`, `pt-BR`, ...), else raise."""
    from babel import Locale, UnknownLocaleError

    try:
        Locale.parse(str(code).replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise DataError(f"Unknown language code {code!r}: use an ISO 639 code such as fr, de, zh or pt-BR.") from None
    return code


def load_jsonl(path: str | Path, required_fields: Sequence[str] = ("instruction", "output"),
               languages: Iterable[str] | None = None) -> list[dict]:
    """Read a JSONL file of training records, checking every line.

    Raises DataError for a missing or empty file, a line that is not a JSON object, a required
    field that is missing or empty (with line numbers), an unknown `lang`, or a requested language
    with no records. With `languages`, only records in those languages are kept.
    """
    path = resolve_data_path(path)
    if not path.is_file():
        raise DataError(f"Data file {path} does not exist.")
    wanted = [check_language(c) for c in languages] if languages else None
    records, missing = [], {}
    for number, record in json_objects(path, DataError):
        for name in required_fields:
            value = record.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                missing.setdefault(name, []).append(number)
        if "lang" in record:
            try:
                check_language(record["lang"])
            except DataError as exc:
                raise DataError(f"{path.name}, line {number}: {exc}") from None
        elif wanted:
            raise DataError(f"{path.name}, line {number}: no 'lang' field, so it cannot be filtered by language.")
        records.append(record)
    if not records:
        raise DataError(f"Data file {path} is empty: it has no JSON lines.")
    if missing:
        parts = [f"'{name}' on line(s) {_lines(numbers)}" for name, numbers in missing.items()]
        raise DataError(f"{path.name} lacks required field(s): {'; '.join(parts)}. "
                        f"This method needs {', '.join(required_fields)} on every line.")
    if wanted:
        present = sorted({r["lang"] for r in records})
        absent = [c for c in wanted if c not in present]
        if absent:
            raise DataError(f"{path.name} has no records in {', '.join(absent)}; it has {', '.join(present)}.")
        records = [r for r in records if r["lang"] in wanted]
    return records


def _lines(numbers: list[int], limit: int = 8) -> str:
    shown = ", ".join(map(str, numbers[:limit]))
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def split_eval(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out `fraction` of the records (a seeded shuffle), at least one when fraction > 0."""
    if fraction <= 0:
        return records, []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(records) * fraction))
    if n_eval >= len(records):
        raise DataError(f"eval_fraction {fraction} leaves no training records out of {len(records)}.")
    held = set(order[:n_eval])
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


def data_hash(*record_lists: list[dict]) -> str:
    """A stable hash of the records a run used, stored in every checkpoint's manifest."""
    return stable_hash(*record_lists)


# ---------------------------------------------------------------------- tokenisation

def encode_pair(tokenizer, prompt: str, response: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of BOS + prompt + response + EOS and the number of prompt tokens.

    The prompt ends with a newline so the response starts on its own line. When the pair is longer
    than `max_length`, the response keeps up to half the budget (more if the prompt is short) and
    the prompt loses its oldest tokens, so every item trains on at least one response token.
    """
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    p_ids = tokenizer(prompt.rstrip() + "\n", add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(response.strip(), add_special_tokens=False)["input_ids"] + eos
    budget = max_length - len(bos)
    if len(p_ids) + len(r_ids) > budget:
        r_keep = max(budget - len(p_ids), budget // 2)
        r_ids = r_ids[:r_keep]
        p_ids = p_ids[len(p_ids) - (budget - len(r_ids)):] if budget > len(r_ids) else []
    prompt_ids = bos + p_ids
    return prompt_ids + r_ids, len(prompt_ids)


def pad_batch(sequences: list[list[int]], prompt_lengths: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence: `labels` copy the ids on response tokens, -100 elsewhere."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    for row, (seq, n_prompt) in enumerate(zip(sequences, prompt_lengths)):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, n_prompt: len(seq)] = torch.tensor(seq[n_prompt:])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pad_id(tokenizer) -> int:
    """The tokenizer's pad id, falling back to EOS (masked out by attention_mask and labels)."""
    return next(c for c in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if c is not None)
