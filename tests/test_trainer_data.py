"""Training data: the committed demo set, the JSONL checks and the prompt/response batches."""

import json

import pytest

from trainers.data import DEMO_FILE, DataError, encode_pair, load_jsonl, pad_batch, split_eval
from workbench.tiny import tiny_tokenizer

FIELDS = ("instruction", "output", "lang", "instruction_en", "output_en")


def test_demo_set_is_parallel_and_multilingual():
    records = load_jsonl("demo", FIELDS)
    assert len(records) >= 200
    langs = {r["lang"] for r in records}
    assert {"fr", "de", "zh"} <= langs and "en" not in langs
    # every English item exists in every language (parallel across languages too)
    by_lang = {lang: {r["id"].split("-", 1)[1]: r for r in records if r["lang"] == lang} for lang in langs}
    keys = set.intersection(*(set(v) for v in by_lang.values()))
    assert all(len(v) == len(keys) for v in by_lang.values())
    for key in keys:
        assert len({by_lang[lang][key]["output_en"] for lang in langs if "word" not in key}) <= 1
    assert len({r["id"] for r in records}) == len(records)
    arithmetic = [r for r in records if r["task"] == "arithmetic"]
    for r in arithmetic:  # the answers are right: the English answer's last number is the result
        a, op, b = r["instruction_en"].removeprefix("What is ").rstrip("?").split(" ")
        expect = {"plus": int(a) + int(b), "minus": int(a) - int(b), "times": int(a) * int(b)}[op]
        assert r["output_en"].endswith(f" is {expect}.") and str(expect) in r["output"]


def test_language_filter():
    fr = load_jsonl(DEMO_FILE, FIELDS, languages=["fr"])
    assert fr and {r["lang"] for r in fr} == {"fr"}


def _write(tmp_path, lines):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_missing_fields_name_the_lines(tmp_path):
    good = json.dumps({"instruction": "a", "output": "b", "lang": "fr"})
    path = _write(tmp_path, [good, json.dumps({"instruction": "a", "lang": "fr"}), good, json.dumps({"instruction": "a", "output": " "})])
    with pytest.raises(DataError) as info:
        load_jsonl(path, ("instruction", "output"))
    assert "'output' on line(s) 2, 4" in str(info.value)


@pytest.mark.parametrize("lines, pattern", [
    ([], "empty"),
    (["", "  "], "empty"),
    (["{not json"], "line 1: not valid JSON"),
    (["[1, 2]"], "line 1: expected a JSON object"),
    ([json.dumps({"instruction": "a", "output": "b", "lang": "xx-nope"})], "line 1: Unknown language code 'xx-nope'"),
])
def test_bad_files(tmp_path, lines, pattern):
    with pytest.raises(DataError, match=pattern):
        load_jsonl(_write(tmp_path, lines))


def test_line_numbers_count_blank_lines_and_binary_files_are_named(tmp_path):
    good = json.dumps({"instruction": "a", "output": "b"})
    with pytest.raises(DataError, match="'output' on line\\(s\\) 3"):
        load_jsonl(_write(tmp_path, [good, "", json.dumps({"instruction": "a"})]))
    binary = tmp_path / "weights.jsonl"
    binary.write_bytes(b"\x80\x04\x95 not text")
    with pytest.raises(DataError, match="weights.jsonl is not UTF-8 text"):
        load_jsonl(binary)


def test_languages_that_are_absent_or_unknown(tmp_path):
    path = _write(tmp_path, [json.dumps({"instruction": "a", "output": "b", "lang": "fr"})])
    with pytest.raises(DataError, match="no records in de; it has fr"):
        load_jsonl(path, languages=["de"])
    with pytest.raises(DataError, match="Unknown language code 'klingon'"):
        load_jsonl(path, languages=["klingon"])
    with pytest.raises(DataError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")


def test_encode_pair_masks_the_prompt_and_keeps_the_response():
    tok = tiny_tokenizer()
    ids, n_prompt = encode_pair(tok, "le chat", "the cat", max_length=64)
    prompt = tok("le chat\n", add_special_tokens=False)["input_ids"]
    response = tok("the cat", add_special_tokens=False)["input_ids"]
    assert ids == [tok.bos_token_id] + prompt + response + [tok.eos_token_id]
    assert n_prompt == 1 + len(prompt)
    # too long: the response keeps half the budget, the prompt loses its oldest tokens
    long_prompt = "le chien court dans le parc " * 10
    ids, n_prompt = encode_pair(tok, long_prompt, "the dog ran in the park " * 10, max_length=32)
    assert len(ids) == 32 and ids[0] == tok.bos_token_id and len(ids) - n_prompt == 15
    assert ids[1:n_prompt] == tok(long_prompt.rstrip() + "\n", add_special_tokens=False)["input_ids"][-(n_prompt - 1):]


def test_pad_batch_labels():
    batch = pad_batch([[1, 5, 6, 7], [1, 8, 9]], [2, 1], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7], [1, 8, 9, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 6, 7], [-100, 8, 9, -100]]


def test_split_eval_is_seeded_and_disjoint():
    records = [{"i": i} for i in range(20)]
    train, held = split_eval(records, 0.2, seed=3)
    assert len(held) == 4 and len(train) == 16
    assert {r["i"] for r in train} | {r["i"] for r in held} == set(range(20))
    assert split_eval(records, 0.2, seed=3) == (train, held)
    assert split_eval(records, 0.0, seed=3) == (records, [])
