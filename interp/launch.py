"""Process-group setup for multi-process runs (``torchrun``, ``torch.multiprocessing``).

:func:`init_distributed` is the one call a script (or ``interp ilo
--distributed``) makes under ``torchrun``: it reads the launcher's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), picks NCCL when every rank has a GPU and gloo otherwise,
binds rank r to GPU ``LOCAL_RANK`` and -- the point of this module -- sets a
finite timeout on the process group, so a rank that dies makes the others fail
with an error instead of waiting forever. It does nothing if a group is
already initialised. :func:`rank_device` is the device this rank's tensors
belong on.

Recipe (see docs/scaling.md)::

    torchrun --nproc-per-node 8 -m interp ilo --distributed --device cuda ...
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "rank_device", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 600.0


def init_distributed(backend: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, int]:
    """Initialise the default process group from ``torchrun``'s environment; return ``(rank, world_size)``.

    Args:
        backend: ``"auto"`` (NCCL if CUDA is available, else gloo), ``"nccl"`` or ``"gloo"``.
        timeout_s: timeout of every collective and of the rendezvous, in seconds.
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"init_distributed: environment variables {missing} are not set; start the script with "
            "`torchrun --nproc-per-node P ...` (or set them yourself)"
        )
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"unknown backend {backend!r}; choose 'auto', 'nccl' or 'gloo'")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def rank_device(device: str = "auto") -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for ``"cuda"``/``"auto"`` with a GPU, else CPU."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if device in ("cuda", "auto"):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(device)
