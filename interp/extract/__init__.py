"""Activation extraction: hidden states of many texts, pooled, on three backends.

Data flow: :mod:`.batching` (tokenise, length-sorted padded batches) ->
:mod:`.backends` (hf hooks / TransformerLens / nnsight record hidden states)
-> :mod:`.pooling` (mask-correct pooling) -> :class:`.Activations` in memory
or an :class:`.ActivationStore` on disk. :func:`extract` ties them together.
"""

from interp.extract.activations import Activations
from interp.extract.api import extract, resolve_layers
from interp.extract.backends import BACKENDS
from interp.extract.pooling import POOLINGS
from interp.extract.store import ActivationStore, StoreError

__all__ = ["Activations", "ActivationStore", "BACKENDS", "POOLINGS", "StoreError", "extract", "resolve_layers"]
