"""SFT and TFT: cross-entropy on the response tokens only, given the prompt.

SFT is the baseline every multilingual method is compared with. TFT (translate-train fine-tuning)
is the same objective on target-language data, typically English instructions machine-translated
into the target language: with this project's record format both train on `instruction` ->
`output`. SFT can instead read other fields (e.g. `instruction_en` -> `output_en` for an
English-only baseline on the same parallel file) through its constructor arguments, given as
`method_args` in the configuration.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from workbench import engine

from ..data import IGNORE_INDEX, encode_pair, pad_batch, pad_id


def response_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not -100 (the response)."""
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    targets = labels[:, 1:].reshape(-1)
    return F.cross_entropy(shifted, targets, ignore_index=IGNORE_INDEX)


class SFT:
    """Supervised fine-tuning on (prompt, response) pairs; the prompt tokens carry no loss."""

    name = "sft"

    def __init__(self, prompt_field: str = "instruction", response_field: str = "output"):
        self.prompt_field = prompt_field
        self.response_field = response_field
        self.required_fields = (prompt_field, response_field)

    def setup(self, handle, config, accelerator) -> list[torch.nn.Module]:
        return []

    def collate(self, records: list[dict], tokenizer, config) -> dict[str, torch.Tensor]:
        pairs = [encode_pair(tokenizer, r[self.prompt_field], r[self.response_field], config.max_length) for r in records]
        return pad_batch([ids for ids, _ in pairs], [n for _, n in pairs], pad_id(tokenizer))

    def loss(self, handle, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = engine.forward(handle, batch["input_ids"], attention_mask=batch["attention_mask"], grad=True)
        loss = response_cross_entropy(logits, batch["labels"])
        return loss, {"ce": loss.item()}

    def extra_files(self) -> dict[str, Any]:
        return {}

    def load_extra(self, folder) -> None:
        return None


class TFT(SFT):
    """Translate-train fine-tuning: SFT on the target-language `instruction` -> `output`."""

    name = "tft"

    def __init__(self):
        super().__init__("instruction", "output")
