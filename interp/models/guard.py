"""Give the user's model back exactly as it was.

Hook libraries change the model they are handed: TransformerLens' bridge swaps
every submodule for a wrapper and switches attention to eager in place, nnsight
replaces each module's ``forward`` for good, and a forgotten hook handle keeps
firing. ``interp`` owns those side effects: every backend runs inside
:func:`preserved`, which snapshots, per module of the original tree,

* the module's attribute dict (``forward`` overrides, ``training``, any other
  attribute) and a copy of every dict inside it -- ``_modules``,
  ``_parameters``, ``_buffers`` and all hook registries -- so swapped children
  and leaked hooks are undone in place;
* each parameter's and buffer's ``requires_grad`` and storage (``.data``);
* each distinct config object's attribute dict (``_attn_implementation`` and
  friends);

and writes them all back on exit, also when the body raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["preserved", "ModelSnapshot"]


@dataclass
class ModelSnapshot:
    """Everything :func:`preserved` puts back. Built by :meth:`take`."""

    module_dicts: list[tuple[nn.Module, dict, dict[str, dict]]] = field(default_factory=list)
    tensors: list[tuple[torch.Tensor, torch.Tensor, bool]] = field(default_factory=list)
    configs: list[tuple[object, dict]] = field(default_factory=list)

    @classmethod
    def take(cls, model: nn.Module) -> ModelSnapshot:
        snap = cls()
        seen_configs: set[int] = set()
        for module in model.modules():
            attrs = dict(module.__dict__)
            inner = {k: dict(v) for k, v in attrs.items() if isinstance(v, dict)}
            snap.module_dicts.append((module, attrs, inner))
            config = attrs.get("config")
            if config is not None and hasattr(config, "__dict__") and id(config) not in seen_configs:
                seen_configs.add(id(config))
                snap.configs.append((config, dict(config.__dict__)))
                for sub in vars(config).values():
                    if type(sub).__name__.endswith("Config") and id(sub) not in seen_configs:
                        seen_configs.add(id(sub))
                        snap.configs.append((sub, dict(sub.__dict__)))
        for tensor in [*model.parameters(), *model.buffers()]:
            snap.tensors.append((tensor, tensor.data, tensor.requires_grad))
        return snap

    def restore(self) -> None:
        for module, attrs, inner in self.module_dicts:
            module.__dict__.clear()
            module.__dict__.update(attrs)
            for key, saved in inner.items():
                live = attrs[key]
                live.clear()
                live.update(saved)
        for config, attrs in self.configs:
            config.__dict__.clear()
            config.__dict__.update(attrs)
        for tensor, data, requires_grad in self.tensors:
            if tensor.data.data_ptr() != data.data_ptr() or tensor.dtype != data.dtype:
                tensor.data = data
            if tensor.requires_grad != requires_grad:
                tensor.requires_grad_(requires_grad)


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: restore ``model``'s structure, hooks, flags and config on exit.

    Example::

        with preserved(model):
            bridge = TransformerBridge.boot_transformers(..., hf_model=model)
            ...
        # model has its own submodules, SDPA attention and no hooks again
    """
    snapshot = ModelSnapshot.take(model)
    try:
        yield model
    finally:
        snapshot.restore()
