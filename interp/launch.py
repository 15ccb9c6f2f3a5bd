"""``interp.launch`` is :mod:`interp.parallel.launch` (kept as a path for existing scripts)."""

from interp.parallel.launch import DEFAULT_TIMEOUT_S, init_distributed, rank_device, resolve_backend

__all__ = ["init_distributed", "rank_device", "resolve_backend", "DEFAULT_TIMEOUT_S"]
