"""Bounded collectives: every ``torch.distributed`` wait of ``interp`` goes through here.

Design. A multi-process job fails in one of two ways: a rank passes different
arguments (then every rank must raise the *same* error before any work), or a peer
dies / stalls (then every survivor must raise within a bounded time, saying so, instead
of hanging in a collective forever). This module gives both, for every user of
``torch.distributed`` in the package (the sharded kNN ring, sharded ILO):

* every collective is posted asynchronously and waited on with ``timeout``
  (:func:`wait`); a failed or late wait raises :class:`DistributedError` naming the
  step, so a dead peer shows up as an error within ``timeout``;
* :func:`all_gather_object` exchanges small picklable values (labels, arguments) with
  the same bound -- :func:`torch.distributed.all_gather_object` would wait for the
  process group's own timeout;
* :func:`check_same_arguments` turns a disagreement between ranks into one
  ``ValueError`` raised identically on every rank;
* :func:`all_reduce` sums a tensor over ranks; :func:`gather_rows` concatenates
  uneven per-rank shards in rank order; :func:`shard_range` is the one rule for which
  contiguous points a rank owns.

gloo moves CPU tensors, NCCL CUDA tensors (:func:`comm_device` picks the device a
collective's buffers live on). ``DEFAULT_TIMEOUT`` is the one default of the package
(the CLI's ``--timeout`` and :func:`interp.parallel.launch.init_distributed` use it).
"""

from __future__ import annotations

import pickle
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT",
    "DistributedError",
    "all_gather",
    "all_gather_object",
    "all_reduce",
    "as_timeout",
    "check_same_arguments",
    "comm_device",
    "gather_rows",
    "raise_failed",
    "shard_range",
    "shard_sizes",
    "wait",
]

DEFAULT_TIMEOUT = timedelta(minutes=10)


class DistributedError(RuntimeError):
    """A collective failed: a peer died, or did not answer within the timeout."""


def as_timeout(timeout: timedelta | float | None) -> timedelta:
    """``timeout`` as a ``timedelta`` (seconds if a number; ``None`` -> :data:`DEFAULT_TIMEOUT`)."""
    if timeout is None:
        return DEFAULT_TIMEOUT
    return timeout if isinstance(timeout, timedelta) else timedelta(seconds=float(timeout))


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s contiguous shard of ``n`` points.

    Balanced: the first ``n % world_size`` ranks get one point more.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank} (world size {world_size})")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def comm_device(group) -> torch.device:
    """The device a collective's buffers live on: this rank's GPU for NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def raise_failed(err: Exception, what: str, timeout: timedelta):
    """Re-raise a backend's failure as :class:`DistributedError` naming the step ``what``."""
    first = str(err).splitlines()[0] if str(err) else ""
    raise DistributedError(
        f"rank {dist.get_rank()}: distributed step failed while {what}: {type(err).__name__}: {first}. "
        f"This is how a peer process that died, or did not answer within {timeout.total_seconds():.0f} s, "
        "shows up; check the other ranks' logs -- the job cannot continue."
    ) from err


def wait(work, what: str, timeout: timedelta) -> None:
    """Wait for an async collective's ``work`` at most ``timeout``; a failure raises :class:`DistributedError`."""
    try:
        work.wait(timeout)
    except Exception as err:  # gloo raises RuntimeError / DistBackendError; NCCL may raise others
        raise_failed(err, what, timeout)


def all_gather(local: torch.Tensor, what: str, group, timeout: timedelta) -> list[torch.Tensor]:
    """Every rank's ``local`` (same shape on every rank), in rank order."""
    out = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    wait(dist.all_gather(out, local, group=group, async_op=True), what, timeout)
    return out


def all_reduce(local: torch.Tensor, what: str, group, timeout: timedelta) -> torch.Tensor:
    """The sum of ``local`` over the ranks, on ``local``'s device (integer sums are exact in any order)."""
    buf = local.to(comm_device(group)).contiguous()
    wait(dist.all_reduce(buf, group=group, async_op=True), what, timeout)
    return buf.to(local.device)


def all_gather_object(obj, what: str, group=None, timeout: timedelta = DEFAULT_TIMEOUT) -> list:
    """Every rank's picklable ``obj``, in rank order, with every wait bounded by ``timeout``.

    Two tensor ``all_gather`` s (byte counts, then the padded pickles), each waited on
    with :func:`wait`, so a dead or stalled peer raises :class:`DistributedError` within
    ``timeout``.
    """
    device = comm_device(group)
    payload = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
    sizes = all_gather(torch.tensor([payload.numel()], dtype=torch.int64, device=device), what, group, timeout)
    sizes = [int(n) for n in sizes]
    padded = torch.zeros(max(sizes), dtype=torch.uint8, device=device)
    padded[: payload.numel()] = payload.to(device)
    parts = all_gather(padded, what, group, timeout)
    return [pickle.loads(p[:n].cpu().numpy().tobytes()) for p, n in zip(parts, sizes, strict=True)]


def check_same_arguments(settings: list[dict], rank: int, fn: str) -> None:
    """Raise the same ``ValueError`` on every rank if the ranks passed different scalar arguments."""
    for name in settings[0]:
        values = [s[name] for s in settings]
        if any(v != values[0] or type(v) is not type(values[0]) for v in values):
            per_rank = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
            raise ValueError(
                f"rank {rank}: the ranks called {fn} with different {name} ({per_rank}); every rank must pass "
                f"the same {name}"
            )


def shard_sizes(n_local: int, group=None, timeout: timedelta = DEFAULT_TIMEOUT) -> list[int]:
    """Shard size of every rank (one small ``all_gather``)."""
    local = torch.tensor([n_local], dtype=torch.int64, device=comm_device(group))
    return [int(t) for t in all_gather(local, "exchanging shard sizes", group, timeout)]


def gather_rows(
    local: torch.Tensor, sizes: list[int], dim: int = 0, group=None, timeout: timedelta = DEFAULT_TIMEOUT
) -> torch.Tensor:
    """All-gather per-rank shards of uneven sizes ``sizes`` along ``dim``, concatenated in rank order.

    Used for small per-point values (e.g. ``[L, n_r]`` counts), never for ``N × k`` lists.
    """
    width = max(sizes)
    pad = list(local.shape)
    pad[dim] = width - local.shape[dim]
    device = comm_device(group)
    padded = torch.cat([local.to(device), torch.zeros(pad, dtype=local.dtype, device=device)], dim=dim)
    parts = all_gather(padded.contiguous(), "gathering per-point values", group, timeout)
    return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes, strict=True)], dim=dim).to(local.device)
