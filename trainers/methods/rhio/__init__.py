"""RHIO (arXiv 2501.13573): teach a model what unfaithful answers look like, then steer away.

`control_tokens` adds `[POS]` / `[NEG]` to a model and builds the prompts; `augmentation` writes
unfaithful answers with the retrieval heads masked; `method` trains both control tokens jointly
through the shared loop; `contrastive` is self-induced contrastive decoding; `evaluation` scores
answers for faithfulness; `cli` is `workbench rhio`.
"""

from trainers.methods.rhio.control_tokens import (
    CONTROL_TOKENS,
    NEG,
    POS,
    add_control_tokens,
    control_ids,
    control_prompt,
    faithfulness_prompt,
    generate_with_control,
)
from trainers.methods.rhio.augmentation import AugmentedItem, augment
from trainers.methods.rhio.contrastive import contrastive_generate, contrastive_step

__all__ = ["CONTROL_TOKENS", "NEG", "POS", "AugmentedItem", "add_control_tokens", "augment", "contrastive_generate",
           "contrastive_step", "control_ids", "control_prompt", "faithfulness_prompt", "generate_with_control"]
