"""Multilingual evaluation tasks: benchmark files -> prompted `Item`s, each paired with its English
version, plus the scorer and chance level of every task.

The committed samples under `workbench/data/tasks/<task>/<lang>.jsonl` are original text written for
this project in the field layout of the real benchmark, so a user's copy of the benchmark loads
through the same code (`load_task(name, lang, path=...)`):

- xnli: XNLI as on the Hugging Face hub (premise / hypothesis / label 0-2) or the original XNLI 1.0
  jsonl (sentence1 / sentence2 / gold_label / language / pairID; all languages in one file).
- xcopa: XCOPA jsonl (premise / choice1 / choice2 / question / label / idx).
- xquad: SQuAD JSON ({"data": [{"paragraphs": [{"context", "qas"}]}]}) or its flat jsonl form
  (id / context / question / answers {text, answer_start}).
- mkqa: MKQA jsonl (example_id / queries {lang: text} / answers {lang: [{text, aliases}]}); every
  language is in one file, so the English version comes from the same file.
- xlsum: XL-Sum jsonl (id / url / title / summary / text).
- globalopinion: culture multiple choice (question / options / label); the labels of the committed
  sample are illustrative choices for the culture of each language (see the data README).
- word_translation, capitals: answer-probability tasks (a short gold continuation) that a small base
  model does above chance; prompts are few-shot, the demonstrations being the next items of the file.

Pairing: an item and its English version share an id. Non-English items get `english_prompt` from
the English file (`english_path`, or the committed English sample); word_translation renders the same
word with the English template instead ("French: "chien" - English: ""), as it has no English items.
An item keeps its own gold whichever prompt is answered: a culture item in Japanese is scored against
the Japanese culture's option also when its English prompt is the one answered (XTransplant's
non-En -> En direction), and multiple-choice scoring accepts the option text in either language.
"""

from __future__ import annotations

import ast
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from workbench.paths import PACKAGE_DATA
from workbench.evals.scorers import (
    DEFAULT_LABELS,
    rouge_scores,
    score_continuation,
    score_extractive,
    score_multiple_choice,
)

DATA_DIR = PACKAGE_DATA / "tasks"
KINDS = ("multiple_choice", "extractive_qa", "answer_probability", "summarization")
XNLI_LABELS = ("entailment", "neutral", "contradiction")
N_DISTRACTORS = 3  # answer-probability items rank the gold against this many other items' golds


class TaskDataError(ValueError):
    """A task file or request that cannot be turned into items (the message says why)."""


@dataclass
class Item:
    """One prompted example. `answer` is the gold text or a list of acceptable golds; for multiple
    choice `choices` holds the options in the prompt's language and `label` the gold's index."""

    id: str
    task: str
    lang: str
    prompt: str
    answer: str | list[str]
    choices: list[str] | None = None
    label: int | None = None
    english_prompt: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def golds(self) -> list[str]:
        """Every acceptable gold answer as a list."""
        return [self.answer] if isinstance(self.answer, str) else list(self.answer)


Records = list[dict[str, Any]]


@dataclass(frozen=True)
class Task:
    """A registered task. `loader(path, lang)` reads one language's records from a file in the
    benchmark's layout; `builder(records, lang, template)` turns them into Item fields with one
    language's prompt template; `scorer(output, item)` grades a generated output (1.0 = correct)."""

    name: str
    kind: str
    languages: tuple[str, ...]
    loader: Callable[[Path, str], Records]
    builder: Callable[[Records, str, dict[str, Any]], list[dict[str, Any]]]
    scorer: Callable[[str, Item], float]
    chance: float | None
    source: str
    english_source: str = "file"  # "file" | "same_file" (mkqa) | "self" (word_translation)

    @property
    def templates(self) -> dict[str, dict[str, Any]]:
        """Prompt templates by language (workbench/data/tasks/templates.json)."""
        return _TEMPLATES[self.name]

    def score(self, output: str, item: Item) -> float:
        """Grade one generated output for `item`."""
        return float(self.scorer(output, item))

    def committed_file(self, lang: str) -> Path:
        """Where the committed sample of `lang` lives: `<task>/<lang>.jsonl`, or `<task>/<task>.jsonl`
        for formats that hold every language in one file (MKQA)."""
        name = self.name if self.english_source == "same_file" else lang
        return DATA_DIR / self.name / f"{name}.jsonl"

    def committed_languages(self) -> list[str]:
        """Languages of the committed sample."""
        return list(_committed_languages(self))


@cache
def _committed_languages(task: Task) -> tuple[str, ...]:
    """Languages with a committed sample (cached: the package's data files do not change)."""
    if task.english_source != "same_file":
        return tuple(sorted(p.stem for p in (DATA_DIR / task.name).glob("*.jsonl")))
    file = task.committed_file("en")
    langs = []
    for lang in task.languages if file.is_file() else ():
        try:
            task.loader(file, lang)
        except TaskDataError:
            continue
        langs.append(lang)
    return tuple(sorted(langs))


# ---------------------------------------------------------------------------------------- reading

def read_records(path: str | Path) -> Records:
    """JSON objects of a .json (object or list) or .jsonl file, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise TaskDataError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise TaskDataError(f"{path} is empty")
    try:
        whole = json.loads(text)
        records = whole if isinstance(whole, list) else [whole]
    except json.JSONDecodeError:
        records = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise TaskDataError(f"{path}, line {n}: not valid JSON ({err.msg})") from None
    if not records:
        raise TaskDataError(f"{path} holds no records")
    for n, rec in enumerate(records, start=1):
        if not isinstance(rec, dict):
            raise TaskDataError(f"{path}: record {n} is a {type(rec).__name__}, expected a JSON object")
    return records


def _require(rec: dict[str, Any], fields: Sequence[str], where: str, layout: str) -> None:
    missing = [f for f in fields if f not in rec or rec[f] is None]
    if missing:
        raise TaskDataError(
            f"{where} lacks field(s) {', '.join(missing)} (has: {', '.join(sorted(rec)) or 'none'}); "
            f"expected the {layout} layout"
        )


def _record_id(rec: dict[str, Any], keys: Sequence[str], index: int) -> str:
    for key in keys:
        if rec.get(key) is not None:
            return str(rec[key])
    return str(index)


def _check_unique(records: Records, path: Path) -> Records:
    seen: set[str] = set()
    for rec in records:
        if rec["id"] in seen:
            raise TaskDataError(f"{path}: id {rec['id']!r} occurs more than once")
        seen.add(rec["id"])
    return records


def _golds(value: Any, where: str) -> list[str]:
    golds = [value] if isinstance(value, str) else list(value) if isinstance(value, list) else []
    golds = [g for g in golds if isinstance(g, str) and g.strip()]
    if not golds:
        raise TaskDataError(f"{where}: the answer must be a non-empty string or list of strings")
    return golds


def load_xnli(path: Path, lang: str) -> Records:
    """XNLI in the hub layout (premise/hypothesis/label) or the XNLI 1.0 layout
    (sentence1/sentence2/gold_label, `language` per line: only `lang`'s lines are kept)."""
    raw = read_records(path)
    langs = {r["language"] for r in raw if "language" in r}
    if langs:
        raw = [r for r in raw if r.get("language") == lang]
        if not raw:
            raise TaskDataError(f"{path}: no lines for language {lang!r} (file has {sorted(langs)})")
    records = []
    for n, rec in enumerate(raw, start=1):
        where = f"{path}: record {n}"
        if "sentence1" in rec:
            _require(rec, ("sentence1", "sentence2", "gold_label"), where, "XNLI 1.0")
            premise, hypothesis, label = rec["sentence1"], rec["sentence2"], rec["gold_label"]
        else:
            _require(rec, ("premise", "hypothesis", "label"), where, "XNLI")
            premise, hypothesis, label = rec["premise"], rec["hypothesis"], rec["label"]
        if isinstance(label, str) and label in XNLI_LABELS:
            label = XNLI_LABELS.index(label)
        if label not in (0, 1, 2) or isinstance(label, bool):
            raise TaskDataError(f"{where}: label {label!r} is not 0-2 or one of {XNLI_LABELS}")
        records.append({"id": _record_id(rec, ("pairID", "id"), n - 1), "premise": premise,
                        "hypothesis": hypothesis, "label": label})
    return _check_unique(records, path)


def load_xcopa(path: Path, lang: str) -> Records:
    """XCOPA jsonl: premise, choice1, choice2, question (cause/effect), label (0/1), idx."""
    records = []
    for n, rec in enumerate(read_records(path), start=1):
        where = f"{path}: record {n}"
        _require(rec, ("premise", "choice1", "choice2", "question", "label"), where, "XCOPA")
        if rec["question"] not in ("cause", "effect"):
            raise TaskDataError(f"{where}: question {rec['question']!r} is not 'cause' or 'effect'")
        if rec["label"] not in (0, 1) or isinstance(rec["label"], bool):
            raise TaskDataError(f"{where}: label {rec['label']!r} is not 0 or 1")
        records.append({"id": _record_id(rec, ("idx", "id"), n - 1), "premise": rec["premise"],
                        "choices": [rec["choice1"], rec["choice2"]], "question": rec["question"],
                        "label": rec["label"]})
    return _check_unique(records, path)


def _squad_answers(answers: Any, where: str) -> tuple[list[str], list[int]]:
    if isinstance(answers, dict):
        texts, starts = list(answers.get("text") or []), list(answers.get("answer_start") or [])
    elif isinstance(answers, list):
        texts = [a.get("text") for a in answers if isinstance(a, dict)]
        starts = [a.get("answer_start", -1) for a in answers if isinstance(a, dict)]
    else:
        texts, starts = [], []
    return _golds(texts, where), starts


def load_xquad(path: Path, lang: str) -> Records:
    """XQuAD / SQuAD JSON (nested data/paragraphs/qas) or flat jsonl (context/question/answers)."""
    flat: list[tuple[str, dict[str, Any], str]] = []  # (title, qa, context)
    for n, rec in enumerate(read_records(path), start=1):
        if "data" in rec or "paragraphs" in rec:
            for article in rec.get("data", [rec]):
                for para in article.get("paragraphs", []):
                    _require(para, ("context", "qas"), f"{path}: a paragraph", "SQuAD")
                    flat += [(article.get("title", ""), qa, para["context"]) for qa in para["qas"]]
        else:
            _require(rec, ("context", "question", "answers"), f"{path}: record {n}", "SQuAD")
            flat.append((rec.get("title", ""), rec, rec["context"]))
    records = []
    for n, (title, qa, context) in enumerate(flat, start=1):
        where = f"{path}: question {n}"
        _require(qa, ("question", "answers"), where, "SQuAD")
        texts, starts = _squad_answers(qa["answers"], where)
        records.append({"id": _record_id(qa, ("id",), n - 1), "title": title, "context": context,
                        "question": qa["question"], "answers": texts, "answer_start": starts})
    if not records:
        raise TaskDataError(f"{path}: no questions found")
    return _check_unique(records, path)


_MKQA_CODES = {"zh": "zh_cn"}


def load_mkqa(path: Path, lang: str) -> Records:
    """MKQA jsonl: one line per question with `queries` and `answers` for every language. Questions
    without a textual answer in `lang` (MKQA's unanswerable / long-answer types) are skipped."""
    code = _MKQA_CODES.get(lang, lang)
    records = []
    for n, rec in enumerate(read_records(path), start=1):
        where = f"{path}: record {n}"
        _require(rec, ("queries", "answers"), where, "MKQA")
        if code not in rec["queries"] or code not in rec["answers"]:
            raise TaskDataError(f"{where}: no question/answers for language {code!r} "
                                f"(has: {', '.join(sorted(rec['queries']))})")
        golds = []
        for ans in rec["answers"][code]:
            if isinstance(ans, dict) and ans.get("text"):
                golds += [ans["text"], *(ans.get("aliases") or [])]
        if golds:
            records.append({"id": _record_id(rec, ("example_id", "id"), n - 1),
                            "question": rec["queries"][code], "answers": golds})
    if not records:
        raise TaskDataError(f"{path}: no answerable questions in {code!r}")
    return _check_unique(records, path)


def load_xlsum(path: Path, lang: str) -> Records:
    """XL-Sum jsonl: id, url, title, summary, text."""
    records = []
    for n, rec in enumerate(read_records(path), start=1):
        _require(rec, ("text", "summary"), f"{path}: record {n}", "XL-Sum")
        records.append({"id": _record_id(rec, ("id",), n - 1), "title": rec.get("title", ""),
                        "text": rec["text"], "summary": rec["summary"]})
    return _check_unique(records, path)


def load_globalopinion(path: Path, lang: str) -> Records:
    """Culture multiple choice: question, options (a list, or its string form as in
    GlobalOpinionQA), label (index of the option the language's culture would choose)."""
    records = []
    for n, rec in enumerate(read_records(path), start=1):
        where = f"{path}: record {n}"
        _require(rec, ("question", "options", "label"), where, "GlobalOpinionQA-style")
        options = rec["options"]
        if isinstance(options, str):
            try:
                options = ast.literal_eval(options)
            except (ValueError, SyntaxError):
                raise TaskDataError(f"{where}: options {options!r} is not a list") from None
        if not isinstance(options, list) or len(options) < 2:
            raise TaskDataError(f"{where}: options must be a list of at least two strings")
        if not isinstance(rec["label"], int) or not 0 <= rec["label"] < len(options):
            raise TaskDataError(f"{where}: label {rec['label']!r} is not an index into {len(options)} options")
        records.append({"id": _record_id(rec, ("id",), n - 1), "question": rec["question"],
                        "choices": [str(o) for o in options], "label": rec["label"]})
    return _check_unique(records, path)


def _load_completion(fields: Sequence[str]) -> Callable[[Path, str], Records]:
    def load(path: Path, lang: str) -> Records:
        records = []
        for n, rec in enumerate(read_records(path), start=1):
            where = f"{path}: record {n}"
            _require(rec, (*fields, "answer"), where, "word/answer")
            records.append({"id": _record_id(rec, ("id",), n - 1), **{f: rec[f] for f in fields},
                            "answer": _golds(rec["answer"], where)})
        return _check_unique(records, path)

    load.__doc__ = f"Few-shot completion items: {', '.join(fields)}, answer (a gold or list of golds)."
    return load


# --------------------------------------------------------------------------------------- building

def format_options(choices: Sequence[str], labels: Sequence[str] = DEFAULT_LABELS) -> str:
    """'(A) first\\n(B) second ...', the option block of every multiple-choice prompt."""
    return "\n".join(f"({lab}) {text}" for lab, text in zip(labels, choices))


def _build_xnli(records: Records, lang: str, tmpl: dict[str, Any]) -> list[dict[str, Any]]:
    choices = list(tmpl["choices"])
    options = format_options(choices)
    return [{"prompt": tmpl["prompt"].format(premise=r["premise"], hypothesis=r["hypothesis"], options=options),
             "answer": choices[r["label"]], "choices": choices, "label": r["label"]} for r in records]


def _build_xcopa(records: Records, lang: str, tmpl: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"prompt": tmpl["prompt"].format(premise=r["premise"], question=tmpl[r["question"]],
                                             options=format_options(r["choices"])),
             "answer": r["choices"][r["label"]], "choices": r["choices"], "label": r["label"],
             "meta": {"question": r["question"]}} for r in records]


def _build_mc(records: Records, lang: str, tmpl: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"prompt": tmpl["prompt"].format(question=r["question"], options=format_options(r["choices"])),
             "answer": r["choices"][r["label"]], "choices": r["choices"], "label": r["label"]}
            for r in records]


def _build_qa(records: Records, lang: str, tmpl: dict[str, Any]) -> list[dict[str, Any]]:
    items = []
    for r in records:
        meta = {k: r[k] for k in ("context", "title", "answer_start") if k in r}
        items.append({"prompt": tmpl["prompt"].format(context=r.get("context", ""), question=r["question"]),
                      "answer": r["answers"], "meta": meta})
    return items


def _build_xlsum(records: Records, lang: str, tmpl: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"prompt": tmpl["prompt"].format(text=r["text"]), "answer": r["summary"],
             "meta": {"title": r["title"]}} for r in records]


def _build_fewshot(records: Records, lang: str, tmpl: dict[str, Any]) -> list[dict[str, Any]]:
    """Item i is preceded by `shots` demonstrations, items i+1..i+shots (cyclically); its candidate
    answers are its gold and the golds of N_DISTRACTORS items spread over the rest of the list
    (never the demonstrations when the file has enough items). A candidate continues the prompt as
    `prompt + meta["answer_prefix"] + choice` (the prefix is " " where the language puts a space)."""
    n = len(records)
    language = tmpl.get("language", "")
    if isinstance(language, dict):  # the English template names the source language
        language = language.get(lang, lang)
    shots = min(int(tmpl.get("shots", 0)), n - 1)

    def fill(key: str, rec: dict[str, Any]) -> str:
        return tmpl[key].format(language=language, answer=rec["answer"][0],
                                **{k: v for k, v in rec.items() if k not in ("id", "answer")})

    pair_head = tmpl["pair"].split("{answer}")[0]
    prefix = pair_head[len(tmpl["query"]):] if pair_head.startswith(tmpl["query"]) else ""
    step = max(1, (n - shots - 1) // (N_DISTRACTORS + 1))
    items = []
    for i, rec in enumerate(records):
        demos = [fill("pair", records[(i + k) % n]) for k in range(1, shots + 1)]
        choices = [rec["answer"][0]]
        for k in range(1, N_DISTRACTORS + 1):
            other = records[(i + shots + k * step) % n]["answer"][0]
            if other not in choices:
                choices.append(other)
        items.append({"prompt": "\n".join([*demos, fill("query", rec)]), "answer": rec["answer"],
                      "choices": choices, "label": 0, "meta": {"shots": shots, "answer_prefix": prefix}})
    return items


# ---------------------------------------------------------------------------------------- scoring

def _score_mc(output: str, item: Item) -> float:
    english = item.meta.get("english_choices") or [None] * len(item.choices or [])
    options = [[c] + ([e] if e and e != c else []) for c, e in zip(item.choices or [], english)]
    return float(score_multiple_choice(output, options, int(item.label)))


def _score_qa(output: str, item: Item) -> float:
    return float(score_extractive(output, item.golds))


def _score_continuation(output: str, item: Item) -> float:
    return float(score_continuation(output, item.golds))


def _score_summary(output: str, item: Item) -> float:
    """ROUGE-L F-measure against the reference summary."""
    return rouge_scores(output, item.golds[0])["rougeL"]


# --------------------------------------------------------------------------------------- registry

_TEMPLATES: dict[str, dict[str, dict[str, Any]]] = json.loads(
    (DATA_DIR / "templates.json").read_text(encoding="utf-8"))


def _langs(name: str, exclude: Sequence[str] = ()) -> tuple[str, ...]:
    return tuple(lang for lang in _TEMPLATES[name] if lang not in exclude)


_TASKS: dict[str, Task] = {t.name: t for t in (
    Task("xnli", "multiple_choice", _langs("xnli"), load_xnli, _build_xnli, _score_mc, 1 / 3, "XNLI"),
    Task("xcopa", "multiple_choice", _langs("xcopa"), load_xcopa, _build_xcopa, _score_mc, 1 / 2, "XCOPA"),
    Task("globalopinion", "multiple_choice", _langs("globalopinion"), load_globalopinion, _build_mc,
         _score_mc, 1 / 3, "GlobalOpinionQA"),
    Task("xquad", "extractive_qa", _langs("xquad"), load_xquad, _build_qa, _score_qa, None, "XQuAD"),
    Task("mkqa", "extractive_qa", _langs("mkqa"), load_mkqa, _build_qa, _score_qa, None, "MKQA",
         english_source="same_file"),
    Task("word_translation", "answer_probability", _langs("word_translation", exclude=("en",)),
         _load_completion(("word",)), _build_fewshot, _score_continuation, 1 / (N_DISTRACTORS + 1),
         "Wendler et al. translation task", english_source="self"),
    Task("capitals", "answer_probability", _langs("capitals"), _load_completion(("prompt",)),
         _build_fewshot, _score_continuation, 1 / (N_DISTRACTORS + 1), "factual completion"),
    Task("xlsum", "summarization", _langs("xlsum"), load_xlsum, _build_xlsum, _score_summary, None, "XL-Sum"),
)}


def list_tasks() -> list[str]:
    """Names of the registered tasks."""
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """The registered task called `name`."""
    if name not in _TASKS:
        raise TaskDataError(f"unknown task {name!r}; known tasks: {', '.join(list_tasks())}")
    return _TASKS[name]


# ---------------------------------------------------------------------------------------- loading

def _committed(task: Task, lang: str) -> Path:
    path = task.committed_file(lang)
    if not path.is_file() or lang not in task.committed_languages():
        have = ", ".join(task.committed_languages()) or "none"
        raise TaskDataError(f"no committed sample of {task.name} in {lang!r} (committed: {have}); "
                            "pass path= to load your own file")
    return path


def _english_prompts(task: Task, records: Records, lang: str, path: Path,
                     english_path: Path | None, user_file: bool) -> list[dict[str, Any]] | None:
    """Item fields of the English version of each record, aligned by id; None if no English source."""
    template = task.templates["en"]
    if task.english_source == "self":
        return task.builder(records, lang, template)
    if english_path is None:
        if task.english_source == "same_file":
            english_path = path
        elif user_file:
            return None
        else:
            english_path = _committed(task, "en")
    by_id = {r["id"]: r for r in task.loader(english_path, "en")}
    missing = [r["id"] for r in records if r["id"] not in by_id]
    if missing:
        raise TaskDataError(f"{english_path}: no English version of id(s) {', '.join(missing[:5])}"
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return task.builder([by_id[r["id"]] for r in records], "en", template)


def load_task(name: str, lang: str, split: str | None = None, path: str | Path | None = None, *,
              english_path: str | Path | None = None, n_sample: int = 20, seed: int = 0) -> list[Item]:
    """Items of task `name` in language `lang`.

    path: a file in the benchmark's layout (default: the committed sample).
    english_path: the English version of that file, for `english_prompt` (items are paired by id;
      for a multilingual file such as XNLI 1.0 pass the same path). Without it a user's file gets
      `english_prompt=None`, except MKQA, whose lines carry every language.
    split: None for all items, or "sample" / "unseen": the two parts of `split_items(items,
      n_sample, seed)` used by the offline scaling strategy.
    """
    task = get_task(name)
    if lang not in task.languages:
        raise TaskDataError(f"task {name!r} has no prompt template for language {lang!r}; "
                            f"supported: {', '.join(task.languages)}")
    if split not in (None, "sample", "unseen"):
        raise TaskDataError(f"unknown split {split!r}; use None, 'sample' or 'unseen'")
    user_file = path is not None
    file = Path(path) if user_file else _committed(task, lang)
    records = task.loader(file, lang)
    native = task.builder(records, lang, task.templates[lang])
    english = None if lang == "en" else _english_prompts(
        task, records, lang, file, Path(english_path) if english_path else None, user_file)
    items = []
    for i, (rec, fields) in enumerate(zip(records, native)):
        meta = dict(fields.pop("meta", {}))
        english_prompt = fields["prompt"] if lang == "en" else None
        if english is not None:
            english_prompt = english[i]["prompt"]
            if english[i].get("choices") and task.kind == "multiple_choice":
                meta["english_choices"] = english[i]["choices"]
        items.append(Item(id=rec["id"], task=name, lang=lang, english_prompt=english_prompt,
                          meta=meta, **fields))
    if split is None:
        return items
    sample, unseen = split_items(items, n_sample, seed)
    return sample if split == "sample" else unseen


def split_items(items: Sequence[Item], n_sample: int, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """(sample, unseen): `n_sample` items chosen by a seeded shuffle of the sorted ids, and the rest,
    each in the original order. Languages with the same ids get the same split."""
    if not 0 < n_sample < len(items):
        raise TaskDataError(f"n_sample must be between 1 and {len(items) - 1} for {len(items)} items, "
                            f"got {n_sample}")
    ids = sorted(item.id for item in items)
    random.Random(seed).shuffle(ids)
    chosen = set(ids[:n_sample])
    return [it for it in items if it.id in chosen], [it for it in items if it.id not in chosen]
