"""The Platonic pipeline's feature preparation: clamp outliers, then L2-normalise each row.

platonic-rep (``measure_alignment.py``) clamps every feature of a model at the q-quantile of
|x| (q = 0.95), taken over the model's whole feature tensor (all layers), then L2-normalises each
row of each layer before measuring alignment. Two ways to get the clamp value, as upstream:

* ``exact=True``: sort all |x| and take element ``int(q · numel)`` (the last one if that is past the end);
* ``exact=False``: the q-quantile of |x| per input (over all its layers and dimensions, linear
  interpolation as ``torch.quantile``), averaged over inputs.

Use it before :func:`interp.similarity.mutual_knn` and friends to reproduce upstream numbers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["remove_outliers", "preprocess"]


def _as_stack(X) -> tuple[torch.Tensor, bool]:
    if isinstance(X, np.ndarray):
        X = torch.from_numpy(X)
    if not isinstance(X, torch.Tensor) or not X.dtype.is_floating_point:
        raise TypeError(f"features must be a floating torch.Tensor or numpy array, got {type(X).__name__}")
    if X.ndim not in (2, 3) or X.numel() == 0:
        raise ValueError(f"features must be non-empty [N, D] or [L, N, D], got shape {tuple(X.shape)}")
    return (X if X.ndim == 3 else X[None]), X.ndim == 2


def remove_outliers(X, q: float = 0.95, exact: bool = False) -> torch.Tensor:
    """Clamp ``X`` (``[N, D]`` or ``[L, N, D]``, layers first) to ±(q-quantile of |X|); same shape, float32.

    ``q=1`` returns ``X`` unchanged (as upstream).
    """
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q}")
    stack, single = _as_stack(X)
    stack = stack.float()
    if q == 1:
        return stack[0] if single else stack
    magnitude = stack.abs()
    if exact:
        flat = magnitude.reshape(-1).sort().values
        value = flat[min(int(q * flat.numel()), flat.numel() - 1)]
    else:
        per_input = magnitude.permute(1, 0, 2).reshape(magnitude.shape[1], -1)  # [N, L·D]
        ordered = per_input.double().sort(dim=1).values  # torch.quantile refuses > 2**24 elements
        position = q * (ordered.shape[1] - 1)
        low, high = int(np.floor(position)), int(np.ceil(position))
        value = (ordered[:, low] + (position - low) * (ordered[:, high] - ordered[:, low])).mean().float()
    out = stack.clamp(-value, value)
    return out[0] if single else out


def preprocess(X, q: float = 0.95, exact: bool = False) -> torch.Tensor:
    """:func:`remove_outliers` then L2-normalise every row: ``[N, D]`` / ``[L, N, D]`` -> same shape, float32."""
    return F.normalize(remove_outliers(X, q, exact), p=2, dim=-1)
