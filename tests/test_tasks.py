"""Task loaders: every committed sample, the official benchmark layouts, and the error messages."""

import json

import pytest

from workbench.datasets.tasks import (
    DATA_DIR,
    KINDS,
    Item,
    TaskDataError,
    format_options,
    get_task,
    list_tasks,
    load_task,
    read_records,
    split_items,
)

COMMITTED = [(name, lang) for name in list_tasks() for lang in get_task(name).committed_languages()]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_registry():
    assert set(list_tasks()) >= {"xnli", "xcopa", "xquad", "mkqa", "globalopinion",
                                 "word_translation", "capitals", "xlsum"}
    for name in list_tasks():
        task = get_task(name)
        assert task.kind in KINDS
        assert task.templates.keys() >= set(task.languages) | {"en"}
    assert get_task("xnli").chance == pytest.approx(1 / 3)
    assert get_task("xcopa").chance == pytest.approx(1 / 2)
    assert get_task("capitals").chance == pytest.approx(1 / 4)
    assert get_task("xlsum").chance is None


@pytest.mark.parametrize("name,minimum,langs", [
    ("xnli", 40, {"en", "fr", "de", "es", "zh", "ja", "ru"}),
    ("xcopa", 40, {"en", "fr", "de", "es", "zh", "ja", "ru"}),
    ("xquad", 40, {"en", "fr", "de", "es", "zh", "ja", "ru"}),
    ("globalopinion", 40, {"en", "fr", "de", "es", "zh", "ja", "ru"}),
    ("capitals", 40, {"en", "fr", "de", "es", "zh", "ja", "ru"}),
    ("word_translation", 40, {"fr", "de", "es", "zh", "ja", "ru"}),
    ("mkqa", 40, {"en", "fr", "de", "es", "zh", "ja", "ru"}),
    ("xlsum", 10, {"en", "fr", "de", "zh", "ja"}),
])
def test_committed_sample_sizes(name, minimum, langs):
    assert set(get_task(name).committed_languages()) >= langs
    for lang in langs:
        assert len(load_task(name, lang)) >= minimum


@pytest.mark.parametrize("name,lang", COMMITTED)
def test_committed_sample_loads_and_pairs_with_english(name, lang):
    items = load_task(name, lang)
    task = get_task(name)
    assert len({it.id for it in items}) == len(items)
    assert all(isinstance(it, Item) and it.task == name and it.lang == lang for it in items)
    assert all(it.prompt and it.golds and all(g.strip() for g in it.golds) for it in items)
    assert all(it.english_prompt for it in items)
    if lang == "en":
        assert all(it.english_prompt == it.prompt for it in items)
    elif task.english_source in ("file", "same_file"):
        english = {it.id: it for it in load_task(name, "en")}
        assert {it.id for it in items} == set(english)
        assert all(it.english_prompt == english[it.id].prompt != it.prompt for it in items)
    if task.kind in ("multiple_choice", "answer_probability"):
        for it in items:
            assert 0 <= it.label < len(it.choices)
            assert it.golds[0] == it.choices[it.label]
    if task.kind == "multiple_choice":
        for it in items:
            assert format_options(it.choices) in it.prompt
            if lang != "en":
                assert len(it.meta["english_choices"]) == len(it.choices)


def test_mc_labels_are_not_all_the_same():
    for name in ("xnli", "xcopa", "globalopinion"):
        for lang in ("en", "zh"):
            labels = [it.label for it in load_task(name, lang)]
            assert len(set(labels)) == len(load_task(name, lang)[0].choices)


def test_culture_labels_differ_between_languages():
    by_lang = {lang: {it.id: it.label for it in load_task("globalopinion", lang)}
               for lang in get_task("globalopinion").committed_languages()}
    ids = by_lang["en"]
    differing = [i for i in ids if len({by_lang[lang][i] for lang in by_lang}) > 1]
    assert len(differing) >= 30


@pytest.mark.parametrize("lang", get_task("xquad").committed_languages())
def test_committed_xquad_answers_are_context_spans(lang):
    for rec in read_records(DATA_DIR / "xquad" / f"{lang}.jsonl"):
        for text, start in zip(rec["answers"]["text"], rec["answers"]["answer_start"]):
            assert rec["context"][start:start + len(text)] == text


def test_word_translation_prompts():
    item = next(it for it in load_task("word_translation", "fr") if it.id == "word-001")
    assert item.prompt.endswith('Français: "chien" - English: "')
    assert item.english_prompt.endswith('French: "chien" - English: "')
    assert item.prompt.count("\n") == item.meta["shots"] == 4
    assert item.answer == ["dog"] and item.meta["answer_prefix"] == ""
    assert len(item.choices) == 4 and item.choices[0] == "dog"
    demos = item.prompt.split("\n")[:-1]
    assert not any(f'"{c}"' in d for c in item.choices[1:] for d in demos)


def test_capitals_prompts():
    fr = next(it for it in load_task("capitals", "fr") if it.id == "capital-001")
    assert fr.prompt.endswith("La capitale de la France est")
    assert fr.english_prompt.endswith("The capital of France is")
    assert fr.golds == ["Paris"] and fr.meta["answer_prefix"] == " "
    assert "La capitale de l'Allemagne est Berlin." in fr.prompt
    zh = next(it for it in load_task("capitals", "zh") if it.id == "capital-001")
    assert zh.prompt.endswith("法国的首都是") and zh.meta["answer_prefix"] == ""


def test_task_scores_items():
    xnli = get_task("xnli")
    item = load_task("xnli", "fr")[1]  # neutral
    assert item.label == 1
    assert xnli.score(" (B) neutre", item) == 1.0
    assert xnli.score(" neutral", item) == 1.0  # the English option word is accepted too
    assert xnli.score(" (A) (B)", item) == 0.0
    cap = load_task("capitals", "en")[0]
    assert get_task("capitals").score(" Paris.\nThe", cap) == 1.0
    qa = load_task("xquad", "zh")[0]
    assert get_task("xquad").score("6万只工蜂", qa) == 1.0
    summary = load_task("xlsum", "zh")[0]
    assert get_task("xlsum").score(summary.answer, summary) == pytest.approx(1.0)


def test_split_items():
    items = load_task("xnli", "fr")
    sample, unseen = split_items(items, 10, seed=3)
    assert len(sample) == 10 and len(unseen) == len(items) - 10
    assert {it.id for it in sample}.isdisjoint(it.id for it in unseen)
    assert [it.id for it in sample + unseen if it.id in {s.id for s in sample}] == [it.id for it in sample]
    again, _ = split_items(items, 10, seed=3)
    assert [it.id for it in again] == [it.id for it in sample]
    zh_sample, _ = split_items(load_task("xnli", "zh"), 10, seed=3)
    assert [it.id for it in zh_sample] == [it.id for it in sample]
    other, _ = split_items(items, 10, seed=4)
    assert {it.id for it in other} != {it.id for it in sample}
    assert [it.id for it in load_task("xnli", "fr", split="sample", n_sample=10, seed=3)] == \
        [it.id for it in sample]
    assert len(load_task("xnli", "fr", split="unseen", n_sample=10, seed=3)) == len(items) - 10
    for bad in (0, len(items)):
        with pytest.raises(TaskDataError, match="n_sample"):
            split_items(items, bad)


# ------------------------------------------------------------------------------- official layouts

def test_xnli_original_layout_with_languages_in_one_file(tmp_path):
    rows = []
    for lang, p, h in [("en", "A man sleeps.", "A person rests."), ("fr", "Un homme dort.", "Une personne se repose.")]:
        rows.append({"language": lang, "gold_label": "entailment", "sentence1": p, "sentence2": h,
                     "pairID": "7", "promptID": "3", "genre": "fiction"})
    rows.append({"language": "fr", "gold_label": "contradiction", "sentence1": "Il pleut.",
                 "sentence2": "Il fait sec.", "pairID": "8"})
    rows.append({"language": "en", "gold_label": "contradiction", "sentence1": "It rains.",
                 "sentence2": "It is dry.", "pairID": "8"})
    path = _write_jsonl(tmp_path / "xnli.dev.jsonl", rows)
    items = load_task("xnli", "fr", path=path, english_path=path)
    assert [(it.id, it.label) for it in items] == [("7", 0), ("8", 2)]
    assert "Un homme dort." in items[0].prompt and "A man sleeps." in items[0].english_prompt
    assert load_task("xnli", "fr", path=path)[0].english_prompt is None
    with pytest.raises(TaskDataError, match="no lines for language 'de'"):
        load_task("xnli", "de", path=path)


def test_xnli_hub_layout_without_ids(tmp_path):
    fr = _write_jsonl(tmp_path / "fr.jsonl", [{"premise": "Un chat.", "hypothesis": "Un animal.", "label": 0},
                                             {"premise": "Un chat.", "hypothesis": "Un chien.", "label": 2}])
    en = _write_jsonl(tmp_path / "en.jsonl", [{"premise": "A cat.", "hypothesis": "An animal.", "label": 0},
                                             {"premise": "A cat.", "hypothesis": "A dog.", "label": 2}])
    items = load_task("xnli", "fr", path=fr, english_path=en)
    assert [it.id for it in items] == ["0", "1"]
    assert "A dog." in items[1].english_prompt and items[1].answer == "contradiction"


def test_xcopa_official_line(tmp_path):
    path = _write_jsonl(tmp_path / "test.zh.jsonl", [
        {"premise": "我的身体投下了阴影。", "choice1": "太阳升起了。", "choice2": "草被割了。",
         "question": "cause", "label": 0, "idx": 1, "changed": False}])
    (item,) = load_task("xcopa", "zh", path=path)
    assert item.id == "1" and item.choices == ["太阳升起了。", "草被割了。"] and item.label == 0
    assert "原因是什么" in item.prompt and item.english_prompt is None


def test_xquad_squad_json(tmp_path):
    def squad(context, question, answer):
        return {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": [
            {"id": "q1", "question": question,
             "answers": [{"text": answer, "answer_start": context.index(answer)}]}]}]}]}
    de = tmp_path / "xquad.de.json"
    de.write_text(json.dumps(squad("Der Turm ist 300 Meter hoch.", "Wie hoch?", "300 Meter")), encoding="utf-8")
    en = tmp_path / "xquad.en.json"
    en.write_text(json.dumps(squad("The tower is 300 metres tall.", "How tall?", "300 metres")), encoding="utf-8")
    (item,) = load_task("xquad", "de", path=de, english_path=en)
    assert item.answer == ["300 Meter"] and item.meta["answer_start"] == [13]
    assert "Der Turm" in item.prompt and "How tall?" in item.english_prompt


def test_xquad_flat_jsonl(tmp_path):
    path = _write_jsonl(tmp_path / "x.jsonl", [{"id": "a", "context": "Rome is old.", "question": "What is old?",
                                               "answers": {"text": ["Rome"], "answer_start": [0]}}])
    (item,) = load_task("xquad", "en", path=path)
    assert item.golds == ["Rome"] and item.english_prompt == item.prompt


def test_mkqa_line_with_all_languages(tmp_path):
    line = {"example_id": 42, "query": "how many legs does a spider have",
            "queries": {"en": "how many legs does a spider have", "zh_cn": "蜘蛛有几条腿", "fr": "combien de pattes a une araignée"},
            "answers": {"en": [{"type": "number", "text": "8", "aliases": ["eight"]}],
                        "zh_cn": [{"type": "number", "text": "8", "aliases": ["八"]}],
                        "fr": [{"type": "number", "text": "8", "aliases": ["huit"]}]}}
    unanswerable = {"example_id": 43, "queries": {"en": "why?", "zh_cn": "为什么？", "fr": "pourquoi ?"},
                    "answers": {"en": [{"type": "unanswerable", "text": None}],
                                "zh_cn": [{"type": "unanswerable", "text": None}],
                                "fr": [{"type": "unanswerable", "text": None}]}}
    path = _write_jsonl(tmp_path / "mkqa.jsonl", [line, unanswerable])
    (item,) = load_task("mkqa", "zh", path=path)
    assert item.id == "42" and item.golds == ["8", "八"]
    assert "蜘蛛有几条腿" in item.prompt and "spider" in item.english_prompt
    assert get_task("mkqa").score("蜘蛛有八条腿。", item) == 1.0
    with pytest.raises(TaskDataError, match="no question/answers for language 'de'"):
        load_task("mkqa", "de", path=path)


def test_xlsum_line(tmp_path):
    path = _write_jsonl(tmp_path / "french_test.jsonl", [
        {"id": "n1", "url": "https://example.org/1", "title": "Titre", "summary": "Un résumé.", "text": "Un texte."}])
    (item,) = load_task("xlsum", "fr", path=path)
    assert item.answer == "Un résumé." and item.meta["title"] == "Titre" and "Un texte." in item.prompt


def test_globalopinion_options_as_string(tmp_path):
    path = _write_jsonl(tmp_path / "g.jsonl", [{"question": "Q?", "options": "['Yes', 'No', 'Maybe']", "label": 1}])
    (item,) = load_task("globalopinion", "en", path=path)
    assert item.choices == ["Yes", "No", "Maybe"] and item.answer == "No"


# ---------------------------------------------------------------------------------------- errors

def test_error_unknown_task_and_language_and_split():
    with pytest.raises(TaskDataError, match="unknown task 'xnlii'; known tasks: .*xnli"):
        load_task("xnlii", "fr")
    with pytest.raises(TaskDataError, match="no prompt template for language 'sw'.*supported: en"):
        load_task("xnli", "sw")
    with pytest.raises(TaskDataError, match="no prompt template for language 'en'"):
        load_task("word_translation", "en")
    with pytest.raises(TaskDataError, match="unknown split 'train'"):
        load_task("xnli", "fr", split="train")
    with pytest.raises(TaskDataError, match="no committed sample of xlsum in 'es'.*pass path="):
        load_task("xlsum", "es")
    assert issubclass(TaskDataError, ValueError)


def test_error_missing_empty_and_malformed_files(tmp_path):
    with pytest.raises(TaskDataError, match="no such file"):
        load_task("xnli", "fr", path=tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(TaskDataError, match="is empty"):
        load_task("xnli", "fr", path=empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"premise": "a", "hypothesis": "b", "label": 0}\n{"premise": \n', encoding="utf-8")
    with pytest.raises(TaskDataError, match="line 2: not valid JSON"):
        load_task("xnli", "fr", path=bad)
    scalars = tmp_path / "scalars.json"
    scalars.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(TaskDataError, match="record 1 is a int"):
        load_task("xnli", "fr", path=scalars)


@pytest.mark.parametrize("name,row,message", [
    ("xnli", {"premise": "a", "label": 0}, "lacks field\\(s\\) hypothesis .*XNLI layout"),
    ("xnli", {"premise": "a", "hypothesis": "b", "label": 5}, "label 5 is not 0-2"),
    ("xnli", {"sentence1": "a", "sentence2": "b"}, "lacks field\\(s\\) gold_label.*XNLI 1.0"),
    ("xcopa", {"premise": "a", "choice1": "b", "choice2": "c", "question": "why", "label": 0},
     "question 'why' is not 'cause' or 'effect'"),
    ("xcopa", {"premise": "a", "choice1": "b", "choice2": "c", "question": "cause"}, "lacks field\\(s\\) label"),
    ("xquad", {"context": "c", "question": "q"}, "lacks field\\(s\\) answers .*SQuAD"),
    ("xquad", {"context": "c", "question": "q", "answers": {"text": [], "answer_start": []}},
     "answer must be a non-empty string"),
    ("mkqa", {"example_id": 1, "queries": {"en": "q"}}, "lacks field\\(s\\) answers .*MKQA"),
    ("xlsum", {"id": "1", "text": "t"}, "lacks field\\(s\\) summary .*XL-Sum"),
    ("globalopinion", {"question": "q", "options": ["a", "b"], "label": 2}, "label 2 is not an index"),
    ("capitals", {"id": "c1", "prompt": "The capital of X is"}, "lacks field\\(s\\) answer"),
    ("word_translation", {"id": "w1", "word": "chien", "answer": []}, "answer must be a non-empty"),
])
def test_error_bad_records_name_the_problem(tmp_path, name, row, message):
    lang = "fr" if name in ("word_translation", "xnli") else "en"
    path = _write_jsonl(tmp_path / "f.jsonl", [row])
    with pytest.raises(TaskDataError, match=message):
        load_task(name, lang, path=path)


def test_error_duplicate_ids_and_missing_english(tmp_path):
    dup = _write_jsonl(tmp_path / "dup.jsonl", [{"id": "1", "premise": "a", "hypothesis": "b", "label": 0}] * 2)
    with pytest.raises(TaskDataError, match="id '1' occurs more than once"):
        load_task("xnli", "fr", path=dup)
    fr = _write_jsonl(tmp_path / "fr.jsonl", [{"id": "1", "premise": "a", "hypothesis": "b", "label": 0}])
    en = _write_jsonl(tmp_path / "en.jsonl", [{"id": "2", "premise": "a", "hypothesis": "b", "label": 0}])
    with pytest.raises(TaskDataError, match="no English version of id\\(s\\) 1"):
        load_task("xnli", "fr", path=fr, english_path=en)
