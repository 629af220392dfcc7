"""From task items to what a transplant runs: the main prompt (the one answered), the auxiliary
prompt (its translation), the answer continuations to score, and the task's scorer and chance.

Directions (method spec): "en->x" answers the native-language prompt with English as the auxiliary
(multilingual tasks); "x->en" answers the English prompt with the native one as the auxiliary
(culture tasks, where the native prompt carries the culture).
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass, replace

from workbench.datasets.tasks import Item, TaskDataError, get_task, load_task
from workbench.errors import InputError
from workbench.evals.scorers import DEFAULT_LABELS
from workbench.models import ModelHandle

DIRECTIONS: tuple[str, ...] = ("en->x", "x->en")


def default_direction(task: str) -> str:
    """Culture tasks transplant from the native prompt into the English one; the rest the other way."""
    return "x->en" if task == "globalopinion" else "en->x"


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise InputError(f"Unknown direction {direction!r}; choose 'en->x' (answer the native prompt, English "
                         "as the source) or 'x->en' (answer the English prompt, the native one as the source).")
    return direction


@functools.lru_cache(maxsize=32)
def _english_items(task: str) -> dict[str, Item]:
    return {item.id: item for item in load_task(task, "en")}


def english_version(item: Item) -> Item:
    """The item as asked in English: English prompt, options and golds."""
    task = get_task(item.task)
    if task.kind == "multiple_choice":
        choices = item.meta.get("english_choices")
        if not choices:
            raise InputError(f"Item {item.id} has no English options (meta['english_choices']).")
        return replace(item, lang="en", prompt=item.english_prompt, choices=list(choices),
                       answer=choices[item.label], meta={**item.meta, "english_choices": list(choices)})
    if task.english_source == "self":  # the answers are English already (word translation)
        return replace(item, lang="en", prompt=item.english_prompt)
    try:
        english = _english_items(item.task).get(item.id)
    except TaskDataError:
        english = None
    if english is None or english.prompt != item.english_prompt:
        raise InputError(f"No English answers for item {item.id} of {item.task}: the 'x->en' direction needs "
                         "the English version of the item (use the committed sample or 'en->x').")
    return english


@dataclass(frozen=True)
class Case:
    """One transplant item: `item` is what the model answers (its prompt is the main prompt);
    `lang` is the non-English language of the pair, whichever direction."""

    item: Item
    aux_prompt: str
    lang: str


def make_case(item: Item, direction: str) -> Case:
    check_direction(direction)
    if item.lang == "en":
        raise InputError(f"Item {item.id} is English: a transplant needs a non-English item and its English version.")
    if not item.english_prompt:
        raise InputError(f"Item {item.id} ({item.lang}) has no English prompt to transplant from or into; "
                         "load the task with its English file (english_path=...).")
    if direction == "en->x":
        return Case(item, item.english_prompt, item.lang)
    return Case(english_version(item), item.prompt, item.lang)


def _answer_prefix(item: Item) -> str:
    """What separates the prompt from the answer: the task's own prefix, else a space unless the
    prompt ends in a space or a wide (CJK, full-width) character."""
    if "answer_prefix" in item.meta:
        return item.meta["answer_prefix"]
    last = item.prompt[-1:]
    return "" if not last or last.isspace() or unicodedata.east_asian_width(last) in ("W", "F") else " "


@dataclass(frozen=True)
class Answer:
    """Continuations to score after the main prompt. With `label`, they are the options and the
    gold is `label` (correct = the gold is the most probable option); without, every continuation
    is a gold (correct = greedy decoding produces one of them)."""

    texts: tuple[str, ...]
    tokens: tuple[tuple[int, ...], ...]
    label: int | None


def continuation_tokens(handle: ModelHandle, prompt: str, text: str) -> tuple[int, ...]:
    """Token ids that `text` adds after `prompt` (as tokenized together, when that keeps the
    prompt's own tokens; otherwise `text` on its own)."""
    base = handle.encode(prompt)
    joint = handle.encode(prompt + text)
    if joint[: len(base)] == base and len(joint) > len(base):
        return tuple(joint[len(base):])
    alone = handle.encode(text, prepend_bos=False)
    if not alone:
        raise InputError(f"The answer {text!r} has no tokens.")
    return tuple(alone)


def answer_for(handle: ModelHandle, item: Item) -> Answer:
    kind = get_task(item.task).kind
    prefix = _answer_prefix(item)
    if kind == "multiple_choice":
        texts = [f"{prefix}({label})" for label in DEFAULT_LABELS[: len(item.choices)]]
        label = item.label
    elif kind == "answer_probability":
        texts, label = [prefix + choice for choice in item.choices], item.label
    elif kind == "extractive_qa":
        texts, label = list(dict.fromkeys(prefix + gold for gold in item.golds)), None
    else:
        raise InputError(f"Task {item.task} ({kind}) has no short answer to score; XTransplant runs on "
                         "multiple-choice, extractive-QA and answer-probability tasks.")
    return Answer(tuple(texts), tuple(continuation_tokens(handle, item.prompt, t) for t in texts), label)


def chance_level(item: Item, scoring: str) -> float:
    """Chance of a random option being right: multiple choice always, answer-probability tasks
    when their options are ranked (generating the answer freely has no such chance); NaN otherwise."""
    kind = get_task(item.task).kind
    if item.choices and (kind == "multiple_choice" or (kind == "answer_probability" and scoring == "probability")):
        return 1.0 / len(item.choices)
    return float("nan")


def score_text(item: Item, output: str) -> bool:
    """The task's own scorer on a generated output."""
    return get_task(item.task).score(output, item) >= 1.0
