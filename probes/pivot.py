"""The latent-language lens (Wendler et al. 2024, "Do Llamas Work in English?") and the logit-lens
grid.

`pivot` asks, layer by layer, how much of the logit-lens distribution at the answer position falls
on the word in the input language, in English and in the target language, for translation
(`Français: "eau" - 中文: "水"` few-shot prompts), repetition and cloze tasks. Curves are means
over items with a 95% confidence band, plus the lens entropy and the rank of the answer token.

The lens is batched: one forward pass per batch keeps only each prompt's last real position of
`hook_resid_post` at every layer, and the unembedding runs on those (n_layers x batch) vectors
alone, streamed over the vocabulary (`engine.lens_reduce`), so no row of Gemma's 262k-token
vocabulary is held whole and memory does not grow with layers x positions x vocabulary.
Prompts are right-padded: attention is causal, so a real token never sees the padding after it and
needs neither an attention mask nor shifted positions; each row's last real position is gathered
by index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from workbench import distributed, engine, limits
from workbench.cache import cached
from workbench.datasets.lexicon import LexiconError, language_name, load_concepts
from workbench.errors import InputError
from workbench.models import ModelHandle
from workbench.progress import Progress
from workbench.results import Result

from .tokens import Dropped, build_token_sets

TASKS = ("translation", "repetition", "cloze")
BLANK = "___"


# --------------------------------------------------------------------------- batched lens engine

def batches_by_length(ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small."""
    if batch_size < 1:
        raise InputError("batch_size must be at least 1.")
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def last_token_residuals(handle: ModelHandle, batch: Sequence[Sequence[int]]) -> torch.Tensor:
    """`hook_resid_post` at each prompt's last token for every layer: (n_layers, batch, d_model)."""
    ids, last = engine.pad_rows(handle, batch)
    return engine.residual_stream(handle, ids, at=last)


def lens_statistics(handle: ModelHandle, resid: torch.Tensor, token_sets: Sequence[Sequence[Sequence[int]]] = (),
                    answers: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Lens statistics of residuals `(n_layers, batch, d_model)`, streamed over the vocabulary by
    `engine.lens_reduce`.

    `token_sets[k][b]` lists the ids of set k for item b; its probability is the lens softmax summed
    over those ids. Returns `probs` (n_layers, batch, K), `entropy` in bits (n_layers, batch) and,
    given `answers` (one id per item), `rank` of that id, 1 = the lens's top token.
    """
    n_layers, batch, _ = resid.shape
    sets = None
    if token_sets:
        width = max(1, max(len(ids) for per_item in token_sets for ids in per_item))
        sets = torch.full((batch, len(token_sets), width), -1, dtype=torch.long)  # -1 pads
        for k, per_item in enumerate(token_sets):
            for b, ids in enumerate(per_item):
                sets[b, k, :len(ids)] = torch.tensor(sorted(ids), dtype=torch.long)
    stats = engine.lens_reduce(handle, resid, token_sets=sets,
                               answers=None if answers is None else torch.tensor(list(answers), dtype=torch.long))
    probs = stats.set_probs if sets is not None else torch.zeros(n_layers, batch, 0)
    out = {"probs": probs.numpy(), "entropy": stats.entropy.numpy()}
    if answers is not None:
        out["rank"] = stats.rank.numpy()
    return out


def lens_entropy_profile(handle: ModelHandle, prompts: Sequence[str], batch_size: int = 16,
                         progress: Progress | None = None) -> np.ndarray:
    """Mean entropy (bits) of the last-position lens distribution per layer over `prompts`.

    Not cached: trainers call it on weights that change in place."""
    prompts = [p for p in prompts if isinstance(p, str) and p.strip()]
    if not prompts:
        raise InputError("Give at least one non-empty prompt.")
    ids = [handle.encode(p) for p in prompts]
    total = np.zeros(handle.n_layers)
    groups = batches_by_length(ids, batch_size)
    for n, group in enumerate(groups):
        resid = last_token_residuals(handle, [ids[i] for i in group])
        total += lens_statistics(handle, resid)["entropy"].sum(axis=1)
        if progress:
            progress((n + 1) / len(groups), f"Lens entropy: batch {n + 1}/{len(groups)}")
    return total / len(ids)


# --------------------------------------------------------------------------- items and prompts

def check_task(task: str, src_lang: str | None, tgt_lang: str | None) -> tuple[str, str]:
    """(source, target) language codes for a task; clear errors for unknown tasks or languages."""
    if task not in TASKS:
        raise InputError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    if not tgt_lang:
        raise InputError("Choose a target language.")
    if task == "translation":
        if not src_lang:
            raise InputError("Translation needs a source language.")
    elif src_lang and src_lang != tgt_lang:
        raise InputError(f"The {task} task reads and writes one language: leave the source language out "
                         f"or set it equal to the target ({tgt_lang}).")
    src = src_lang if task == "translation" else tgt_lang
    for code in (src, tgt_lang):
        label(code)
    return src, tgt_lang


def label(code: str) -> str:
    """A language's own name, as the prompts write it ('Français', '中文')."""
    try:
        return language_name(code)
    except LexiconError as exc:
        raise InputError(str(exc)) from None


def _word(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    return text or None


def _frame(items: Any, task: str) -> pd.DataFrame:
    if isinstance(items, pd.DataFrame):
        df = items
    elif isinstance(items, (list, tuple)) and items and all(isinstance(x, dict) for x in items):
        df = pd.DataFrame(list(items))
    elif isinstance(items, (list, tuple)) and items and all(isinstance(x, (list, tuple)) for x in items):
        sizes = {len(x) for x in items}
        if not sizes <= {2, 3}:
            raise InputError("Give pairs (source word, target word) or triples (source, target, English).")
        first = ("sentence", "answer") if task == "cloze" else ("_src", "_tgt")
        df = pd.DataFrame([dict(zip((*first, "en"), x)) for x in items])
    elif isinstance(items, (list, tuple)) and not items:
        df = pd.DataFrame()
    else:
        raise InputError("Items must be a table (DataFrame), a list of dicts, or a list of word pairs.")
    if df.empty:
        raise InputError("The word list is empty.")
    return df


def item_rows(items: Any, task: str, src: str, tgt: str) -> list[dict]:
    """Items as plain rows {concept, src, tgt, en[, sentence]} (None where a word is missing)."""
    df = _frame(items, task)
    cols = list(df.columns)
    if task == "cloze":
        for need in ("sentence", "answer"):
            if need not in cols:
                raise InputError(f"Cloze items need 'sentence' and 'answer' columns; got {', '.join(map(str, cols))}.")
        if "lang" in cols:
            df = df[df["lang"] == tgt]
            if df.empty:
                raise InputError(f"No cloze sentences in {tgt!r}.")
        if tgt == "en":
            english = df["answer"]
        elif "en" in df.columns:
            english = df["en"]
        elif "concept" in df.columns:
            english = df["concept"].map(dict(load_concepts(["en"]).values))
        else:
            raise InputError("P(English) needs each item's English word: add an 'en' or a 'concept' column.")
        return [{"concept": str(c), "src": _word(a), "tgt": _word(a), "en": _word(e), "sentence": _word(s)}
                for c, a, e, s in zip(df.get("concept", df["answer"]), df["answer"], english, df["sentence"])]
    src_col = "_src" if "_src" in cols else src
    tgt_col = "_tgt" if "_tgt" in cols else tgt
    en_col = src_col if src == "en" else tgt_col if tgt == "en" else "en"
    missing = [c for c, col in ((src, src_col), (tgt, tgt_col), ("en", en_col)) if col not in cols]
    if missing:
        langs = [str(c) for c in cols if c not in ("concept", "_src", "_tgt")]
        raise InputError(f"The word list has no {' / '.join(dict.fromkeys(missing))} words (it has "
                         f"{', '.join(langs) or 'none'}); the lens needs the source, target and English word "
                         "of each item.")
    concepts = df["concept"] if "concept" in cols else df[en_col]
    return [{"concept": str(c), "src": _word(s), "tgt": _word(t), "en": _word(e)}
            for c, s, t, e in zip(concepts, df[src_col], df[tgt_col], df[en_col])]


def build_prompt(task: str, src: str, tgt: str, demos: Sequence[dict], query: dict) -> str:
    """The k-shot prompt, ending where the model should write the target word."""
    tgt_label = label(tgt)
    if task == "cloze":
        shots = [f'{d["sentence"]}\n{tgt_label}: "{d["tgt"]}"' for d in demos]
        return "\n\n".join([*shots, f'{query["sentence"]}\n{tgt_label}: "'])
    src_label = label(src)
    shots = [f'{src_label}: "{d["src"]}" - {tgt_label}: "{d["tgt"]}"' for d in demos]
    return "\n".join([*shots, f'{src_label}: "{query["src"]}" - {tgt_label}: "'])


def _usable(row: dict, task: str) -> bool:
    return bool(row["tgt"] and (row.get("sentence") if task == "cloze" else row["src"]))


def choose_demos(rows: Sequence[dict], i: int, task: str, k_shot: int, seed: int) -> list[dict]:
    """k demonstrations for item i, drawn reproducibly from the other usable rows (never one that
    shares the query's concept, source or target word)."""
    q = rows[i]
    pool = [r for j, r in enumerate(rows) if j != i and _usable(r, task) and r["concept"] != q["concept"]
            and r["tgt"] != q["tgt"] and r["src"] != q["src"]]
    if k_shot > len(pool):
        raise InputError(f"k_shot={k_shot} is larger than the data: item {q['concept']!r} has only {len(pool)} "
                         "other items to draw examples from. Lower k or add items.")
    pick = np.random.default_rng([seed, i]).choice(len(pool), size=k_shot, replace=False)
    return [pool[j] for j in pick]


def answer_token(handle: ModelHandle, prompt_ids: Sequence[int], prompt: str, word: str) -> int:
    """The first token the model must write: the token after the prompt when prompt + word is
    tokenized together (falls back to the word's own first token if the prompt's tokens change)."""
    full = handle.encode(prompt + word)
    n = len(prompt_ids)
    if list(full[:n]) == list(prompt_ids) and len(full) > n:
        return int(full[n])
    return int(handle.encode(word, prepend_bos=False)[0])


# --------------------------------------------------------------------------- result

def mean_band(x: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 with a t-interval (lo, hi); the band collapses to the mean for one item."""
    mean = x.mean(axis=0)
    n = x.shape[0]
    if n < 2:
        return mean, mean.copy(), mean.copy()
    half = stats.t.ppf(0.5 + level / 2, n - 1) * x.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


_COLORS = {"input": "#1f77b4", "English": "#d62728", "target": "#2ca02c"}


@dataclass
class PivotResult(Result):
    """Per-item, per-layer lens statistics of one pivot run; rows of the arrays follow `items`."""

    model: str
    task: str
    src_lang: str
    tgt_lang: str
    k_shot: int
    seed: int
    languages: list[str]  # one curve per language, e.g. ["fr", "en", "zh"]
    probs: np.ndarray  # (n_items, n_layers, n_languages)
    entropy: np.ndarray  # (n_items, n_layers), bits
    rank: np.ndarray  # (n_items, n_layers), 1 = top token
    items: list[dict]  # concept, words, prompt, answer token
    dropped: list[Dropped] = field(default_factory=list)

    @property
    def params(self) -> dict[str, Any]:
        return {"task": self.task, "src_lang": self.src_lang, "tgt_lang": self.tgt_lang, "k_shot": self.k_shot,
                "seed": self.seed}

    @property
    def n_items(self) -> int:
        return self.probs.shape[0]

    @property
    def n_layers(self) -> int:
        return self.probs.shape[1]

    def prob(self, lang: str) -> np.ndarray:
        """(n_items, n_layers) probability of `lang`'s token set."""
        if lang not in self.languages:
            raise InputError(f"No curve for {lang!r}; this run has {', '.join(self.languages)}.")
        return self.probs[:, :, self.languages.index(lang)]

    def role(self, lang: str) -> str:
        roles = [name for name, code in (("input", self.src_lang), ("English", "en"), ("target", self.tgt_lang))
                 if code == lang]
        return " = ".join(roles)

    def summary(self) -> pd.DataFrame:
        """Per layer and metric: the mean with its 95% band (probabilities, entropy) or the median
        with its quartiles (answer rank)."""
        layers = np.arange(self.n_layers)
        parts = []
        for lang in self.languages:
            mean, lo, hi = mean_band(self.prob(lang))
            lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)  # a probability's band stays inside [0, 1]
            parts.append(pd.DataFrame({"layer": layers, "metric": f"P({lang})", "role": self.role(lang),
                                       "stat": "mean", "value": mean, "lo": lo, "hi": hi}))
        mean, lo, hi = mean_band(self.entropy)
        lo = np.maximum(lo, 0)
        parts.append(pd.DataFrame({"layer": layers, "metric": "entropy_bits", "role": "", "stat": "mean",
                                   "value": mean, "lo": lo, "hi": hi}))
        q1, med, q3 = np.percentile(self.rank, [25, 50, 75], axis=0)
        parts.append(pd.DataFrame({"layer": layers, "metric": "answer_rank", "role": "", "stat": "median",
                                   "value": med, "lo": q1, "hi": q3}))
        out = pd.concat(parts, ignore_index=True)
        out["n_items"] = self.n_items
        return out

    def to_frame(self, per_item: bool = False) -> pd.DataFrame:
        """The per-layer summary, or (per_item=True) one row per item and layer."""
        if not per_item:
            return self.summary()
        records = []
        for i, item in enumerate(self.items):
            for layer in range(self.n_layers):
                row = {"concept": item["concept"], **{f"word_{k}": v for k, v in item["words"].items()},
                       "answer_token": item["answer_token"], "layer": layer}
                row.update({f"P({lang})": float(self.probs[i, layer, k]) for k, lang in enumerate(self.languages)})
                row.update({"entropy_bits": float(self.entropy[i, layer]), "answer_rank": int(self.rank[i, layer])})
                records.append(row)
        return pd.DataFrame.from_records(records)

    def dropped_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"concept": d.concept, "reason": d.reason} for d in self.dropped],
                            columns=["concept", "reason"])

    def title(self) -> str:
        pair = f"{self.src_lang}→{self.tgt_lang}" if self.task == "translation" else self.tgt_lang
        return (f"{self.model}: {self.task} {pair}, {self.n_items} items, {self.k_shot}-shot"
                f" ({len(self.dropped)} dropped)")

    def figure(self):
        """Plotly figure: language probabilities, lens entropy and answer rank per layer."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        summary = self.summary()
        fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=[0.5, 0.25, 0.25],
                            subplot_titles=("Lens probability of the word (mean, 95% band)",
                                            "Lens entropy (bits)", "Rank of the answer token (median, quartiles)"))
        curves = [(f"P({lang})", f"{lang} ({self.role(lang)})", _COLORS[self.role(lang).split(" = ")[-1]], 1)
                  for lang in self.languages]
        curves += [("entropy_bits", "entropy", "#555555", 2), ("answer_rank", "answer rank", "#9467bd", 3)]
        for metric, name, color, row in curves:
            part = summary[summary["metric"] == metric]
            x = part["layer"].tolist()
            fig.add_trace(go.Scatter(x=x + x[::-1], y=part["hi"].tolist() + part["lo"].tolist()[::-1], fill="toself",
                                     fillcolor=color, opacity=0.18, line=dict(width=0), hoverinfo="skip",
                                     showlegend=False, legendgroup=name), row=row, col=1)
            fig.add_trace(go.Scatter(x=x, y=part["value"], mode="lines+markers", name=name, legendgroup=name,
                                     line=dict(color=color)), row=row, col=1)
        fig.update_yaxes(range=[0, 1], row=1, col=1)
        fig.update_yaxes(type="log", row=3, col=1)
        fig.update_xaxes(title_text="layer", row=3, col=1)
        fig.update_layout(title=self.title(), height=720, template="plotly_white")
        return fig


# --------------------------------------------------------------------------- the probe

def pivot(handle: ModelHandle, items_or_pairs: Any, task: str = "translation", *, src_lang: str | None = None,
          tgt_lang: str | None = None, k_shot: int = 4, seed: int = 0, batch_size: int = 16,
          use_cache: bool = True, progress: Progress | None = None) -> PivotResult:
    """Latent-language lens over items: a word table (DataFrame with `concept` and language columns,
    as from `workbench.datasets.lexicon`), a list of dicts, or (src, tgt[, en]) word tuples; for
    `task="cloze"` a table with `sentence` and `answer` (and `lang`, `concept`/`en`) columns.

    Items missing a word, with an empty token set, or whose languages' token sets overlap are
    dropped and listed in `result.dropped`. Cached per (model weights, task, languages, k, seed, items).
    """
    src, tgt = check_task(task, src_lang, tgt_lang)
    if not isinstance(k_shot, int) or isinstance(k_shot, bool) or k_shot < 0:
        raise InputError(f"k_shot must be a whole number >= 0, got {k_shot!r}.")
    limits.check("pivot_shots", k_shot)
    rows = item_rows(items_or_pairs, task, src, tgt)
    limits.check("pivot_items", len(rows))
    usable = sum(_usable(r, task) for r in rows)
    if k_shot >= usable:
        raise InputError(f"k_shot={k_shot} is larger than the data: {usable} usable items leave at most "
                         f"{max(0, usable - 1)} examples per query. Lower k or add items.")
    params = {"task": task, "src": src, "tgt": tgt, "k_shot": k_shot, "seed": seed}
    return cached("pivot", handle, params, rows,
                  lambda: _run(handle, rows, task, src, tgt, k_shot, seed, batch_size, progress), use_cache)


def _run(handle: ModelHandle, rows: list[dict], task: str, src: str, tgt: str, k_shot: int, seed: int,
         batch_size: int, progress: Progress | None) -> PivotResult:
    languages = list(dict.fromkeys([src, "en", tgt]))
    dropped: list[Dropped] = []
    complete = []
    for i, row in enumerate(rows):
        needs = ((f"the {src} word", row["src"]), (f"the {tgt} word", row["tgt"]), ("the en word", row["en"]),
                 ("the sentence", row.get("sentence", True)))
        gaps = [what for what, ok in needs if not ok]
        if gaps:
            dropped.append(Dropped(i, row["concept"], "missing " + " and ".join(dict.fromkeys(gaps))))
        else:
            complete.append(i)
    words = [{src: rows[i]["src"], tgt: rows[i]["tgt"], "en": rows[i]["en"]} for i in complete]
    sets = build_token_sets(handle.tokenizer, words, languages, [rows[i]["concept"] for i in complete])
    dropped += [Dropped(complete[d.index], d.concept, d.reason) for d in sets.dropped]
    kept = [complete[j] for j in sets.kept]
    if not kept:
        reasons = "; ".join(f"{d.concept}: {d.reason}" for d in dropped[:3])
        raise InputError(f"All {len(rows)} items were dropped ({reasons}{' ...' if len(dropped) > 3 else ''}).")

    items, prompt_ids = [], []
    for n, i in enumerate(kept):
        prompt = build_prompt(task, src, tgt, choose_demos(rows, i, task, k_shot, seed), rows[i])
        ids = handle.encode(prompt)
        answer = answer_token(handle, ids, prompt, rows[i]["tgt"])
        prompt_ids.append(ids)
        items.append({"concept": rows[i]["concept"], "words": {lang: words[sets.kept[n]][lang] for lang in languages},
                      "prompt": prompt, "answer_id": answer, "answer_token": handle.tokenizer.decode([answer]),
                      "n_tokens": len(ids), "set_sizes": {lang: len(s) for lang, s in sets.sets[n].items()}})

    n_layers = handle.n_layers
    probs = np.zeros((len(kept), n_layers, len(languages)))
    entropy = np.zeros((len(kept), n_layers))
    rank = np.zeros((len(kept), n_layers), dtype=np.int64)
    # Under `accelerate launch` the processes share whole batches, formed over all items as in one
    # process: a batch's size and padding move float32 results by ~1e-8, so splitting items before
    # batching would not reproduce the one-process result bit for bit. Strided shares balance the
    # work (batches come longest first).
    groups = batches_by_length(prompt_ids, batch_size)
    mine = distributed.share(len(groups), strided=True)
    outputs = []
    for n, g in enumerate(mine.positions):
        if progress:
            progress(n / len(mine.positions), f"Lens: batch {n + 1}/{len(mine.positions)}")
        group = groups[g]
        resid = last_token_residuals(handle, [prompt_ids[j] for j in group])
        token_sets = [[sets.sets[j][lang] for j in group] for lang in languages]
        outputs.append(lens_statistics(handle, resid, token_sets, [items[j]["answer_id"] for j in group]))
    for group, out in zip(groups, mine.gather(outputs)):
        probs[group] = out["probs"].transpose(1, 0, 2)
        entropy[group] = out["entropy"].T
        rank[group] = out["rank"].T
    if progress:
        progress(1.0, "Lens: done")
    return PivotResult(handle.facts.spec, task, src, tgt, k_shot, seed, languages, probs, entropy, rank, items,
                       sorted(dropped, key=lambda d: d.index))


# --------------------------------------------------------------------------- logit-lens grid

@dataclass
class LensGrid(Result):
    """Top-k lens tokens at every (layer, position) of one prompt."""

    model: str
    prompt: str
    tokens: list[str]  # the prompt's tokens, as shown
    top_ids: np.ndarray  # (n_layers, n_positions, k)
    top_probs: np.ndarray  # (n_layers, n_positions, k)
    top_tokens: list[list[list[str]]]  # (n_layers, n_positions, k) as shown

    @property
    def params(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "top_k": int(self.top_ids.shape[2])}

    def summary(self) -> pd.DataFrame:
        """Per layer, the lens's top token at the last position (the next-token prediction)."""
        last = self.top_ids.shape[1] - 1
        return pd.DataFrame({"layer": np.arange(self.top_ids.shape[0]), "position": last,
                             "input_token": self.tokens[last], "token": [layer[last][0] for layer in self.top_tokens],
                             "prob": self.top_probs[:, last, 0].astype(np.float64)})

    def to_frame(self) -> pd.DataFrame:
        """One row per layer, position and rank."""
        n_layers, n_pos, k = self.top_ids.shape
        return pd.DataFrame([
            {"layer": l, "position": t, "input_token": self.tokens[t], "rank": r + 1,
             "token": self.top_tokens[l][t][r], "token_id": int(self.top_ids[l, t, r]),
             "prob": float(self.top_probs[l, t, r])}
            for l in range(n_layers) for t in range(n_pos) for r in range(k)])

    def figure(self):
        """Heatmap: layer x position, colour = top-1 probability, text = top-1 token, hover = top-k."""
        import plotly.graph_objects as go

        n_layers, n_pos, k = self.top_ids.shape
        hover = [[f"layer {l}, position {t} ({self.tokens[t]})<br>" + "<br>".join(
                    f"{r + 1}. {self.top_tokens[l][t][r]}  {self.top_probs[l, t, r]:.3f}" for r in range(k))
                  for t in range(n_pos)] for l in range(n_layers)]
        fig = go.Figure(go.Heatmap(
            z=self.top_probs[:, :, 0], x=list(range(n_pos)), y=list(range(n_layers)), zmin=0, zmax=1,
            colorscale="Blues", colorbar=dict(title="top-1 p"),
            text=[[self.top_tokens[l][t][0] for t in range(n_pos)] for l in range(n_layers)],
            texttemplate="%{text}", textfont=dict(size=10), customdata=hover,
            hovertemplate="%{customdata}<extra></extra>"))
        fig.update_xaxes(tickmode="array", tickvals=list(range(n_pos)), ticktext=self.tokens, tickangle=-45,
                         title_text="input token (the lens shows the next-token prediction there)")
        fig.update_yaxes(title_text="layer")
        fig.update_layout(title=f"{self.model}: logit lens", height=max(360, 28 * n_layers + 160),
                          template="plotly_white")
        return fig


def show_token(tokenizer: Any, token_id: int) -> str:
    """A token as text for a plot: byte pieces by name, whitespace made visible."""
    text = tokenizer.decode([int(token_id)])
    if "\ufffd" in text or not text:
        text = tokenizer.convert_ids_to_tokens(int(token_id))
    return text.replace("\n", "⏎").replace(" ", "␣")


def logit_lens_grid(handle: ModelHandle, prompt: str, top_k: int = 5, use_cache: bool = True) -> LensGrid:
    """The logit lens at every layer and position of one prompt, keeping the top-k tokens."""
    if not isinstance(top_k, int) or not 1 <= top_k <= 50:
        raise InputError(f"top_k must be between 1 and 50, got {top_k!r}.")
    ids = engine.as_ids(handle, prompt)
    limits.check("grid_prompt_tokens", ids.shape[-1])
    return cached("logit_lens_grid", handle, {"top_k": top_k}, ids[0].tolist(),
                  lambda: _grid(handle, prompt, ids, top_k), use_cache)


@torch.no_grad()
def _grid(handle: ModelHandle, prompt: str, ids: torch.Tensor, top_k: int) -> LensGrid:
    resid = engine.residual_stream(handle, ids)[:, 0]  # (n_layers, T, d)
    stats = engine.lens_reduce(handle, resid, top_k=top_k, entropy=False)
    top_ids = stats.top_ids.numpy()
    names = {int(i): show_token(handle.tokenizer, int(i)) for i in np.unique(top_ids)}
    return LensGrid(handle.facts.spec, prompt, [show_token(handle.tokenizer, int(i)) for i in ids[0]], top_ids,
                    stats.top_probs.numpy(), [[[names[int(i)] for i in pos] for pos in layer] for layer in top_ids])
