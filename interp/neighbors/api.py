"""``interp.knn``: exact k nearest neighbours, batched over layers, on any backend.

Every backend runs the same two stages (see :mod:`.exact`):

* stage 1 proposes ``kc = min(k + 8 + k // 2, available)`` candidates per point from
  approximate distances -- :mod:`.blocked` (torch, CPU/GPU), :mod:`.triton_kernel`
  (fused Triton kernel, GPU or ``TRITON_INTERPRET=1``), :mod:`.faiss_backend`;
* stage 2 re-ranks them exactly in float64, certifies each row and falls back to
  brute force for the rows it cannot certify.

So every backend returns the same neighbours: sorted by (distance, index), ties
to the lower index, self excluded by index (duplicates of a point are still
its neighbours).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from interp._validation import as_float_tensor, check_int, is_int
from interp.neighbors.exact import rerank

__all__ = ["knn", "KNNStats", "collect_stats", "DISTANCE_METRICS", "KNN_BACKENDS", "as_float_tensor"]

DISTANCE_METRICS = ("cosine", "euclidean")
KNN_BACKENDS = ("auto", "torch", "triton", "faiss")
PRECISIONS = ("ieee", "tf32", "bf16")


@dataclass
class KNNStats:
    """What one :func:`knn` call did: the stage-1 engine, candidates per query, rows re-ranked by brute force."""

    backend: str
    n_candidates: int
    fallback_rows: int


_collectors: list[list[KNNStats]] = []  # the open `collect_stats` blocks


@contextmanager
def collect_stats() -> Iterator[list[KNNStats]]:
    """Record a :class:`KNNStats` for every :func:`knn` call made inside the block (into the yielded list).

    ``with collect_stats() as calls: interp.knn(X, 5)`` then ``calls[-1].backend``. Nothing is recorded
    outside such a block.
    """
    calls: list[KNNStats] = []
    _collectors.append(calls)
    try:
        yield calls
    finally:
        _collectors.remove(calls)


def _auto_backend(device: torch.device, kc: int) -> str:
    """Triton on CUDA when installed and the candidate list fits its registers, else torch."""
    if device.type == "cuda":
        try:
            from interp.neighbors.triton_kernel import MAX_CANDIDATES
        except ImportError:
            return "torch"
        return "triton" if kc <= MAX_CANDIDATES else "torch"
    return "torch"


def torch_matmul_precision(device: torch.device) -> str:
    """What torch's float32 matmuls on ``device`` really compute in, as a stage-1 precision.

    ``torch.set_float32_matmul_precision("high")``, ``torch.backends.cuda.matmul.allow_tf32 = True``
    or torch >= 2.9's ``torch.backends.cuda.matmul.fp32_precision = "tf32"`` (common in notebooks)
    let float32 GEMMs use TF32; ``"medium"`` / ``"bf16"`` use bf16. The torch backend's stage 1 is
    such a GEMM, so its error bound -- and the certification built on it -- must follow the global
    setting rather than assume fp32. Unknown or contradictory settings get the widest bound.
    """
    backend = torch.backends.cuda.matmul if device.type == "cuda" else torch.backends.mkldnn.matmul
    setting = getattr(backend, "fp32_precision", "none")  # torch >= 2.9: "ieee" | "tf32" | "bf16" | "none"
    if setting == "none":
        setting = getattr(torch.backends, "fp32_precision", "none")
    if setting in PRECISIONS:
        return setting
    try:
        legacy = torch.get_float32_matmul_precision()
    except RuntimeError:  # torch refuses to read a mix of the legacy and the new API
        return "bf16"
    return {"highest": "ieee", "high": "tf32"}.get(legacy, "bf16")


def knn(
    X,
    k: int,
    metric: str = "cosine",
    exclude_self: bool | None = None,
    backend: str = "auto",
    *,
    queries=None,
    precision: str = "ieee",
    block: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours of every point (or of ``queries``) among ``X``.

    Args:
        X: ``[N, D]`` or ``[B, N, D]`` (B independent problems, e.g. layers);
            torch tensor or numpy array, any float dtype, CPU or CUDA.
        k: neighbours per point, ``1 <= k <= N - 1`` with self-exclusion
            (``<= N`` without).
        metric: ``"cosine"`` (``1 - cos``; a zero vector is at distance 1 from
            every point) or ``"euclidean"``.
        exclude_self: remove point i from its own neighbours, *by index*
            (duplicates of i are still returned). Default: True for
            self-search, False when ``queries`` is given (then True means query
            i is point i and must not match it).
        backend: ``"auto"`` (Triton on CUDA when installed and k <= 80, else torch),
            ``"torch"``, ``"triton"``, ``"faiss"``.
        queries: optional ``[M, D]`` / ``[B, M, D]`` points to search for.
        precision: stage-1 arithmetic, ``"ieee"`` (fp32), ``"tf32"`` or
            ``"bf16"`` (GPU speed); results stay exact (stage 2).
        block: tile size of stage 1 (default: backend's choice). Results do
            not depend on it.

    Returns:
        ``(indices, distances)``: ``[..., M, k]`` int64 and float32, each row
        sorted by (distance, index).
    """
    X = as_float_tensor("X", X)
    if metric not in DISTANCE_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose 'cosine' or 'euclidean'")
    if backend not in KNN_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(map(repr, KNN_BACKENDS))}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(map(repr, PRECISIONS))}")
    Q = None if queries is None else as_float_tensor("queries", queries)
    if Q is not None:
        if Q.ndim != X.ndim or Q.shape[-1] != X.shape[-1] or (X.ndim == 3 and Q.shape[0] != X.shape[0]):
            raise ValueError(f"queries {tuple(Q.shape)} do not match X {tuple(X.shape)} (same D and batch B)")
        if Q.device != X.device:
            raise ValueError(f"queries are on {Q.device} but X is on {X.device}")
    if exclude_self is None:
        exclude_self = Q is None
    if exclude_self and Q is not None and Q.shape[-2] != X.shape[-2]:
        raise ValueError(
            f"exclude_self with queries means query i is point i, but there are {Q.shape[-2]} queries "
            f"and {X.shape[-2]} points; pass exclude_self=False"
        )
    n = X.shape[-2]
    n_available = n - int(exclude_self)
    if not is_int(k) or not 1 <= k <= n_available:
        raise ValueError(
            f"k must be an int in [1, {n_available}] for {n} points"
            + (" with self-exclusion" if exclude_self else "")
            + f", got {k!r}"
        )
    k = int(k)
    block = None if block is None else check_int("block", block, low=1)
    kc = min(n_available, k + 8 + k // 2)
    chosen = _auto_backend(X.device, kc) if backend == "auto" else backend
    if precision != "ieee" and chosen != "triton":
        raise ValueError(f"precision='tf32'/'bf16' is for backend='triton'; the {chosen} backend computes in fp32")

    batched = X.ndim == 3
    Xs = X if batched else X.unsqueeze(0)
    Qs = None if Q is None else (Q if batched else Q.unsqueeze(0))
    out_i, out_d, fallback = [], [], 0
    # what stage 1 computed in: the Triton kernel's choice, torch's global matmul setting, faiss's fp32 BLAS
    stage1_precision = torch_matmul_precision(X.device) if chosen == "torch" else precision
    if chosen == "triton":
        from interp.neighbors.triton_kernel import triton_candidates

        cand_all, approx_all = triton_candidates(Xs, Qs, kc, metric, exclude_self, precision, block)
    for b in range(Xs.shape[0]):
        points = Xs[b]
        query = points if Qs is None else Qs[b]
        if chosen == "triton":
            cand, approx = cand_all[b], approx_all[b]
        elif chosen == "torch":
            from interp.neighbors.blocked import blocked_candidates

            cand, approx = blocked_candidates(
                points, None if Qs is None else query, kc, metric, exclude_self, block or 1024
            )
        else:
            from interp.neighbors.faiss_backend import faiss_candidates

            cand, approx = faiss_candidates(points, None if Qs is None else query, kc, metric, exclude_self)
        self_index = torch.arange(query.shape[0], device=query.device) if exclude_self else None
        idx, dist, n_fb = rerank(query, points, cand, approx, k, metric, self_index, stage1_precision)
        out_i.append(idx)
        out_d.append(dist)
        fallback += n_fb
    for calls in _collectors:
        calls.append(KNNStats(chosen, kc, fallback))
    indices, distances = torch.stack(out_i), torch.stack(out_d)
    return (indices, distances) if batched else (indices[0], distances[0])
