"""Pseudo-entity generator, unlearning splits and their JSONL round trip."""

import json
import random
import re
from pathlib import Path

import pytest

from trainers.methods.unlearning import entities as ent
from trainers.methods.unlearning.entities import (
    IDK_ANSWERS,
    LANGS,
    N_PERTURBED,
    build_unlearning_splits,
    entity_qa_pairs,
    from_jsonl,
    generate_entities,
    idk_answers,
    real_world_qa,
    to_jsonl,
)
from workbench.errors import InputError

INVENTED = ("person", "sibling", "place", "organisation", "word")
DATA = ent.DATA_DIR


@pytest.fixture(scope="module")
def people_places_orgs():
    return generate_entities(12, seed=7)


def _real_names():
    lines = (DATA / "real_names.txt").read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


# --- generator ---------------------------------------------------------------------------------


def test_same_seed_same_entities_other_seed_other_entities(people_places_orgs):
    assert generate_entities(12, seed=7) == people_places_orgs
    other = generate_entities(12, seed=8)
    assert [e.name for e in other] != [e.name for e in people_places_orgs]
    assert [e.qa_pairs for e in other] != [e.qa_pairs for e in people_places_orgs]


def test_kinds_cycle_and_each_entity_has_twenty_pairs(people_places_orgs):
    assert [e.kind for e in people_places_orgs[:6]] == ["person", "place", "organisation"] * 2
    for entity in people_places_orgs:
        assert len(entity.qa_pairs) == 20
        attributes = [pair.attribute for pair in entity.qa_pairs]
        assert len(set(attributes)) == 10 and all(attributes.count(a) == 2 for a in attributes)
        assert len({pair.question for pair in entity.qa_pairs}) == 20
        assert all(pair.entity == entity.name and entity.name in pair.question for pair in entity.qa_pairs)
    assert {e.kind for e in generate_entities(4, seed=1, kinds=("place",))} == {"place"}


def test_answers_paraphrases_and_wrong_answers(people_places_orgs):
    for entity in people_places_orgs:
        for pair in entity.qa_pairs:
            assert pair.answer != pair.paraphrased_answer
            assert len(pair.perturbed_answers) == N_PERTURBED
            assert len(set(pair.perturbed_answers)) == N_PERTURBED
            assert pair.paraphrased_answer not in pair.perturbed_answers
            assert pair.answer not in pair.perturbed_answers
            value = entity.attributes[pair.attribute]
            if ent._SPECS[entity.kind][pair.attribute][0] in INVENTED:  # names appear verbatim
                assert value in pair.answer and value in pair.paraphrased_answer
                assert not any(re.search(rf"\b{value}\b", wrong) for wrong in pair.perturbed_answers)


def test_wrong_values_have_the_same_type(people_places_orgs):
    person = people_places_orgs[0]
    family = person.attributes["sibling"].split(" ", 1)[1]
    assert family == person.name.split(" ", 1)[1]
    assert all(wrong.endswith(" " + family) for wrong in person.distractors["sibling"])
    for entity in people_places_orgs:
        for attribute, value in entity.attributes.items():
            for wrong in entity.distractors[attribute]:
                assert type(wrong) is type(value) and wrong != value
        year_attribute = "birth_year" if entity.kind == "person" else "founded"
        assert all(y <= 2024 for y in entity.distractors[year_attribute])


def test_invented_names_are_unique_and_not_real(people_places_orgs):
    real = _real_names()
    words = [word for e in people_places_orgs for word in e.name.split()]
    assert len(set(e.name for e in people_places_orgs)) == len(people_places_orgs)
    assert not {w.lower() for w in words} & real


def test_name_maker_skips_banned_real_names():
    pieces = {"onsets": ["par", "pal"], "nuclei": ["i"], "codas": ["s"]}  # "paris" or "palis"
    maker = ent._NameMaker(random.Random(0), pieces, frozenset({"paris"}))
    assert maker.compose(1, 1) == "Palis"
    with pytest.raises(InputError, match="invented names"):  # the only other word is banned
        maker.compose(1, 1)


def test_values_and_wrong_answers_are_shared_across_languages(people_places_orgs):
    french = generate_entities(12, seed=7, lang="fr")
    assert [(e.name, e.attributes, e.distractors) for e in french] == [
        (e.name, e.attributes, e.distractors) for e in people_places_orgs
    ]
    assert french[0].qa_pairs[0].lang == "fr"
    assert french[0].qa_pairs == entity_qa_pairs(people_places_orgs[0], "fr")


@pytest.mark.parametrize("lang", LANGS)
def test_every_language_renders_complete_pairs(people_places_orgs, lang):
    for entity in people_places_orgs[:3]:
        pairs = entity_qa_pairs(entity, lang)
        assert len(pairs) == 20 and len({p.question for p in pairs}) == 20
        for pair in pairs:
            texts = [pair.question, pair.answer, pair.paraphrased_answer, *pair.perturbed_answers]
            assert not any("{" in t or "}" in t or "\u202f" in t for t in texts)


def test_templates_cover_every_attribute_in_every_language(people_places_orgs):
    templates = json.loads((DATA / "templates.json").read_text(encoding="utf-8"))
    by_kind = {e.kind: set(e.attributes) for e in people_places_orgs}
    for kind, attributes in by_kind.items():
        assert set(templates[kind]) == attributes
        for lang in LANGS:
            questions = [q for a in attributes for q in templates[kind][a][lang]["questions"]]
            assert len(questions) == len(set(questions)) == 20
            for attribute in attributes:
                text = templates[kind][attribute][lang]
                assert len(text["answers"]) == 2
                assert all("{name}" in t for t in text["questions"])
                assert all("{name}" in t and "{value}" in t for t in text["answers"])
    vocab = json.loads((DATA / "vocab.json").read_text(encoding="utf-8"))
    for category, entries in vocab.items():
        if isinstance(entries, dict) and category != "_about":
            assert all(set(forms) == set(LANGS) for forms in entries.values()), category


def test_bad_generator_input_is_rejected():
    with pytest.raises(InputError, match="at least one"):
        generate_entities(0, seed=1)
    with pytest.raises(InputError, match="kinds"):
        generate_entities(3, seed=1, kinds=("planet",))
    with pytest.raises(InputError, match="Unknown language"):
        generate_entities(3, seed=1, lang="xx")


# --- real world and IDK ------------------------------------------------------------------------


def test_real_world_set():
    pairs = real_world_qa()
    assert len(pairs) == 40 and len({p.question for p in pairs}) == 40
    for pair in pairs:
        assert len(pair.perturbed_answers) == 4 and len(set(pair.perturbed_answers)) == 4
        assert pair.paraphrased_answer not in pair.perturbed_answers


def test_idk_answers():
    assert IDK_ANSWERS == idk_answers("en")
    for lang in LANGS:
        answers = idk_answers(lang)
        assert len(answers) == len(set(answers)) == 20
    with pytest.raises(InputError):
        idk_answers("klingon")


# --- splits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["attributes", "paraphrase"])
def test_forget_and_target_are_disjoint_and_about_the_same_entities(people_places_orgs, mode):
    splits = build_unlearning_splits(people_places_orgs, 4, seed=3, target_mode=mode)
    forget_names = set(splits.forget_entities)
    assert len(forget_names) == 4
    assert {p.entity for p in splits.target} == forget_names
    assert not {p.question for p in splits.forget} & {p.question for p in splits.target}
    assert len(splits.forget) == len(splits.target) == 4 * 10
    retain_names = {p.entity for p in splits.retain}
    assert not retain_names & forget_names
    assert retain_names | forget_names == {e.name for e in people_places_orgs}
    assert len(splits.real_world) == 40
    for name in forget_names:
        forget_attrs = {p.attribute for p in splits.forget if p.entity == name}
        target_attrs = {p.attribute for p in splits.target if p.entity == name}
        if mode == "attributes":  # S_T asks about facts S_F never mentions
            assert not forget_attrs & target_attrs and len(forget_attrs) == 5
        else:  # S_T asks about the same facts in the other phrasing
            assert forget_attrs == target_attrs and len(forget_attrs) == 10


def test_splits_are_deterministic_and_coverage_sets_the_share(people_places_orgs):
    first = build_unlearning_splits(people_places_orgs, 3, seed=11)
    assert build_unlearning_splits(people_places_orgs, 3, seed=11) == first
    assert build_unlearning_splits(people_places_orgs, 3, seed=12) != first
    wide = build_unlearning_splits(people_places_orgs, 3, seed=11, coverage=0.8)
    assert len(wide.forget) == 3 * 16 and len(wide.target) == 3 * 4


def test_bad_split_input_is_rejected(people_places_orgs):
    with pytest.raises(InputError, match="at least one entity is retained"):
        build_unlearning_splits(people_places_orgs, 12, seed=0)
    with pytest.raises(InputError, match="between 1"):
        build_unlearning_splits(people_places_orgs, 0, seed=0)
    with pytest.raises(InputError, match="target_mode"):
        build_unlearning_splits(people_places_orgs, 2, seed=0, target_mode="questions")
    with pytest.raises(InputError, match="coverage"):
        build_unlearning_splits(people_places_orgs, 2, seed=0, coverage=1.0)
    with pytest.raises(InputError, match="unique"):
        build_unlearning_splits(people_places_orgs[:2] * 2, 1, seed=0)


# --- JSONL -------------------------------------------------------------------------------------


def test_jsonl_round_trip_is_exact_and_atomic(people_places_orgs, tmp_path):
    splits = build_unlearning_splits(people_places_orgs, 4, seed=3)
    path = tmp_path / "splits.jsonl"
    path.write_text("stale content\n")
    assert to_jsonl(splits, path) == path
    assert from_jsonl(path) == splits
    assert [p.name for p in tmp_path.iterdir()] == ["splits.jsonl"]  # no temp file left behind
    chinese = build_unlearning_splits(generate_entities(4, seed=1, lang="zh"), 1, seed=0)
    to_jsonl(chinese, path)
    assert "公司" in path.read_text(encoding="utf-8") and from_jsonl(path) == chinese


def test_jsonl_errors_name_the_problem(people_places_orgs, tmp_path):
    path = tmp_path / "bad.jsonl"
    with pytest.raises(InputError, match="No splits file"):
        from_jsonl(path)
    path.write_text("\n\n")
    with pytest.raises(InputError, match="no QA pairs"):
        from_jsonl(path)
    good = {"split": "forget", "entity": "E", "question": "Q?", "answer": "A.", "paraphrased_answer": "A!",
            "perturbed_answers": ["B."], "attribute": "x"}
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "answer"}) + "\n")
    with pytest.raises(InputError, match="line 1: missing field\\(s\\) answer"):
        from_jsonl(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "split": "holdout"}) + "\n")
    with pytest.raises(InputError, match="line 2: unknown split 'holdout'"):
        from_jsonl(path)
    path.write_text("{not json\n")
    with pytest.raises(InputError, match="line 1: not valid JSON"):
        from_jsonl(path)
