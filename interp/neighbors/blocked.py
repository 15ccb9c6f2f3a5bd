"""Stage 1 on torch (CPU or GPU): blocked GEMM + running top-k, symmetric for self-search.

Points are cut into blocks of ``block`` rows (for self-search after a cheap
spherical k-means reordering, :func:`cluster_order`, so that neighbours tend
to share a block; diagonal blocks are processed first). For self-search the similarity
block ``S = X_I X_Jᵀ`` is computed only for ``J >= I`` and used twice: its rows
update the candidates of block I, its columns those of block J -- half the
GEMM flops of a full ``N × N`` sweep, which is how this path beats FAISS on
the same CPU. The blocks are multiplied by the faster float32 GEMM library of
this CPU (MKL or oneDNN, :mod:`.cpu_gemm`). Each block keeps its running best ``kc`` per row
(``torch.topk`` over [best ++ new]); memory is ``O(N·kc + block²)``, never
``N × N``.

Scores are "larger = closer": ``x̂·ŷ`` for cosine, ``x·y - |y|²/2`` for
euclidean (so ``|x|² - 2·score`` is the squared distance). The approximate
distances handed to stage 2 are derived from the scores.
"""

from __future__ import annotations

import torch

from interp.neighbors.cpu_gemm import BlockGemm

__all__ = ["blocked_candidates"]


GROUP = 16  # elements per group in the two-level selection
FEW_GROUPS = 4  # lines needing at most this many groups take the narrow path


def select(s: torch.Tensor, kc: int, threshold: torch.Tensor, by_column: bool):
    """Top-``kc`` of each line of a similarity block that can beat ``threshold[line]``.

    A line is a row of ``s`` ``[r, w]`` (or a column, ``by_column``), without
    transposing. Two-level selection: each line is cut into ``G = len / GROUP``
    strided groups (group m = positions m, m + G, m + 2G, ...; a max over a
    strided dimension vectorises over the contiguous one). Only groups whose
    maximum beats the line's threshold (its current kc-th best) can contribute,
    and the kc best elements lie in the kc groups with the largest maxima; so
    lines with no such group are skipped, lines with a few are served by a
    narrow top-k, the rest by a kc-wide one.

    Returns ``(lines [n], values [n, c], positions [n, c])`` for the lines
    that may improve, ``c <= kc``, or None.
    """
    r, w = s.shape
    n_lines, length = (w, r) if by_column else (r, w)
    n_groups = length // GROUP
    lines = torch.arange(n_lines, device=s.device)
    if length % GROUP or n_groups < 2 * kc:
        values, positions = torch.topk(s.T if by_column else s, min(kc, length), dim=1)
        return lines, values, positions
    if by_column:
        maxima = s.view(GROUP, n_groups, w).amax(dim=0).T.contiguous()  # [w, G]
        stride_line, stride_pos = 1, w
    else:
        maxima = s.view(r, GROUP, n_groups).amax(dim=1)  # [r, G]
        stride_line, stride_pos = w, 1
    need = (maxima > threshold[:, None]).sum(dim=1)
    few = max(FEW_GROUPS, -(-kc // GROUP))
    flat = s.view(-1)
    offsets = torch.arange(GROUP, device=s.device) * n_groups
    out = []
    for chosen, width in ((lines[(need > 0) & (need <= few)], few), (lines[need > few], kc)):
        if chosen.numel() == 0:
            continue
        groups = torch.topk(maxima[chosen], width, dim=1).indices
        positions = (groups[:, :, None] + offsets).reshape(len(chosen), width * GROUP)
        values = flat[chosen[:, None] * stride_line + positions * stride_pos]
        values, pick = torch.topk(values, min(kc, width * GROUP), dim=1)
        out.append((chosen, values, positions.gather(1, pick)))
    if not out:
        return None
    if len(out) == 1:
        return out[0]
    width = min(o[1].shape[1] for o in out)
    return tuple(torch.cat([o[j][:, :width] if j else o[j] for o in out]) for j in range(3))


class RunningTopK:
    """The best ``kc`` (largest) scores and their indices for each of ``n`` queries."""

    def __init__(self, n: int, kc: int, device: torch.device):
        self.values = torch.full((n, kc), float("-inf"), device=device)
        self.index = torch.full((n, kc), -1, dtype=torch.int64, device=device)
        self.kc = kc

    def threshold(self) -> torch.Tensor:
        """Score a new element must beat to enter (the current kc-th best)."""
        return self.values[:, -1]

    def update(self, found, offset: int) -> None:
        """Merge ``select``'s ``(lines, values, positions)``; positions are offset to point indices."""
        if found is None:
            return
        lines, values, positions = found
        merged_v = torch.cat([self.values[lines], values], dim=1)
        merged_i = torch.cat([self.index[lines], positions + offset], dim=1)
        top_v, pick = torch.topk(merged_v, self.kc, dim=1)
        self.values[lines] = top_v
        self.index[lines] = merged_i.gather(1, pick)


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
    block: int = 1024,
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


def cluster_order(p: torch.Tensor, n_clusters: int, seed: int = 0, iterations: int = 4) -> torch.Tensor:
    """A permutation that puts similar points next to each other (so in the same block).

    A few Lloyd iterations of spherical k-means on a sample, then every point
    sorted by its nearest centroid. Only speed depends on it: with neighbours
    mostly inside their own block, the diagonal blocks (done first) give each
    row a nearly final threshold, and most lines of the other blocks are
    skipped by :func:`select`.
    """
    n = p.shape[0]
    if n_clusters < 2:
        return torch.arange(n, device=p.device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    sample = p[torch.randperm(n, generator=generator)[: min(n, 256 * n_clusters)].to(p.device)]
    centroids = sample[:n_clusters].clone()
    for _ in range(iterations):
        assign = (sample @ centroids.T).argmax(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, sample)
        centroids = torch.where(sums.norm(dim=1, keepdim=True) > 0, sums, centroids)
        centroids = centroids / centroids.norm(dim=1, keepdim=True).clamp_min(1e-12)
    assign = torch.cat([(p[i : i + 8192] @ centroids.T).argmax(1) for i in range(0, n, 8192)])
    return torch.argsort(assign, stable=True)


def _symmetric(p, p2, kc, exclude_self, block):
    n = p.shape[0]
    starts = list(range(0, n, block))
    order = cluster_order(p if p2 is None else p / p.norm(dim=1, keepdim=True).clamp_min(1e-30), len(starts))
    p2 = None if p2 is None else p2[order]
    best = [RunningTopK(min(block, n - i0), kc, p.device) for i0 in starts]
    gemm = BlockGemm.gathered(p, [order[i0 : i0 + block] for i0 in starts])  # no reordered copy of p
    pairs = [(a, a) for a in range(len(starts))] + [
        (a, b) for a in range(len(starts)) for b in range(a + 1, len(starts))
    ]  # diagonal blocks first: each row gets a tight threshold early
    for a, b in pairs:
        i0, j0 = starts[a], starts[b]
        s = gemm(a, b)  # [bi, bj]
        if a == b and exclude_self:
            s.fill_diagonal_(float("-inf"))
        row_view = _column_score(s, None if p2 is None else p2[j0 : j0 + block])
        best[a].update(select(row_view, kc, best[a].threshold(), by_column=False), j0)
        if b == a:
            continue
        col_view = s if p2 is None else s - 0.5 * p2[i0 : i0 + block][:, None]
        best[b].update(select(col_view, kc, best[b].threshold(), by_column=True), i0)
    values = torch.cat([t.values for t in best])
    index = order[torch.cat([t.index for t in best]).clamp_min(0)]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n, device=order.device)
    return values[inverse], index[inverse]


def _rectangular(q, p, p2, kc, exclude_self, block):
    m, n = q.shape[0], p.shape[0]
    out_v, out_i = [], []
    q_starts, p_starts = range(0, m, block), range(0, n, block)
    gemm = BlockGemm([q[i0 : i0 + block] for i0 in q_starts], [p[j0 : j0 + block] for j0 in p_starts])
    for a, i0 in enumerate(q_starts):
        rows = q[i0 : i0 + block]
        best = RunningTopK(rows.shape[0], kc, q.device)
        for b, j0 in enumerate(p_starts):
            s = _column_score(gemm(a, b), None if p2 is None else p2[j0 : j0 + block])
            if exclude_self:  # query i is point i
                r = torch.arange(rows.shape[0], device=s.device)
                hit = (r + i0 >= j0) & (r + i0 < j0 + s.shape[1])
                s[r[hit], (r + i0 - j0)[hit]] = float("-inf")
            best.update(select(s, kc, best.threshold(), by_column=False), j0)
        out_v.append(best.values)
        out_i.append(best.index)
    return torch.cat(out_v), torch.cat(out_i)
