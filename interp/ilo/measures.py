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

Every score is a function of per-language *integer sums* over points
(:func:`language_sums`: bridging points and slot counts) and of the language
sizes (:func:`scores_from_sums`). That split is what lets ILO run sharded:
each process sums over the points it owns and the sums are added over the
processes (:mod:`interp.ilo.points`); integer sums are exact in any order,
so sharded and single-process ILO are one computation.
"""

from __future__ import annotations

import torch

__all__ = ["slot_counts", "bridging", "language_sums", "scores_from_sums", "bridge_reach", "harmonic"]


def slot_counts(indices: torch.Tensor, codes: torch.Tensor, n_langs: int) -> torch.Tensor:
    """``[L, n, n_langs]`` int16: how many of each point's k neighbours are in each language.

    ``indices`` ``[L, n, k]`` are global point indices (``n`` rows: all points, or a
    process's shard), ``codes`` the ``[N]`` language codes of all points.
    """
    lab = codes[indices]  # [L, n, k]
    counts = torch.zeros((*lab.shape[:2], n_langs), dtype=torch.int16, device=lab.device)
    return counts.scatter_add_(2, lab, torch.ones_like(lab, dtype=torch.int16))


def bridging(counts: torch.Tensor, codes: torch.Tensor, n_langs: int, t: int) -> torch.Tensor:
    """``[L, n]`` bool: the point's neighbours span at least ``t`` languages other than its own.

    ``counts`` from :func:`slot_counts`; ``codes`` ``[n]`` the languages of its rows.
    """
    own = torch.nn.functional.one_hot(codes, n_langs).bool()  # [n, n_langs]
    return ((counts > 0) & ~own).sum(-1) >= t


def language_sums(counts: torch.Tensor, codes: torch.Tensor, n_langs: int, t: int) -> torch.Tensor:
    """Per-language sums over the rows of ``counts``: ``[L, n_langs, 1 + n_langs]`` int64.

    ``[..., 0]`` bridging points of the language, ``[..., 1:]`` its neighbour-slot
    co-occurrence counts; ``codes`` ``[n]`` are the languages of the rows.
    """
    out = torch.zeros(counts.shape[0], n_langs, 1 + n_langs, dtype=torch.int64)
    out[:, :, 0].index_add_(1, codes, bridging(counts, codes, n_langs, t).long())
    out[:, :, 1:].index_add_(1, codes, counts.long())
    return out


def harmonic(bridge: torch.Tensor, reach: torch.Tensor) -> torch.Tensor:
    """Harmonic mean of two [0, 1] tensors, 0 where either is 0."""
    both = (bridge > 0) & (reach > 0)
    return torch.where(both, 2 * bridge * reach / (bridge + reach).clamp_min(1e-300), 0.0)


def scores_from_sums(
    sums: torch.Tensor, per_lang: torch.Tensor, n_langs: int, min_count: int = 1
) -> dict[str, torch.Tensor]:
    """Bridge, reach and ILO from :func:`language_sums` over *all* points and the language sizes ``[n_langs]``.

    Returns ``bridge``, ``reach_raw`` (int64), ``reach``, ``ilo`` ``[L, n_langs]`` float64 and
    ``cooccurrence`` ``[L, n_langs, n_langs]`` int64.
    """
    bridge = sums[..., 0].double() / per_lang.double()
    cooccurrence = sums[..., 1:]
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


def bridge_reach(
    counts: torch.Tensor, codes: torch.Tensor, n_langs: int, t: int, min_count: int = 1
) -> dict[str, torch.Tensor]:
    """Per (layer, language) scores of all points: :func:`scores_from_sums` of their :func:`language_sums`."""
    per_lang = torch.bincount(codes, minlength=n_langs)
    return scores_from_sums(language_sums(counts, codes, n_langs, t), per_lang, n_langs, min_count)
