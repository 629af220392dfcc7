"""The engine: the only code that runs the model.

Probes, methods and evaluations ask it for activations (`capture`), logits (`forward`, `lens_logits`),
lens statistics streamed over the vocabulary (`lens_reduce`),
continuations' log-probabilities (`score_continuations`, `label_logprobs`) and decoded text
(`decode` with a step function: greedy, contrastive, or a method's own). Hook names are formatted in
one place (`hook_name`). Nothing outside this package calls a model's forward or `generate`
(tests/test_engine.py greps the tree for it). See docs/architecture.md.
"""

from .decode import Generation, continue_decoding, decode, fit_new_tokens, generate_greedy, greedy_step, stop_ids
from .inputs import as_ids, check_head, check_layer, check_text, pad_rows
from .kv import Prefix, fork, prefill, prefix, step_logits
from .lens import LensStats, final_norm, lens_logits, lens_reduce, unembed
from .run import Capture, capture, forward, hooks, residual_stream
from .score import IGNORE_INDEX, label_logprobs, score_continuations, score_from_state, token_scores
from .sites import SITES, Hook, check_site, hook_name, resid_names

__all__ = [
    "IGNORE_INDEX", "Capture", "Generation", "Hook", "Prefix", "SITES", "prefix", "step_logits", "as_ids", "capture", "check_head", "check_layer", "check_site", "check_text",
    "continue_decoding", "decode", "final_norm", "fit_new_tokens", "fork", "forward", "generate_greedy", "greedy_step",
    "hook_name", "hooks", "label_logprobs", "LensStats", "lens_logits", "lens_reduce", "pad_rows", "prefill", "resid_names", "residual_stream",
    "score_continuations", "score_from_state", "stop_ids", "token_scores", "unembed",
]
