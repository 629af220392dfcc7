"""RHIO's data augmentation: unfaithful answers written by the model itself with its retrieval
heads masked (answers that lean on memory instead of the documents), next to the faithful
references, as JSON lines for the `rhio` training method."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from workbench import engine
from workbench.errors import InputError
from workbench.models import ModelHandle
from workbench.paths import atomic_write_text
from workbench.progress import Progress

from trainers.methods.rhio.control_tokens import faithfulness_prompt


@dataclass
class AugmentedItem:
    id: str
    lang: str
    instruction: str
    output: str  # faithful reference
    negative: str  # answer generated with the retrieval heads masked

    def to_record(self) -> dict:
        return {"id": self.id, "lang": self.lang, "instruction": self.instruction, "output": self.output,
                "negative": self.negative}


def augment(handle: ModelHandle, items: Iterable, heads: Sequence[Sequence[int]], mode: str = "uniform",
            max_new_tokens: int = 60, out_path: str | Path | None = None, max_chars: int | None = 2400,
            progress: Progress | None = None) -> list[AugmentedItem]:
    """Generate an unfaithful answer per item with `heads` masked (the top-k retrieval heads);
    optionally write the augmented set as JSON lines (atomically)."""
    from probes.masking import masking_hooks

    items = list(items)
    if not items:
        raise InputError("No items to augment.")
    hooks = masking_hooks(handle, heads, mode)
    out = []
    for i, item in enumerate(items):
        if progress:
            progress(i / len(items), f"masked-head answer {i + 1}/{len(items)}")
        prompt = faithfulness_prompt(item.question, item.documents, max_chars)
        gen = engine.generate_greedy(handle, prompt, max_new_tokens, fwd_hooks=hooks)
        out.append(AugmentedItem(item.id, item.lang, prompt, item.answer, gen.text.strip() or "(no answer)"))
    if out_path is not None:
        atomic_write_text(Path(out_path), "".join(json.dumps(a.to_record(), ensure_ascii=False) + "\n" for a in out))
    if progress:
        progress(1.0, "augmentation done")
    return out
