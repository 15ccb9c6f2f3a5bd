"""Linear CKA (Kornblith et al., ICML 2019) with the biased and the unbiased HSIC estimator.

For paired features A ``[N, D_A]``, B ``[N, D_B]`` and linear kernels K = AAᵀ, L = BBᵀ:

* biased HSIC (Gretton et al. 2005, *without* the 1/(N−1)² factor, as platonic-rep codes it):
  ``HSIC_b(K, L) = tr(K H L H)``, H = I − 11ᵀ/N;
* unbiased HSIC (Song et al. 2012, Eq. 5), with K̃, L̃ = K, L with zeroed diagonal:
  ``HSIC_u = [Σ_ij K̃_ij L̃_ij + (1ᵀK̃1)(1ᵀL̃1)/((N−1)(N−2)) − 2·1ᵀK̃L̃1/(N−2)] / (N(N−3))``;
* ``CKA = HSIC(K, L) / (sqrt(HSIC(K, K) · HSIC(L, L)) + ε)``.

ε defaults to 1e-6, platonic-rep's ``+ 1e-6``, so numbers are comparable with upstream. It lowers
CKA by the factor ε / (sqrt(HSIC(K, K)·HSIC(L, L)) + ε), and CKA(X, X) = HSIC/(HSIC + ε) < 1. That is
negligible on raw features and for the biased estimator, but *not* for the unbiased one on unit-norm
rows: on gemma-3-270m's mean-pooled UDHR states (L2-normalised, N = 930) HSIC_u(K, K) is 2.4e-6 to
7.8e-2 over the layers, and ε lowers unbiased CKA by a median 1.0 % and up to 29 % (CKA(X, X) = 0.709
at layer 11; ``benchmarks/cka_epsilon.py``, docs/similarity.md). Pass ``epsilon=0`` for the textbook
ratio (then CKA(X, X) = 1) -- recommended for unit-norm rows. The constant factor dropped from the
biased estimator matters only through ε.

Two exact routes, both float64, chosen by cost:

* features: ``HSIC_b = ‖B̃ᵀÃ‖²_F`` with column-centred Ã, B̃, and HSIC_u from ‖AᵀB‖²_F, row norms and
  row sums of K, L without ever forming them -- O(N·D_A·D_B), for large N;
* Gram: centred (biased) or U-centred (unbiased; Székely & Rizzo 2014) N × N Gram matrices, whose
  Frobenius inner product is N(N−3)·HSIC_u -- O(N²·(D_A + D_B)). For many layers
  (:mod:`.matrices`) the flattened Gram matrices of all layers make every pair one GEMM.
"""

from __future__ import annotations

import torch

from interp.similarity.knn_metrics import as_features, check_pair

__all__ = ["cka", "hsic"]

ROUTES = ("auto", "features", "gram")


def _min_n(n: int, unbiased: bool) -> None:
    need = 4 if unbiased else 2
    if n < need:
        raise ValueError(f"{'unbiased' if unbiased else 'biased'} HSIC needs N >= {need} points, got {n}")


def _features_hsic(A: torch.Tensor, B: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """HSIC of linear kernels from float64 features ``[N, D_A]``, ``[N, D_B]`` (no N × N matrix)."""
    n = A.shape[0]
    if not unbiased:
        return ((B - B.mean(0)).T @ (A - A.mean(0))).square().sum()
    norm_a, norm_b = A.square().sum(1), B.square().sum(1)  # diagonals of K and L
    s1 = (A.T @ B).square().sum() - (norm_a * norm_b).sum()  # Σ K̃_ij L̃_ij
    row_a = A @ A.sum(0) - norm_a  # K̃ 1
    row_b = B @ B.sum(0) - norm_b  # L̃ 1
    total = s1 + row_a.sum() * row_b.sum() / ((n - 1) * (n - 2)) - 2 * (row_a @ row_b) / (n - 2)
    return total / (n * (n - 3))


def centred_gram(X: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """Centred (biased) or U-centred (unbiased) linear Gram matrix of float64 ``[N, D]`` -> ``[N, N]``.

    ``⟨G(A), G(B)⟩_F`` is ``HSIC_b`` (biased), or ``N(N−3)·HSIC_u`` (unbiased).
    """
    n = X.shape[0]
    K = X @ X.T
    if not unbiased:
        K = K - K.mean(0, keepdim=True)
        return K - K.mean(1, keepdim=True)
    K.fill_diagonal_(0)
    rows = K.sum(1)
    U = K - rows[:, None] / (n - 2) - rows[None, :] / (n - 2) + rows.sum() / ((n - 1) * (n - 2))
    return U.fill_diagonal_(0)


def choose_route(n: int, d_a: int, d_b: int, route: str = "auto") -> str:
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {', '.join(map(repr, ROUTES))}")
    if route != "auto":
        return route
    return "gram" if n * (d_a + d_b) < d_a * d_b and n * n <= 1 << 26 else "features"


def hsic(A, B, *, unbiased: bool = False, route: str = "auto") -> float:
    """HSIC of the linear kernels of paired features ``A`` ``[N, D_A]``, ``B`` ``[N, D_B]`` (float64).

    Biased: tr(KHLH) (no 1/(N−1)² factor); unbiased: Song et al. (2012) Eq. 5. See the module docstring.
    """
    A, B = as_features("A", A), as_features("B", B)
    n = check_pair(A, B)
    _min_n(n, unbiased)
    A, B = A.detach().cpu().double(), B.detach().cpu().double()
    if choose_route(n, A.shape[1], B.shape[1], route) == "features":
        return float(_features_hsic(A, B, unbiased))
    value = (centred_gram(A, unbiased) * centred_gram(B, unbiased)).sum()
    return float(value / (n * (n - 3)) if unbiased else value)


def cka(A, B, *, unbiased: bool = False, epsilon: float = 1e-6, route: str = "auto") -> float:
    """Linear CKA of paired features: HSIC(K, L) / (sqrt(HSIC(K, K)·HSIC(L, L)) + ε).

    Args:
        A: ``[N, D_A]``; B: ``[N, D_B]`` -- row i of both is input i. Any float dtype; computed in float64.
        unbiased: Song et al.'s unbiased HSIC (upstream ``unbiased_cka``) instead of tr(KHLH) (``cka``).
            The biased value is inflated at small N; prefer ``unbiased=True`` when N is a few hundred or less.
        epsilon: added to the denominator; default 1e-6 as platonic-rep. ``0`` gives the exact ratio
            (recommended with ``unbiased=True`` on L2-normalised rows, where ε can lower CKA by tens of %).
        route: ``"auto"``, ``"features"`` or ``"gram"`` (same value; speed only).

    Returns:
        float in [0, 1] for the biased estimator (the unbiased one can be slightly negative).
    """
    A, B = as_features("A", A), as_features("B", B)
    n = check_pair(A, B)
    _min_n(n, unbiased)
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    A, B = A.detach().cpu().double(), B.detach().cpu().double()
    if choose_route(n, A.shape[1], B.shape[1], route) == "features":
        ab, aa, bb = (_features_hsic(x, y, unbiased) for x, y in ((A, B), (A, A), (B, B)))
    else:
        ga, gb = centred_gram(A, unbiased), centred_gram(B, unbiased)
        scale = n * (n - 3) if unbiased else 1
        ab, aa, bb = ((x * y).sum() / scale for x, y in ((ga, gb), (ga, ga), (gb, gb)))
    return float(ab / (torch.sqrt(aa * bb) + epsilon))
