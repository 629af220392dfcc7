"""Entity-level unlearning end to end (arXiv 2406.15796): inject, unlearn with each method, evaluate.

1. Invent entities (`trainers.methods.unlearning.entities`) and split them into forget / target / retain.
2. Injection: fine-tune the base model on every invented entity's QA pairs (SFT through the shared
   training loop); a second run on the retain pairs only gives the retain-only model that Forget
   Quality compares against.
3. Real entities: from `workbench/data/entities/real_entities.json`, keep the facts the *base*
   model answers correctly with greedy decoding (its pre-trained knowledge), split them by
   attribute into a real forget and target set.
4. For each track (`injected`: the invented entities; `pretrained`: the real ones) and each method,
   unlearn from the injected model (which is also the frozen reference) and evaluate every
   checkpoint on forget, target, retain and real-world questions.

Forget Quality needs a model that never learned the forgotten entities; for real entities no such
model exists (the base model learned them in pre-training), so the `pretrained` track reports it
as NaN and is compared through ROUGE-L and probability on its forget and target sets.
All files go to `WORKBENCH_HOME/unlearning/<name>/` (see `trainers.methods.unlearning.results`).
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from workbench import registry
from trainers.methods.unlearning.entities import (
    DATA_DIR,
    QAPair,
    UnlearningSplits,
    build_unlearning_splits,
    generate_entities,
    idk_answers,
    to_jsonl,
)
from workbench.errors import InputError
from workbench.models import ModelHandle
from trainers.methods.unlearning.evaluation import ModelEvaluation, greedy_answers, score_pairs, summarize_items
from workbench.paths import atomic_write_text
from workbench.progress import Progress

from trainers.config import ConfigError, TrainConfig, YamlConfig
from trainers.methods.unlearning.methods import SHORT_NAMES
from trainers.methods.unlearning.results import UnlearningResults, results_dir

log = logging.getLogger("trainers.unlearning")
TRACKS = ("injected", "pretrained")
REAL_ENTITIES_FILE = DATA_DIR / "real_entities.json"


class PipelineConfigError(ConfigError):
    """An unlearning pipeline configuration that cannot run."""


@dataclass
class UnlearningPipelineConfig(YamlConfig):
    """Every knob of the pipeline. Training options not listed here keep `TrainConfig`'s defaults."""

    name: str = "unlearning"
    base_model: str = "gemma-3-270m"
    entities: int = 4
    forget_entities: int = 1
    target_mode: str = "attributes"
    coverage: float = 0.5
    methods: list[str] = field(default_factory=lambda: list(SHORT_NAMES))
    seed: int = 0
    lora: bool = True
    lora_r: int = 16
    batch_size: int = 4
    max_length: int = 128
    inject_epochs: int = 3
    inject_lr: float = 1e-3
    steps: int = 8
    lr: float = 1e-4
    beta: float = 0.1
    scheduler: str = "constant"
    eval_every: int = 0
    eval_items: int | None = None
    max_new_tokens: int = 32
    real_entities: list[str] = field(default_factory=lambda: ["Italy", "Spain", "Russia"])
    real_forget_entities: int = 2
    verify_real: bool = True
    keep_checkpoints: bool = False

    error = PipelineConfigError

    def validate(self) -> None:
        if not self.name.strip() or any(c in self.name for c in "/\\@") or self.name.startswith("."):
            raise PipelineConfigError(f"name {self.name!r} must be a plain name (no '/', '\\', '@' or leading '.').")
        if not self.methods:
            raise PipelineConfigError("Choose at least one unlearning method.")
        unknown = [m for m in self.methods if m not in SHORT_NAMES]
        if unknown:
            raise PipelineConfigError(f"Unknown unlearning method(s) {', '.join(unknown)}; choose from {', '.join(SHORT_NAMES)}.")
        for name in ("entities", "forget_entities", "batch_size", "inject_epochs", "steps", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise PipelineConfigError(f"{name} must be at least 1 (got {getattr(self, name)}).")
        if self.forget_entities >= self.entities:
            raise PipelineConfigError(f"forget_entities ({self.forget_entities}) must be smaller than entities "
                                      f"({self.entities}) so that some entities are retained.")
        if self.eval_every < 0 or (self.eval_items is not None and self.eval_items < 1):
            raise PipelineConfigError("eval_every must be 0 (final checkpoint only) or more, eval_items empty or at least 1.")
        if self.real_entities and self.real_forget_entities < 1:
            raise PipelineConfigError("real_forget_entities must be at least 1 when real_entities are given.")
        for name in ("inject_lr", "lr", "beta"):
            if not getattr(self, name) > 0:
                raise PipelineConfigError(f"{name} must be greater than 0 (got {getattr(self, name)}).")

    def train_config(self, **values: Any) -> TrainConfig:
        """A `TrainConfig` with this pipeline's shared options and the given ones."""
        shared = {"base_model": self.base_model, "seed": self.seed, "lora": self.lora, "lora_r": self.lora_r,
                  "lora_alpha": 2 * self.lora_r, "batch_size": self.batch_size, "max_length": self.max_length}
        return TrainConfig(**{**shared, **values})


# ---------------------------------------------------------------------- data

def injection_records(pairs: Sequence[QAPair]) -> list[dict]:
    """SFT records (question -> answer) for the injection runs."""
    return [{"instruction": p.question, "output": p.answer, "lang": p.lang} for p in pairs]


def unlearning_records(forget: Sequence[QAPair], retain: Sequence[QAPair], seed: int) -> list[dict]:
    """One record per forget pair, paired with a retain pair (a seeded cycle through a shuffled
    retain set) and a randomly chosen "I don't know" answer in the pair's language."""
    if not forget or not retain:
        raise InputError("Unlearning needs at least one forget pair and one retain pair.")
    rng = random.Random(seed)
    order = list(range(len(retain)))
    rng.shuffle(order)
    records = []
    for i, pair in enumerate(forget):
        kept = retain[order[i % len(order)]]
        records.append({"instruction": pair.question, "output": pair.answer, "idk": rng.choice(idk_answers(pair.lang)),
                        "retain_instruction": kept.question, "retain_output": kept.answer, "lang": pair.lang})
    return records


def write_jsonl(records: list[dict], path: Path) -> Path:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def real_entity_candidates(entities: Sequence[str] | None = None) -> list[tuple[QAPair, str, list[str]]]:
    """(QA pair, true value, wrong values) for the listed real entities (all when None)."""
    items = json.loads(REAL_ENTITIES_FILE.read_text(encoding="utf-8"))["items"]
    known = list(dict.fromkeys(item["entity"] for item in items))
    if entities is not None:
        missing = [e for e in entities if e not in known]
        if missing:
            raise InputError(f"No facts about {', '.join(missing)} in {REAL_ENTITIES_FILE.name}; it covers {', '.join(known)}.")
        items = [item for item in items if item["entity"] in entities]
    return [(QAPair(entity=item["entity"], question=item["question"], answer=item["answer"].format(value=item["value"]),
                    paraphrased_answer=item["paraphrase"].format(value=item["value"]),
                    perturbed_answers=tuple(item["paraphrase"].format(value=w) for w in item["wrong"]),
                    attribute=item["attribute"]), item["value"], list(item["wrong"])) for item in items]


def answers_correctly(generation: str, value: str, wrong: Sequence[str]) -> bool:
    """A greedy answer counts as correct when it names the true value, names no wrong value and is
    not a question (small base models often echo or ask back)."""
    text = generation.lower()
    return value.lower() in text and "?" not in text and not any(w.lower() in text for w in wrong)


def check_real_entities(handle: ModelHandle, candidates: Sequence[tuple[QAPair, str, list[str]]],
                        max_new_tokens: int = 32) -> pd.DataFrame:
    """Greedy answers of the model to every candidate question, and whether each is correct."""
    answers = greedy_answers(handle, [p.question for p, _, _ in candidates], max_new_tokens)
    rows = []
    for (pair, value, wrong), answer in zip(candidates, answers):
        rows.append({"entity": pair.entity, "attribute": pair.attribute, "question": pair.question, "value": value,
                     "generation": answer, "correct": answers_correctly(answer, value, wrong)})
    return pd.DataFrame(rows)


def real_splits(known: Sequence[QAPair], n_forget_entities: int, coverage: float, seed: int) -> tuple[list[QAPair], list[QAPair]]:
    """Forget and target sets over real entities: `n_forget_entities` of the entities with at least
    two known facts, each split by attribute (`coverage` of its facts, at least one, into forget)."""
    by_entity: dict[str, list[QAPair]] = {}
    for pair in known:
        by_entity.setdefault(pair.entity, []).append(pair)
    usable = [e for e, pairs in by_entity.items() if len(pairs) >= 2]
    if not usable:
        return [], []
    rng = random.Random(seed)
    chosen = usable[:n_forget_entities]
    forget, target = [], []
    for entity in chosen:
        pairs = list(by_entity[entity])
        rng.shuffle(pairs)
        k = min(max(round(coverage * len(pairs)), 1), len(pairs) - 1)
        forget.extend(pairs[:k])
        target.extend(pairs[k:])
    return forget, target


def _sample(pairs: Sequence[QAPair], cap: int | None, seed: int) -> list[QAPair]:
    if cap is None or len(pairs) <= cap:
        return list(pairs)
    keep = sorted(random.Random(seed).sample(range(len(pairs)), cap))
    return [pairs[i] for i in keep]


# ---------------------------------------------------------------------- the pipeline

def prepare_data(config: UnlearningPipelineConfig, folder: Path) -> tuple[UnlearningSplits, Path, Path, Path]:
    """Entities, splits and the JSONL files of the injected track (usable from the Train tab too):
    `inject.jsonl` (all invented entities), `retain.jsonl` (retain only), `unlearn_injected.jsonl`."""
    entities = generate_entities(config.entities, config.seed)
    splits = build_unlearning_splits(entities, config.forget_entities, config.seed, config.target_mode, config.coverage)
    folder.mkdir(parents=True, exist_ok=True)
    to_jsonl(splits, folder / "splits.jsonl")
    inject = write_jsonl(injection_records(splits.forget + splits.target + splits.retain), folder / "inject.jsonl")
    retain = write_jsonl(injection_records(splits.retain), folder / "retain.jsonl")
    unlearn = write_jsonl(unlearning_records(splits.forget, splits.retain, config.seed), folder / "unlearn_injected.jsonl")
    return splits, inject, retain, unlearn


class _Runner:
    """One pipeline run: holds the config, folder, progress reporting and the rows collected."""

    def __init__(self, config: UnlearningPipelineConfig, progress: Progress | None):
        self.config, self.progress = config, progress
        self.folder = results_dir(config.name)
        self.loaded: tuple[str, ModelHandle] | None = None  # (spec, model) of the last model evaluated
        self.rows: list[dict] = []
        self.items: list[pd.DataFrame] = []
        self.notes: list[str] = []

    def say(self, fraction: float, message: str) -> None:
        log.info(message)
        if self.progress:
            self.progress(min(max(fraction, 0.0), 1.0), message)

    def train_or_reuse(self, train_config: TrainConfig) -> registry.Checkpoint:
        """Train, or reuse the run's last checkpoint when it was trained with this very configuration
        and data (so a pipeline re-run with other unlearning settings skips the injection)."""
        from trainers.data import data_hash, load_jsonl
        from trainers.loop import train
        from trainers.methods import build_method

        last = registry.latest(train_config.output)
        if last is not None:
            fields_needed = build_method(train_config.method, train_config.method_args).required_fields
            same_data = last.data_hash == data_hash(load_jsonl(train_config.data, fields_needed), [])
            if same_data and not TrainConfig.from_dict(last.config).differences(train_config):
                self.notes.append(f"Reused checkpoint {last.spec} (same configuration and data).")
                return last
            raise InputError(f"Run {train_config.output!r} already has checkpoints from other settings or data; "
                             "choose another pipeline name or delete them (workbench checkpoints).")
        result = train(train_config)
        if result.checkpoint is None:
            raise InputError(f"Run {train_config.output!r} ended ({result.state}) without a checkpoint.")
        return result.checkpoint

    def evaluate(self, spec: str, sets: dict[str, list[QAPair]]) -> dict[str, pd.DataFrame]:
        """Per-item frames of `spec` on `sets` (set name -> frame)."""
        from trainers.methods.unlearning.methods import load_reference

        if self.loaded is None or self.loaded[0] != spec:
            self.loaded = None  # free the previous model first
            self.loaded = (spec, load_reference(spec))
        return {name: score_pairs(self.loaded[1], pairs, name, max_new_tokens=self.config.max_new_tokens)
                for name, pairs in sets.items() if pairs}

    def record(self, track: str, method: str, step: int, spec: str, frames: dict[str, pd.DataFrame],
               retain_only: dict[str, pd.DataFrame] | None) -> ModelEvaluation:
        items = pd.concat(list(frames.values()), ignore_index=True)
        reference = pd.concat(list(retain_only.values()), ignore_index=True) if retain_only else None
        evaluation = summarize_items(items, reference, spec)
        self.rows.append({"track": track, "method": method, "step": step, "model": spec,
                          **evaluation.summary().iloc[0].to_dict()})
        self.items.append(items.assign(track=track, method=method, step=step))
        return evaluation


def run_pipeline(config: UnlearningPipelineConfig, progress: Progress | None = None) -> UnlearningResults:
    """Inject, unlearn with every method on both tracks, evaluate; save and return the results."""
    run = _Runner(config, progress)
    folder = run.folder
    atomic_write_text(folder / "config.yaml", config.to_yaml())
    splits, inject_path, retain_path, unlearn_path = prepare_data(config, folder)
    evals = {"forget": _sample(splits.forget, config.eval_items, config.seed),
             "target": _sample(splits.target, config.eval_items, config.seed + 1)}
    shared_sets = {"retain": _sample(splits.retain, config.eval_items, config.seed + 2),
                   "real_world": _sample(splits.real_world, config.eval_items, config.seed + 3)}
    tracks = {"injected": {**evals}}
    unlearn_data = {"injected": unlearn_path}

    # Real entities the base model knows (checked before any fine-tuning).
    real_check = None
    if config.real_entities:
        run.say(0.0, f"checking which facts about {', '.join(config.real_entities)} {config.base_model} knows")
        candidates = real_entity_candidates(config.real_entities)
        if config.verify_real:
            from trainers.methods.unlearning.methods import load_reference

            real_check = check_real_entities(load_reference(config.base_model), candidates,
                                             config.max_new_tokens)
            known = [pair for (pair, _, _), ok in zip(candidates, real_check["correct"]) if ok]
        else:
            known = [pair for pair, _, _ in candidates]
            run.notes.append("Real-entity facts were not verified on the base model (verify_real: false).")
        forget, target = real_splits(known, config.real_forget_entities, config.coverage, config.seed)
        if forget:
            tracks["pretrained"] = {"forget": forget, "target": target}
            unlearn_data["pretrained"] = write_jsonl(unlearning_records(forget, splits.retain, config.seed),
                                                     folder / "unlearn_pretrained.jsonl")
        else:
            run.notes.append(f"{config.base_model} answered too few real-entity questions correctly "
                             "(an entity needs two known facts): the pretrained track was skipped.")
    if real_check is not None:
        real_check.to_csv(folder / "real_entity_check.csv", index=False)
    n_runs, done = 2 + len(config.methods) * len(tracks), 0

    # Injection and the retain-only model: the same fine-tuning on all entities / retained ones only.
    sft = {"method": "sft", "lr": config.inject_lr, "epochs": config.inject_epochs, "scheduler": "cosine"}
    run.say(0.02, f"injecting {config.entities} invented entities into {config.base_model} ({config.inject_epochs} epochs)")
    injected_spec = run.train_or_reuse(config.train_config(**sft, data=str(inject_path),
                                                           output=f"{config.name}-inject")).spec
    done += 1
    run.say(done / n_runs, "training the retain-only model")
    retain_spec = run.train_or_reuse(config.train_config(**sft, data=str(retain_path),
                                                         output=f"{config.name}-retain")).spec
    done += 1

    run.say(done / n_runs, "evaluating the injected and retain-only models")
    retain_only = run.evaluate(retain_spec, evals)
    run.record("injected", "retain-only", 0, retain_spec, retain_only, retain_only)
    injected_shared = run.evaluate(injected_spec, shared_sets)
    start_frames = {track: run.evaluate(injected_spec, sets) for track, sets in tracks.items()}
    for track in tracks:
        run.record(track, "none", 0, injected_spec, {**start_frames[track], **injected_shared},
                   retain_only if track == "injected" else None)

    # Unlearning: every method on every track, from the injected model.
    for track, sets in tracks.items():
        for method in config.methods:
            run.say(done / n_runs, f"{track} entities: unlearning with {method} ({config.steps} steps)")
            last = run.train_or_reuse(config.train_config(
                method=SHORT_NAMES[method], base_model=injected_spec, data=str(unlearn_data[track]),
                output=f"{config.name}-{track}-{method}", lr=config.lr, max_steps=config.steps,
                scheduler=config.scheduler, save_every=config.eval_every,
                keep_last=max(1, math.ceil(config.steps / max(config.eval_every, 1)) + 1),
                method_args={"beta": config.beta} if method in ("dpo", "npo", "npo-gd") else {}))
            for ckpt in registry.list_checkpoints(last.run):
                frames = run.evaluate(ckpt.spec, {**sets, **shared_sets})
                run.record(track, method, ckpt.step, ckpt.spec, frames, retain_only if track == "injected" else None)
                if not config.keep_checkpoints:
                    run.loaded = None
                    registry.delete(ckpt.name)
            done += 1

    results = UnlearningResults(name=config.name, table=pd.DataFrame(run.rows),
                                items=pd.concat(run.items, ignore_index=True), real_check=real_check,
                                notes=run.notes, config=asdict(config))
    results.save()
    run.say(1.0, f"done: results in {folder}")
    return results
