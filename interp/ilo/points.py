"""Where ILO's points live: all in this process, or sharded over ``torch.distributed`` ranks.

ILO is one computation (:func:`interp.ilo.score`) whose per-point steps run on the
points a process owns and whose cross-point steps are *sums*: per-language counts,
bootstrap weights, retrieval hits. A points object says which rows this process owns
and how its partial results become global ones:

* :class:`LocalPoints` -- every point is here: sums are the local sums, per-point
  values are already complete, the neighbour search is :func:`interp.knn`;
* :class:`interp.ilo.sharded.ShardedPoints` -- rank r owns a contiguous shard: sums are
  ``all_reduce`` d, per-point counts are gathered in point order, the search is
  :func:`interp.neighbors.distributed.knn_sharded`.

Only integers cross ranks (exact in any summation order), and every division happens
after the reduction, the same on every rank, so the sharded tables equal the
single-process ones bit for bit.
"""

from __future__ import annotations

from typing import Protocol

import torch

from interp.neighbors import knn

__all__ = ["Points", "LocalPoints"]


class Points(Protocol):
    """The contract :func:`interp.ilo.score` and :mod:`interp.ilo.baselines` rely on."""

    rows: slice  #: the global indices of this process's points (a contiguous range)
    params: dict  #: what the result's ``params`` records about the layout

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the device the neighbour search needs."""

    def sum(self, local: torch.Tensor, what: str) -> torch.Tensor:
        """The sum over all points' processes of this process's partial ``local`` (integer-valued)."""

    def gather(self, local: torch.Tensor, what: str, limit: int) -> torch.Tensor:
        """Per-point integers in ``[0, limit]``, ``[L, n_local]``, of all points: ``[L, N]``, in point order."""

    def knn(self, x: torch.Tensor, k: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact kNN of this process's queries among the points of all processes (global indices)."""


class LocalPoints:
    """All ``n`` points in this process."""

    def __init__(self, n: int):
        self.rows = slice(0, n)
        self.params: dict = {}

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def sum(self, local: torch.Tensor, what: str) -> torch.Tensor:
        return local

    def gather(self, local: torch.Tensor, what: str, limit: int) -> torch.Tensor:
        return local

    def knn(self, x: torch.Tensor, k: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        return knn(x, k, **kwargs)
