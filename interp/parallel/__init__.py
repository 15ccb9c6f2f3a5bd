"""Multi-process runs: process-group setup (:mod:`.launch`) and bounded collectives (:mod:`.collectives`).

Data flow: ``torchrun`` starts P processes -> :func:`init_distributed` joins them in one
process group with a finite timeout -> each rank takes its contiguous shard of the points
(:func:`shard_range`) -> the sharded kNN (:func:`interp.neighbors.distributed.knn_sharded`)
and sharded ILO (``interp.ilo.score(..., group=...)``) exchange shards and per-language sums
through :mod:`.collectives`, whose every wait is bounded, so a dead peer is an error, not a hang.
"""

from interp.parallel.collectives import (
    DEFAULT_TIMEOUT,
    DistributedError,
    all_gather_object,
    all_reduce,
    check_same_arguments,
    gather_rows,
    shard_range,
    shard_sizes,
)
from interp.parallel.launch import init_distributed, rank_device, resolve_backend

__all__ = [
    "DEFAULT_TIMEOUT",
    "DistributedError",
    "all_gather_object",
    "all_reduce",
    "check_same_arguments",
    "gather_rows",
    "init_distributed",
    "rank_device",
    "resolve_backend",
    "shard_range",
    "shard_sizes",
]
