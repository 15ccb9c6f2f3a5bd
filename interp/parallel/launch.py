"""Process-group setup for multi-process runs (``torchrun``, ``torch.multiprocessing``).

:func:`init_distributed` is the one call a script (or ``interp ilo
--distributed``) makes under ``torchrun``: it reads the launcher's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), picks the backend from the requested device
(:func:`resolve_backend`: ``cpu`` -> gloo, ``cuda`` -> NCCL), checks that
GPU ``LOCAL_RANK`` exists and binds rank r to it, and -- the point of this module -- sets a
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

from interp._validation import renamed
from interp.parallel.collectives import DEFAULT_TIMEOUT

__all__ = ["init_distributed", "rank_device", "resolve_backend", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = DEFAULT_TIMEOUT.total_seconds()


def resolve_backend(dist_backend: str = "auto", device: str = "auto") -> str:
    """The process-group backend for ``device``: ``"gloo"`` for CPU tensors, ``"nccl"`` for CUDA tensors.

    ``dist_backend="auto"`` follows ``device`` (``"cpu"`` -> gloo; ``"cuda"``/``"cuda:i"`` -> NCCL; ``"auto"`` ->
    NCCL if CUDA is available, else gloo). An explicit backend must fit the device.
    """
    if dist_backend not in ("auto", "nccl", "gloo"):
        raise ValueError(f"unknown dist_backend {dist_backend!r}; choose 'auto', 'nccl' or 'gloo'")
    kind = str(device).split(":")[0]
    if kind not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {device!r} for a distributed run; choose 'auto', 'cpu' or 'cuda'")
    wanted = {"cpu": "gloo", "cuda": "nccl"}.get(kind) or ("nccl" if torch.cuda.is_available() else "gloo")
    if dist_backend != "auto" and dist_backend != wanted and kind != "auto":
        raise ValueError(f"dist_backend {dist_backend!r} does not fit device {device!r}: gloo moves CPU tensors, "
                         f"NCCL CUDA tensors; use dist_backend={wanted!r} (or 'auto')")  # fmt: skip
    return wanted if dist_backend == "auto" else dist_backend


def init_distributed(
    dist_backend: str = "auto",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    device: str = "auto",
    *,
    backend: str | None = None,
) -> tuple[int, int]:
    """Initialise the default process group from ``torchrun``'s environment; return ``(rank, world_size)``.

    Args:
        dist_backend: the process-group backend: ``"auto"`` (from ``device``, see :func:`resolve_backend`),
            ``"nccl"`` or ``"gloo"``; ``backend=`` is its deprecated old name.
        timeout_s: timeout of every collective and of the rendezvous, in seconds.
        device: the device the rank's tensors will live on (``"cpu"``, ``"cuda"``, ``"auto"``).
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"init_distributed: environment variables {missing} are not set; start the script with "
            "`torchrun --nproc-per-node P ...` (or set them yourself)"
        )
    backend = resolve_backend(
        renamed("dist_backend", dist_backend, "backend", backend, "auto", "init_distributed"), device
    )
    if backend == "nccl":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if local_rank >= n_gpus:
            raise RuntimeError(
                f"init_distributed: NCCL binds this rank to GPU LOCAL_RANK={local_rank}, but this node has {n_gpus} "
                f"visible GPU(s); start at most {n_gpus} processes per node (torchrun --nproc-per-node), "
                "check CUDA_VISIBLE_DEVICES, or run on CPU (device='cpu' / --device cpu, gloo)"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def rank_device(device: str = "auto") -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for ``"cuda"``/``"auto"`` with a GPU, else CPU."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if device in ("cuda", "auto"):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(device)
