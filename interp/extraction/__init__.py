"""Activation extraction: any site of many texts, pooled or per token, on three backends.

Data flow: :mod:`.sites` (names such as ``blocks.3.hook_mlp_out`` resolved to a
module of the model's layout) -> :mod:`interp.models.inputs` (tokenise,
length-sorted padded batches) -> :mod:`.backends` (hf hooks / TransformerLens
hook points / nnsight envoys record the sites) -> :mod:`.collect` (attention
keys in text positions, mask-correct pooling) -> :class:`.Activations` in
memory, or :mod:`.shards` committed to an :class:`.ActivationStore` on disk.
:func:`extract` ties them together; :func:`extract_generate` records the
sites of generated tokens.
"""

from interp.extraction.activations import Activations, TokenTable
from interp.extraction.api import extract
from interp.extraction.backends import BACKENDS
from interp.extraction.generate import Generation, extract_generate
from interp.extraction.pooling import POOLINGS
from interp.extraction.sites import SITE_KINDS, Site, resolve_layers, resolve_sites, vocabulary
from interp.extraction.store import ActivationStore, StoreError

__all__ = [
    "Activations",
    "ActivationStore",
    "BACKENDS",
    "Generation",
    "POOLINGS",
    "SITE_KINDS",
    "Site",
    "StoreError",
    "TokenTable",
    "extract",
    "extract_generate",
    "resolve_layers",
    "resolve_sites",
    "vocabulary",
]
