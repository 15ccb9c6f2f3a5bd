"""The contract every extraction backend fulfils.

A backend is a context manager built from ``(model, adapter, layers)``.
Entering it makes whatever changes its library needs (hooks, a TransformerLens
bridge, an nnsight envoy) inside :func:`interp.models.guard.preserved`;
calling it on a :class:`~interp.models.inputs.Batch` returns
``{hidden_state_index: [B, T, D] tensor}`` for exactly the requested indices;
leaving it undoes every change, also after an exception.

Hidden-state indices follow Hugging Face ``output_hidden_states``:

* ``0``            -- input of decoder block 0 (the embedding output);
* ``i`` (1..L-1)   -- output of decoder block ``i-1``;
* ``L``            -- output of the final norm (not the raw output of block L-1).

Backends stop the forward pass as soon as the last requested index is
recorded (baukit's ``stop=True``), so the LM head is never computed.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from interp.models.adapter import ModelAdapter
from interp.models.guard import preserved
from interp.models.inputs import Batch

__all__ = ["Backend", "Recorder", "StopForward", "first_tensor", "input_device"]


class StopForward(Exception):
    """Raised from a hook once every requested hidden state is recorded."""


def first_tensor(output: object) -> torch.Tensor:
    """A block's hidden-state output: the tensor itself or the first tuple item."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor):
        return hidden
    raise TypeError(f"cannot find the hidden-state tensor in a block output of type {type(output).__name__}")


def input_device(embed: nn.Module) -> torch.device:
    """Where the token ids go: the embedding's device.

    With accelerate (``device_map=...``) the embedding may be offloaded (its
    weight on ``meta``); its hook's execution device is where it runs.
    """
    hook_device = getattr(getattr(embed, "_hf_hook", None), "execution_device", None)
    if hook_device is not None:
        return torch.device(hook_device)  # an int means a CUDA index, as in torch.device(0)
    weight = getattr(embed, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.device.type != "meta":
        return weight.device
    return torch.device("cpu")


class Recorder:
    """Keeps the requested hidden-state indices of one forward pass."""

    def __init__(self, layers: list[int]):
        self.wanted = frozenset(layers)
        self.last = max(layers)
        self.captured: dict[int, torch.Tensor] = {}

    def record(self, index: int, tensor: torch.Tensor) -> None:
        if index in self.wanted:
            self.captured[index] = tensor
        if index == self.last:
            raise StopForward

    def take(self) -> dict[int, torch.Tensor]:
        missing = self.wanted - self.captured.keys()
        if missing:
            raise RuntimeError(f"the forward pass never produced hidden states {sorted(missing)}")
        out, self.captured = self.captured, {}
        return out


class Backend:
    """Base class: owns the model guard and the recorder; subclasses run the forward."""

    name = "base"

    def __init__(self, model: nn.Module, tokenizer, adapter: ModelAdapter, layers: list[int]):
        self.model = model
        self.tokenizer = tokenizer
        self.adapter = adapter
        self.layers = sorted(set(layers))
        self.recorder = Recorder(self.layers)
        self.device = input_device(adapter.embed)
        self._guard = None

    def __enter__(self) -> Backend:
        self._guard = preserved(self.model)
        self._guard.__enter__()
        try:
            self.model.eval()  # no dropout while extracting; the guard restores the mode
            self.open()
        except BaseException as err:
            self._guard.__exit__(type(err), err, err.__traceback__)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.close()
        finally:
            self._guard.__exit__(*exc)

    def __call__(self, batch: Batch) -> dict[int, torch.Tensor]:
        inputs = {
            "input_ids": batch.input_ids.to(self.device),
            "attention_mask": batch.attention_mask.to(self.device),
            "position_ids": batch.position_ids.to(self.device),
        }
        with contextlib.suppress(StopForward):  # raised once the last requested state is recorded
            self.forward(inputs)
        return self.recorder.take()

    # -- subclass API -------------------------------------------------------
    def open(self) -> None:
        """Install hooks / wrappers (the guard is already active)."""

    def close(self) -> None:
        """Remove what :meth:`open` installed (the guard restores anything left)."""

    def forward(self, inputs: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError
