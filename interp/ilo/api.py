"""``interp.ilo.score``: ILO per layer and language, with its baselines.

Flow: activations ``[L, N, D]`` + language labels -> exact kNN per layer
(:func:`interp.knn`: self excluded by index, ties to the lower index) ->
vectorised bridge / reach / ILO (:mod:`.measures`) -> optional null,
translation-aware view and bootstrap CIs (:mod:`.baselines`) -> tidy tables.
The same function runs sharded over ``torch.distributed`` ranks: the points'
layout (:mod:`.points`, :mod:`.sharded`) decides only whether per-language
sums are local or ``all_reduce`` d, so every formula exists once.

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

import time
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
import torch

from interp._validation import first_appearance_codes, renamed
from interp.ilo.baselines import (
    bootstrap_ilo,
    chance_share,
    percentile_ci,
    permutation_null,
    retrieval_accuracy,
    topic_share,
    translation_share,
)
from interp.ilo.inputs import check_baselines, check_inputs, check_scoring
from interp.ilo.measures import language_sums, scores_from_sums, slot_counts
from interp.ilo.points import LocalPoints
from interp.parallel.collectives import as_timeout

__all__ = ["score", "ILOResult", "TABLE_COLUMNS"]

#: What each column of :attr:`ILOResult.table` means (the job's README and docs/ilo.md quote it).
TABLE_COLUMNS = {
    "layer": "hidden-state index (0 = embeddings, i = output of decoder block i-1, L = after the final norm)",
    "language": "the points' language (FLORES-200 code)",
    "bridge": "share of the language's points whose k neighbours span >= t other languages",
    "reach": "reach_raw / (number of languages - 1)",
    "reach_raw": "number of other languages that fill at least min_count of the language's neighbour slots",
    "ilo": "ILO: harmonic mean of bridge and reach (0 if either is 0)",
    "null_mean": "mean ILO over label permutations (language identity shuffled, neighbour graph kept): "
    "the score of random mixing",
    "null_std": "standard deviation of the permutation ILO",
    "ilo_minus_null": "ilo - null_mean",
    "z": "ilo_minus_null / null_std",
    "ilo_share_of_null": "ilo / null_mean: 1 = as mixed as random labels, lower = more separated by language",
    "translation_share": "mean share of a point's k neighbours that are the same item in another language",
    "translation_share_chance": "translation_share expected for neighbours drawn uniformly at random",
    "topic_share": "mean share of a point's k neighbours that are same-topic sentences in another language "
    "(translations included)",
    "topic_share_chance": "topic_share expected for neighbours drawn uniformly at random",
    "ilo_ci_low": "2.5th percentile of ILO over item resamples (bootstrap)",
    "ilo_ci_high": "97.5th percentile of ILO over item resamples (bootstrap)",
}


@dataclass
class ILOResult:
    """Scores of one run.

    Attributes:
        table: one row per (layer, language): ``layer, language, bridge,
            reach, reach_raw, ilo`` (+ ``null_mean, null_std, ilo_minus_null,
            z, ilo_share_of_null`` with ``null``; ``translation_share,
            translation_share_chance`` with item ids; ``topic_share,
            topic_share_chance`` with topics; ``ilo_ci_low, ilo_ci_high`` with
            ``bootstrap``). :data:`TABLE_COLUMNS` says what each column means.
        by_layer: one row per layer: mean / median / min ILO over languages,
            mean bridge and reach (+ the means of the null and share columns).
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
        """ILO per layer, one line per language (see :func:`interp.ilo.plot.plot_ilo_layers`)."""
        from interp.ilo.plot import plot_ilo_layers

        return plot_ilo_layers(self, **kwargs)

    def __repr__(self) -> str:
        best = self.by_layer["ilo_mean"].idxmax()
        return (
            f"ILOResult({len(self.layers)} layers × {len(self.languages)} languages, k={self.params.get('k')}, "
            f"t={self.params.get('t')}, {self.params.get('metric')}; max mean ILO "
            f"{self.by_layer['ilo_mean'].max():.3f} at layer {best})"
        )


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
    extras = ("null_mean", "ilo_minus_null", "ilo_share_of_null", "translation_share", "translation_share_chance",
              "topic_share", "topic_share_chance")  # fmt: skip
    for extra in extras:
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
    topics=None,
    min_count: int = 1,
    null: int = 0,
    bootstrap: int = 0,
    retrieval: bool = False,
    seed: int = 0,
    knn_backend: str = "auto",
    group=None,
    timeout: float | timedelta | None = None,
    backend: str | None = None,
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
        topics: one topic label per point (e.g. FLORES-200's, from
            ``ParallelCorpus.flat_meta("topic")``); enables ``topic_share`` and
            ``topic_share_chance``: a reader can tell languages mixing by meaning
            from languages mixing at random.
        min_count: a language counts towards reach only if it fills at least
            this many neighbour slots of the language (1 = official).
        null: number of label permutations for the null (0 = none).
        bootstrap: number of item resamples for 95% CIs (0 = none; needs ids).
        retrieval: also compute cross-lingual retrieval accuracy per language pair (needs ids).
        seed: seed of the null and the bootstrap.
        knn_backend: the kNN's stage-1 engine (:func:`interp.knn`); ``backend=`` is its
            deprecated old name (``backend`` is the extraction engine elsewhere in interp).
        group: a ``torch.distributed`` process group (e.g. ``dist.group.WORLD``):
            ``acts``, ``langs`` and ``ids`` are then this rank's contiguous shard
            of the points (shards in rank order), the kNN is sharded and the
            sums are reduced over ranks -- see :mod:`interp.ilo.sharded`. Every
            rank returns the single-process tables bit for bit; ``indices`` holds
            this rank's rows.
        timeout: with ``group``, seconds before a silent peer is an error.

    Returns:
        :class:`ILOResult`.
    """
    knn_backend = renamed("knn_backend", knn_backend, "backend", backend, "auto", "interp.ilo.score")
    check_baselines(null, bootstrap, seed)
    if group is None:
        x, layers, langs, ids, topics = check_inputs(acts, langs, ids, topics)
        points = LocalPoints(len(langs))
    else:
        from interp.ilo.sharded import exchange

        settings = {"k": k, "t": t, "metric": metric, "compat": bool(compat), "min_count": min_count, "null": null,
                    "bootstrap": bootstrap, "retrieval": bool(retrieval), "seed": seed}  # fmt: skip
        points, x, layers, langs, ids, topics = exchange(acts, langs, ids, settings, group, as_timeout(timeout),
                                                         topics)  # fmt: skip
    codes, languages = first_appearance_codes(langs)
    n_langs, n_points = len(languages), len(langs)
    items, k, t, min_count = check_scoring(codes, languages, ids, k, t, min_count, bootstrap, retrieval)
    null, bootstrap, seed = map(int, (null, bootstrap, seed))

    tic = time.perf_counter()
    x = points.prepare(x)
    if compat:
        found, _ = points.knn(x, k + 1, metric=metric, exclude_self=False, backend=knn_backend)
        indices = found[..., 1:]
    else:
        indices, _ = points.knn(x, k, metric=metric, exclude_self=True, backend=knn_backend)
    indices = indices.cpu()  # scoring runs on the CPU labels (the kNN may have run on CUDA activations)
    timing = {"knn_s": time.perf_counter() - tic}
    tic = time.perf_counter()
    counts = slot_counts(indices, codes, n_langs)  # [L, n, n_langs]: this process's rows
    sums = points.sum(language_sums(counts, codes[points.rows], n_langs, t), "reducing ILO counts")
    scores = scores_from_sums(sums, torch.bincount(codes, minlength=n_langs), n_langs, min_count)

    columns = {name: scores[name] for name in ("bridge", "reach", "reach_raw", "ilo")}
    if null:
        null_ilo = permutation_null(indices, codes, n_langs, t, null, seed, min_count, points=points)
        columns["null_mean"] = null_ilo.mean(0)
        columns["null_std"] = null_ilo.std(0)
        columns["ilo_minus_null"] = scores["ilo"] - columns["null_mean"]
        columns["z"] = columns["ilo_minus_null"] / columns["null_std"].clamp_min(1e-12)
        columns["ilo_share_of_null"] = scores["ilo"] / columns["null_mean"].clamp_min(1e-300)
    n_layers = len(layers)
    if items is not None:
        columns["translation_share"] = translation_share(indices, codes, items, n_langs, points=points)
        columns["translation_share_chance"] = chance_share(codes, items, n_langs).expand(n_layers, -1)
    if topics is not None:
        topic_codes = first_appearance_codes(topics)[0]
        columns["topic_share"] = topic_share(indices, codes, topic_codes, n_langs, points=points)
        columns["topic_share_chance"] = chance_share(codes, topic_codes, n_langs).expand(n_layers, -1)
    if bootstrap:
        boot = bootstrap_ilo(counts, codes, items, n_langs, t, bootstrap, seed, min_count, points=points)
        columns["ilo_ci_low"], columns["ilo_ci_high"] = percentile_ci(boot)

    table, by_layer = _tables(columns, layers, languages)
    timing["scoring_s"] = time.perf_counter() - tic
    params = {"k": k, "t": t, "metric": metric, "compat": compat, "min_count": min_count, "null": null,
              "bootstrap": bootstrap, "seed": seed, "n_points": n_points, "timing": timing,
              "model": getattr(acts, "model_name", None), **points.params}  # fmt: skip
    return ILOResult(
        table=table,
        by_layer=by_layer,
        cooccurrence=scores["cooccurrence"],
        languages=languages,
        layers=layers,
        params=params,
        indices=indices,
        retrieval=retrieval_accuracy(x, codes, items, n_langs, metric, knn_backend, points=points)
        if retrieval
        else None,
    )
