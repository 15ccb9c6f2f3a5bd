"""Activation extraction: hidden states of many texts, pooled, on three backends.

Data flow: :mod:`.batching` (tokenise, length-sorted padded batches) ->
:mod:`.backends` (hf hooks / TransformerLens / nnsight record hidden states)
-> :mod:`.pooling` (mask-correct pooling) -> :class:`.Activations` in memory
or an :class:`.ActivationStore` on disk. :func:`extract` ties them together.
"""

from interp.extraction.activations import Activations
from interp.extraction.api import extract, resolve_layers
from interp.extraction.backends import BACKENDS
from interp.extraction.pooling import POOLINGS
from interp.extraction.store import ActivationStore, StoreError

__all__ = ["Activations", "ActivationStore", "BACKENDS", "POOLINGS", "StoreError", "extract", "resolve_layers"]
