"""Bridge, reach and ILO from neighbour lists -- vectorised, no loop over points.

Definitions (Wilie et al. 2025, as coded in HLTCHKUST/interlingua), for a
language ℓ with points P_ℓ and NL(i) = {languages of i's k neighbours} - {ℓ}:

* ``bridge(ℓ)``    = |{i ∈ P_ℓ : |NL(i)| >= t}| / |P_ℓ|
* ``reach_raw(ℓ)`` = |∪_{i ∈ P_ℓ} NL(i)|   (``min_count`` > 1: a language counts
  only if it fills at least that many of ℓ's neighbour slots)
* ``reach(ℓ)``     = reach_raw(ℓ) / (n_languages - 1)
* ``ilo(ℓ)``       = harmonic mean of bridge and reach, 0 if either is 0.

Everything is computed for all layers at once from ``indices [L, N, k]`` and
language codes ``[N]``: a ``[L, N, n_langs]`` slot-count tensor gives the
distinct foreign languages per point (bridge), and summed per language the
``[L, n_langs, n_langs]`` neighbour co-occurrence matrix (reach) -- also a
result in its own right: ``C[l, a, b]`` = neighbour slots of language-a points
filled by language-b points at layer l.
"""

from __future__ import annotations

import torch

__all__ = ["slot_counts", "bridge_reach", "harmonic"]


def slot_counts(indices: torch.Tensor, codes: torch.Tensor, n_langs: int) -> torch.Tensor:
    """``[L, N, n_langs]`` int16: how many of point i's k neighbours are in each language."""
    lab = codes[indices]  # [L, N, k]
    counts = torch.zeros((*lab.shape[:2], n_langs), dtype=torch.int16, device=lab.device)
    return counts.scatter_add_(2, lab, torch.ones_like(lab, dtype=torch.int16))


def harmonic(bridge: torch.Tensor, reach: torch.Tensor) -> torch.Tensor:
    """Harmonic mean of two [0, 1] tensors, 0 where either is 0."""
    both = (bridge > 0) & (reach > 0)
    return torch.where(both, 2 * bridge * reach / (bridge + reach).clamp_min(1e-300), 0.0)


def bridge_reach(
    counts: torch.Tensor, codes: torch.Tensor, n_langs: int, t: int, min_count: int = 1
) -> dict[str, torch.Tensor]:
    """Per (layer, language) scores from :func:`slot_counts` (float64; reach_raw int64).

    Returns ``bridge``, ``reach_raw``, ``reach``, ``ilo`` ``[L, n_langs]`` and
    ``cooccurrence`` ``[L, n_langs, n_langs]``.
    """
    n_layers, n_points, _ = counts.shape
    own = torch.nn.functional.one_hot(codes, n_langs).bool()  # [N, n_langs]
    foreign = (counts > 0) & ~own  # [L, N, n_langs]
    bridged = (foreign.sum(-1) >= t).double()  # [L, N]
    per_lang = torch.bincount(codes, minlength=n_langs).double()
    bridge = torch.zeros(n_layers, n_langs, dtype=torch.float64).index_add_(1, codes, bridged) / per_lang
    cooccurrence = torch.zeros(n_layers, n_langs, n_langs, dtype=torch.int64).index_add_(1, codes, counts.long())
    off_diagonal = ~torch.eye(n_langs, dtype=torch.bool)
    reach_raw = ((cooccurrence >= min_count) & off_diagonal).sum(-1)
    reach = reach_raw.double() / (n_langs - 1)
    return {
        "bridge": bridge,
        "reach_raw": reach_raw,
        "reach": reach,
        "ilo": harmonic(bridge, reach),
        "cooccurrence": cooccurrence,
    }
