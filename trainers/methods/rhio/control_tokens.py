"""RHIO's control tokens: `add_control_tokens` makes a copy of the base model with `[POS]` and
`[NEG]` in its vocabulary (plain Hugging Face resize, before any bridge wraps the model),
registered as the checkpoint every RHIO run starts from; the prompts put the control token at the
end, on its own line, right before the answer, the same way in training (through `encode_pair`)
and in decoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from workbench import engine
from workbench.errors import InputError
from workbench.models import ModelHandle

POS, NEG = "[POS]", "[NEG]"
CONTROL_TOKENS = (POS, NEG)


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
    mean embedding, as HF does) — the base every RHIO run starts from. The vocabulary changes
    before any bridge exists, so this works on the plain Hugging Face model."""
    from workbench import registry
    from workbench.models import load_hf_model, load_tokenizer, resolve_folder

    _, folder = resolve_folder(spec)
    tokenizer = load_tokenizer(folder)
    model = load_hf_model(folder)
    added = tokenizer.add_special_tokens({"additional_special_tokens": list(CONTROL_TOKENS)})
    if added:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)

    def write(target: Path) -> None:
        model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)

    ckpt = registry.save(name, 0, write, {"base_model": spec, "method": "rhio-prepare", "config": {},
                                          "metrics": {}, "parent": spec})
    return ckpt.spec


def generate_with_control(handle: ModelHandle, prompt: str, control: str = POS, max_new_tokens: int = 60) -> engine.Generation:
    """Greedy decoding under one control token (what RHIO training taught it to mean)."""
    control_ids(handle.tokenizer)
    return engine.generate_greedy(handle, control_prompt(prompt, control) + "\n", max_new_tokens)
