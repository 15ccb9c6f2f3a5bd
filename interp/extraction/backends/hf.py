"""Plain PyTorch forward hooks (``backend="hf"``) -- the reference backend.

One pre-hook on block 0 records index 0, one hook per requested block records
``i``, one hook on the final norm records ``L``; the backbone (no LM head) is
called directly. Handles are removed in :meth:`close`.
"""

from __future__ import annotations

from functools import partial

import torch

from interp.extraction.backends.base import Backend, first_tensor

__all__ = ["HFBackend"]


class HFBackend(Backend):
    name = "hf"

    def open(self) -> None:
        self.handles = []
        blocks, L = self.adapter.blocks, self.adapter.n_blocks
        for index in self.layers:
            if index == 0:
                handle = blocks[0].register_forward_pre_hook(self._on_block_input, with_kwargs=True)
            elif index < L:
                handle = blocks[index - 1].register_forward_hook(partial(self._on_output, index))
            else:
                handle = self.adapter.final_norm.register_forward_hook(partial(self._on_output, index))
            self.handles.append(handle)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def forward(self, inputs: dict[str, torch.Tensor]) -> None:
        self.adapter.backbone(**inputs, use_cache=False)

    def _on_block_input(self, module, args, kwargs) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        self.recorder.record(0, hidden)

    def _on_output(self, index: int, module, args, output) -> None:
        self.recorder.record(index, first_tensor(output))
