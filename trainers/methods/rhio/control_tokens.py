"""RHIO (arXiv 2501.13573): teach a model what unfaithful answers look like, then steer away.

1. `add_control_tokens`: a copy of the base model with `[POS]` and `[NEG]` in its vocabulary
   (plain Hugging Face resize, before any bridge wraps the model), registered as a checkpoint.
2. `augment`: for (documents, question) items, generate answers with the top-k retrieval heads
   masked — answers that lean on the model's memory instead of the context — next to the
   faithful references, written as JSON lines.
3. The `rhio` training method (trainers/methods/rhio.py) trains `[POS]` -> faithful and
   `[NEG]` -> unfaithful answers jointly through the shared loop.
4. `contrastive_generate`: self-induced contrastive decoding, logits (1 + a) z_POS - a z_NEG.

The control token sits at the end of the prompt, on its own line, right before the answer; the
same `control_prompt` is used by training (through `encode_pair`) and by decoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from workbench import ops
from workbench.errors import InputError
from workbench.models import ModelHandle
from workbench.paths import atomic_write_text

POS, NEG = "[POS]", "[NEG]"
CONTROL_TOKENS = (POS, NEG)
Progress = Callable[[float, str], None]


def faithfulness_prompt(question: str, documents: Sequence, max_chars: int | None = 2400) -> str:
    """The (documents, question) prompt used for augmentation, training and evaluation. Documents
    are cut to `max_chars` in total so the prompt fits a small model's training length."""
    parts, used = [], 0
    for i, doc in enumerate(documents, 1):
        title = getattr(doc, "title", None) or (doc.get("title", "") if isinstance(doc, dict) else "")
        text = getattr(doc, "text", None) or (doc.get("text", "") if isinstance(doc, dict) else str(doc))
        if max_chars is not None:
            text = text[: max(0, max_chars - used)]
            used += len(text)
        parts.append(f"[{i}] {title}\n{text}".strip())
    return "Documents:\n" + "\n\n".join(parts) + f"\n\nQuestion: {question}\nAnswer:"


def control_prompt(prompt: str, control: str) -> str:
    if control not in CONTROL_TOKENS:
        raise InputError(f"The control token must be {POS} or {NEG}, not {control!r}.")
    return f"{prompt.rstrip()}\n{control}"


def control_ids(tokenizer) -> tuple[int, int]:
    """Ids of [POS] and [NEG]; a clear error if the model was not prepared for RHIO."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in CONTROL_TOKENS if t not in vocab]
    if missing:
        raise InputError(f"This model has no {' / '.join(missing)} token: start RHIO from a model prepared with "
                         "`workbench rhio prepare` (trainers.methods.rhio.control_tokens.add_control_tokens).")
    return vocab[POS], vocab[NEG]


def add_control_tokens(spec: str, name: str) -> str:
    """Register `ckpt:NAME`: the model `spec` with [POS]/[NEG] added (embeddings initialised to the
    mean embedding, as HF does) — the base every RHIO run starts from."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench import registry
    from workbench.models import _check_folder, resolve_spec

    folder = Path(resolve_spec(spec).path)
    _check_folder(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    added = tokenizer.add_special_tokens({"additional_special_tokens": list(CONTROL_TOKENS)})
    if added:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)

    def write(target: Path) -> None:
        model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)

    ckpt = registry.save(name, 0, write, {"base_model": spec, "method": "rhio-prepare", "config": {},
                                          "metrics": {}, "parent": spec})
    return ckpt.spec


# --------------------------------------------------------------------------- augmentation

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
        gen = ops.generate_greedy(handle, prompt, max_new_tokens, fwd_hooks=hooks)
        out.append(AugmentedItem(item.id, item.lang, prompt, item.answer, gen.text.strip() or "(no answer)"))
    if out_path is not None:
        atomic_write_text(Path(out_path), "".join(json.dumps(a.to_record(), ensure_ascii=False) + "\n" for a in out))
    if progress:
        progress(1.0, "augmentation done")
    return out


# --------------------------------------------------------------------------- contrastive decoding

def contrastive_step(z_pos: torch.Tensor, z_neg: torch.Tensor, alpha: float,
                     plausibility: float | None = None) -> torch.Tensor:
    """Scores (1 + a) z_POS - a z_NEG; with `plausibility` = b, tokens whose [POS] probability is
    below b times the most likely token's are excluded (the contrastive-decoding cut-off)."""
    scores = (1 + alpha) * z_pos - alpha * z_neg
    if plausibility:
        probs = torch.softmax(z_pos.float(), dim=-1)
        keep = probs >= plausibility * probs.max(dim=-1, keepdim=True).values
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores


@torch.no_grad()
def contrastive_generate(handle: ModelHandle, prompt: str, alpha: float = 1.0, plausibility: float | None = 0.1,
                         max_new_tokens: int = 60) -> ops.Generation:
    """Self-induced contrastive decoding: the [POS] and [NEG] streams decode together (a batch of
    two with one KV cache each row) and every step picks the argmax of `contrastive_step`.
    alpha = 0 is plain greedy decoding under [POS]."""
    if alpha < 0:
        raise InputError("alpha must be >= 0.")
    if max_new_tokens < 1:
        raise InputError("max_new_tokens must be at least 1.")
    if plausibility is not None and not 0 <= plausibility <= 1:
        raise InputError("The plausibility cut-off must be between 0 and 1.")
    control_ids(handle.tokenizer)
    rows = [handle.encode(control_prompt(prompt, c) + "\n") for c in CONTROL_TOKENS]
    if len(rows[0]) != len(rows[1]):
        raise InputError("[POS] and [NEG] prompts tokenize to different lengths.")
    ids = ops.as_ids(handle, torch.tensor(rows))
    max_new_tokens = ops.fit_new_tokens(handle, ids.shape[-1], max_new_tokens)
    stops = ops._stop_ids(handle, stop_at_newline=False)
    new: list[int] = []
    with handle.lock:
        out = handle.hf_model(input_ids=ids, use_cache=True, logits_to_keep=1)
        for step in range(max_new_tokens):
            logits = out.logits[:, -1]
            nxt = int(contrastive_step(logits[0], logits[1], alpha, plausibility).argmax())
            if nxt in stops:
                break
            new.append(nxt)
            if step == max_new_tokens - 1:
                break
            out = handle.hf_model(input_ids=torch.tensor([[nxt], [nxt]], device=ids.device),
                                  cache=out.past_key_values, use_cache=True)
    return ops.Generation(ids[:1], [new], [handle.tokenizer.decode(new, skip_special_tokens=True)])


def generate_with_control(handle: ModelHandle, prompt: str, control: str = POS, max_new_tokens: int = 60) -> ops.Generation:
    """Greedy decoding under one control token (what RHIO training taught it to mean)."""
    control_ids(handle.tokenizer)
    return ops.generate_greedy(handle, control_prompt(prompt, control) + "\n", max_new_tokens)
