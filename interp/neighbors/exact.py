"""Stage 2 of every backend: exact re-rank of candidates, with a certificate.

Stage 1 (a blocked GEMM, a Triton kernel, FAISS) proposes for each query the
``kc`` points with the smallest *approximate* distance (float32, TF32 or bf16
arithmetic). This module makes the answer exact:

1. **Re-rank.** The candidates' distances are recomputed in float64 from the
   inputs (``1 - x·y / (|x| |y|)`` or ``|x - y|``), rounded to float32 -- the
   distances returned -- and ordered by (distance, index): ties go to the
   lower index, deterministically.
2. **Certificate.** Stage 1's error is bounded by ``tol`` (from the dimension
   and the arithmetic, see :func:`stage1_tolerance`). Every point that is not a
   candidate has an approximate distance >= the largest candidate's, so its
   true distance is >= ``max_candidate_approx - tol``. If that is larger than
   the k-th exact distance (plus one float32 ulp, so no tie can hide), the
   row's k neighbours are provably the exact ones.
3. **Fallback.** Rows without a certificate (massive exact ties, dense
   near-ties at the candidate boundary) are recomputed by brute force in
   float64 against all points, in memory-bounded chunks.

Distances: cosine ``1 - cos`` (a zero vector is at distance 1 from every
point, itself included) or euclidean ``|x - y|``. Stage-1 "approximate
distance" is ``1 - cos`` for cosine and the *squared* distance for euclidean.
"""

from __future__ import annotations

import torch

__all__ = ["exact_distances", "rerank", "stage1_tolerance", "brute_force_rows"]

_UNIT_ROUNDOFF = {"ieee": 2.0**-24, "tf32": 2.0**-11, "bf16": 2.0**-8}
_CHUNK_BYTES = 1 << 26  # brute force: 64 MB of float64 distances per chunk
# Re-rank gathers [rows, kc, D] candidate vectors and converts them to float64; in 8 MB chunks the
# gathered float32 rows are still in cache when converted and multiplied (2x faster than 64 MB chunks).
_RERANK_CHUNK_BYTES = 1 << 23
_U64 = 2.0**-53  # float64 unit roundoff: stage 2's own measurements and the brute-force GEMM
_F32_UNDERFLOW = 2.0**-126  # absolute error of a float32 input or product below the normal range (flushed)
_COSINE_SQ_NORM_RANGE = (2.0**-70, 2.0**100)  # float32 normalisation is accurate (F.normalize: eps 1e-12)
_EUCLIDEAN_SQ_NORM_MAX = 2.0**124  # |x|² + |y|² + 2|x||y| stays below float32's 2^128


def stage1_tolerance(queries: torch.Tensor, points: torch.Tensor, metric: str, precision: str = "ieee") -> torch.Tensor:
    """Bound on |approximate - exact| stage-1 distance, per query: ``[M]`` float64 (``inf``: no bound).

    Worst-case rounding analysis of a dot product of length D: inputs rounded
    to the arithmetic's unit roundoff ``u_in``, accumulated in float32
    (``u = 2^-24``; ``2^-23`` for tensor-core TF32/bf16 GEMMs, whose
    accumulation truncates): ``|err(x·y)| <= (2 u_in + (D + 4) u) |x| |y|``.
    Cosine uses unit vectors (the float32 normalisation adds about ``D u``);
    euclidean ``|x|² + |y|² - 2 x·y`` doubles the product term and adds the
    rounding of the norms, plus an absolute term for values that underflow
    float32 (flushed or subnormal: absolute, not relative, errors).

    The analysis assumes float32 neither overflows nor loses the norms to
    underflow. Where the inputs leave that range (cosine: a nonzero squared
    norm outside ``[2^-70, 2^100]``, so stage 1 may normalise it to zero or
    NaN; euclidean: a squared norm above ``2^124``, where ``|x|² + |y|²``
    overflows) the bound is ``inf``: for the query's row, or for every row
    when the offending vector is a point (it can be anyone's neighbour).
    """
    d = queries.shape[-1]
    u = _UNIT_ROUNDOFF["ieee"] * (1 if precision == "ieee" else 2)
    u_in = _UNIT_ROUNDOFF[precision]
    per_product = 2 * u_in + (d + 4) * u
    q2 = _squared_norms(queries)
    p2 = q2 if points is queries else _squared_norms(points)  # self-search: the same rows
    if metric == "cosine":
        tol = torch.full((queries.shape[0],), 2 * per_product + 8 * u, dtype=torch.float64, device=q2.device)
        lo, hi = _COSINE_SQ_NORM_RANGE
        tol[(q2 > 0) & ((q2 < lo) | (q2 > hi))] = float("inf")
        if ((p2 > 0) & ((p2 < lo) | (p2 > hi))).any():
            tol[:] = float("inf")
        return tol
    p2_max = p2.max()
    tol = _euclidean_gemm_error(d, u, per_product, q2, p2_max)
    tol = tol + 2 * _F32_UNDERFLOW * d**0.5 * (q2.sqrt() + p2_max.sqrt()) + 8 * (d + 4) * 2.0**-149
    tol[q2 > _EUCLIDEAN_SQ_NORM_MAX] = float("inf")
    if p2_max > _EUCLIDEAN_SQ_NORM_MAX:
        tol[:] = float("inf")
    return tol


def _euclidean_gemm_error(d: int, u: float, per_product: float, q2: torch.Tensor, p2_max: torch.Tensor) -> torch.Tensor:
    """Rounding bound of ``|x|² + |y|² - 2 x·y`` (any evaluation order), ``|y|² <= p2_max``: ``[M]``."""
    return 2 * per_product * (q2 * p2_max).sqrt() + (d + 4) * u * (q2 + p2_max) + 8 * u * (q2 + p2_max)


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    """``|x|²`` per row in float64, ``[n]``, without a float64 copy of all of ``x``."""
    rows = max(1, _RERANK_CHUNK_BYTES // (8 * x.shape[-1]))
    return torch.cat([x[i : i + rows].double().pow(2).sum(-1) for i in range(0, x.shape[0], rows)])


def exact_distances(
    queries: torch.Tensor,
    points: torch.Tensor,
    index: torch.Tensor,
    metric: str,
    inv_points: torch.Tensor | None = None,
) -> torch.Tensor:
    """float64 distances from ``queries[i]`` to ``points[index[i, j]]``: ``[M, kc]``.

    Cosine returns ``1 - cos`` (``x·y / (|x| |y|)`` with the dot product and
    norms in float64; a zero vector gives cos = 0); euclidean returns the
    *squared* distance ``|x - y|²`` from float64 differences (no cancellation:
    duplicates are at exactly 0). The caller takes the square root once.
    """
    out = torch.empty(index.shape, dtype=torch.float64, device=queries.device)
    # chunks of rows x candidate columns: the gathered [rows, cols, D] float64 block stays ~8 MB
    # even for the brute force's wide candidate lists
    cols = max(1, min(index.shape[1], _RERANK_CHUNK_BYTES // (8 * queries.shape[1])))
    rows = max(1, _RERANK_CHUNK_BYTES // (8 * cols * queries.shape[1]))
    if metric == "cosine" and inv_points is None:
        inv_points = _inverse_norms(points)
    for start in range(0, index.shape[0], rows):
        q = queries[start : start + rows].double()
        inv_q = _inverse_norms(q).unsqueeze(1) if metric == "cosine" else None
        for c0 in range(0, index.shape[1], cols):
            sel = index[start : start + rows, c0 : c0 + cols]
            p = points[sel].double()  # [r, c, D]
            if metric == "cosine":
                dots = torch.bmm(p, q.unsqueeze(2)).squeeze(2)
                out[start : start + rows, c0 : c0 + cols] = 1.0 - dots * inv_q * inv_points[sel]
            else:
                out[start : start + rows, c0 : c0 + cols] = (p - q.unsqueeze(1)).pow_(2).sum(-1)
    return out


def _inverse_norms(x: torch.Tensor) -> torch.Tensor:
    """``1 / |x|`` per row in float64, 0 for zero rows (so their cosine is 0)."""
    norms = torch.linalg.vector_norm(x, dim=-1, dtype=torch.float64)
    return torch.where(norms > 0, 1.0 / norms.clamp_min(1e-300), 0.0)


def _order(dist64: torch.Tensor, index: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort each row by (float32 distance, index); return (index, float32 dist, float64 dist)."""
    final = (dist64.clamp_min(0).sqrt() if metric == "euclidean" else dist64).float()
    by_index = torch.argsort(index, dim=1, stable=True)
    index, final, dist64 = index.gather(1, by_index), final.gather(1, by_index), dist64.gather(1, by_index)
    by_dist = torch.argsort(final, dim=1, stable=True)
    return index.gather(1, by_dist), final.gather(1, by_dist), dist64.gather(1, by_dist)


def brute_force_rows(
    queries: torch.Tensor, points: torch.Tensor, k: int, metric: str, self_index: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact kNN of ``queries`` among all ``points``, in float64, chunked.

    A float64 GEMM gives every distance up to a rounding bound ``tol64`` (the
    stage-1 analysis with ``u = 2^-53``; for euclidean it grows with
    ``|x||y|``, so a huge common offset can swamp it). Every point within
    ``2 tol64`` (plus a float32 step) of the k-th smallest GEMM value is
    kept -- a variable number per row, all points if need be -- and measured
    and ordered exactly like stage-2 candidates, so both paths return
    bit-identical values; a point left out is provably farther than the k-th.
    ``self_index[i]`` (or -1) is excluded. Memory: ``[rows, N]`` float64
    chunks and ``O(N·D)``, never ``N × N``.
    Returns ``([M, k] int64, [M, k] float32)``.
    """
    n, d = points.shape
    p = points.double()
    inv_p = _inverse_norms(p)
    p2 = p.pow(2).sum(-1)
    p2_max = p2.max()
    rows = max(1, _CHUNK_BYTES // (8 * n))
    out_idx, out_dist = [], []
    for start in range(0, queries.shape[0], rows):
        q = queries[start : start + rows].double()
        if metric == "cosine":
            g = 1.0 - (q @ p.T) * _inverse_norms(q)[:, None] * inv_p[None, :]
            tol64 = torch.full((q.shape[0],), (2 * d + 16) * _U64, dtype=torch.float64, device=q.device)
        else:
            q2 = q.pow(2).sum(-1)
            g = q2[:, None] + p2 - 2 * q @ p.T
            tol64 = _euclidean_gemm_error(d, _U64, (d + 6) * _U64, q2, p2_max)
        keep_out = torch.zeros_like(g, dtype=torch.bool)
        if self_index is not None:
            s = self_index[start : start + rows]
            valid = s >= 0
            g[valid.nonzero().squeeze(1), s[valid]] = float("inf")
            keep_out[valid.nonzero().squeeze(1), s[valid]] = True
        kth = g.kthvalue(k, dim=1).values
        # the true k-th distance is <= kth + tol64; a point with g > kth + 2 tol64 + slack is farther
        # than it by more than float32 can merge (slack: 2^-20 relative, and float32's underflow floor)
        slack = (kth.abs() + 2 * tol64) * 2.0**-20 + (2.0**-294 if metric == "euclidean" else 2.0**-147)
        within = (g <= (kth + 2 * tol64 + slack)[:, None]) & ~keep_out
        width = int(within.sum(1).max())
        candidates = torch.argsort((~within).to(torch.uint8), dim=1, stable=True)[:, :width]
        dist64 = exact_distances(queries[start : start + rows], points, candidates, metric, inv_p)
        dist64 = dist64.masked_fill(~within.gather(1, candidates), float("inf"))  # ragged rows: pad last
        index, final, _ = _order(dist64, candidates, metric)
        out_idx.append(index[:, :k])
        out_dist.append(final[:, :k])
    return torch.cat(out_idx), torch.cat(out_dist)


def rerank(
    queries: torch.Tensor,
    points: torch.Tensor,
    candidates: torch.Tensor,
    approx: torch.Tensor,
    k: int,
    metric: str,
    self_index: torch.Tensor | None,
    precision: str = "ieee",
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Exact top-k from stage-1 candidates (see module docstring).

    Candidates are measured in float64 in tiers: first the ``k + 1`` with the
    smallest approximate distance, then -- for rows that tier cannot certify --
    all ``kc``, then brute force for the rest.

    Args:
        queries: ``[M, D]``; points: ``[N, D]`` (same device).
        candidates: ``[M, kc]`` int64, the kc smallest approximate distances
            (self already removed), kc >= k; ``approx``: their ``[M, kc]``
            approximate distances (``1 - cos`` or squared euclidean).
        self_index: ``[M]`` index of each query among ``points`` (-1: none).

    Returns:
        ``(indices [M, k] int64, distances [M, k] float32, n_brute_force_rows)``.
    """
    m, kc = candidates.shape
    n_available = points.shape[0] - (0 if self_index is None else 1)
    order = torch.argsort(approx, dim=1, stable=True)
    candidates, approx = candidates.gather(1, order), approx.gather(1, order).double()
    tol = stage1_tolerance(queries, points, metric, precision).to(approx.device)
    inv_points = _inverse_norms(points) if metric == "cosine" else None  # shared by every tier
    index = torch.empty((m, k), dtype=torch.int64, device=candidates.device)
    dist = torch.empty((m, k), dtype=torch.float32, device=candidates.device)
    # rows whose stage 1 fell outside its error analysis (float32 over/underflow: tol = inf; FAISS
    # pads with -1) have no usable candidate list: straight to brute force
    usable = torch.isfinite(tol) & (candidates >= 0).all(1)
    unusable = (~usable).nonzero().squeeze(1)
    pending = usable.nonzero().squeeze(1)
    for width in sorted({min(kc, k + 1), kc}):
        if pending.numel() == 0:
            break
        rows = pending
        dist64 = exact_distances(queries[rows], points, candidates[rows, :width], metric, inv_points)
        idx, final, dist64 = _order(dist64, candidates[rows, :width], metric)
        index[rows], dist[rows] = idx[:, :k], final[:, :k]
        if width >= n_available:  # every available point was measured
            pending = pending[:0]
            break
        kth = dist64[:, k - 1]
        if metric == "euclidean":  # squared space; one float32 ulp of the distance above the k-th
            margin = (kth.sqrt() * (1 + 2.0**-22)).pow(2) - kth + 1e-30
        else:  # plus the float64 rounding of the measured cosines themselves
            margin = kth.abs() * 2.0**-22 + 2.0**-60 + (2 * queries.shape[1] + 16) * _U64
        bound = approx[rows, min(width, kc - 1)] - tol[rows]
        pending = rows[~(bound > kth + margin)]  # NaN (float32 overflow in stage 1) certifies nothing
    pending = torch.cat([pending, unusable])
    if pending.numel() == 0:
        return index, dist, 0
    rows_self = None if self_index is None else self_index[pending]
    index[pending], dist[pending] = brute_force_rows(queries[pending], points, k, metric, rows_self)
    return index, dist, int(pending.numel())
