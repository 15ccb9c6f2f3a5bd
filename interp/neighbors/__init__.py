"""Exact k-nearest-neighbour engine over hidden states.

:func:`knn` (exported as ``interp.knn``) is the entry point; stage-1 backends
live in :mod:`.blocked` (torch), :mod:`.triton_kernel` and :mod:`.faiss_backend`,
the exact re-rank in :mod:`.exact`, label helpers in :mod:`.labels`.
"""

from interp._validation import renamed_attribute
from interp.neighbors.api import DISTANCE_METRICS, KNN_BACKENDS, knn
from interp.neighbors.labels import encode_labels, neighbor_labels

__all__ = ["KNN_BACKENDS", "DISTANCE_METRICS", "encode_labels", "knn", "neighbor_labels"]


def __getattr__(name: str):  # old names, kept for one release
    return renamed_attribute(__name__, name, {"METRICS": "DISTANCE_METRICS"}, globals())
