"""The contract every extraction backend fulfils.

A backend is a context manager built from ``(model, tokenizer, adapter, sites)``
where ``sites`` are resolved :class:`~interp.extraction.sites.Site` objects.
Entering it makes whatever changes its library needs (hooks, a TransformerLens
bridge, an nnsight envoy) inside :func:`interp.models.guard.preserved`;
calling it on a :class:`~interp.models.inputs.Batch` returns
``{site.key: [B, T, *feature] tensor}`` for exactly the requested sites (the
site's :meth:`~interp.extraction.sites.Site.canonical` layout); leaving it
undoes every change, also after an exception.

Each backend translates a site into its own mechanism: a torch hook on
``site.module`` (hf), the bridge hook point of the same tensor
(TransformerLens), an nnsight cache entry of that module (nnsight). Attention
patterns come from :func:`pattern_weights`, an attention hook
(:mod:`interp.models.attention`) that returns the softmax probabilities as the
attention module's weights while the model's own kernel (SDPA) computes the
output -- except under TransformerLens, whose bridge computes attention itself
and exposes ``hook_pattern``.

Hidden-state indices follow Hugging Face ``output_hidden_states``:

* ``0``            -- input of decoder block 0 (the embedding output);
* ``i`` (1..L-1)   -- output of decoder block ``i-1``;
* ``L``            -- output of the final norm (not the raw output of block L-1).

Backends stop the forward pass as soon as every requested site is recorded
(baukit's ``stop=True``), so the LM head is never computed unless a site
needs it.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from interp.extraction.sites import Site
from interp.models.adapter import ModelAdapter
from interp.models.attention import AttentionCall, attention_hooks
from interp.models.guard import preserved
from interp.models.inputs import Batch

__all__ = ["Backend", "Recorder", "StopForward", "first_tensor", "first_input", "input_device", "pattern_weights"]


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


def first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """A module's first input: the first positional argument, else ``hidden_states`` or the first tensor kwarg."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    if isinstance(kwargs.get("hidden_states"), torch.Tensor):
        return kwargs["hidden_states"]
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError("cannot find a tensor among the module's inputs")


def pattern_weights(call: AttentionCall, out: torch.Tensor, weights) -> tuple:
    """Attention hook: keep the kernel's output, return every row's softmax probabilities as the weights."""
    return out, call.probs()


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
    """Keeps the requested sites of one forward pass; stops it once all are there."""

    def __init__(self, sites: list[Site]):
        self.sites = {site.key: site for site in sites}
        self.stop = not any(site.outside_backbone for site in sites)
        self.captured: dict[int | str, torch.Tensor] = {}

    def record(self, key: int | str, raw: torch.Tensor) -> None:
        self.captured[key] = self.sites[key].canonical(raw)
        if self.stop and len(self.captured) == len(self.sites):
            raise StopForward

    def take(self) -> dict[int | str, torch.Tensor]:
        missing = [key for key in self.sites if key not in self.captured]
        if missing:
            raise RuntimeError(f"the forward pass never reached sites {missing}")
        out, self.captured = self.captured, {}
        return out


class Backend:
    """Base class: owns the model guard and the recorder; subclasses run the forward."""

    name = "base"
    #: whether attention patterns come from :func:`pattern_weights` (else the library computes them)
    probes_attention = True

    def __init__(self, model: nn.Module, tokenizer, adapter: ModelAdapter, sites: list[Site], bridge=None):
        self.model = model
        self.bridge = bridge  # a TransformerBridge the user gave (its .original_model is ``model``), or None
        self.tokenizer = tokenizer
        self.adapter = adapter
        self.sites = list(sites)
        self.recorder = Recorder(self.sites)
        self.device = input_device(adapter.embed)
        self.full_model = any(site.outside_backbone for site in self.sites)
        self._stack: contextlib.ExitStack | None = None

    @property
    def root(self) -> nn.Module:
        """The module the forward is called on: the backbone, or the whole model when a site needs it."""
        return self.adapter.model if self.full_model else self.adapter.backbone

    def __enter__(self) -> Backend:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(preserved(self.model))
        try:
            self.model.eval()  # no dropout while extracting; the guard restores the mode
            pattern_blocks = sorted({site.block for site in self.sites if site.is_pattern})
            if pattern_blocks and self.probes_attention:
                self._stack.enter_context(attention_hooks(self.model, dict.fromkeys(pattern_blocks, pattern_weights)))
            self.open()
        except BaseException as err:
            self._stack.__exit__(type(err), err, err.__traceback__)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.close()
        finally:
            self._stack.__exit__(*exc)

    def __call__(self, batch: Batch) -> dict[int | str, torch.Tensor]:
        inputs = {
            "input_ids": batch.input_ids.to(self.device),
            "attention_mask": batch.attention_mask.to(self.device),
            "position_ids": batch.position_ids.to(self.device),
        }
        with contextlib.suppress(StopForward):  # raised once the last requested site is recorded
            self.forward(inputs)
        return self.recorder.take()

    # -- subclass API -------------------------------------------------------
    def open(self) -> None:
        """Install hooks / wrappers (the guard is already active)."""

    def close(self) -> None:
        """Remove what :meth:`open` installed (the guard restores anything left)."""

    def forward(self, inputs: dict[str, torch.Tensor]) -> None:
        """Run the model on one batch so that the installed hooks capture every site."""
        raise NotImplementedError(f"backend {type(self).__name__} must define forward(inputs)")
