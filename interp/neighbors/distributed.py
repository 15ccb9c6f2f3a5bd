"""Exact kNN sharded over ``torch.distributed`` ranks: :func:`knn_sharded`.

Layout. The N points are split into P contiguous shards in rank order (rank
r owns global indices ``offset_r .. offset_r + n_r - 1``; shards may be
uneven or empty, see :func:`shard_range`). Each rank owns its shard twice:
as *queries* (it answers for them) and as one piece of the *database*.

Ring. In step s (``s = 0 .. P-1``) rank r holds the database shard of rank
``(r - s) mod P``. While it searches its queries against that shard with the
single-process engine (:func:`interp.knn`, ``queries=``: stage-1 proposal +
exact float64 re-rank), it already sends the shard on to rank ``r + 1`` and
receives the next one from rank ``r - 1`` (one ``batch_isend_irecv`` of the
send and the receive: NCCL needs the pair grouped, or two ranks that both send
first can deadlock; gloo accepts the same call), so communication overlaps
compute. At most three shards (own, current,
incoming) are resident, so memory per rank is ~3 N D / P, not N D.

Merge. Every per-shard answer is exact and sorted by (float32 distance,
index); a pair's distance does not depend on which other points are in the
search (it is recomputed in float64 from the two vectors and rounded). The
running top-k of each query is merged with each shard's top-k by (distance,
global index), ties to the lower index -- the same total order the
single-process engine uses, so the merged lists are the single-process lists,
bit for bit. The point itself is excluded by index: only in the step that
visits the rank's own shard, where query i is local point i.

Failure. Every rank checks its input and the ranks agree on the shapes and
on the scalar arguments (k, metric, exclude_self, precision, dtype; one small
exchange, :func:`~interp.parallel.collectives.all_gather_object`) before any work, so bad input -- or one
rank calling with a different ``k`` -- raises the same clear ``ValueError``
everywhere instead of hanging or returning silently inconsistent rows. Every communication is
waited on with a timeout; a dead or stuck peer raises
:class:`~interp.parallel.collectives.DistributedError` (alias ``DistributedKNNError``)
naming the step and the peer (the bounded collectives are :mod:`interp.parallel.collectives`).

Backends: gloo (CPU tensors) and NCCL (CUDA tensors, one device per rank).
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist

from interp._validation import as_float_tensor, is_int
from interp.neighbors.api import DISTANCE_METRICS, knn
from interp.parallel.collectives import (
    DistributedError,
    all_gather_object,
    as_timeout,
    check_same_arguments,
    gather_rows,
    raise_failed,
    shard_range,
    shard_sizes,
    wait,
)

__all__ = ["knn_sharded", "shard_range", "shard_sizes", "DistributedKNNError", "gather_rows", "all_gather_object"]

# kept under the names this module always exported; they live in interp.parallel.collectives
DistributedKNNError = DistributedError


def _merge(
    index: torch.Tensor, dist_: torch.Tensor, new_index: torch.Tensor, new_dist: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of two sorted lists by (float32 distance, global index)."""
    index, dist_ = torch.cat([index, new_index], -1), torch.cat([dist_, new_dist], -1)
    by_index = torch.argsort(index, dim=-1, stable=True)
    index, dist_ = index.gather(-1, by_index), dist_.gather(-1, by_index)
    by_dist = torch.argsort(dist_, dim=-1, stable=True)[..., :k]
    return index.gather(-1, by_dist), dist_.gather(-1, by_dist)


def _local_problem(name: str, x) -> tuple[torch.Tensor | None, str]:
    """Validate one rank's tensor without raising (so every rank can agree first)."""
    if x is None:
        return None, ""
    if isinstance(x, torch.Tensor) and x.ndim in (2, 3) and x.shape[-2] == 0:
        if not x.dtype.is_floating_point:
            return None, f"{name} must be floating point, got {x.dtype}"
        return x, ""  # an empty shard is allowed here (more ranks than points)
    try:
        return as_float_tensor(name, x), ""
    except (TypeError, ValueError) as err:
        return None, str(err)


def knn_sharded(
    X,
    k: int,
    metric: str = "cosine",
    exclude_self: bool | None = None,
    backend: str = "auto",
    *,
    queries=None,
    group=None,
    timeout: timedelta | float | None = None,
    precision: str = "ieee",
    block: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact kNN of this rank's queries among the points of all ranks (collective: every rank calls it).

    Args:
        X: this rank's shard of the points, ``[n_r, D]`` or ``[B, n_r, D]``
            (B independent problems, e.g. layers); the global point set is the
            concatenation of the shards in rank order. Shards may differ in
            size (or be empty). CPU tensors for gloo, CUDA for NCCL.
        k: neighbours per query, ``1 <= k <= N - 1`` with self-exclusion.
        metric, backend, precision, block: as :func:`interp.knn`.
        exclude_self: default True without ``queries`` (each local point is a
            query and is not its own neighbour, by index; its duplicates are).
        queries: optional ``[m_r, D]`` / ``[B, m_r, D]`` queries of this rank
            (with ``exclude_self=True``, query i is local point i).
        group: process group (default: the world).
        timeout: per-communication timeout (seconds or timedelta; default 10 min).
        progress: a tqdm bar over the ring steps on rank 0.

    Returns:
        ``(indices, distances)`` for this rank's queries: ``[..., m_r, k]``
        int64 *global* indices and float32 distances, each row sorted by
        (distance, index) -- identical to the rows of the single-process
        :func:`interp.knn` on the concatenated points.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "knn_sharded needs an initialised torch.distributed process group; call "
            "interp.launch.init_distributed() (or torch.distributed.init_process_group) first, "
            "or use interp.knn for a single process"
        )
    timeout = as_timeout(timeout)
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    X, problem = _local_problem("X", X)
    Q, q_problem = _local_problem("queries", queries)
    problem = problem or q_problem
    if exclude_self is None:
        exclude_self = queries is None
    if not problem and Q is not None and X is not None:
        if Q.ndim != X.ndim or Q.shape[-1] != X.shape[-1] or (X.ndim == 3 and Q.shape[0] != X.shape[0]):
            problem = f"queries {tuple(Q.shape)} do not match X {tuple(X.shape)} (same D and batch B)"
        elif Q.device != X.device:
            problem = f"queries are on {Q.device} but X is on {X.device}"
        elif exclude_self and Q.shape[-2] != X.shape[-2]:
            problem = (f"exclude_self with queries means local query i is local point i, but this rank has "
                       f"{Q.shape[-2]} queries and {X.shape[-2]} points; pass exclude_self=False")  # fmt: skip

    # One small exchange: every rank's validity, shapes and scalar arguments.
    batch = 0 if X is None else (X.shape[0] if X.ndim == 3 else -1)
    meta = {"problem": problem, "batch": batch, "D": -1 if X is None else X.shape[-1],
            "n": 0 if X is None else X.shape[-2],
            "settings": {"k": k, "metric": metric, "exclude_self": bool(exclude_self), "queries": queries is not None,
                         "precision": precision, "dtype": None if X is None else str(X.dtype)}}  # fmt: skip
    table = all_gather_object(meta, "exchanging shard shapes and arguments", group, timeout)
    if problem:
        raise ValueError(f"rank {rank}: {problem}")
    bad = [r for r, row in enumerate(table) if row["problem"]]
    if bad:
        raise ValueError(f"rank {rank}: the input of rank(s) {bad} is invalid (see their error); nothing was computed")
    check_same_arguments([row["settings"] for row in table], rank, "knn_sharded")
    if len({(row["batch"], row["D"]) for row in table}) != 1:
        shapes = {r: (f"[B={row['batch']}] " if row["batch"] >= 0 else "") + f"D={row['D']}"
                  for r, row in enumerate(table)}  # fmt: skip
        raise ValueError(f"rank {rank}: the shards disagree on batch size / dimension: {shapes}")
    if metric not in DISTANCE_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose 'cosine' or 'euclidean'")
    sizes = [row["n"] for row in table]
    n = sum(sizes)
    n_available = n - int(exclude_self)
    if not is_int(k) or not 1 <= k <= n_available:
        raise ValueError(
            f"k must be an int in [1, {n_available}] for {n} points over {world} ranks"
            + (" with self-exclusion" if exclude_self else "")
            + f", got {k!r}"
        )

    batched = X.ndim == 3
    Xs = (X if batched else X.unsqueeze(0)).contiguous()
    Qs = Xs if Q is None else (Q if batched else Q.unsqueeze(0))
    offsets = [sum(sizes[:r]) for r in range(world)]
    n_b, m = Xs.shape[0], Qs.shape[1]
    index = torch.empty((n_b, m, 0), dtype=torch.int64, device=Xs.device)
    found = torch.empty((n_b, m, 0), dtype=torch.float32, device=Xs.device)
    nxt = dist.get_global_rank(group, (rank + 1) % world) if group is not None else (rank + 1) % world
    prv = dist.get_global_rank(group, (rank - 1) % world) if group is not None else (rank - 1) % world

    from tqdm.auto import tqdm

    current = Xs
    for step in tqdm(range(world), desc="sharded knn", disable=not progress or rank != 0):
        src = (rank - step) % world
        incoming, works = None, []
        if step < world - 1:  # pass the shard on while searching it
            n_in = sizes[(src - 1) % world]
            incoming = torch.empty((n_b, n_in, Xs.shape[2]), dtype=Xs.dtype, device=Xs.device)
            ops = ([dist.P2POp(dist.isend, current, nxt, group)] if current.shape[1] else []) + (
                [dist.P2POp(dist.irecv, incoming, prv, group)] if n_in else []
            )
            what = f"passing shards around the ring (ring step {step + 1}/{world})"
            if ops:
                try:
                    works = dist.batch_isend_irecv(ops)
                except Exception as err:  # a dead peer can fail the post itself
                    raise_failed(err, what, timeout)
            works = [(what, work) for work in works]
        own = src == rank and exclude_self
        k_here = min(k, current.shape[1] - int(own))
        if m and k_here > 0:
            self_search = own and Q is None  # the diagonal block: the engine's symmetric path (half the flops)
            idx, dst = knn(current, k_here, metric=metric, exclude_self=own, backend=backend,
                           queries=None if self_search else Qs, precision=precision, block=block)  # fmt: skip
            index, found = _merge(index, found, idx + offsets[src], dst, k)
        for what, work in works:
            wait(work, f"{what} (ring step {step + 1}/{world})", timeout)
        if incoming is not None:
            current = incoming
    if m == 0:  # no queries on this rank: empty [B, 0, k] answers
        index, found = index.new_empty((n_b, 0, k)), found.new_empty((n_b, 0, k))
    return (index, found) if batched else (index[0], found[0])
