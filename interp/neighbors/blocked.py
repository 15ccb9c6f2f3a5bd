"""Stage 1 on torch (CPU or GPU): blocked GEMM + running top-k, symmetric for self-search.

Points are cut into blocks of ``block`` rows. For self-search the similarity
block ``S = X_I X_Jᵀ`` is computed only for ``J >= I`` and used twice: its rows
update the candidates of block I, its columns those of block J -- half the
GEMM flops of a full ``N × N`` sweep, which is how this path beats FAISS on
the same CPU. Each block keeps its running best ``kc`` per row
(``torch.topk`` over [best ++ new]); memory is ``O(N·kc + block²)``, never
``N × N``.

Scores are "larger = closer": ``x̂·ŷ`` for cosine, ``x·y - |y|²/2`` for
euclidean (so ``|x|² - 2·score`` is the squared distance). The approximate
distances handed to stage 2 are derived from the scores.
"""

from __future__ import annotations

import torch

__all__ = ["blocked_candidates"]


GROUP = 16  # elements per group in the two-level selection


def top_rows(s: torch.Tensor, kc: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(s, kc, dim=1)`` for a large ``[r, w]`` block, faster on CPU.

    Two-level selection: the row is split into ``w / GROUP`` strided groups
    (group m = columns m, m + G, m + 2G, ... -- a reduction over a strided
    dimension vectorises over the contiguous one); the kc groups with the
    largest maxima contain the kc largest elements, which a small topk then
    picks. The value set equals ``torch.topk``'s (tie choice may differ; stage
    2's certificate does not depend on it).
    """
    r, w = s.shape
    n_groups = w // GROUP
    if w % GROUP or n_groups < 2 * kc:
        return torch.topk(s, kc, dim=1)
    maxima = s.view(r, GROUP, n_groups).amax(dim=1)  # [r, G]
    groups = torch.topk(maxima, kc, dim=1).indices  # [r, kc]
    offsets = torch.arange(GROUP, device=s.device) * n_groups
    cols = (groups[:, :, None] + offsets).reshape(r, kc * GROUP)
    values, pos = torch.topk(s.gather(1, cols), kc, dim=1)
    return values, cols.gather(1, pos)


def top_cols(s: torch.Tensor, kc: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(s, kc, dim=0)`` transposed to ``[w, kc]`` (see :func:`top_rows`)."""
    r, w = s.shape
    n_groups = r // GROUP
    if r % GROUP or n_groups < 2 * kc:
        return torch.topk(s.T, kc, dim=1)
    maxima = s.view(GROUP, n_groups, w).amax(dim=0)  # [G, w]
    groups = torch.topk(maxima.T, kc, dim=1).indices  # [w, kc]
    offsets = torch.arange(GROUP, device=s.device) * n_groups
    rows = (groups[:, :, None] + offsets).reshape(w, kc * GROUP)  # [w, kc*GROUP]
    picked = s.gather(0, rows.T.contiguous()).T  # [w, kc*GROUP]
    values, pos = torch.topk(picked, kc, dim=1)
    return values, rows.gather(1, pos)


def _merge(best_v, best_i, new_v, new_i, kc):
    if best_v is None:
        return new_v, new_i
    values, pos = torch.topk(torch.cat([best_v, new_v], dim=1), kc, dim=1)
    return values, torch.cat([best_i, new_i], dim=1).gather(1, pos)


def _prepare(x: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = x.float()
    if metric == "cosine":
        norms = x.norm(dim=1, keepdim=True)
        return torch.where(norms > 0, x / norms.clamp_min(torch.finfo(torch.float32).tiny), 0.0), None
    return x, x.pow(2).sum(1)


def blocked_candidates(
    points: torch.Tensor,
    queries: torch.Tensor | None,
    kc: int,
    metric: str,
    exclude_self: bool,
    block: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``kc`` approximately-closest points per query.

    Args:
        points: ``[N, D]``. queries: ``[M, D]``, or None for self-search
            (queries = points, with the symmetric schedule).
        exclude_self: drop index i from query i's candidates.
        block: rows per block (tile size; results do not depend on it after stage 2).

    Returns:
        ``(candidates [M, kc] int64, approx_distance [M, kc] float32)``.
    """
    p, p2 = _prepare(points, metric)
    if queries is None:
        scores, index = _symmetric(p, p2, kc, exclude_self, block)
        q2 = p2
    else:
        q, q2 = _prepare(queries, metric)
        scores, index = _rectangular(q, p, p2, kc, exclude_self, block)
    approx = 1.0 - scores if metric == "cosine" else (q2[:, None] - 2.0 * scores).clamp_min(0.0)
    return index, approx


def _column_score(s: torch.Tensor, sq: torch.Tensor | None) -> torch.Tensor:
    return s if sq is None else s - 0.5 * sq[None, :]


def _symmetric(p, p2, kc, exclude_self, block):
    n = p.shape[0]
    starts = list(range(0, n, block))
    best_v: list = [None] * len(starts)
    best_i: list = [None] * len(starts)
    for a, i0 in enumerate(starts):
        rows = p[i0 : i0 + block]
        for b in range(a, len(starts)):
            j0 = starts[b]
            s = rows @ p[j0 : j0 + block].T  # [bi, bj]
            if a == b and exclude_self:
                s.fill_diagonal_(float("-inf"))
            row_view = _column_score(s, None if p2 is None else p2[j0 : j0 + block])
            k_row = min(kc, row_view.shape[1])
            v, i = top_rows(row_view, k_row)
            best_v[a], best_i[a] = _merge(best_v[a], best_i[a], v, i + j0, min(kc, _width(best_v[a]) + k_row))
            if b == a:
                continue
            col_view = s if p2 is None else s - 0.5 * p2[i0 : i0 + block][:, None]
            k_col = min(kc, col_view.shape[0])
            v, i = top_cols(col_view, k_col)
            best_v[b], best_i[b] = _merge(best_v[b], best_i[b], v, i + i0, min(kc, _width(best_v[b]) + k_col))
    return torch.cat(best_v), torch.cat(best_i)


def _width(t) -> int:
    return 0 if t is None else t.shape[1]


def _rectangular(q, p, p2, kc, exclude_self, block):
    m, n = q.shape[0], p.shape[0]
    out_v, out_i = [], []
    for i0 in range(0, m, block):
        rows = q[i0 : i0 + block]
        best_v = best_i = None
        for j0 in range(0, n, block):
            s = _column_score(rows @ p[j0 : j0 + block].T, None if p2 is None else p2[j0 : j0 + block])
            if exclude_self:  # query i is point i
                r = torch.arange(rows.shape[0], device=s.device)
                hit = (r + i0 >= j0) & (r + i0 < j0 + s.shape[1])
                s[r[hit], (r + i0 - j0)[hit]] = float("-inf")
            k_here = min(kc, s.shape[1])
            v, i = top_rows(s, k_here)
            best_v, best_i = _merge(best_v, best_i, v, i + j0, min(kc, _width(best_v) + k_here))
        out_v.append(best_v)
        out_i.append(best_i)
    return torch.cat(out_v), torch.cat(out_i)
