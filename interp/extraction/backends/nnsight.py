"""nnsight 0.8 (``backend="nnsight"``).

The backbone (no LM head; the whole model if a site lies outside the backbone)
is wrapped in ``nnsight.NNsight`` and each batch runs in one ``trace``. Inside
it, ``tracer.cache(modules=...)`` records the envoys of every site's module --
their outputs, and their inputs where a site is an input (a block's residual
stream, ``hook_z`` at the output projection) -- in whatever order the model
reaches them; a pattern is the attention envoy's ``output[1]`` (filled by
:func:`~interp.extraction.backends.base.pattern_weights`). When every site lies
before some decoder block's output, that output is read and the trace stops
there (``tracer.stop()``), so later blocks never run.

nnsight replaces every wrapped module's ``forward`` permanently; the guard puts
the originals back on exit. nnsight is imported here only, because importing
it patches ``object`` and torch globally.
"""

from __future__ import annotations

import torch

from interp.extraction.backends.base import Backend, first_tensor
from interp.extraction.sites import Site

__all__ = ["NNsightBackend"]


def _walk(envoy, path: str):
    for part in path.split(".") if path else []:
        envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
    return envoy


class NNsightBackend(Backend):
    name = "nnsight"

    def open(self) -> None:
        try:
            from nnsight import NNsight
        except ImportError as err:  # pragma: no cover - a declared dependency
            raise ImportError("backend='nnsight' needs nnsight>=0.8,<0.9") from err
        self.envoy = NNsight(self.root)
        self.paths = {site.key: self._relative(site.module) for site in self.sites}
        self.stop_block = self._stop_block()

    def close(self) -> None:
        self.envoy = None

    def _relative(self, path: str) -> str:
        """A model-relative path relative to the wrapped root."""
        return path if self.full_model else self.adapter.relative_to_backbone(path)

    def _stop_block(self) -> int | None:
        """The decoder block after whose output every site is recorded, or None (run to the end)."""
        blocks = []
        for site in self.sites:
            if site.block is not None:
                blocks.append(site.block)
            elif site.kind in ("embed", "pos_embed"):
                blocks.append(0)
            else:  # the final norm or a module outside the blocks
                return None
        return max(blocks)

    def _cache_key(self, site: Site) -> str:
        path = self.paths[site.key]
        return f"model.{path}" if path else "model"

    def forward(self, inputs: dict[str, torch.Tensor]) -> None:
        blocks = self._relative(self.adapter.layout.blocks)
        modules = sorted({self._cache_key(site) for site in self.sites})
        with self.envoy.trace(**inputs, use_cache=False) as tracer:
            cache = tracer.cache(modules=modules, device=None, include_inputs=any(s.io == "input" for s in self.sites))
            if self.stop_block is not None:
                _walk(self.envoy, blocks)[self.stop_block].output  # noqa: B018 (reaching it is the point)
                tracer.stop()
        for site in self.sites:
            entry = cache[self._cache_key(site)]
            if site.io == "input":
                raw = entry.input
            elif site.io == "weights":
                raw = entry.output[1]
            else:
                raw = first_tensor(entry.output)
            self.recorder.captured[site.key] = site.canonical(raw)
