"""Plain PyTorch forward hooks (``backend="hf"``) -- the reference backend.

Each site is read where :mod:`interp.extraction.sites` says it lives: a forward
pre-hook on ``site.module`` for an input (a block's input is its residual stream,
the output projection's input is ``hook_z``), a forward hook for an output, and
the attention module's ``output[1]`` for a pattern (filled by
:func:`~interp.extraction.backends.base.pattern_weights`). The backbone (no LM
head) is called directly, unless a site lies outside it. Handles are removed in
:meth:`close`.
"""

from __future__ import annotations

import torch

from interp.extraction.backends.base import Backend, Recorder, first_input, first_tensor
from interp.extraction.sites import Site
from interp.models.adapter import resolve_path

__all__ = ["HFBackend", "SiteHook"]


class SiteHook:
    """A forward (pre-)hook that hands one site's tensor to a recorder."""

    def __init__(self, site: Site, recorder: Recorder):
        self.site = site
        self.recorder = recorder

    def on_input(self, module, args, kwargs) -> None:
        self.recorder.record(self.site.key, first_input(args, kwargs))

    def on_output(self, module, args, output) -> None:
        if self.site.io == "weights":
            weights = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
            if weights is None:
                raise RuntimeError(f"{self.site.name}: the attention module returned no weights")
            self.recorder.record(self.site.key, weights)
        else:
            self.recorder.record(self.site.key, first_tensor(output))

    def register(self, module: torch.nn.Module):
        if self.site.io == "input":
            return module.register_forward_pre_hook(self.on_input, with_kwargs=True)
        return module.register_forward_hook(self.on_output)


class HFBackend(Backend):
    name = "hf"

    def open(self) -> None:
        self.handles = []
        for site in self.sites:
            module = resolve_path(self.model, site.module)
            self.handles.append(SiteHook(site, self.recorder).register(module))

    def close(self) -> None:
        for handle in getattr(self, "handles", []):
            handle.remove()
        self.handles = []

    def forward(self, inputs: dict[str, torch.Tensor]) -> None:
        self.root(**inputs, use_cache=False)
