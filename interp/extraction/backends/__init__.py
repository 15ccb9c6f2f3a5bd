"""Extraction backends: one spec, three engines (see :mod:`.base` for the contract)."""

from __future__ import annotations

from interp.extraction.backends.base import Backend

__all__ = ["BACKENDS", "get_backend", "Backend"]

#: backend name -> "module:class", imported on first use (nnsight and
#: transformer_lens are heavy and nnsight patches globals on import).
BACKENDS: dict[str, str] = {
    "hf": "interp.extraction.backends.hf:HFBackend",
    "transformer_lens": "interp.extraction.backends.transformer_lens:TransformerLensBackend",
    "nnsight": "interp.extraction.backends.nnsight:NNsightBackend",
}


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(map(repr, BACKENDS))}")
    return name


def get_backend(name: str) -> type[Backend]:
    """The backend class registered under ``name``."""
    import importlib

    module_name, class_name = BACKENDS[check_backend(name)].split(":")
    return getattr(importlib.import_module(module_name), class_name)
