"""ILO over ``torch.distributed`` ranks: the layout behind ``interp.ilo.score(..., group=...)``.

Each rank passes its contiguous shard of the points (activations ``[L, n_r, D]``, its
``n_r`` language labels and item ids); the global point set is the concatenation of the
shards in rank order. :func:`interp.ilo.score` runs unchanged on a :class:`ShardedPoints`
layout (:mod:`interp.ilo.points`), so every formula is the single-process one; what this
module adds is how the ranks meet:

* :func:`exchange` -- labels, ids and topics (N small Python values) and the scalar arguments
  cross once (:func:`interp.parallel.all_gather_object`, bounded by ``timeout``), so every
  rank has the global language codes in the single-process order, and ranks called with
  different ``k``, ``t``, ... or invalid input on any rank all raise the same ``ValueError``
  before any work;
* :meth:`ShardedPoints.knn` -- :func:`interp.neighbors.distributed.knn_sharded`
  (bit-identical rows; each rank keeps only its own ``[L, n_r, k]`` lists);
* :meth:`ShardedPoints.sum` -- ``all_reduce`` of per-language integer sums (bridging points,
  slot counts, null counts, bootstrap weights, retrieval hits) -- never the ``N × k`` lists;
* :meth:`ShardedPoints.gather` -- the translation and topic shares average per-point *fractions*,
  whose float sum depends on order, so their per-point same-group counts (``[L, N]``, uint8
  for k < 256: 1/8k of the neighbour lists' size) are gathered and summed in point order.

Every rank returns the same tables, equal bit for bit to the single-process result on
the concatenated shards; ``ILOResult.indices`` holds this rank's rows (global indices).
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist

from interp.ilo.inputs import check_inputs
from interp.neighbors.distributed import knn_sharded
from interp.parallel.collectives import all_gather_object, all_reduce, check_same_arguments, comm_device, gather_rows

__all__ = ["ShardedPoints", "exchange"]


class ShardedPoints:
    """This rank's contiguous shard ``rows`` of points spread over the ranks of ``group`` (sizes in rank order)."""

    def __init__(self, sizes: list[int], rank: int, group, timeout: timedelta):
        lo = sum(sizes[:rank])
        self.rows = slice(lo, lo + sizes[rank])
        self.sizes, self.group, self.timeout = sizes, group, timeout
        self.params = {"world_size": len(sizes)}

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(comm_device(self.group)) if dist.get_backend(self.group) == "nccl" else x  # NCCL: CUDA only

    def sum(self, local: torch.Tensor, what: str) -> torch.Tensor:
        return all_reduce(local, what, self.group, self.timeout)

    def gather(self, local: torch.Tensor, what: str, limit: int) -> torch.Tensor:
        small = torch.uint8 if limit <= 255 else torch.int32  # 1 byte per count for k < 256
        return gather_rows(local.to(small), self.sizes, 1, self.group, self.timeout).to(local.dtype)

    def knn(self, x: torch.Tensor, k: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        return knn_sharded(x, k, group=self.group, timeout=self.timeout, **kwargs)


def exchange(acts, langs, ids, settings: dict, group, timeout: timedelta, topics=None):
    """Validate every rank's input and agree on it: ``(points, x, layers, all langs, all ids, all topics)``.

    Collective. ``settings`` are the scalar arguments that must be equal on every rank.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("score(..., group=...) needs an initialised process group; see interp.parallel.launch")
    rank = dist.get_rank(group)
    try:
        x, layers, langs, ids, topics = check_inputs(acts, langs, ids, topics)
        problem = ""
    except (TypeError, ValueError) as err:
        x, layers, problem = None, None, str(err)
    settings = {**settings, "dtype": None if problem else str(x.dtype)}
    mine = (problem, layers, None if problem else langs, None if problem else ids, settings,
            None if problem else topics)  # fmt: skip
    shared = all_gather_object(mine, "exchanging labels, ids and arguments (sharded ILO)", group, timeout)
    if problem:
        raise ValueError(f"rank {rank}: {problem}")
    bad = [r for r, (p, *_) in enumerate(shared) if p]
    if bad:
        raise ValueError(f"rank {rank}: the input of rank(s) {bad} is invalid (see their error); nothing was computed")
    check_same_arguments([s[4] for s in shared], rank, "interp.ilo.score")
    if any(s[1] != layers for s in shared):
        raise ValueError(f"rank {rank}: the ranks pass different layers: {[s[1] for s in shared]}")
    if any((s[3] is None) != (ids is None) for s in shared):
        raise ValueError(f"rank {rank}: some ranks pass item ids and some do not; pass them on every rank")
    if any((s[5] is None) != (topics is None) for s in shared):
        raise ValueError(f"rank {rank}: some ranks pass topics and some do not; pass them on every rank")
    points = ShardedPoints([len(s[2]) for s in shared], rank, group, timeout)
    all_ids = None if ids is None else [i for s in shared for i in s[3]]
    all_topics = None if topics is None else [topic for s in shared for topic in s[5]]
    return points, x, layers, [label for s in shared for label in s[2]], all_ids, all_topics
