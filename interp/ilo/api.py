"""``interp.ilo.score``: ILO per layer and language, with its baselines.

Flow: activations ``[L, N, D]`` + language labels -> exact kNN per layer
(:func:`interp.knn`: self excluded by index, ties to the lower index) ->
vectorised bridge / reach / ILO (:mod:`.measures`) -> optional null,
translation-aware view and bootstrap CIs (:mod:`.baselines`) -> tidy tables.

``compat=True`` reproduces the official code's neighbour step: take the k+1
nearest points *including* the point itself and drop the first column by
position. Without duplicate points the first column is the point itself and
both modes agree; with copies i < j, ties go to the lower index, so the later
copy j finds i first: j keeps itself in its list and loses its duplicate i
(its other neighbours stay). The official code's float32 ``torch.topk`` also
reorders near-ties, so published numbers are not reproduced bit for bit
(docs/ilo.md, "Compat mode").
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from interp.extraction.activations import Activations
from interp.ilo.baselines import (
    bootstrap_ilo,
    percentile_ci,
    permutation_null,
    retrieval_accuracy,
    translation_share,
)
from interp.ilo.measures import bridge_reach, slot_counts
from interp.neighbors import knn

__all__ = ["score", "ILOResult"]


@dataclass
class ILOResult:
    """Scores of one run.

    Attributes:
        table: one row per (layer, language): ``layer, language, bridge,
            reach, reach_raw, ilo`` (+ ``null_mean, null_std, ilo_minus_null,
            z`` with ``null``; ``translation_share`` with item ids;
            ``ilo_ci_low, ilo_ci_high`` with ``bootstrap``).
        by_layer: one row per layer: mean / median / min ILO over languages,
            mean bridge and reach (+ mean null and translation share).
        cooccurrence: ``[L, n_langs, n_langs]`` neighbour-slot counts
            (row language's points, column language's neighbours).
        retrieval: ``[L, n_langs, n_langs]`` cross-lingual retrieval accuracy, if asked.
        indices: ``[L, N, k]`` the neighbour lists used.
    """

    table: pd.DataFrame
    by_layer: pd.DataFrame
    cooccurrence: torch.Tensor
    languages: list[str]
    layers: list[int]
    params: dict = field(default_factory=dict)
    indices: torch.Tensor | None = None
    retrieval: torch.Tensor | None = None

    def pivot(self, column: str = "ilo") -> pd.DataFrame:
        """Language × layer table of one column."""
        return self.table.pivot(index="language", columns="layer", values=column).loc[self.languages]

    def plot(self, **kwargs):
        """ILO per layer, one line per language (see :func:`interp.plot.plot_ilo_layers`)."""
        from interp.plot import plot_ilo_layers

        return plot_ilo_layers(self, **kwargs)

    def __repr__(self) -> str:
        best = self.by_layer["ilo_mean"].idxmax()
        return (
            f"ILOResult({len(self.layers)} layers × {len(self.languages)} languages, k={self.params.get('k')}, "
            f"t={self.params.get('t')}, {self.params.get('metric')}; max mean ILO "
            f"{self.by_layer['ilo_mean'].max():.3f} at layer {best})"
        )


def _inputs(acts, langs, ids):
    if isinstance(acts, Activations):
        x, layers = acts.tensor, list(acts.layers)
        langs = acts.labels if langs is None else langs
        ids = acts.ids if ids is None else ids
        if acts.lengths is not None:
            raise ValueError("ILO needs pooled activations (one vector per text); these have pooling='none'")
    elif isinstance(acts, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(acts)
        if x.ndim == 2:
            x = x.unsqueeze(0)
        if x.ndim != 3:
            raise ValueError(f"activations must be [n_layers, N, D] or [N, D], got shape {tuple(x.shape)}")
        layers = list(range(x.shape[0]))
    else:
        raise TypeError(f"acts must be interp.Activations or a tensor, got {type(acts).__name__}")
    if langs is None:
        raise ValueError("langs is required: one language label per point (or Activations with labels)")
    langs = list(langs)
    if len(langs) != x.shape[1]:
        raise ValueError(f"langs has {len(langs)} labels but there are {x.shape[1]} points")
    if ids is not None and len(ids) != x.shape[1]:
        raise ValueError(f"ids has {len(ids)} entries but there are {x.shape[1]} points")
    if not x.dtype.is_floating_point:
        raise TypeError(f"activations must be floating point, got {x.dtype}")
    if not torch.isfinite(x).all():
        layer = int((~torch.isfinite(x)).flatten(1).any(1).nonzero()[0])
        raise ValueError(f"activations contain NaN or Inf (first in layer {layers[layer]}); ILO needs finite vectors")
    return x, layers, langs, ids


def _codes(values) -> tuple[torch.Tensor, list]:
    order = list(dict.fromkeys(values))  # first-appearance order
    lookup = {v: i for i, v in enumerate(order)}
    return torch.tensor([lookup[v] for v in values], dtype=torch.int64), order


def _is_int(value) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_baselines(null, bootstrap, seed) -> None:
    """Validate the baseline arguments (before any work, in the single-process and the sharded path)."""
    if not _is_int(null) or null < 0 or null == 1:
        raise ValueError(f"null must be 0 (no null) or an int >= 2 permutations (its std needs two), got {null!r}")
    if not _is_int(bootstrap) or bootstrap < 0:
        raise ValueError(f"bootstrap must be an int >= 0 (number of item resamples; 0 = none), got {bootstrap!r}")
    if not _is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")


def _check(codes, languages, ids, k, t, min_count, bootstrap, retrieval) -> tuple[torch.Tensor | None, int, int, int]:
    """Validate the scoring arguments against the (global) labels.

    Returns ``(item codes or None, k, t, min_count)``, the integers as Python ints (numpy ones are accepted).
    """
    n_langs, n_points = len(languages), len(codes)
    if n_langs < 2:
        raise ValueError(f"ILO compares languages: need at least 2, got {languages}")
    per_lang = torch.bincount(codes, minlength=n_langs)
    small = [languages[i] for i in range(n_langs) if per_lang[i] < 2]
    if small:
        raise ValueError(f"languages with fewer than 2 points: {small}; ILO needs at least 2 per language")
    if not _is_int(k) or not 1 <= k < n_points - 1:
        raise ValueError(f"k must be an int with 1 <= k < N - 1 = {n_points - 1}, got {k!r}")
    if not _is_int(t) or not 1 <= t <= k:
        raise ValueError(f"t must be an int with 1 <= t <= k = {k}, got {t!r}")
    if not _is_int(min_count) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1 (neighbour slots), got {min_count!r}")
    items = None if ids is None else _codes(ids)[0]
    if (bootstrap or retrieval) and items is None:
        raise ValueError("bootstrap and retrieval need item ids (which points are translations of each other)")
    if items is not None and int(items.max()) + 1 == n_points:
        unpaired = (
            "every item id is distinct, so no point has a translation to find (Activations made without ids= "
            "carry 0..N-1); pass ids= with the same id for the translations of one item"
        )
        if retrieval:
            raise ValueError(f"retrieval needs translations: {unpaired}")
        warnings.warn(f"translation_share is 0 by construction: {unpaired}", UserWarning, stacklevel=3)
    return items, int(k), int(t), int(min_count)


def _tables(columns: dict, layers: list[int], languages: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-(layer, language) table and the per-layer summary from ``[L, n_langs]`` columns."""
    n_langs = len(languages)
    table = pd.DataFrame(
        {
            "layer": np.repeat(layers, n_langs),
            "language": languages * len(layers),
            **{name: value.reshape(-1).numpy() for name, value in columns.items()},
        }
    )
    grouped = table.groupby("layer", sort=True)
    by_layer = pd.DataFrame(
        {
            "ilo_mean": grouped["ilo"].mean(),
            "ilo_median": grouped["ilo"].median(),
            "ilo_min": grouped["ilo"].min(),
            "bridge_mean": grouped["bridge"].mean(),
            "reach_mean": grouped["reach"].mean(),
        }
    )
    for extra in ("null_mean", "ilo_minus_null", "translation_share"):
        if extra in table:
            by_layer[extra] = grouped[extra].mean()
    return table, by_layer


def score(
    acts,
    langs=None,
    k: int = 5,
    t: int = 3,
    metric: str = "cosine",
    compat: bool = False,
    *,
    ids=None,
    min_count: int = 1,
    null: int = 0,
    bootstrap: int = 0,
    retrieval: bool = False,
    seed: int = 0,
    backend: str = "auto",
    group=None,
    timeout: float | None = None,
) -> ILOResult:
    """ILO score per layer and language (Wilie et al. 2025).

    Args:
        acts: :class:`interp.Activations` (labels/ids used unless given) or a
            tensor ``[n_layers, N, D]`` / ``[N, D]``.
        langs: ``N`` language labels (default: ``acts.labels``).
        k: neighbours per point (official default 5); ``k < N - 1``.
        t: a point "bridges" if its neighbours span >= t other languages (3); ``1 <= t <= k``.
        metric: ``"cosine"`` (official) or ``"euclidean"``.
        compat: reproduce the official positional self-drop (see module docstring).
        ids: item ids (which points are translations of each other; default
            ``acts.ids``); enables the translation-aware columns.
        min_count: a language counts towards reach only if it fills at least
            this many neighbour slots of the language (1 = official).
        null: number of label permutations for the null (0 = none).
        bootstrap: number of item resamples for 95% CIs (0 = none; needs ids).
        retrieval: also compute cross-lingual retrieval accuracy per language pair (needs ids).
        seed: seed of the null and the bootstrap.
        group: a ``torch.distributed`` process group (e.g. ``dist.group.WORLD``):
            ``acts``, ``langs`` and ``ids`` are then this rank's contiguous shard
            of the points (shards in rank order), the kNN is sharded and the
            scores are reduced over ranks -- see :mod:`interp.ilo.distributed`.
        timeout: with ``group``, seconds before a silent peer is an error.

    Returns:
        :class:`ILOResult`.
    """
    _check_baselines(null, bootstrap, seed)
    if group is not None:
        from interp.ilo.distributed import score_sharded

        return score_sharded(acts, langs, k, t, metric, compat, ids=ids, min_count=min_count, null=null,
                             bootstrap=bootstrap, retrieval=retrieval, seed=seed, backend=backend, group=group,
                             timeout=timeout)  # fmt: skip
    x, layers, langs, ids = _inputs(acts, langs, ids)
    codes, languages = _codes(langs)
    n_langs, n_points = len(languages), len(langs)
    items, k, t, min_count = _check(codes, languages, ids, k, t, min_count, bootstrap, retrieval)
    null, bootstrap, seed = map(int, (null, bootstrap, seed))

    if compat:
        found, _ = knn(x, k + 1, metric=metric, exclude_self=False, backend=backend)
        indices = found[..., 1:]
    else:
        indices, _ = knn(x, k, metric=metric, exclude_self=True, backend=backend)
    indices = indices.cpu()  # scoring runs on the CPU labels (the kNN may have run on CUDA activations)
    counts = slot_counts(indices, codes, n_langs)
    scores = bridge_reach(counts, codes, n_langs, t, min_count)

    columns = {name: scores[name] for name in ("bridge", "reach", "reach_raw", "ilo")}
    if null:
        null_ilo = permutation_null(indices, codes, n_langs, t, null, seed, min_count)
        columns["null_mean"] = null_ilo.mean(0)
        columns["null_std"] = null_ilo.std(0)
        columns["ilo_minus_null"] = scores["ilo"] - columns["null_mean"]
        columns["z"] = columns["ilo_minus_null"] / columns["null_std"].clamp_min(1e-12)
    if items is not None:
        columns["translation_share"] = translation_share(indices, codes, items, n_langs)
    if bootstrap:
        boot = bootstrap_ilo(counts, codes, items, n_langs, t, bootstrap, seed, min_count)
        columns["ilo_ci_low"], columns["ilo_ci_high"] = percentile_ci(boot)

    table, by_layer = _tables(columns, layers, languages)
    params = {"k": k, "t": t, "metric": metric, "compat": compat, "min_count": min_count, "null": null,
              "bootstrap": bootstrap, "seed": seed, "n_points": n_points}  # fmt: skip
    return ILOResult(
        table=table,
        by_layer=by_layer,
        cooccurrence=scores["cooccurrence"],
        languages=languages,
        layers=layers,
        params=params,
        indices=indices,
        retrieval=retrieval_accuracy(x, codes, items, n_langs, metric, backend) if retrieval else None,
    )
