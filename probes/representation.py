"""Where languages merge: last-token residuals of parallel prompts, per layer, projected to 2-D.

The model runs once (all layers kept, no unembedding); the result holds the residuals, so a layer
slider or a switch between PCA and UMAP only re-projects. Two numbers per layer summarise the
picture: the language silhouette (near 1 = points cluster by language, near 0 or below = mixed)
and cross-lingual retrieval (how often a prompt's nearest neighbour in another language is its own
translation; chance is 1 / number of prompts per language).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from workbench import limits
from workbench.cache import cached
from workbench.errors import InputError
from workbench.models import ModelHandle
from workbench.progress import Progress
from workbench.results import Result

from .pivot import batches_by_length, last_token_residuals

METHODS = ("umap", "pca")


def _unit(x: np.ndarray) -> np.ndarray:
    """Centre on the mean of all points and scale each to unit length: massive activations in a
    few residual dimensions would otherwise dominate both projections and distances."""
    x = x - x.mean(axis=0, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def merge_scores(residuals: np.ndarray, languages: Sequence[str], concepts: Sequence[int]) -> pd.DataFrame:
    """Per layer: language silhouette (cosine) and mean cross-lingual retrieval accuracy."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(languages)
    concepts = np.asarray(concepts)
    langs = list(dict.fromkeys(languages))
    rows = []
    for layer, x in enumerate(residuals):
        x = _unit(x.astype(np.float64))
        silhouette = float(silhouette_score(x, labels, metric="cosine"))
        hits = []
        for a in langs:
            for b in langs:
                if a == b:
                    continue
                xa, xb = x[labels == a], x[labels == b]
                nearest = concepts[labels == b][np.argmax(xa @ xb.T, axis=1)]
                hits.append(np.mean(nearest == concepts[labels == a]))
        rows.append({"layer": layer, "language_silhouette": silhouette, "retrieval_accuracy": float(np.mean(hits))})
    return pd.DataFrame(rows)


@dataclass
class RepresentationResult(Result):
    """Last-token residuals of parallel prompts at every layer, with lazily computed 2-D maps."""

    model: str
    languages: list[str]  # per point
    concepts: list[int]  # per point: index of the parallel prompt (same index = same meaning)
    prompts: list[str]  # per point
    residuals: np.ndarray  # (n_layers, n_points, d_model)
    scores: pd.DataFrame  # per layer: language_silhouette, retrieval_accuracy
    method: str = "umap"
    seed: int = 0
    _coords: dict = field(default_factory=dict, repr=False, compare=False)  # (method, seed, layer) -> (n, 2)

    @property
    def params(self) -> dict[str, Any]:
        return {"languages": list(dict.fromkeys(self.languages)), "method": self.method, "seed": self.seed}

    @property
    def n_layers(self) -> int:
        return self.residuals.shape[0]

    def coords(self, layer: int) -> np.ndarray:
        """2-D coordinates of every point at `layer` (computed once per method and layer)."""
        if not isinstance(layer, (int, np.integer)) or not 0 <= layer < self.n_layers:
            raise InputError(f"Layer {layer!r} is out of range: the map has layers 0..{self.n_layers - 1}.")
        key = (self.method, self.seed, int(layer))
        if key not in self._coords:
            self._coords[key] = project(self.residuals[layer], self.method, self.seed)
        return self._coords[key]

    def points_frame(self, layer: int) -> pd.DataFrame:
        xy = self.coords(layer)
        return pd.DataFrame({"layer": layer, "language": self.languages, "concept": self.concepts,
                             "prompt": self.prompts, "x": xy[:, 0], "y": xy[:, 1]})

    def summary(self) -> pd.DataFrame:
        """The per-layer merge scores: language silhouette and cross-lingual retrieval."""
        return self.scores.copy()

    def to_frame(self) -> pd.DataFrame:
        """The per-layer merge scores too: the residuals are too wide for a table (see `points_frame`)."""
        return self.summary()

    def figure(self, layer: int | None = None):
        """Scatter of the 2-D map at `layer` (default the last), coloured by language."""
        import plotly.express as px

        layer = self.n_layers - 1 if layer is None else layer

        frame = self.points_frame(layer)
        score = self.scores.iloc[layer]
        fig = px.scatter(frame, x="x", y="y", color="language", hover_data={"prompt": True, "concept": True,
                                                                              "x": False, "y": False})
        fig.update_traces(marker=dict(size=8, opacity=0.8))
        fig.update_layout(
            title=(f"{self.model}, layer {layer} ({self.method.upper()})<br><sup>language silhouette "
                   f"{score.language_silhouette:.2f}, cross-lingual retrieval {score.retrieval_accuracy:.0%}</sup>"),
            template="plotly_white", height=520, xaxis_title=f"{self.method} 1", yaxis_title=f"{self.method} 2")
        return fig

    def scores_figure(self):
        """Per-layer merge scores: where the languages stop being separable."""
        import plotly.graph_objects as go

        chance = 1 / max(1, len(set(self.concepts)))
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=self.scores["layer"], y=self.scores["language_silhouette"],
                                 mode="lines+markers", name="language silhouette"))
        fig.add_trace(go.Scatter(x=self.scores["layer"], y=self.scores["retrieval_accuracy"],
                                 mode="lines+markers", name="cross-lingual retrieval"))
        fig.add_hline(y=chance, line_dash="dot", annotation_text="retrieval by chance")
        fig.update_layout(title=f"{self.model}: where languages merge", xaxis_title="layer", template="plotly_white",
                          height=360)
        return fig


def project(x: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(n, d) -> (n, 2) with PCA or UMAP, after centring and unit-normalising the rows."""
    x = _unit(np.asarray(x, dtype=np.float64))
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), min_dist=0.1, random_state=seed)
        with warnings.catch_warnings():  # a fixed seed makes UMAP single-threaded, and it says so each time
            warnings.filterwarnings("ignore", message=".*overridden to 1 by setting random_state.*")
            return reducer.fit_transform(x)
    raise InputError(f"Unknown projection {method!r}; choose one of {', '.join(METHODS)}.")


def _check(prompts_by_lang: Mapping[str, Sequence[str]], method: str) -> dict[str, list[str]]:
    if method not in METHODS:
        raise InputError(f"Unknown projection {method!r}; choose one of {', '.join(METHODS)}.")
    prompts = {str(lang): list(p) for lang, p in dict(prompts_by_lang or {}).items()}
    if len(prompts) < 2:
        raise InputError("Give parallel prompts in at least two languages.")
    sizes = {lang: len(p) for lang, p in prompts.items()}
    if len(set(sizes.values())) != 1:
        raise InputError("The prompt lists must be parallel (same length per language); got "
                         + ", ".join(f"{lang}: {n}" for lang, n in sizes.items()) + ".")
    n = next(iter(sizes.values()))
    if n < 3:
        raise InputError(f"Give at least 3 parallel prompts per language (got {n}).")
    for lang, plist in prompts.items():
        for i, p in enumerate(plist):
            if not isinstance(p, str) or not p.strip():
                raise InputError(f"Prompt {i + 1} of {lang!r} is empty.")
    return prompts


def representation_map(handle: ModelHandle, prompts_by_lang: Mapping[str, Sequence[str]], method: str = "umap",
                       seed: int = 0, batch_size: int = 32, use_cache: bool = True,
                       progress: Progress | None = None) -> RepresentationResult:
    """Last-token residuals of parallel prompts (`{lang: [prompt, ...]}`, index i = the same meaning
    in every language) at every layer; `.figure(layer)` projects one layer with `method`."""
    prompts = _check(prompts_by_lang, method)
    limits.check("pivot_items", max((len(p) for p in prompts.values()), default=0))
    base = cached("representation", handle, {}, prompts,
                  lambda: _compute(handle, prompts, batch_size, progress), use_cache)
    return replace(base, method=method, seed=seed, _coords=base._coords)


def _compute(handle: ModelHandle, prompts: dict[str, list[str]], batch_size: int,
             progress: Progress | None) -> RepresentationResult:
    languages, concepts, texts = [], [], []
    for lang, plist in prompts.items():
        for i, p in enumerate(plist):
            languages.append(lang)
            concepts.append(i)
            texts.append(p)
    ids = [handle.encode(t) for t in texts]
    residuals = np.zeros((handle.n_layers, len(ids), handle.facts.d_model), dtype=np.float32)
    groups = batches_by_length(ids, batch_size)
    for g, group in enumerate(groups):
        if progress:
            progress(g / len(groups), f"Residuals: batch {g + 1}/{len(groups)}")
        residuals[:, group] = last_token_residuals(handle, [ids[i] for i in group]).float().cpu().numpy()
    if progress:
        progress(1.0, "Residuals: done")
    return RepresentationResult(handle.facts.spec, languages, concepts, texts, residuals,
                                merge_scores(residuals, languages, concepts))
