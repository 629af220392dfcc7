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

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from workbench import ops
from workbench.errors import InputError
from workbench.models import ModelHandle

SIGNALS = ("logits", "feature")


def layers_from_entropy(profile: Sequence[float]) -> tuple[int, int]:
    """(i, j) from the mean lens entropy per layer: the entropy drops first near the bottom
    (language conversion) and again near the middle (English thinking).

    i = the layer with the largest entropy drop (H[l-1] - H[l]) among layers 1 .. round(L/3) - 1,
    j = the layer with the largest drop among round(L/3) .. round(2L/3). Models with fewer than 4
    layers have no such regions: i = 0, j = L // 2.
    """
    h = np.asarray(profile, dtype=float)
    n = len(h)
    if n == 0 or not np.all(np.isfinite(h)):
        raise InputError("The entropy profile must be a non-empty list of finite numbers.")
    if n < 4:
        return 0, n // 2
    drop = np.concatenate([[-np.inf], h[:-1] - h[1:]])  # drop[l]: entropy lost entering layer l
    third, two_thirds = round(n / 3), round(2 * n / 3)
    i = 1 + int(np.argmax(drop[1:third]))
    j = third + int(np.argmax(drop[third:two_thirds + 1]))
    return i, j
