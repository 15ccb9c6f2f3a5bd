"""Neighbour labels: what a mutual-kNN or ILO user needs after :func:`interp.knn`."""

from __future__ import annotations

import torch

from interp._validation import encode_labels

__all__ = ["neighbor_labels", "encode_labels"]


def neighbor_labels(indices: torch.Tensor, labels) -> torch.Tensor:
    """Label code of every neighbour: ``codes[indices]``, no Python loop.

    Args:
        indices: ``[..., N, k]`` from :func:`interp.knn`.
        labels: ``[N]`` labels of the points (any type ``numpy.unique`` sorts),
            or an int tensor of codes.

    Returns:
        ``[..., N, k]`` int64 codes; decode with ``encode_labels(labels)[1]``.
    """
    if isinstance(labels, torch.Tensor) and not labels.dtype.is_floating_point:
        codes = labels.long()
    else:
        codes, _ = encode_labels(labels)
    if codes.ndim != 1 or codes.shape[0] <= int(indices.max()):
        raise ValueError(
            f"labels must be 1-D with one entry per point; got {tuple(codes.shape)} for max index {int(indices.max())}"
        )
    return codes.to(indices.device)[indices]
