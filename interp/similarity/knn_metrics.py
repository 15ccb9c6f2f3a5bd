"""kNN-based alignment metrics of "The Platonic Representation Hypothesis" (Huh et al., ICML 2024).

Two representations ``A`` ``[N, D_A]`` and ``B`` ``[N, D_B]`` of the *same* N inputs (row i of both
is input i) are compared through their neighbour lists ``N_A(i)``, ``N_B(i)``: the k nearest
neighbours of point i, self excluded, found by :func:`interp.knn` (exact, ties to the lower index).

=============  ========================================================================
``mutual_knn``  mean_i |N_A(i) ∩ N_B(i)| / k                                    (in [0, 1])
``cycle_knn``   mean_i 1[∃ j ∈ N_B(i) : i ∈ N_A(j)]                             (in [0, 1])
``lcs_knn``     mean_i LCS(N_A(i), N_B(i)) / k over the *ordered* lists          (in [0, 1]);
                ``normalize=False`` gives upstream's unnormalised value in [0, k]
``cknna``       unbiased HSIC of the kernels restricted to mutual neighbours,
                HSIC(M∘K, M∘L) / (sqrt(HSIC(M_K∘K, M_K∘K) · HSIC(M_L∘L, M_L∘L)) + ε)
=============  ========================================================================

Design: the metrics never build an N × N mask (upstream's ``metrics.py`` builds dense float masks,
7.9 GB at N = 31k). A neighbour list becomes a set of integer keys ``(p·N + i)·N + j`` -- one per
edge i → j of problem p -- sorted once; every set question (is j in N_A(i)? is i in N_A(j)?) is then
a ``torch.searchsorted`` lookup, vectorised over all points and over many (A, B) pairs at once. That
is what lets :mod:`.matrices` score every layer pair from neighbour lists computed once per layer.
LCS uses the fact that neighbour lists have no repeated entries: the LCS of two such lists is the
longest increasing subsequence of the A-ranks of B's entries, found by patience sorting in k steps
for all rows together. CKNNA is computed from kernel values at neighbour pairs only (sparse, O(N·k)).

Neighbours: upstream ranks by inner product on features that its pipeline L2-normalises first, i.e.
by cosine; ``metric="cosine"`` (default) is the same ranking. On un-normalised features upstream
ranks by raw inner product (large-norm points become everyone's neighbours); normalise first (see
:func:`interp.similarity.preprocess`) to compare with upstream numbers.

CKNNA takes both its neighbour mask and its kernel from K = AAᵀ upstream (mask = top-k of each row
of K). Here :func:`cknna` L2-normalises every row first, as the Platonic pipeline does: on unit rows
the inner-product top-k *is* the cosine top-k, so the value equals upstream's ``cknna`` on normalised
features, whatever the input norms (mixing cosine neighbours with a raw inner-product kernel would
match neither). Its neighbour metric must therefore be ``"cosine"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from interp._validation import as_float_tensor, is_int, renamed
from interp.neighbors import knn

__all__ = ["mutual_knn", "cycle_knn", "lcs_knn", "cknna", "neighbor_lists", "kernel_at_neighbors"]


# ----------------------------------------------------------------------------------------------
# input checks


def as_features(name: str, x) -> torch.Tensor:
    """``x`` as a finite floating ``[N, D]`` tensor, or a clear error."""
    return as_float_tensor(name, x, {2: "[N, D] (one row per input)"})


def check_pair(A: torch.Tensor, B: torch.Tensor) -> int:
    if A.shape[0] != B.shape[0]:
        raise ValueError(
            f"A has {A.shape[0]} rows but B has {B.shape[0]}: row i of both must be the same input "
            "(paired points); subset or reorder them to match"
        )
    return A.shape[0]


def check_k(k, n: int, minimum: int = 1) -> int:
    if not is_int(k) or not minimum <= k <= n - 1:
        raise ValueError(f"k must be an int in [{minimum}, N - 1 = {n - 1}] for N = {n} points, got {k!r}")
    return int(k)


# ----------------------------------------------------------------------------------------------
# neighbour lists and key sets


def neighbor_lists(
    X: torch.Tensor, k: int, metric: str = "cosine", knn_backend: str = "auto", backend: str | None = None
) -> torch.Tensor:
    """Exact k-NN lists, self excluded: ``[N, D] -> [N, k]`` or ``[B, N, D] -> [B, N, k]`` (int64).

    Thin wrapper over :func:`interp.knn` (one batched call for all B problems, e.g. layers).
    """
    knn_backend = renamed("knn_backend", knn_backend, "backend", backend, "auto", "neighbor_lists")
    indices, _ = knn(X, k, metric=metric, exclude_self=True, backend=knn_backend)
    return indices.cpu()


def kernel_at_neighbors(
    X: torch.Tensor, indices: torch.Tensor, chunk: int = 1 << 22, normalize: bool = False
) -> torch.Tensor:
    """Linear-kernel values at the neighbour pairs, float64: ``K[i, m] = x_i · x_{indices[i, m]}``.

    Args:
        X: ``[N, D]`` or ``[B, N, D]`` features.
        indices: ``[N, k]`` / ``[B, N, k]`` neighbour lists of ``X``.
        chunk: max gathered elements (rows × k × D) per step, to bound memory.
        normalize: L2-normalise each row (in float64; a zero row stays zero) before the products,
            i.e. cosine similarities -- CKNNA's kernel.
    Returns:
        ``[..., N, k]`` float64.
    """
    batched = X.ndim == 3
    Xs = X if batched else X[None]
    Is = indices if batched else indices[None]
    out = torch.empty(Is.shape, dtype=torch.float64)
    n, k, d = Is.shape[1], Is.shape[2], Xs.shape[2]
    rows = max(1, chunk // max(1, k * d))
    for b in range(Xs.shape[0]):
        x = Xs[b].detach().cpu().double()
        if normalize:
            x = F.normalize(x, p=2, dim=-1)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            out[b, start:stop] = torch.einsum("nd,nkd->nk", x[start:stop], x[Is[b, start:stop]])
    return out if batched else out[0]


def sorted_lists(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row sorted by index: ``(values, rank)`` with ``rank`` the original (distance) position."""
    return indices.sort(dim=-1)


def edge_keys(rows_then_cols: torch.Tensor, n: int) -> torch.Tensor:
    """Keys ``(p·N + i)·N + j`` of ``[P, N, k]`` lists; globally sorted if each row is sorted."""
    P, N, k = rows_then_cols.shape
    base = torch.arange(P * N, dtype=torch.int64).view(P, N, 1) * n
    return (base + rows_then_cols).reshape(-1)


def lookup(sorted_keys: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(found, position)`` of each query in a sorted 1-D key array (position valid where found)."""
    if sorted_keys.numel() == 0:
        return torch.zeros(queries.shape, dtype=torch.bool), torch.zeros(queries.shape, dtype=torch.int64)
    pos = torch.searchsorted(sorted_keys, queries).clamp_(max=sorted_keys.numel() - 1)
    return sorted_keys[pos] == queries, pos


def _batched(ia: torch.Tensor, ib: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    single = ia.ndim == 2
    if single:
        ia, ib = ia[None], ib[None]
    if ia.shape != ib.shape:
        raise ValueError(f"neighbour lists differ in shape: {tuple(ia.shape)} vs {tuple(ib.shape)}")
    return ia, ib, single


# ----------------------------------------------------------------------------------------------
# metrics from neighbour lists: ia, ib [P, N, k] -> [P]


def mutual_from_lists(ia: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
    """mutual-kNN of P pairs of lists ``[P, N, k]`` (or one pair ``[N, k]``) -> ``[P]`` float64."""
    ia, ib, _ = _batched(ia, ib)
    P, N, k = ia.shape
    keys_a = edge_keys(sorted_lists(ia)[0], N)
    found, _ = lookup(keys_a, edge_keys(ib, N))
    return found.view(P, N, k).sum(-1).double().mean(-1) / k


def cycle_from_lists(ia: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
    """cycle-kNN: share of i with some j ∈ N_B(i) such that i ∈ N_A(j); ``[P, N, k] -> [P]``."""
    ia, ib, _ = _batched(ia, ib)
    P, N, k = ia.shape
    keys_a = edge_keys(sorted_lists(ia)[0], N)
    p = torch.arange(P, dtype=torch.int64).view(P, 1, 1)
    i = torch.arange(N, dtype=torch.int64).view(1, N, 1)
    reverse = ((p * N + ib) * N + i).reshape(-1)  # the edge j -> i for every j in N_B(i)
    found, _ = lookup(keys_a, reverse)
    return found.view(P, N, k).any(-1).double().mean(-1)


def lcs_from_lists(ia: torch.Tensor, ib: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """mean LCS of the ordered lists N_A(i), N_B(i) (÷ k if ``normalize``); ``[P, N, k] -> [P]``."""
    ia, ib, _ = _batched(ia, ib)
    P, N, k = ia.shape
    sorted_a, rank_a = sorted_lists(ia)
    found, pos = lookup(edge_keys(sorted_a, N), edge_keys(ib, N))
    # A-rank of each entry of N_B(i), in B's order; -1 where the entry is not in N_A(i)
    ranks = torch.where(found, rank_a.reshape(-1)[pos], -1).view(P * N, k)
    # longest strictly increasing subsequence of the valid ranks: patience sorting, all rows at once
    tails = torch.full((P * N, k + 1), k + 1, dtype=torch.int64)
    rows = torch.arange(P * N)
    for m in range(k):
        value = ranks[:, m].contiguous()
        valid = value >= 0
        slot = torch.searchsorted(tails, value.clamp(min=0)[:, None]).squeeze(1)
        tails[rows[valid], slot[valid]] = value[valid]
    lengths = (tails <= k).sum(-1).view(P, N).double()
    return lengths.mean(-1) / (k if normalize else 1)


def masked_hsic(ia: torch.Tensor, ka: torch.Tensor, ib: torch.Tensor, kb: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC (Song et al. 2012, Eq. 5) of kernels restricted to the common neighbours.

    ``M[i, j] = 1[j ∈ N_A(i) ∩ N_B(i)]``; ``K̂ = M ∘ K``, ``L̂ = M ∘ L`` (zero diagonal, *not*
    symmetric) and, with n = N,
    ``HSIC = [Σ_ij K̂_ij L̂_ji + (1ᵀK̂1)(1ᵀL̂1)/((n−1)(n−2)) − 2·1ᵀK̂L̂1/(n−2)] / (n(n−3))``,
    exactly upstream's ``hsic_unbiased(mask * K, mask * L)``, from the O(N·k) nonzeros only.

    Args:
        ia, ib: ``[P, N, k]`` neighbour lists; ka, kb: ``[P, N, k]`` float64 kernel values at them
            (``ka[p, i, m] = K(i, ia[p, i, m])``).
    Returns:
        ``[P]`` float64.
    """
    P, N, k = ia.shape
    sorted_a, rank_a = sorted_lists(ia)
    ka_sorted = ka.gather(-1, rank_a).reshape(-1)
    found, pos = lookup(edge_keys(sorted_a, N), edge_keys(ib, N))
    hit = found.nonzero().squeeze(1)  # flat positions of the common edges, in ib's layout
    p = hit // (N * k)
    i = (hit // k) % N
    j = ib.reshape(-1)[hit]
    a = ka_sorted[pos[hit]]  # K_ij
    b = kb.reshape(-1)[hit]  # L_ij
    zeros = torch.zeros(P, dtype=torch.float64)
    sum_a = zeros.index_add(0, p, a)
    sum_b = zeros.index_add(0, p, b)
    col_a = torch.zeros(P * N, dtype=torch.float64).index_add_(0, p * N + j, a)  # 1ᵀK̂
    row_b = torch.zeros(P * N, dtype=torch.float64).index_add_(0, p * N + i, b)  # L̂1
    cross = (col_a * row_b).view(P, N).sum(-1)  # 1ᵀ K̂ L̂ 1
    # Σ K̂_ij L̂_ji: pairs whose reverse edge is common too
    keys = (p * N + i) * N + j
    order = keys.argsort()
    found_rev, pos_rev = lookup(keys[order], (p * N + j) * N + i)
    trace = zeros.index_add(0, p[found_rev], a[found_rev] * b[order][pos_rev[found_rev]])
    n = float(N)
    return (trace + sum_a * sum_b / ((n - 1) * (n - 2)) - 2 * cross / (n - 2)) / (n * (n - 3))


def cknna_from_lists(ia, ka, ib, kb, epsilon: float = 1e-6, self_a=None, self_b=None) -> torch.Tensor:
    """CKNNA of P pairs from lists and kernel values ``[P, N, k]`` -> ``[P]``.

    ``self_a`` / ``self_b``: precomputed ``masked_hsic(ia, ka, ia, ka)`` (reused across pairs).
    """
    ia, ib, single = _batched(ia, ib)
    if single:
        ka, kb = ka[None], kb[None]
    hsic_ab = masked_hsic(ia, ka, ib, kb)
    hsic_aa = masked_hsic(ia, ka, ia, ka) if self_a is None else self_a
    hsic_bb = masked_hsic(ib, kb, ib, kb) if self_b is None else self_b
    return hsic_ab / (torch.sqrt(hsic_aa * hsic_bb) + epsilon)


# ----------------------------------------------------------------------------------------------
# public metrics on features


def _pair_lists(A, B, k, metric, knn_backend, minimum=1):
    A, B = as_features("A", A), as_features("B", B)
    n = check_pair(A, B)
    k = check_k(n - 1 if k is None else k, n, minimum)
    if A.shape[1] == B.shape[1] and A.dtype == B.dtype and A.device == B.device:
        both = neighbor_lists(torch.stack([A, B]), k, metric, knn_backend)
        return A, B, both[0], both[1]
    return A, B, neighbor_lists(A, k, metric, knn_backend), neighbor_lists(B, k, metric, knn_backend)


def mutual_knn(
    A, B, k: int = 10, *, metric: str = "cosine", knn_backend: str = "auto", backend: str | None = None
) -> float:
    """Mutual k-NN alignment: mean_i |N_A(i) ∩ N_B(i)| / k, in [0, 1].

    Args:
        A: ``[N, D_A]`` features; B: ``[N, D_B]`` features of the same N inputs (row i = input i).
        k: neighbours per point, 1 <= k <= N - 1 (upstream's ``topk``, default 10).
        metric: neighbour metric of :func:`interp.knn` (``"cosine"`` = upstream on normalised features).
        knn_backend: :func:`interp.knn` backend.
    """
    knn_backend = renamed("knn_backend", knn_backend, "backend", backend, "auto", "mutual_knn")
    _, _, ia, ib = _pair_lists(A, B, k, metric, knn_backend)
    return float(mutual_from_lists(ia, ib)[0])


def cycle_knn(
    A, B, k: int = 10, *, metric: str = "cosine", knn_backend: str = "auto", backend: str | None = None
) -> float:
    """Cycle k-NN: share of points i for which some j ∈ N_B(i) has i ∈ N_A(j) (A → B → A returns home).

    Not symmetric in A and B. Arguments as :func:`mutual_knn`.
    """
    knn_backend = renamed("knn_backend", knn_backend, "backend", backend, "auto", "cycle_knn")
    _, _, ia, ib = _pair_lists(A, B, k, metric, knn_backend)
    return float(cycle_from_lists(ia, ib)[0])


def lcs_knn(
    A,
    B,
    k: int = 10,
    *,
    normalize: bool = True,
    metric: str = "cosine",
    knn_backend: str = "auto",
    backend: str | None = None,
) -> float:
    """Longest common subsequence of the *ordered* neighbour lists, averaged over points.

    ``normalize=True`` (default) divides by k, giving [0, 1] like the other metrics;
    ``normalize=False`` returns upstream's ``lcs_knn`` value, in [0, k]. Arguments as :func:`mutual_knn`.
    """
    knn_backend = renamed("knn_backend", knn_backend, "backend", backend, "auto", "lcs_knn")
    _, _, ia, ib = _pair_lists(A, B, k, metric, knn_backend)
    return float(lcs_from_lists(ia, ib, normalize)[0])


def check_cknna_metric(metric: str) -> None:
    """CKNNA's neighbours are the inner-product top-k of L2-normalised rows, i.e. the cosine ones."""
    if metric != "cosine":
        raise ValueError(
            f"cknna ranks neighbours as upstream does, by the inner product of L2-normalised rows, which is the "
            f"cosine ranking; neighbour metric must be 'cosine', got {metric!r}"
        )


def cknna(
    A,
    B,
    k: int | None = 10,
    *,
    epsilon: float = 1e-6,
    metric: str = "cosine",
    knn_backend: str = "auto",
    backend: str | None = None,
) -> float:
    """CKNNA (Huh et al. 2024): unbiased CKA restricted to pairs that are neighbours in *both* spaces.

    Rows are L2-normalised first, as the Platonic pipeline does before measuring; with Â, B̂ the
    normalised features, linear kernels K = ÂÂᵀ, L = B̂B̂ᵀ (cosine similarities; no centring), and the
    mask ``M_ij = 1[j ∈ N_A(i) ∩ N_B(i)]`` (self excluded; N_A(i) = the k largest entries of row i of
    K, ties to the lower index), ``M_A`` / ``M_B`` the masks of one space:

        CKNNA = HSIC_u(M∘K, M∘L) / (sqrt(HSIC_u(M_A∘K, M_A∘K) · HSIC_u(M_B∘L, M_B∘L)) + ε)

    with HSIC_u the unbiased estimator of :func:`masked_hsic` -- upstream ``cknna(Â, B̂, topk=k)``
    (``unbiased=True``). Upstream on *raw* features takes both mask and kernel from the raw inner
    product; that variant is not provided (normalising makes the value independent of row norms).
    k = N − 1 (``k=None``; upstream's intended default, which crashes there) keeps every pair, and
    CKNNA equals :func:`interp.similarity.cka` of the normalised rows, ``unbiased=True``, same ε. Not
    symmetric in A, B in general. The value is NaN when the two self-terms have opposite signs
    (possible for small k).

    Args:
        A, B: ``[N, D_A]``, ``[N, D_B]`` paired features, N >= 4 (any row norms).
        k: neighbours, 2 <= k <= N - 1 (upstream requires >= 2), or None for N - 1.
        epsilon: added to the denominator; 1e-6 as upstream, 0 for the exact ratio.
        metric: must be ``"cosine"`` (the inner-product ranking of normalised rows); kept for a
            signature shared with the other kNN metrics.
    """
    knn_backend = renamed("knn_backend", knn_backend, "backend", backend, "auto", "cknna")
    check_cknna_metric(metric)
    A, B = as_features("A", A), as_features("B", B)
    if A.shape[0] < 4:
        raise ValueError(f"CKNNA's unbiased HSIC needs N >= 4 points, got {A.shape[0]}")
    A, B, ia, ib = _pair_lists(A, B, k, metric, knn_backend, minimum=2)
    ka, kb = kernel_at_neighbors(A, ia, normalize=True), kernel_at_neighbors(B, ib, normalize=True)
    return float(cknna_from_lists(ia, ka, ib, kb, epsilon)[0])
