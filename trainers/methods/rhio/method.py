"""RHIO faithfulness-aware tuning: `[POS]` + faithful answer and `[NEG]` + unfaithful answer,
trained jointly with plain cross-entropy (each record yields both sequences).

Records: `instruction` (documents + question, see trainers.methods.rhio.control_tokens.faithfulness_prompt), `output`
(the faithful reference) and `negative` (the answer generated with retrieval heads masked).
The base model must already carry the control tokens (`workbench rhio prepare`); with LoRA the new
tokens' embeddings stay at their initial values and the adapters learn to read them.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench import engine

from trainers.data import encode_pair, pad_batch, pad_id
from trainers.methods.rhio.control_tokens import NEG, POS, control_ids, control_prompt
from trainers.methods.sft import response_cross_entropy


class RHIO:
    name = "rhio"
    required_fields = ("instruction", "output", "negative")

    def __init__(self, negative_weight: float = 1.0):
        if negative_weight < 0:
            raise ValueError("negative_weight must be >= 0")
        self.negative_weight = negative_weight

    def setup(self, handle, config, accelerator) -> list[torch.nn.Module]:
        control_ids(handle.tokenizer)  # clear error when the model was not prepared
        return []

    def collate(self, records: list[dict], tokenizer, config) -> dict[str, torch.Tensor]:
        seqs, n_prompt, weights = [], [], []
        for r in records:
            for control, answer, weight in ((POS, r["output"], 1.0), (NEG, r["negative"], self.negative_weight)):
                ids, n = encode_pair(tokenizer, control_prompt(r["instruction"], control), answer, config.max_length)
                seqs.append(ids)
                n_prompt.append(n)
                weights.append(weight)
        batch = pad_batch(seqs, n_prompt, pad_id(tokenizer))
        batch["weights"] = torch.tensor(weights)
        return batch

    def loss(self, handle, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = engine.forward(handle, batch["input_ids"], attention_mask=batch["attention_mask"], grad=True)
        pos_rows, neg_rows = slice(0, None, 2), slice(1, None, 2)
        pos = response_cross_entropy(logits[pos_rows], batch["labels"][pos_rows])
        neg = response_cross_entropy(logits[neg_rows], batch["labels"][neg_rows])
        total = pos + self.negative_weight * neg
        return total, {"ce_pos": pos.item(), "ce_neg": neg.item()}

    def extra_files(self) -> dict[str, Any]:
        return {}

    def load_extra(self, folder) -> None:
        return None
