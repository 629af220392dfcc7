"""Needle-in-a-haystack data and trial construction, checked with tokenizers trained in-test."""

import json
import re

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from workbench.datasets.haystack import (
    PROMPT_TEMPLATES,
    HaystackDataError,
    Needle,
    available_languages,
    build_trial,
    load_haystack,
    load_needles,
    rouge1_recall,
    trial_grid,
)

LANGS = ["en", "fr", "de", "zh"]


def _train(kind: str) -> PreTrainedTokenizerFast:
    """A small BPE tokenizer trained on the haystacks; byte-level (GPT-2 style) or Metaspace (SentencePiece style)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>" if kind == "metaspace" else None))
    if kind == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
        tok.decoder = decoders.Metaspace(prepend_scheme="first")
        extra = "".join(PROMPT_TEMPLATES.values()) + "".join(n.needle + n.question for lang in LANGS for n in load_needles(lang))
        alphabet = sorted(set(extra))
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=["<bos>", "<eos>", "<unk>"],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator([load_haystack(lang) for lang in LANGS], trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


@pytest.fixture(scope="module", params=["bytelevel", "metaspace"])
def tokenizer(request):
    return _train(request.param)


@pytest.fixture(scope="module")
def bytelevel():
    return _train("bytelevel")


# ---------------------------------------------------------------- committed data


def test_languages_and_sizes():
    assert set(LANGS) <= set(available_languages())
    for lang in ["en", "fr", "de"]:
        assert len(load_haystack(lang).split()) >= 2500
    assert len(re.findall(r"[\u4e00-\u9fff]", load_haystack("zh"))) >= 4000


def test_needles_are_parallel_and_absent_from_haystack():
    ids = {lang: [n.id for n in load_needles(lang)] for lang in LANGS}
    assert len(ids["en"]) >= 6
    assert all(ids[lang] == ids["en"] for lang in LANGS)
    for lang in LANGS:
        hay = load_haystack(lang).casefold()
        for n in load_needles(lang):
            assert n.lang == lang
            assert n.needle.casefold() not in hay
            assert n.answer.casefold() not in hay, (lang, n.id)
            # the needle itself states the answer, so a perfect copy passes the keep rule
            assert rouge1_recall(n.needle, n.answer, lang) == 1.0, (lang, n.id)


# ---------------------------------------------------------------- trials


@pytest.mark.parametrize("lang", LANGS)
def test_needle_span_is_exact(tokenizer, lang):
    trials = trial_grid(tokenizer, lang, lengths=[200, 400, 700], depths=[0.0, 0.3, 0.9, 1.0], needles=None)
    assert len(trials) == 3 * 4 * len(load_needles(lang))
    bos = tokenizer.bos_token_id
    hay_ids = tokenizer.encode(load_haystack(lang), add_special_tokens=False)
    for t in trials:
        s, e = t.needle_span
        assert tokenizer.decode(t.prompt_ids[s:e]).strip() == t.needle.needle
        assert t.prompt_ids[0] == bos and bos not in t.prompt_ids[1:]
        # the haystack before the needle is the start of the haystack's own tokenization
        assert t.prompt_ids[1:s] == hay_ids[: s - 1]
        # after the needle the haystack goes on where it stopped, up to context_tokens in all,
        # and the rest of the prompt is the question
        budget = t.context_tokens - (e - s)
        rest = e + budget - (s - 1)
        assert t.prompt_ids[e:rest] == hay_ids[s - 1 : budget]
        question = PROMPT_TEMPLATES[lang].format(question=t.needle.question)
        assert tokenizer.decode(t.prompt_ids[rest:]).strip() == question.strip()
        # the needle follows a sentence end
        before = tokenizer.decode(t.prompt_ids[1:s]).rstrip()
        assert before[-1] in ".!?。！？", before[-40:]


def test_prompt_text_and_depth_order(bytelevel):
    needle = load_needles("en")[0]
    trials = [build_trial(bytelevel, "en", needle, 512, d) for d in (0.1, 0.5, 0.9)]
    text = bytelevel.decode(trials[0].prompt_ids, skip_special_tokens=True)
    assert text.endswith(f"\nBased on the content of the text, Question: {needle.question}\nAnswer:")
    starts = [t.needle_span[0] for t in trials]
    assert starts[0] < starts[1] < starts[2]
    budget = 512 - (trials[0].needle_span[1] - trials[0].needle_span[0])
    for t, depth in zip(trials, (0.1, 0.5, 0.9)):
        # nearest sentence end: no English sentence in the haystack is longer than ~80 tokens
        assert abs((t.needle_span[0] - 1) - depth * budget) < 80
        assert (t.lang, t.context_tokens, t.depth, t.needle) == ("en", 512, depth, needle)


def test_english_template_on_other_language(bytelevel):
    needle = load_needles("zh")[1]
    trial = build_trial(bytelevel, "zh", needle, 400, 0.5, template=PROMPT_TEMPLATES["en"])
    text = bytelevel.decode(trial.prompt_ids, skip_special_tokens=True)
    assert text.endswith(f"Question: {needle.question}\nAnswer:")
    localized = build_trial(bytelevel, "zh", needle, 400, 0.5)
    assert bytelevel.decode(localized.prompt_ids).endswith("回答：")


def test_without_special_tokens(bytelevel):
    needle = load_needles("fr")[0]
    trial = build_trial(bytelevel, "fr", needle, 256, 0.5, add_special_tokens=False)
    assert bytelevel.bos_token_id not in trial.prompt_ids
    s, e = trial.needle_span
    assert bytelevel.decode(trial.prompt_ids[s:e]).strip() == needle.needle


def test_default_grid_is_small(bytelevel):
    trials = trial_grid(bytelevel, "de")
    assert len(trials) == 27
    assert {t.context_tokens for t in trials} == {256, 512, 1024}
    assert {t.needle.id for t in trials} == {n.id for n in load_needles("de")[:3]}


def test_trial_errors(bytelevel):
    needle = load_needles("en")[0]
    with pytest.raises(HaystackDataError, match="at most"):
        build_trial(bytelevel, "en", needle, 10**6, 0.5)
    with pytest.raises(HaystackDataError, match="no room"):
        build_trial(bytelevel, "en", needle, 5, 0.5)
    s, e = build_trial(bytelevel, "en", needle, 256, 0.5).needle_span
    with pytest.raises(HaystackDataError, match="no sentence end"):
        build_trial(bytelevel, "en", needle, (e - s) + 5, 0.5)
    with pytest.raises(HaystackDataError, match=r"depth"):
        build_trial(bytelevel, "en", needle, 256, 1.5)
    with pytest.raises(HaystackDataError, match=r"\{question\}"):
        build_trial(bytelevel, "en", needle, 256, 0.5, template="no placeholder")
    with pytest.raises(HaystackDataError, match="between 1 and"):
        trial_grid(bytelevel, "en", needles=0)


# ---------------------------------------------------------------- loaders


def test_unknown_language_lists_available():
    with pytest.raises(HaystackDataError, match=r"'xx'.*available: de, en, fr, zh"):
        load_haystack("xx")
    with pytest.raises(HaystackDataError, match=r"no needles for language 'xx'"):
        load_needles("xx")


def test_malformed_needle_files(tmp_path):
    (tmp_path / "en.txt").write_text("Some text. More text.", encoding="utf-8")
    good = {"lang": "en", "needle": "A fact.", "question": "Q?", "answer": "fact"}
    path = tmp_path / "needles.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(HaystackDataError, match=r"needles.jsonl, line 2: not valid JSON"):
        load_needles("en", tmp_path)
    path.write_text(json.dumps({**good, "answer": ""}) + "\n", encoding="utf-8")
    with pytest.raises(HaystackDataError, match=r"needles.jsonl, line 1: field 'answer'"):
        load_needles("en", tmp_path)
    path.write_text(json.dumps(good) + "\n", encoding="utf-8")
    assert load_needles("en", tmp_path) == [Needle("en", "A fact.", "Q?", "fact")]
    (tmp_path / "de.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(HaystackDataError, match="empty"):
        load_haystack("de", tmp_path)
    path.unlink()
    with pytest.raises(HaystackDataError, match="not found"):
        load_needles("en", tmp_path)


# ---------------------------------------------------------------- keep rule


def test_rouge1_recall_hand_cases():
    # reference tokens: hum a slow waltz next to its cage (8); the answer has 4 of them
    assert rouge1_recall("They hum a slow waltz.", "hum a slow waltz next to its cage", "en") == 0.5
    assert rouge1_recall("The answer: BRIGHT orange!", "bright orange", "en") == 1.0
    # Chinese by character: 3 of the 5 characters of 一勺黑胡椒
    assert rouge1_recall("是黑胡椒", "一勺黑胡椒", "zh") == pytest.approx(0.6)
    assert rouge1_recall("秘密配料是一勺黑胡椒。", "一勺黑胡椒", "zh") == 1.0
    assert rouge1_recall("", "一勺黑胡椒", "zh") == 0.0
