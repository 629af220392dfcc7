"""Tiny randomly initialised models of real architectures, built offline in well under a second.

Unit tests need the real code paths (Gemma 3 soft-capping and sliding windows, Llama/Qwen2
grouped-query attention, GPT-2 absolute positions) without downloading anything, so each factory
writes an ordinary Hugging Face folder (config + safetensors + tokenizer) that `workbench.load`
opens exactly like a user's folder.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

ARCHITECTURES = ("gemma3", "llama", "qwen2", "gpt2")

_CORPUS = [
    "the cat sat on the mat and the dog ran in the park",
    "le chat est sur le tapis et le chien court dans le parc",
    "die Katze sitzt auf der Matte und der Hund läuft im Park",
    "猫はマットの上に座り、犬は公園を走る",
    "猫坐在垫子上，狗在公园里跑",
    "кошка сидит на коврике, а собака бегает в парке",
    'Français: "chat" - English: "cat"\nDeutsch: "Hund" - English: "dog"',
    "Based on the content of the text, Question: what is the best thing?\nAnswer:",
    "water sun moon book house red blue green one two three paris london berlin",
]
VOCAB_SIZE = 384


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    """Train a byte-level BPE once per process; byte fallback covers CJK and Cyrillic."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A small trained BPE tokenizer with pad/bos/eos, shared by every tiny model."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
    )
    tok.add_bos_token = True
    return tok


def _config(arch: str, vocab: int):
    common = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "gemma3":
        return Gemma3TextConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=1, head_dim=16, max_position_embeddings=512, sliding_window=8,
            layer_types=["sliding_attention", "full_attention"], final_logit_softcapping=30.0,
            query_pre_attn_scalar=16, **common,
        )
    if arch == "llama":
        return LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, **common,
        )
    if arch == "qwen2":
        return Qwen2Config(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, **common,
        )
    if arch == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=512, **common)
    raise ValueError(f"Unknown tiny architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


def build_tiny_model(arch: str = "gemma3", folder: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Write a 2-layer model of `arch` with random weights and return its folder."""
    tokenizer = tiny_tokenizer()
    config = _config(arch, len(tokenizer))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # Larger-than-default weights make tiny models' predictions peaked enough to test argmax paths.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.1)
    out = Path(folder) if folder else Path(tempfile.mkdtemp(prefix=f"tiny-{arch}-"))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
