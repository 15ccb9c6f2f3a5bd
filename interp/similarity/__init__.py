"""Representation similarity: kNN alignment metrics and CKA, across layers, models and languages.

* :mod:`.knn_metrics` -- ``mutual_knn``, ``cycle_knn``, ``lcs_knn``, ``cknna`` (Huh et al. 2024,
  "The Platonic Representation Hypothesis"), on exact neighbours from :func:`interp.knn`;
* :mod:`.cka` -- linear ``cka`` with the biased or unbiased HSIC (Kornblith et al. 2019);
* :mod:`.preprocess` -- the Platonic pipeline's outlier clamp + L2 normalisation;
* :mod:`.matrices` -- layer × layer, model A × model B and language × language matrices that compute
  each layer's neighbour lists once and score all pairs from them (:class:`SimilarityMatrix`);
* :mod:`.plot` -- heatmaps with the argmax marked.
"""

from interp._validation import renamed_attribute
from interp.similarity.cka import cka, hsic
from interp.similarity.knn_metrics import cknna, cycle_knn, lcs_knn, mutual_knn
from interp.similarity.matrices import (
    MEASURES,
    SimilarityMatrix,
    language_similarity,
    layer_similarity,
    model_similarity,
)
from interp.similarity.preprocess import preprocess, remove_outliers

__all__ = [
    "MEASURES",
    "SimilarityMatrix",
    "cka",
    "cknna",
    "cycle_knn",
    "hsic",
    "language_similarity",
    "layer_similarity",
    "lcs_knn",
    "model_similarity",
    "mutual_knn",
    "preprocess",
    "remove_outliers",
]


def __getattr__(name: str):  # old names, kept for one release
    return renamed_attribute(__name__, name, {"METRICS": "MEASURES"}, globals())
