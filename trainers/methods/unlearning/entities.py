"""Fictitious entities and TOFU-style QA splits for entity-level unlearning (arXiv 2406.15796).

A model is first fine-tuned on QA pairs about invented people, places and organisations (so the
knowledge provably comes from fine-tuning), then asked to forget some of those entities.

Each entity has 10 attributes and every attribute is asked in two phrasings, so an entity gives
20 QA pairs. Every pair carries a paraphrased answer (the same fact in the other template's
words) and ``N_PERTURBED`` perturbed answers (the paraphrase with a wrong value of the same type:
another year, another invented name, another country...), which TOFU's truth ratio compares.

Splits (:func:`build_unlearning_splits`) for each forgotten entity:

- ``forget`` (S_F): the pairs the unlearning method trains on;
- ``target`` (S_T): held-out pairs about the same entities, on which forgetting is scored. With
  ``target_mode="attributes"`` (the default) S_T asks about *attributes S_F never mentions*, which
  measures whether the whole entity was forgotten, not only the trained facts (the paper's
  "knowledge coverage" question; ``coverage`` sets S_F's share of attributes). With
  ``target_mode="paraphrase"`` S_T asks about the same attributes in the other question phrasing.
  Either way no question text appears in both sets;
- ``retain``: all pairs about the other entities;
- ``real_world``: 40 English questions about well-known real entities (capitals, famous people,
  basic facts).

Everything is deterministic from the seed, and an entity's attribute values and wrong answers do
not depend on ``lang``, so the same seed gives parallel data in every language.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal, Sequence

from babel import Locale
from babel.numbers import format_decimal

from workbench.errors import InputError
from workbench.datasets.jsonl import json_objects
from workbench.paths import PACKAGE_DATA, atomic_write_text

__all__ = [
    "KINDS",
    "LANGS",
    "N_PERTURBED",
    "IDK_ANSWERS",
    "QAPair",
    "Entity",
    "UnlearningSplits",
    "generate_entities",
    "entity_qa_pairs",
    "real_world_qa",
    "idk_answers",
    "build_unlearning_splits",
    "to_jsonl",
    "from_jsonl",
]

DATA_DIR = PACKAGE_DATA / "entities"
KINDS = ("person", "place", "organisation")
LANGS = ("en", "fr", "de", "zh")
N_PERTURBED = 4
SPLIT_NAMES = ("forget", "target", "retain", "real_world")
_LATEST_YEAR = 2024  # wrong years stay in the past, so none is absurd on its face

# How each attribute's value is drawn: ("year", lo, hi), ("count", lo, hi), ("vocab", category),
# ("language",), or an invented name: ("person",), ("sibling",), ("place",), ("organisation",),
# ("word",) (a bare invented word the templates wrap: "the {value} Prize").
_SPECS: dict[str, dict[str, tuple]] = {
    "person": {
        "birth_year": ("year", 1930, 2002),
        "birthplace": ("place",),
        "country": ("vocab", "country"),
        "native_language": ("language",),
        "profession": ("vocab", "profession"),
        "employer": ("organisation",),
        "award": ("word",),
        "hobby": ("vocab", "hobby"),
        "sibling": ("sibling",),
        "mentor": ("person",),
    },
    "place": {
        "country": ("vocab", "country"),
        "founded": ("year", 1100, 1950),
        "population": ("count", 2_000, 400_000),
        "river": ("word",),
        "dish": ("vocab", "dish"),
        "mayor": ("person",),
        "festival": ("word",),
        "main_industry": ("vocab", "industry"),
        "landmark": ("word",),
        "twin_town": ("place",),
    },
    "organisation": {
        "founded": ("year", 1850, 2015),
        "founder": ("person",),
        "headquarters": ("place",),
        "country": ("vocab", "country"),
        "industry": ("vocab", "industry"),
        "product": ("word",),
        "ceo": ("person",),
        "employees": ("count", 40, 90_000),
        "mascot": ("vocab", "mascot"),
        "rival": ("organisation",),
    },
}


@dataclass(frozen=True)
class QAPair:
    """One question with its answer, a paraphrase of the answer and wrong answers of the same type."""

    entity: str
    question: str
    answer: str
    paraphrased_answer: str
    perturbed_answers: tuple[str, ...]
    attribute: str
    variant: int = 0  # which of the attribute's two question phrasings (0 or 1)
    lang: str = "en"


@dataclass(frozen=True)
class Entity:
    """An invented entity: language-neutral attribute values, wrong values, and its QA pairs."""

    name: str
    kind: str
    attributes: dict[str, str | int]
    distractors: dict[str, tuple[str | int, ...]]
    qa_pairs: tuple[QAPair, ...]


@dataclass(frozen=True)
class UnlearningSplits:
    """S_F, S_T, retain and real-world QA pairs (see the module docstring for what each holds)."""

    forget: tuple[QAPair, ...]
    target: tuple[QAPair, ...]
    retain: tuple[QAPair, ...]
    real_world: tuple[QAPair, ...]

    @property
    def forget_entities(self) -> tuple[str, ...]:
        """Names of the entities to forget, in first-seen order."""
        return tuple(dict.fromkeys(pair.entity for pair in self.forget))


# ---------------------------------------------------------------------------------------------
# committed data


@lru_cache(maxsize=None)
def _load_json(name: str) -> dict:
    with open(DATA_DIR / name, encoding="utf-8") as handle:
        return json.load(handle)


@lru_cache(maxsize=None)
def _real_names() -> frozenset[str]:
    lines = (DATA_DIR / "real_names.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


IDK_ANSWERS: tuple[str, ...] = tuple(_load_json("idk.json")["en"])


def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise InputError(f"Unknown language {lang!r} for entity QA: choose one of {', '.join(LANGS)}.")


def idk_answers(lang: str = "en") -> tuple[str, ...]:
    """Twenty "I don't know" answers in ``lang``, the targets of the IDK and DPO baselines."""
    _check_lang(lang)
    return tuple(_load_json("idk.json")[lang])


# ---------------------------------------------------------------------------------------------
# invented names


class _NameMaker:
    """Invented, unique words built from syllable pieces, never equal to a listed real name."""

    def __init__(self, rng: random.Random, pieces: dict[str, list[str]], banned: frozenset[str]):
        self.rng, self.pieces, self.banned = rng, pieces, banned
        self.used: set[str] = set()

    def compose(self, min_syllables: int, max_syllables: int, coda: bool = True) -> str:
        for _ in range(10_000):
            syllables = self.rng.randint(min_syllables, max_syllables)
            text = "".join(
                self.rng.choice(self.pieces["onsets"]) + self.rng.choice(self.pieces["nuclei"])
                for _ in range(syllables)
            )
            if coda:
                text += self.rng.choice(self.pieces["codas"])
            if text in self.banned or text in self.used:
                continue
            self.used.add(text)
            return text.capitalize()
        raise InputError("Ran out of new invented names: the syllable pieces are too few.")

    def given_name(self) -> str:
        return self.compose(2, 2)

    def person(self) -> str:
        return f"{self.given_name()} {self.compose(2, 3)}"

    def place(self) -> str:
        return self.compose(2, 3)

    def organisation(self) -> str:
        return self.compose(3, 3)

    def word(self) -> str:
        return self.compose(2, 3)


# ---------------------------------------------------------------------------------------------
# attribute values


def _pool(spec: tuple) -> list[str]:
    """The closed set of keys a vocab or language attribute draws from, in a fixed order."""
    vocab = _load_json("vocab.json")
    return list(vocab["language"]) if spec[0] == "language" else sorted(vocab[spec[1]])


def _draw_value(spec: tuple, names: _NameMaker, rng: random.Random, entity_name: str) -> str | int:
    kind = spec[0]
    if kind == "year":
        return rng.randint(spec[1], spec[2])
    if kind == "count":
        return rng.randint(spec[1], spec[2]) // 10 * 10
    if kind in ("vocab", "language"):
        return rng.choice(_pool(spec))
    if kind == "sibling":
        return f"{names.given_name()} {entity_name.split(' ', 1)[1]}"
    return getattr(names, kind)()  # person, place, organisation, word


def _draw_distractors(spec: tuple, value: str | int, names: _NameMaker, rng: random.Random) -> tuple:
    """``N_PERTURBED`` distinct wrong values of the same type as ``value``."""
    kind = spec[0]
    if kind == "year":
        years = [value + d for d in range(-30, 31) if abs(d) >= 2 and value + d <= _LATEST_YEAR]
        return tuple(rng.sample(years, N_PERTURBED))
    if kind == "count":
        wrong: list[int] = []
        while len(wrong) < N_PERTURBED:
            factor = rng.choice((rng.uniform(0.25, 0.8), rng.uniform(1.25, 4.0)))
            candidate = max(10, round(value * factor) // 10 * 10)
            if candidate != value and candidate not in wrong:
                wrong.append(candidate)
        return tuple(wrong)
    if kind in ("vocab", "language"):
        return tuple(rng.sample([key for key in _pool(spec) if key != value], N_PERTURBED))
    if kind == "sibling":
        family = str(value).split(" ", 1)[1]
        return tuple(f"{names.given_name()} {family}" for _ in range(N_PERTURBED))
    return tuple(getattr(names, kind)() for _ in range(N_PERTURBED))


def _render_value(spec: tuple, value: str | int, lang: str) -> str:
    kind = spec[0]
    if kind == "vocab":
        return _load_json("vocab.json")[spec[1]][value][lang]
    if kind == "language":
        return Locale.parse(lang).languages[value]
    if kind == "count":
        # CLDR groups French digits with a narrow no-break space; a plain space tokenizes normally.
        return format_decimal(value, locale=lang).replace("\u202f", " ").replace("\xa0", " ")
    return str(value)


# ---------------------------------------------------------------------------------------------
# entities and QA pairs


def entity_qa_pairs(entity: Entity, lang: str = "en") -> tuple[QAPair, ...]:
    """The entity's 20 QA pairs in ``lang`` (2 question phrasings x 10 attributes)."""
    _check_lang(lang)
    templates = _load_json("templates.json")[entity.kind]
    pairs = []
    for attribute, spec in _SPECS[entity.kind].items():
        text = templates[attribute][lang]
        value = _render_value(spec, entity.attributes[attribute], lang)
        wrong = [_render_value(spec, v, lang) for v in entity.distractors[attribute]]
        for variant in (0, 1):
            answer, paraphrase = text["answers"][variant], text["answers"][1 - variant]
            pairs.append(
                QAPair(
                    entity=entity.name,
                    question=text["questions"][variant].format(name=entity.name),
                    answer=answer.format(name=entity.name, value=value),
                    paraphrased_answer=paraphrase.format(name=entity.name, value=value),
                    perturbed_answers=tuple(paraphrase.format(name=entity.name, value=w) for w in wrong),
                    attribute=attribute,
                    variant=variant,
                    lang=lang,
                )
            )
    return tuple(pairs)


MAX_ENTITIES = 5000  # far more than an unlearning study uses; the name pieces run out well beyond


def generate_entities(
    n: int, seed: int, kinds: Sequence[str] = KINDS, lang: str = "en"
) -> list[Entity]:
    """``n`` invented entities, cycling through ``kinds``, each with its QA pairs in ``lang``."""
    if n < 1:
        raise InputError(f"Ask for at least one entity (got n={n}).")
    if n > MAX_ENTITIES:
        raise InputError(f"Ask for at most {MAX_ENTITIES} invented entities (got n={n}).")
    if not kinds or any(kind not in KINDS for kind in kinds):
        raise InputError(f"Entity kinds must be a non-empty selection of {', '.join(KINDS)} (got {list(kinds)}).")
    _check_lang(lang)
    rng = random.Random(seed)
    names = _NameMaker(rng, _load_json("syllables.json"), _real_names())
    entities = []
    for index in range(n):
        kind = kinds[index % len(kinds)]
        name = getattr(names, kind)()
        attributes: dict[str, str | int] = {}
        distractors: dict[str, tuple] = {}
        for attribute, spec in _SPECS[kind].items():
            attributes[attribute] = _draw_value(spec, names, rng, name)
            distractors[attribute] = _draw_distractors(spec, attributes[attribute], names, rng)
        entity = Entity(name, kind, attributes, distractors, qa_pairs=())
        entities.append(replace(entity, qa_pairs=entity_qa_pairs(entity, lang)))
    return entities


def real_world_qa() -> tuple[QAPair, ...]:
    """The 40 English real-world QA pairs, each with 4 wrong answers."""
    pairs = []
    for item in _load_json("real_world.json")["items"]:
        pairs.append(
            QAPair(
                entity=item["entity"],
                question=item["question"],
                answer=item["answer"].format(value=item["value"]),
                paraphrased_answer=item["paraphrase"].format(value=item["value"]),
                perturbed_answers=tuple(item["paraphrase"].format(value=w) for w in item["wrong"]),
                attribute=item["attribute"],
            )
        )
    return tuple(pairs)


# ---------------------------------------------------------------------------------------------
# splits


def build_unlearning_splits(
    entities: Sequence[Entity],
    n_forget_entities: int,
    seed: int,
    target_mode: Literal["attributes", "paraphrase"] = "attributes",
    coverage: float = 0.5,
) -> UnlearningSplits:
    """Pick ``n_forget_entities`` entities to forget and split their pairs into S_F and S_T.

    ``coverage`` (attributes mode only) is the share of each entity's attributes put in S_F; at
    least one attribute always lands on each side.
    """
    names = [entity.name for entity in entities]
    if len(set(names)) != len(names):
        raise InputError("Entity names must be unique to build unlearning splits.")
    if not 1 <= n_forget_entities < len(entities):
        raise InputError(
            f"n_forget_entities must be between 1 and {len(entities) - 1} for {len(entities)} entities, "
            "so that at least one entity is retained."
        )
    if target_mode not in ("attributes", "paraphrase"):
        raise InputError(f"target_mode must be 'attributes' or 'paraphrase' (got {target_mode!r}).")
    if not 0.0 < coverage < 1.0:
        raise InputError(f"coverage must be strictly between 0 and 1 (got {coverage}).")
    rng = random.Random(seed)
    chosen = set(rng.sample(names, n_forget_entities))
    forget, target, retain = [], [], []
    for entity in entities:
        if entity.name not in chosen:
            retain.extend(entity.qa_pairs)
            continue
        attributes = list(dict.fromkeys(pair.attribute for pair in entity.qa_pairs))
        if target_mode == "attributes":
            k = min(max(round(coverage * len(attributes)), 1), len(attributes) - 1)
            in_forget = set(rng.sample(attributes, k))
            for pair in entity.qa_pairs:
                (forget if pair.attribute in in_forget else target).append(pair)
        else:
            forget_variant = {attribute: rng.randint(0, 1) for attribute in attributes}
            for pair in entity.qa_pairs:
                (forget if pair.variant == forget_variant[pair.attribute] else target).append(pair)
    return UnlearningSplits(tuple(forget), tuple(target), tuple(retain), real_world_qa())


# ---------------------------------------------------------------------------------------------
# JSONL


def to_jsonl(splits: UnlearningSplits, path: str | Path) -> Path:
    """Write every pair as one JSON line with a ``split`` field; atomic (temp file, then rename)."""
    lines = []
    for split in SPLIT_NAMES:
        for pair in getattr(splits, split):
            lines.append(json.dumps({"split": split, **asdict(pair)}, ensure_ascii=False))
    path = Path(path)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def from_jsonl(path: str | Path) -> UnlearningSplits:
    """Read a file written by :func:`to_jsonl` (blank lines are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"No splits file at {path}.")
    required = [f.name for f in fields(QAPair) if f.name not in ("variant", "lang")]
    groups: dict[str, list[QAPair]] = {split: [] for split in SPLIT_NAMES}
    for number, record in json_objects(path, InputError):
        missing = [name for name in ["split", *required] if name not in record]
        if missing:
            raise InputError(f"{path.name}, line {number}: missing field(s) {', '.join(missing)}.")
        split = record.pop("split")
        if split not in groups:
            raise InputError(
                f"{path.name}, line {number}: unknown split {split!r} (expected one of {', '.join(SPLIT_NAMES)})."
            )
        if not isinstance(record["perturbed_answers"], list):
            raise InputError(f"{path.name}, line {number}: perturbed_answers must be a list of strings.")
        record["perturbed_answers"] = tuple(record["perturbed_answers"])
        known = {f.name for f in fields(QAPair)}
        groups[split].append(QAPair(**{k: v for k, v in record.items() if k in known}))
    if not any(groups.values()):
        raise InputError(f"{path} holds no QA pairs.")
    return UnlearningSplits(**{split: tuple(pairs) for split, pairs in groups.items()})
