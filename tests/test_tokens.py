"""Token-set rules of the latent-language lens on hand-made vocabularies."""

import pytest
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from probes.tokens import build_token_sets, prefix_token_ids, token_bytes
from workbench.tiny import tiny_tokenizer

# A SentencePiece-style vocabulary: "▁" marks a leading space, "<0xNN>" are byte-fallback tokens.
SP_VOCAB = ["<pad>", "<bos>", "<eos>", "<0xE6>", "<0xB0>", "<0xB4>", "<0xD0>", "<0x63>", "▁", "c", "a", "t", "at",
            "ca", "cat", "cats", "▁c", "▁cat", "水", "▁水", "h", "ch", "▁chat", "к", "▁ко", "s", "▁s", "<0x43>"]


@pytest.fixture(scope="module")
def sp():
    vocab = {tok: i for i, tok in enumerate(SP_VOCAB)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def ids(*tokens):
    return {SP_VOCAB.index(t) for t in tokens}


def test_token_bytes_maps_sentencepiece_conventions(sp):
    raw = token_bytes(sp)
    assert raw[SP_VOCAB.index("<bos>")] is None  # special tokens never count
    assert raw[SP_VOCAB.index("<0xE6>")] == b"\xe6"
    assert raw[SP_VOCAB.index("▁cat")] == b" cat"
    assert raw[SP_VOCAB.index("水")] == "水".encode()


def test_every_prefix_with_and_without_space(sp):
    # "at", "a", "t", "s" are tokens of the word but not prefixes; "cats" is longer than the word;
    # the bare "▁" is a prefix of " cat" but says nothing about the word.
    assert prefix_token_ids(sp, "cat") == ids("c", "ca", "cat", "▁c", "▁cat", "<0x63>")
    assert prefix_token_ids(sp, " chat ") == ids("c", "ch", "▁c", "▁chat", "<0x63>")


def test_first_byte_token_for_cjk_and_cyrillic(sp):
    # 水 is E6 B0 B4: only the first byte starts the word.
    assert prefix_token_ids(sp, "水") == ids("水", "▁水", "<0xE6>")
    assert prefix_token_ids(sp, "кошка") == ids("к", "▁ко", "<0xD0>")  # к is D0 BA


def test_empty_word_has_empty_set(sp):
    assert prefix_token_ids(sp, "") == frozenset()
    assert prefix_token_ids(sp, "   ") == frozenset()


def test_byte_level_bpe_prefixes():
    tok = tiny_tokenizer()
    for word in ["cat", "park", "猫", "кошка"]:
        got = prefix_token_ids(tok, word)
        for variant in (word, " " + word):
            first = tok(variant, add_special_tokens=False)["input_ids"][0]
            assert first in got or not tok.decode([first]).strip()  # a bare space never counts
        for i in got:
            text = tok.decode([i])
            assert "\ufffd" in text or word.startswith(text) or (" " + word).startswith(text)
        # brute force: every token whose text is a non-blank prefix is in the set
        for i in range(len(tok)):
            text = tok.decode([i])
            if text.strip() and "\ufffd" not in text and i not in tok.all_special_ids and (
                    word.startswith(text) or (" " + word).startswith(text)):
                assert i in got, (word, text)
    # the first UTF-8 byte of 猫 (E7) is a token of a byte-level vocabulary
    first_byte = tok.convert_tokens_to_ids("ç")
    assert first_byte in prefix_token_ids(tok, "猫")


def test_overlap_substring_and_empty_filters(sp):
    items = [
        {"en": "cat", "zh": "水"},  # kept
        {"en": "cat", "zh": "chat"},  # shares c, ▁c, <0x63>
        {"en": "cat", "zh": "cats"},  # the English word is inside the target word
        {"en": "cat", "zh": "猫"},  # 猫 starts with byte E7: no token in this vocabulary
        {"en": "cat", "zh": "CAT"},  # case-insensitive containment (sets {c..} and {<0x43>} are disjoint)
    ]
    sets = build_token_sets(sp, items, ["en", "zh"], concepts=["a", "b", "c", "d", "e"])
    assert sets.kept == [0]
    assert sets.sets[0] == {"en": prefix_token_ids(sp, "cat"), "zh": prefix_token_ids(sp, "水")}
    reasons = {d.concept: d.reason for d in sets.dropped}
    assert set(reasons) == {"b", "c", "d", "e"}
    assert "share tokens" in reasons["b"] and "<0x63>" in reasons["b"]
    assert "'cat' is contained in the zh word 'cats'" in reasons["c"]
    assert reasons["d"] == "no token starts the zh word '猫'"
    assert "contained" in reasons["e"]
    assert len(sets.kept) + len(sets.dropped) == len(items)


def test_three_languages_checked_pairwise(sp):
    sets = build_token_sets(sp, [{"fr": "chat", "en": "水", "zh": "cat"}], ["fr", "en", "zh"])
    assert sets.kept == [] and "fr and zh" in sets.dropped[0].reason


@pytest.mark.slow
def test_gemma_sets(gemma):
    tok = gemma.tokenizer
    water = prefix_token_ids(tok, "水")
    assert {tok.convert_tokens_to_ids(t) for t in ("水", "▁水", "<0xE6>")} <= water
    cat = prefix_token_ids(tok, "cat")
    assert {tok.convert_tokens_to_ids(t) for t in ("cat", "▁cat", "c", "▁c")} <= cat
    assert tok.convert_tokens_to_ids("▁") not in cat
