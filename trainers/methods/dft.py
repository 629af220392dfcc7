"""DFT, deep supervision fine-tuning (arXiv 2503.01275): supervise the bottom and middle layers of
a non-English pass towards English, on top of the usual target-language fine-tuning.

Loss = w_tft * L_TFT + w_lc * L_LC + w_et * L_ET (weights 1 by default).
- L_TFT: NLL of the target-language response given the target-language prompt.
- Logits signal (the logit lens with the unembedding and final norm frozen: these terms send no
  gradient into them):
  L_LC = -log P(x_en | x_tgt) read through the lens at the bottom layer i, the English prompt
  teacher-forced after the target-language prompt; L_ET = -log P(y_en | x_tgt) read through the
  lens at the middle layer j. Both score the English text's tokens (no end-of-sequence token).
  Each lens pass stops after its layer: nothing above it is computed.
- Feature signal: L_LC = 1 - cos(h_i(en), h_i(tgt)); L_ET = 1 - cos(h_L(en), h_j(tgt)), where h_l
  is the residual stream after layer l (`blocks.{l}.hook_resid_post`, before the final norm, so
  every layer lives in the same space) mean-pooled over the prompt tokens (BOS excluded: its
  state is language-independent), and h_L is the last layer's. The English pass is detached by
  default (`detach_english`), as an open choice of the paper.
Layers are 0-based block indices. When `lc_layer` / `et_layer` are not given, they come from the
lens entropy profile of the base model on the training prompts (`layers_from_entropy`).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from workbench import engine
from workbench.errors import InputError
from workbench.models import ModelHandle

from ..data import IGNORE_INDEX, encode_pair, pad_batch, pad_id
from trainers.methods.cc_tuning.method import encode_prompt
from .sft import response_cross_entropy

SIGNALS = ("logits", "feature")


def layers_from_entropy(profile: Sequence[float]) -> tuple[int, int]:
    """(i, j) from the mean lens entropy per layer: the entropy drops first near the bottom
    (language conversion) and again near the middle (English thinking).

    With b = max(2, round(L/3)) and m = min(L-1, max(b, round(2L/3))): i = the layer with the
    largest entropy drop (H[l-1] - H[l]) among layers 1 .. b-1, j = the layer with the largest drop
    among b .. m (LLaMA-2-7B, L = 32: i in 1..10, j in 11..21; the paper uses j = 15). Models with
    fewer than 4 layers have no such regions: i = 0, j = L // 2.
    """
    h = np.asarray(profile, dtype=float)
    n = len(h)
    if n == 0 or not np.all(np.isfinite(h)):
        raise InputError("The entropy profile must be a non-empty list of finite numbers.")
    if n < 4:
        return 0, n // 2
    drop = np.concatenate([[-np.inf], h[:-1] - h[1:]])  # drop[l]: entropy lost entering layer l
    third = max(2, round(n / 3))
    two_thirds = min(n - 1, max(third, round(2 * n / 3)))
    i = 1 + int(np.argmax(drop[1:third]))
    j = third + int(np.argmax(drop[third:two_thirds + 1]))
    return i, j


def residuals(handle: ModelHandle, ids: torch.Tensor, attention_mask: torch.Tensor | None,
              layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """`blocks.{l}.hook_resid_post` (batch, seq, d_model) for each of `layers`, with gradients when
    grad mode is on. The pass ends after the deepest of them: nothing above it (nor the
    unembedding) is computed."""
    layers = sorted(set(layers))
    names = engine.resid_names(handle, layers)
    kept = engine.capture(handle, ids, names, attention_mask=attention_mask, grad=torch.is_grad_enabled())
    return {layer: kept[name] for layer, name in zip(layers, names)}


@contextlib.contextmanager
def frozen_lens(handle: ModelHandle) -> Iterator[None]:
    """Within the block, the final norm and the unembedding take part in no gradient (the lens is
    a fixed read-out): their parameters stop requiring grad, then are restored."""
    modules = [engine.final_norm(handle), handle.hf_model.get_output_embeddings()]
    params = [p for m in modules for p in m.parameters()]
    saved = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)


def lens_nll(handle: ModelHandle, resid: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL of the labelled tokens read through the (frozen) logit lens of `resid`."""
    scored = labels[:, 1:] != IGNORE_INDEX
    with frozen_lens(handle):
        logits = engine.lens_logits(handle, resid[:, :-1][scored])
    return F.cross_entropy(logits.float(), labels[:, 1:][scored])


def pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` (B, T, d) over the positions where `mask` (B, T) is 1."""
    mask = mask.to(hidden.dtype)[..., None]
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1 - cos(a, b)."""
    return (1.0 - F.cosine_similarity(a.float(), b.float(), dim=-1)).mean()


def _pool_mask(ids: list[int], n_prompt: int, width: int, bos: int | None) -> torch.Tensor:
    mask = torch.zeros(width, dtype=torch.long)
    for pos in range(n_prompt):
        if ids[pos] != bos:
            mask[pos] = 1
    return mask


def _without_eos(batch: dict[str, torch.Tensor], lengths: list[int], eos: int | None) -> dict[str, torch.Tensor]:
    """The English text is scored, not the end of the sequence: drop a final EOS from the labels."""
    for row, n in enumerate(lengths):
        if eos is not None and int(batch["input_ids"][row, n - 1]) == eos:
            batch["labels"][row, n - 1] = IGNORE_INDEX
    return batch


class DFT:
    """Deep supervision fine-tuning (see the module docstring). Options (`method_args`): `signal`
    ("logits" or "feature"), `lc_layer`, `et_layer` (None: from the entropy profile), `tft_weight`,
    `lc_weight`, `et_weight`, `detach_english` (feature signal), `entropy_prompts` (how many
    training prompts the profile reads)."""

    name = "dft"
    required_fields = ("instruction", "output", "instruction_en", "output_en")

    def __init__(self, signal: str = "logits", lc_layer: int | None = None, et_layer: int | None = None,
                 tft_weight: float = 1.0, lc_weight: float = 1.0, et_weight: float = 1.0,
                 detach_english: bool = True, entropy_prompts: int = 32):
        if signal not in SIGNALS:
            raise InputError(f"DFT signal must be one of {', '.join(SIGNALS)} (got {signal!r}).")
        for label, w in (("tft_weight", tft_weight), ("lc_weight", lc_weight), ("et_weight", et_weight)):
            if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
                raise InputError(f"DFT {label} must be a number >= 0 (got {w!r}).")
        if entropy_prompts < 1:
            raise InputError(f"DFT entropy_prompts must be at least 1 (got {entropy_prompts}).")
        self.signal = signal
        self.lc_layer, self.et_layer = lc_layer, et_layer
        self.weights = {"tft": float(tft_weight), "lc": float(lc_weight), "et": float(et_weight)}
        self.detach_english = bool(detach_english)
        self.entropy_prompts = int(entropy_prompts)
        self.entropy_profile: list[float] | None = None

    # ------------------------------------------------------------------ layers

    def choose_layers(self, handle: ModelHandle, prompts: Sequence[str]) -> tuple[int, int]:
        """Fill in the layers not given, from the lens entropy profile of `prompts`; check both."""
        if self.lc_layer is None or self.et_layer is None:
            from probes.pivot import lens_entropy_profile

            profile = lens_entropy_profile(handle, list(prompts)[: self.entropy_prompts])
            self.entropy_profile = [float(x) for x in profile]
            i, j = layers_from_entropy(profile)
            self.lc_layer = i if self.lc_layer is None else self.lc_layer
            self.et_layer = j if self.et_layer is None else self.et_layer
        self.lc_layer = engine.check_layer(handle, self.lc_layer, "DFT lc_layer")
        self.et_layer = engine.check_layer(handle, self.et_layer, "DFT et_layer")
        return self.lc_layer, self.et_layer

    def setup(self, handle: ModelHandle, config, accelerator) -> list[torch.nn.Module]:
        from ..data import load_jsonl

        prompts = []
        if self.lc_layer is None or self.et_layer is None:
            records = load_jsonl(config.data, self.required_fields, config.languages)
            prompts = [r["instruction"] for r in records]
        self.choose_layers(handle, prompts)
        return []

    # ------------------------------------------------------------------ batches

    def collate(self, records: list[dict], tokenizer, config) -> dict[str, torch.Tensor]:
        pad, bos = pad_id(tokenizer), tokenizer.bos_token_id
        pairs = [encode_pair(tokenizer, r["instruction"], r["output"], config.max_length) for r in records]
        batch = pad_batch([ids for ids, _ in pairs], [n for _, n in pairs], pad)
        if self.signal == "logits":
            for key, field in (("lc", "instruction_en"), ("et", "output_en")):
                part = [encode_pair(tokenizer, r["instruction"], r[field], config.max_length) for r in records]
                padded = _without_eos(pad_batch([ids for ids, _ in part], [n for _, n in part], pad),
                                      [len(ids) for ids, _ in part], tokenizer.eos_token_id)
                for name, tensor in padded.items():
                    batch[f"{key}_{name}"] = tensor
        else:
            width = batch["input_ids"].shape[1]
            batch["pool_mask"] = torch.stack([_pool_mask(ids, n, width, bos) for ids, n in pairs])
            english = [encode_prompt(tokenizer, r["instruction_en"], config.max_length) for r in records]
            en = pad_batch(english, [len(ids) for ids in english], pad)
            batch["en_input_ids"], batch["en_attention_mask"] = en["input_ids"], en["attention_mask"]
            en_width = en["input_ids"].shape[1]
            batch["en_pool_mask"] = torch.stack([_pool_mask(ids, len(ids), en_width, bos) for ids in english])
        return batch

    # ------------------------------------------------------------------ loss

    def loss(self, handle: ModelHandle, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.lc_layer is None or self.et_layer is None:
            raise RuntimeError("DFT.setup() (or choose_layers) must run before loss().")
        i, j = self.lc_layer, self.et_layer
        if self.signal == "logits":
            tft = response_cross_entropy(self._logits(handle, batch, ()), batch["labels"])
            lc_resid = residuals(handle, batch["lc_input_ids"], batch["lc_attention_mask"], [i])[i]
            lc = lens_nll(handle, lc_resid, batch["lc_labels"])
            et_resid = residuals(handle, batch["et_input_ids"], batch["et_attention_mask"], [j])[j]
            et = lens_nll(handle, et_resid, batch["et_labels"])
        else:
            kept: dict[int, torch.Tensor] = {}
            tft = response_cross_entropy(self._logits(handle, batch, (i, j), kept), batch["labels"])
            last = handle.n_layers - 1
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_english):
                english = residuals(handle, batch["en_input_ids"], batch["en_attention_mask"], [i, last])
            en_mask, tgt_mask = batch["en_pool_mask"], batch["pool_mask"]
            lc = cosine_distance(pooled(english[i], en_mask), pooled(kept[i], tgt_mask))
            et = cosine_distance(pooled(english[last], en_mask), pooled(kept[j], tgt_mask))
        w = self.weights
        total = w["tft"] * tft + w["lc"] * lc + w["et"] * et
        return total, {"tft": tft.item(), "lc": lc.item(), "et": et.item()}

    @staticmethod
    def _logits(handle: ModelHandle, batch: dict[str, torch.Tensor], layers: Sequence[int],
                kept: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """The target-language pass (full model), keeping the residual stream after `layers`."""
        layers = sorted(set(layers))
        names = engine.resid_names(handle, layers)
        out = engine.capture(handle, batch["input_ids"], names, attention_mask=batch["attention_mask"], grad=True,
                             logits=True)
        if kept is not None:
            kept.update({layer: out[name] for layer, name in zip(layers, names)})
        return out.logits

    # ------------------------------------------------------------------ state

    def extra_files(self) -> dict[str, Any]:
        return {"dft": {"signal": self.signal, "lc_layer": self.lc_layer, "et_layer": self.et_layer,
                        "weights": self.weights, "detach_english": self.detach_english,
                        "entropy_profile": self.entropy_profile}}

    def load_extra(self, folder) -> None:
        """A resumed run keeps the layers it started with."""
        from ..state import load_method_state

        saved = load_method_state(folder).get("dft")
        if saved:
            self.lc_layer, self.et_layer = saved["lc_layer"], saved["et_layer"]
            self.entropy_profile = saved.get("entropy_profile")
