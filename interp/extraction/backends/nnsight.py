"""nnsight 0.8 (``backend="nnsight"``).

The backbone (no LM head) is wrapped in ``nnsight.NNsight`` and each batch runs
in one ``trace``; inside it, hidden states are read in execution order --
``blocks[0].input`` for index 0, ``blocks[i-1].output`` for ``i``,
``final_norm.output`` for ``L`` -- and kept with ``.save()``. The trace stops
after the last requested index (``tracer.stop()``).

nnsight replaces every wrapped module's ``forward`` permanently; the guard puts
the originals back on exit. nnsight is imported here only, because importing
it patches ``object`` and torch globally.
"""

from __future__ import annotations

import torch

from interp.extraction.backends.base import Backend, first_tensor

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
        layout = self.adapter.layout
        self.envoy = NNsight(self.adapter.backbone)
        self.blocks = _walk(self.envoy, self.adapter.relative_to_backbone(layout.blocks))
        self.norm = _walk(self.envoy, self.adapter.relative_to_backbone(layout.final_norm))

    def close(self) -> None:
        self.envoy = self.blocks = self.norm = None

    def forward(self, inputs: dict[str, torch.Tensor]) -> None:
        n_blocks = self.adapter.n_blocks
        saved = {}
        with self.envoy.trace(**inputs, use_cache=False) as tracer:
            for index in self.layers:
                if index == 0:
                    saved[index] = self.blocks[0].input.save()
                elif index < n_blocks:
                    saved[index] = self.blocks[index - 1].output.save()
                else:
                    saved[index] = self.norm.output.save()
            if self.layers[-1] < n_blocks:
                tracer.stop()
        for index, value in saved.items():
            self.recorder.captured[index] = first_tensor(value)
