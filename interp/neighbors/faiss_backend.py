"""Stage 1 on FAISS (``backend="faiss"``), for cross-checks and FAISS users.

``IndexFlatIP`` on L2-normalised rows (cosine) or ``IndexFlatL2`` (squared
euclidean) searches ``kc + 1`` neighbours; the query's own index is then
removed *by index* (never by position: a duplicate can outrank self), leaving
``kc`` candidates for the exact stage 2. faiss-cpu is optional
(``pip install faiss-cpu``); CPU tensors only.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["faiss_candidates"]


def faiss_candidates(
    points: torch.Tensor, queries: torch.Tensor | None, kc: int, metric: str, exclude_self: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(candidates [M, kc] int64, approx_distance [M, kc] float32)`` from a flat FAISS index."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError("backend='faiss' needs faiss: pip install faiss-cpu") from err
    device = points.device
    p = points.detach().float().cpu().numpy()
    q = p if queries is None else queries.detach().float().cpu().numpy()
    if metric == "cosine":
        p = _normalise(p)
        q = p if queries is None else _normalise(q)
        index = faiss.IndexFlatIP(p.shape[1])
    else:
        index = faiss.IndexFlatL2(p.shape[1])
    index.add(np.ascontiguousarray(p))
    width = min(kc + int(exclude_self), p.shape[0])
    scores, found = index.search(np.ascontiguousarray(q), width)
    found = torch.from_numpy(found)
    scores = torch.from_numpy(scores)
    approx = 1.0 - scores if metric == "cosine" else scores
    if exclude_self:
        is_self = found == torch.arange(found.shape[0])[:, None]
        # drop self where found, else the last (worst) column, keeping order
        drop = torch.where(is_self.any(1), is_self.float().argmax(1), torch.full((found.shape[0],), width - 1))
        keep = torch.ones_like(found, dtype=torch.bool)
        keep[torch.arange(found.shape[0]), drop] = False
        found = found[keep].view(found.shape[0], width - 1)
        approx = approx[keep].view(found.shape[0], width - 1)
    return found[:, :kc].to(device), approx[:, :kc].float().to(device)


def _normalise(x: np.ndarray) -> np.ndarray:
    """Unit rows (zero rows stay zero); norms in float64, so float32 rows near overflow/underflow work."""
    x = x.astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.where(norms > 0, norms, 1.0), 0.0).astype(np.float32)
