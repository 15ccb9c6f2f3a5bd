"""Similarity matrices: layer × layer, model A × model B, language × language.

All three reduce to one engine, :func:`pairwise`: two stacks of representations of the same N
points, ``XA`` ``[S_A, N, D_A]`` and ``XB`` ``[S_B, N, D_B]``, and a list of (row, column) pairs.

* kNN metrics: the neighbour lists of every representation are computed **once**, by one batched
  :func:`interp.knn` call per stack (``[S, N, k]``); CKNNA also takes the kernel values at those
  neighbours once (``[S, N, k]``; cosine kernel, as CKNNA works on L2-normalised rows) and each
  representation's self-term once. Every pair is then scored from the lists alone
  (:mod:`.knn_metrics`), many pairs per vectorised step.
* CKA: each representation's centred (or U-centred) Gram matrix is formed once, flattened, and the
  pairs' Frobenius inner products are GEMMs on views of the Gram stacks (memory: the Grams plus a
  small ``[rows, columns]`` result, never a per-pair ``N²`` product); when the Gram matrices would
  not fit (N² too large) each pair uses the feature route of :mod:`.cka` instead.

The three front ends differ only in what the stacks are:

* :func:`layer_similarity` -- the layers of one model, ``[L, N, D]``;
* :func:`model_similarity` -- the layers of model A vs the layers of model B (same N inputs);
* :func:`language_similarity` -- per layer, one representation per language of a parallel corpus, the
  n translations of the same items being the paired points (``[L·G, n, D]``, pairs within a layer).
  Where ILO asks whether languages *mix* in neighbourhoods regardless of which points meet, this asks
  whether the translations of an item have the same neighbours (mutual-kNN) or geometry (CKA) in
  two languages.

Entry ``[r, c]`` is ``metric(X_r, X_c)`` -- row is the first argument (A), column the second (B).
``cycle_knn`` and ``cknna`` are not symmetric, the others are (only r <= c is computed then).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp._validation import as_float_tensor, renamed
from interp.extraction.activations import Activations, as_pooled_stack
from interp.similarity.cka import _features_hsic, centred_gram
from interp.similarity.knn_metrics import (
    check_cknna_metric,
    check_k,
    cknna_from_lists,
    cycle_from_lists,
    kernel_at_neighbors,
    lcs_from_lists,
    masked_hsic,
    mutual_from_lists,
    neighbor_lists,
)

__all__ = ["MEASURES", "SimilarityMatrix", "pairwise", "layer_similarity", "model_similarity", "language_similarity"]

MEASURES = ("mutual_knn", "cycle_knn", "lcs_knn", "cknna", "cka", "unbiased_cka")
KNN_METRICS = ("mutual_knn", "cycle_knn", "lcs_knn", "cknna")
SYMMETRIC = ("mutual_knn", "lcs_knn", "cka", "unbiased_cka")
CHUNK = 1 << 22  # neighbour-list entries (pairs × N × k) scored per vectorised step
GRAM_BUDGET = 1 << 27  # float64 elements of Gram matrices kept at once (1 GiB)


@dataclass
class SimilarityMatrix:
    """A similarity matrix (or one per layer) with its labels.

    Attributes:
        values: ``[R, C]`` float64, or ``[L, R, C]`` for language matrices (one per layer).
        rows, cols: labels of the rows (first argument A) and columns (second argument B).
        metric: one of :data:`MEASURES`.
        params: k, neighbour metric, epsilon, ... as used.
        layers: hidden-state indices of the stacked matrices (language matrices), else None.
        same_space: rows and columns are the same representations (layer × layer, language ×
            language): the diagonal compares a representation with itself and is left out of
            :meth:`argmax` by default.
        row_name, col_name: axis titles.
    """

    values: torch.Tensor
    rows: list
    cols: list
    metric: str
    params: dict = field(default_factory=dict)
    layers: list | None = None
    same_space: bool = False
    row_name: str = "A"
    col_name: str = "B"

    def _matrix(self, layer=None) -> torch.Tensor:
        if self.layers is None:
            if layer is not None:
                raise ValueError("this is a single matrix; layer= is for language × language matrices")
            return self.values
        if layer is None:
            raise ValueError(f"pick a layer: one matrix per hidden-state index {self.layers}")
        if layer not in self.layers:
            raise KeyError(f"layer {layer} was not computed; available: {self.layers}")
        return self.values[self.layers.index(layer)]

    def frame(self, layer=None) -> pd.DataFrame:
        """The matrix as a DataFrame (rows × cols); ``layer=`` picks one of stacked matrices."""
        return pd.DataFrame(self._matrix(layer).numpy(), index=list(self.rows), columns=list(self.cols))

    def argmax(self, layer=None, diagonal: bool | None = None) -> tuple:
        """``(row, col, value)`` of the largest entry (NaN ignored).

        ``diagonal`` (default: ``not same_space``) says whether diagonal entries may win. A max over
        many pairs is selection-biased upwards (the Platonic paper reports the max over layer pairs):
        report the argmax with it, and compare against the same statistic on a baseline.
        """
        matrix = self._matrix(layer).clone()
        if not (not self.same_space if diagonal is None else diagonal):
            matrix.fill_diagonal_(float("nan"))
        flat = torch.nan_to_num(matrix, nan=-float("inf")).reshape(-1)
        if torch.isneginf(flat).all():
            raise ValueError("no finite entry to take the argmax of")
        r, c = divmod(int(flat.argmax()), matrix.shape[1])
        return self.rows[r], self.cols[c], float(matrix[r, c])

    def offdiagonal_mean(self):
        """Mean of the off-diagonal entries: a float, or a Series indexed by layer (stacked matrices)."""
        if self.values.shape[-1] != self.values.shape[-2]:
            raise ValueError("off-diagonal mean needs a square matrix")
        n = self.values.shape[-1]
        keep = ~torch.eye(n, dtype=torch.bool)
        means = self.values[..., keep].nanmean(-1)
        if self.layers is None:
            return float(means)
        return pd.Series(means.numpy(), index=pd.Index(self.layers, name="layer"), name=f"{self.metric}_offdiag")

    def plot(self, layer=None, ax=None, **kwargs):
        """Heatmap with the argmax marked (see :func:`interp.similarity.plot.plot_similarity`)."""
        from interp.similarity.plot import plot_similarity

        return plot_similarity(self, layer=layer, ax=ax, **kwargs)

    def __repr__(self) -> str:
        shape = "×".join(map(str, self.values.shape))
        k = f", k={self.params['k']}" if "k" in self.params else ""
        if self.layers is None:
            row, col, value = self.argmax()
            best = f"; max {value:.3f} at ({row}, {col}) -- a max over pairs is selection-biased"
        else:
            best = f"; {len(self.layers)} layers"
        return f"SimilarityMatrix({self.metric}{k}, {shape} {self.row_name} × {self.col_name}{best})"


# ----------------------------------------------------------------------------------------------
# the engine


def _check_stack(name: str, x) -> torch.Tensor:
    return as_float_tensor(name, x, {3: "[n_layers, N, D]"})


def _check_options(metric: str, k, n: int, epsilon: float, knn_metric: str = "cosine") -> int | None:
    if metric not in MEASURES:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(map(repr, MEASURES))}")
    if metric == "cknna":
        check_cknna_metric(knn_metric)
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    if metric in ("cknna", "unbiased_cka") and n < 4:
        raise ValueError(f"{metric} uses the unbiased HSIC, which needs N >= 4 points; got {n}")
    if metric == "cka" and n < 2:
        raise ValueError(f"cka needs N >= 2 points; got {n}")
    if metric in KNN_METRICS:
        return check_k(n - 1 if k is None else k, n, 2 if metric == "cknna" else 1)
    return None


def _knn_side(X, k, metric, knn_metric, knn_backend):
    lists = neighbor_lists(X, k, knn_metric, knn_backend)
    if metric != "cknna":
        return lists, None, None
    values = kernel_at_neighbors(X, lists, normalize=True)  # CKNNA: cosine kernel, as on normalised rows
    step = max(1, CHUNK // (lists.shape[1] * lists.shape[2]))
    self_terms = torch.cat(
        [masked_hsic(lists[s : s + step], values[s : s + step], lists[s : s + step], values[s : s + step])
         for s in range(0, len(lists), step)]
    )  # fmt: skip
    return lists, values, self_terms


def _flat_grams(X: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """``[S, N, D]`` -> ``[S, N²]`` float64 flattened (U-)centred Gram matrices, one at a time."""
    n = X.shape[1]
    grams = torch.empty(X.shape[0], n * n, dtype=torch.float64)
    for s, x in enumerate(X):
        grams[s] = centred_gram(x.detach().cpu().double(), unbiased).reshape(-1)
    return grams


def _gram_pairs(grams_a, grams_b, pairs, scale, epsilon, progress, desc) -> torch.Tensor:
    """CKA of each pair from flattened Grams ``[S_A, N²]``, ``[S_B, N²]``: ``[P]`` float64.

    Inner products come from GEMMs on *views* of the Gram stacks -- ``grams_a[r0:r1] @ grams_b[c0:c1]ᵀ``
    for a block of rows and the span of columns its pairs use -- so no ``[pairs, N²]`` product (or
    gathered copy) is ever formed: extra memory is the ``[block, span]`` result only, beyond the Grams.
    """
    self_a = torch.linalg.vector_norm(grams_a, dim=1).square()  # ⟨G, G⟩ without a squared copy
    self_b = self_a if grams_b is grams_a else torch.linalg.vector_norm(grams_b, dim=1).square()
    out = torch.empty(len(pairs), dtype=torch.float64)
    r_all, c_all = pairs[:, 0], pairs[:, 1]
    block = 64
    for r0 in tqdm(range(0, grams_a.shape[0], block), disable=not progress, desc=desc, unit="block"):
        chosen = ((r_all >= r0) & (r_all < r0 + block)).nonzero().squeeze(1)
        if len(chosen) == 0:
            continue
        r, c = r_all[chosen], c_all[chosen]
        r1, c0, c1 = int(r.max()) + 1, int(c.min()), int(c.max()) + 1
        cross = grams_a[r0:r1] @ grams_b[c0:c1].T  # [rows, span]
        out[chosen] = cross[r - r0, c - c0] / scale / (torch.sqrt(self_a[r] * self_b[c]) / scale + epsilon)
    return out


def pairwise(
    metric: str,
    XA,
    XB=None,
    pairs=None,
    *,
    k: int | None = 10,
    knn_metric: str = "cosine",
    epsilon: float = 1e-6,
    normalize: bool = True,
    knn_backend: str = "auto",
    backend: str | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Score many pairs of representations, each representation's neighbours computed once.

    Args:
        metric: one of :data:`MEASURES`.
        XA: ``[S_A, N, D_A]`` stack of representations of the same N points.
        XB: ``[S_B, N, D_B]``, or None for pairs within ``XA``.
        pairs: ``[P, 2]`` int (row into XA, column into XB); default: every (r, c).
        k: neighbours for the kNN metrics (None: N − 1); ignored by CKA.
        knn_metric: neighbour metric of :func:`interp.knn`.
        epsilon: CKA / CKNNA denominator epsilon (upstream 1e-6).
        normalize: ``lcs_knn`` divided by k (False: upstream's value in [0, k]).
        knn_backend: stage-1 engine of :func:`interp.knn` (``backend=``: its deprecated old name,
            renamed because ``backend`` is the extraction engine elsewhere in interp).
        progress: tqdm bar over the pairs.
    Returns:
        ``[P]`` float64.
    """
    knn_backend = renamed("knn_backend", knn_backend, "backend", backend, "auto", "pairwise")
    XA = _check_stack("XA", XA)
    XB = None if XB is None else _check_stack("XB", XB)
    n = XA.shape[1]
    if XB is not None and XB.shape[1] != n:
        raise ValueError(f"XA has N = {n} points but XB has {XB.shape[1]}: both must describe the same inputs")
    k = _check_options(metric, k, n, epsilon, knn_metric)
    s_b = XA.shape[0] if XB is None else XB.shape[0]
    if pairs is None:
        pairs = torch.cartesian_prod(torch.arange(XA.shape[0]), torch.arange(s_b)).view(-1, 2)
    pairs = torch.as_tensor(pairs, dtype=torch.int64).view(-1, 2)
    if len(pairs) and (pairs.min() < 0 or pairs[:, 0].max() >= XA.shape[0] or pairs[:, 1].max() >= s_b):
        raise IndexError(f"pairs index past the stacks ({XA.shape[0]} rows, {s_b} columns)")
    out = torch.empty(len(pairs), dtype=torch.float64)
    if metric in KNN_METRICS:
        lists_a, values_a, self_a = _knn_side(XA, k, metric, knn_metric, knn_backend)
        lists_b, values_b, self_b = (
            (lists_a, values_a, self_a) if XB is None else _knn_side(XB, k, metric, knn_metric, knn_backend)
        )
        step = max(1, CHUNK // (n * k))
        with tqdm(total=len(pairs), disable=not progress, desc=metric, unit="pair") as bar:
            for start in range(0, len(pairs), step):
                r, c = pairs[start : start + step, 0], pairs[start : start + step, 1]
                ia, ib = lists_a[r], lists_b[c]
                if metric == "mutual_knn":
                    out[start : start + len(r)] = mutual_from_lists(ia, ib)
                elif metric == "cycle_knn":
                    out[start : start + len(r)] = cycle_from_lists(ia, ib)
                elif metric == "lcs_knn":
                    out[start : start + len(r)] = lcs_from_lists(ia, ib, normalize)
                else:
                    out[start : start + len(r)] = cknna_from_lists(
                        ia, values_a[r], ib, values_b[c], epsilon, self_a[r], self_b[c]
                    )
                bar.update(len(r))
        return out
    unbiased = metric == "unbiased_cka"
    n_reps = XA.shape[0] + (0 if XB is None else XB.shape[0])
    if n_reps * n * n <= GRAM_BUDGET:
        grams_a = _flat_grams(XA, unbiased)
        grams_b = grams_a if XB is None else _flat_grams(XB, unbiased)
        out[:] = _gram_pairs(grams_a, grams_b, pairs, n * (n - 3) if unbiased else 1, epsilon, progress, metric)
        return out
    feats_a = [x.detach().cpu().double() for x in XA]
    feats_b = feats_a if XB is None else [x.detach().cpu().double() for x in XB]
    self_a = [_features_hsic(x, x, unbiased) for x in feats_a]
    self_b = self_a if XB is None else [_features_hsic(x, x, unbiased) for x in feats_b]
    for p, (r, c) in enumerate(tqdm(pairs.tolist(), disable=not progress, desc=metric, unit="pair")):
        out[p] = _features_hsic(feats_a[r], feats_b[c], unbiased) / (torch.sqrt(self_a[r] * self_b[c]) + epsilon)
    return out


# ----------------------------------------------------------------------------------------------
# front ends


def _unpack(name: str, acts, layers):
    """``(tensor [L, N, D], hidden-state labels, Activations or None)`` with ``layers`` selected."""
    x, labels, _, _ = as_pooled_stack(acts, name, "similarity")
    if layers is not None:
        layers = [layers] if isinstance(layers, int) else list(layers)
        missing = [layer for layer in layers if layer not in labels]
        if missing:
            raise KeyError(f"{name}: layers {missing} are not in the activations; available: {labels}")
        x = x[[labels.index(layer) for layer in layers]]
        labels = layers
    return _check_stack(name, x), labels, acts if isinstance(acts, Activations) else None


def _square(values: torch.Tensor, s: int, pairs: torch.Tensor, symmetric: bool) -> torch.Tensor:
    matrix = torch.full((s, s), float("nan"), dtype=torch.float64)
    matrix[pairs[:, 0], pairs[:, 1]] = values
    if symmetric:
        matrix[pairs[:, 1], pairs[:, 0]] = values
    return matrix


def _pairs_within(s: int, symmetric: bool) -> torch.Tensor:
    if symmetric:
        return torch.triu_indices(s, s).T.contiguous()
    return torch.cartesian_prod(torch.arange(s), torch.arange(s)).view(-1, 2)


def layer_similarity(
    acts,
    metric: str = "mutual_knn",
    k: int | None = 10,
    *,
    layers=None,
    knn_metric: str = "cosine",
    epsilon: float = 1e-6,
    normalize: bool = True,
    knn_backend: str = "auto",
    backend: str | None = None,
    progress: bool = True,
) -> SimilarityMatrix:
    """Layer × layer similarity within one model.

    Args:
        acts: ``interp.Activations`` (pooled) or a ``[L, N, D]`` tensor / array.
        metric: ``"mutual_knn"`` (default), ``"cycle_knn"``, ``"lcs_knn"``, ``"cknna"``, ``"cka"``,
            ``"unbiased_cka"``.
        k: neighbours (kNN metrics; None = N − 1). layers: hidden-state indices to use (default all).
        knn_metric, epsilon, normalize, knn_backend, progress: see :func:`pairwise`.
    Returns:
        :class:`SimilarityMatrix` ``[L, L]``, rows and columns labelled by hidden-state index.
    """
    knn_backend = renamed("knn_backend", knn_backend, "backend", backend, "auto", "layer_similarity")
    x, labels, _ = _unpack("acts", acts, layers)
    symmetric = metric in SYMMETRIC
    pairs = _pairs_within(x.shape[0], symmetric)
    values = pairwise(metric, x, None, pairs, k=k, knn_metric=knn_metric, epsilon=epsilon, normalize=normalize,
                      knn_backend=knn_backend, progress=progress)  # fmt: skip
    params = {"k": k, "knn_metric": knn_metric} if metric in KNN_METRICS else {}
    params.update({"epsilon": epsilon} if metric in ("cka", "unbiased_cka", "cknna") else {})
    return SimilarityMatrix(_square(values, x.shape[0], pairs, symmetric), labels, labels, metric, params,
                            same_space=True, row_name="layer", col_name="layer")  # fmt: skip


def model_similarity(
    acts_a,
    acts_b,
    metric: str = "mutual_knn",
    k: int | None = 10,
    *,
    layers_a=None,
    layers_b=None,
    knn_metric: str = "cosine",
    epsilon: float = 1e-6,
    normalize: bool = True,
    knn_backend: str = "auto",
    backend: str | None = None,
    progress: bool = True,
    names: tuple[str, str] = ("model A", "model B"),
) -> SimilarityMatrix:
    """Model A layers × model B layers on the same N inputs (row i of both = input i).

    ``acts_a`` ``[L_A, N, D_A]``, ``acts_b`` ``[L_B, N, D_B]`` (``interp.Activations`` or tensors;
    with Activations their ``ids`` must match in order). Other arguments as :func:`layer_similarity`.
    The Platonic paper's score is ``result.argmax()[2]`` (the max over layer pairs): selection-biased.
    """
    knn_backend = renamed("knn_backend", knn_backend, "backend", backend, "auto", "model_similarity")
    xa, labels_a, meta_a = _unpack("acts_a", acts_a, layers_a)
    xb, labels_b, meta_b = _unpack("acts_b", acts_b, layers_b)
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"acts_a has N = {xa.shape[1]} inputs but acts_b has {xb.shape[1]}; they must be paired")
    if meta_a is not None and meta_b is not None and list(meta_a.ids) != list(meta_b.ids):
        raise ValueError("acts_a and acts_b have different ids (or order): extract both from the same inputs")
    pairs = torch.cartesian_prod(torch.arange(xa.shape[0]), torch.arange(xb.shape[0])).view(-1, 2)
    values = pairwise(metric, xa, xb, pairs, k=k, knn_metric=knn_metric, epsilon=epsilon, normalize=normalize,
                      knn_backend=knn_backend, progress=progress)  # fmt: skip
    params = {"k": k, "knn_metric": knn_metric} if metric in KNN_METRICS else {}
    params.update({"epsilon": epsilon} if metric in ("cka", "unbiased_cka", "cknna") else {})
    return SimilarityMatrix(values.view(xa.shape[0], xb.shape[0]), labels_a, labels_b, metric, params,
                            row_name=f"layer ({names[0]})", col_name=f"layer ({names[1]})")  # fmt: skip


def _language_rows(langs: list, ids: list) -> tuple[list, list, torch.Tensor]:
    """Languages (first-appearance order), items (first language's order), row index ``[G, n]``."""
    languages = list(dict.fromkeys(langs))
    position: dict = {}
    for row, (lang, item) in enumerate(zip(langs, ids, strict=True)):
        if (lang, item) in position:
            raise ValueError(f"item {item!r} appears twice in language {lang!r}; ids must be unique per language")
        position[lang, item] = row
    items = [item for lang, item in zip(langs, ids, strict=True) if lang == languages[0]]
    wanted = set(items)
    rows = []
    for lang in languages:
        have = {item for (language, item) in position if language == lang}
        if have != wanted:
            missing, extra = sorted(map(str, wanted - have))[:5], sorted(map(str, have - wanted))[:5]
            raise ValueError(
                f"language {lang!r} is not parallel to {languages[0]!r}: missing ids {missing}, extra ids {extra}; "
                "keep only items present in every language (load_parallel(..., align='intersect'))"
            )
        rows.append([position[lang, item] for item in items])
    return languages, items, torch.tensor(rows, dtype=torch.int64)


def language_similarity(
    acts,
    langs=None,
    ids=None,
    metric: str = "mutual_knn",
    k: int | None = 5,
    *,
    layers=None,
    knn_metric: str = "cosine",
    epsilon: float = 1e-6,
    normalize: bool = True,
    knn_backend: str = "auto",
    backend: str | None = None,
    progress: bool = True,
) -> SimilarityMatrix:
    """Language × language similarity per layer on a parallel corpus (translations = paired points).

    For languages g, h and a layer, the representations are X_g, X_h ``[n_items, D]`` -- row j of
    both is item j (the same sentence in g and in h) -- and the entry is ``metric(X_g, X_h)``: e.g. for
    mutual-kNN, the share of an item's k nearest items in g that are also its nearest items in h.
    High = the two languages arrange the same content the same way. The translation-aware
    complement to ILO, which only asks whether languages mix in neighbourhoods.

    Args:
        acts: ``interp.Activations`` with ``labels`` (languages) and ``ids`` (items), or ``[L, N, D]``.
        langs, ids: one language and one item id per point (default: the Activations' labels / ids).
            Every language must have every item exactly once.
        k: neighbours among the n_items points of one language (default 5; ≤ n_items − 1).
        layers: hidden-state indices (default all). Others: see :func:`pairwise`.
    Returns:
        :class:`SimilarityMatrix` with ``values`` ``[L, G, G]`` and ``layers``; ``.frame(layer)``,
        ``.plot(layer)``, ``.offdiagonal_mean()`` (per layer).
    """
    knn_backend = renamed("knn_backend", knn_backend, "backend", backend, "auto", "language_similarity")
    x, labels, meta = _unpack("acts", acts, layers)
    if meta is not None:
        langs = meta.labels if langs is None else langs
        ids = meta.ids if ids is None else ids
    if langs is None or ids is None:
        raise ValueError("language_similarity needs langs and ids (one per point), or Activations that carry them")
    langs, ids = list(langs), list(ids)
    if len(langs) != x.shape[1] or len(ids) != x.shape[1]:
        raise ValueError(f"{len(langs)} langs and {len(ids)} ids for {x.shape[1]} points; give one per point")
    languages, _, rows = _language_rows(langs, ids)
    G, n_items = rows.shape
    if G < 2:
        raise ValueError(f"need at least 2 languages, got {languages}")
    stack = x[:, rows.reshape(-1)].reshape(x.shape[0] * G, n_items, x.shape[2])  # [L·G, n, D]
    symmetric = metric in SYMMETRIC
    within = _pairs_within(G, symmetric)
    offsets = (torch.arange(x.shape[0]) * G).view(-1, 1, 1)
    pairs = (within[None] + offsets).reshape(-1, 2)
    values = pairwise(metric, stack, None, pairs, k=k, knn_metric=knn_metric, epsilon=epsilon, normalize=normalize,
                      knn_backend=knn_backend, progress=progress)  # fmt: skip
    per_layer = values.view(x.shape[0], len(within))
    matrices = torch.stack([_square(v, G, within, symmetric) for v in per_layer])
    params = {"k": k, "knn_metric": knn_metric, "n_items": n_items} if metric in KNN_METRICS else {"n_items": n_items}
    params.update({"epsilon": epsilon} if metric in ("cka", "unbiased_cka", "cknna") else {})
    return SimilarityMatrix(matrices, languages, languages, metric, params, layers=labels, same_space=True,
                            row_name="language", col_name="language")  # fmt: skip
