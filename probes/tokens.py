"""Token sets for the latent-language lens: which vocabulary ids count as "the model starts to say
this word".

The lens reads one next-token distribution per layer, but a word can begin with many tokens: its
first sub-word with or without the leading space (`▁cat`, `cat`, `ca`, `c`), and for scripts that
fall back to bytes (CJK, Cyrillic, ...) the token of its first UTF-8 byte (`<0xE6>`). The rule used
here covers all of them with one definition: a token belongs to a word's set when the bytes it
stands for are a non-empty prefix of the UTF-8 bytes of `word` or of `" " + word` (a bare space
does not count). Both SentencePiece (`▁`, `<0xNN>`) and byte-level BPE (`Ġ`) vocabularies are
mapped to bytes first, so the rule is the same for every tokenizer.

Items whose language sets cannot be told apart (shared ids, or one word inside the other) or that
have an empty set are dropped, and every drop is reported with its reason.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from transformers.convert_slow_tokenizer import bytes_to_unicode

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_INDEX: "weakref.WeakKeyDictionary[Any, dict[bytes, tuple[int, ...]]]" = weakref.WeakKeyDictionary()


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in repr(backend.decoder)


def token_bytes(tokenizer: Any) -> list[bytes | None]:
    """The bytes each vocabulary id stands for (None for special tokens)."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    if _is_byte_level(tokenizer):
        to_byte = {char: byte for byte, char in bytes_to_unicode().items()}

        def raw(tok: str) -> bytes | None:
            if any(ch not in to_byte for ch in tok):
                return None
            return bytes(to_byte[ch] for ch in tok)
    else:  # SentencePiece conventions: "▁" is a space, "<0xNN>" a byte-fallback token

        def raw(tok: str) -> bytes | None:
            byte = _BYTE_TOKEN.match(tok)
            return bytes([int(byte.group(1), 16)]) if byte else tok.replace("▁", " ").encode("utf-8")

    out: list[bytes | None] = []
    for idx, tok in enumerate(tokens):
        special = added.get(idx)
        if tok is None or (special is not None and special.special):
            out.append(None)
        elif special is not None:  # an added plain token is stored as text, not byte-mapped
            out.append(special.content.encode("utf-8"))
        else:
            out.append(raw(tok))
    return out


def vocab_index(tokenizer: Any) -> dict[bytes, tuple[int, ...]]:
    """bytes -> every id standing for exactly those bytes; built once per tokenizer object."""
    try:
        return _INDEX[tokenizer]
    except (KeyError, TypeError):
        pass
    index: dict[bytes, list[int]] = {}
    for idx, raw in enumerate(token_bytes(tokenizer)):
        if raw:
            index.setdefault(raw, []).append(idx)
    frozen = {raw: tuple(ids) for raw, ids in index.items()}
    try:
        _INDEX[tokenizer] = frozen
    except TypeError:  # not weak-referenceable: no memo
        pass
    return frozen


def prefix_token_ids(tokenizer: Any, word: str) -> frozenset[int]:
    """Every id whose bytes are a non-empty prefix of `word` or `" " + word` (a bare space excluded)."""
    word = (word or "").strip()
    if not word:
        return frozenset()
    index = vocab_index(tokenizer)
    ids: set[int] = set()
    for variant in (word, " " + word):
        raw = variant.encode("utf-8")
        for end in range(1, len(raw) + 1):
            prefix = raw[:end]
            if prefix.strip():
                ids.update(index.get(prefix, ()))
    return frozenset(ids)


@dataclass(frozen=True)
class Dropped:
    """An item left out of the lens, and why."""

    index: int
    concept: str
    reason: str


@dataclass
class TokenSets:
    """Per kept item, the token set of each language; plus what was dropped."""

    kept: list[int]  # indices into the input items
    sets: list[dict[str, frozenset[int]]]
    dropped: list[Dropped] = field(default_factory=list)


def build_token_sets(tokenizer: Any, items: Sequence[Mapping[str, str]], languages: Sequence[str],
                     concepts: Sequence[str] | None = None) -> TokenSets:
    """Token sets of `languages` for each item (a mapping language -> word), with the filters:
    an item is dropped when a set is empty, when two languages' sets share an id, or when one
    language's word is contained in another's (case-insensitive)."""
    langs = list(dict.fromkeys(languages))
    result = TokenSets(kept=[], sets=[])
    for i, words in enumerate(items):
        concept = str(concepts[i]) if concepts is not None else str(words.get("en", i))
        sets = {lang: prefix_token_ids(tokenizer, words.get(lang) or "") for lang in langs}
        reason = _conflict(tokenizer, langs, words, sets)
        if reason:
            result.dropped.append(Dropped(i, concept, reason))
        else:
            result.kept.append(i)
            result.sets.append(sets)
    return result


def _conflict(tokenizer: Any, langs: list[str], words: Mapping[str, str],
              sets: dict[str, frozenset[int]]) -> str | None:
    for lang in langs:
        if not sets[lang]:
            return f"no token starts the {lang} word {words.get(lang)!r}"
    for n, a in enumerate(langs):
        for b in langs[n + 1:]:
            wa, wb = str(words[a]).strip().casefold(), str(words[b]).strip().casefold()
            if wa in wb or wb in wa:
                inner, outer = (a, b) if wa in wb else (b, a)
                return f"the {inner} word {words[inner]!r} is contained in the {outer} word {words[outer]!r}"
            shared = sets[a] & sets[b]
            if shared:
                shown = tokenizer.convert_ids_to_tokens(sorted(shared)[:5])
                return f"the {a} and {b} words share tokens {shown}"
    return None
