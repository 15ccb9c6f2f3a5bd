"""Validation of :func:`interp.ilo.score`'s arguments (shared by the single-process and the sharded path)."""

from __future__ import annotations

import warnings

import torch

from interp._validation import first_appearance_codes, is_int
from interp.extraction.activations import as_pooled_stack

__all__ = ["check_inputs", "check_baselines", "check_scoring"]


def check_inputs(acts, langs, ids, topics=None) -> tuple[torch.Tensor, list[int], list, list | None, list | None]:
    """``(x [L, N, D], layers, langs, ids, topics)`` from :func:`interp.ilo.score`'s arguments, or a clear error."""
    x, layers, own_langs, own_ids = as_pooled_stack(acts, "acts", "ILO", allow_2d=True)
    langs = own_langs if langs is None else langs
    ids = own_ids if ids is None else ids
    if langs is None:
        raise ValueError("langs is required: one language label per point (or Activations with labels)")
    langs = list(langs)
    if len(langs) != x.shape[1]:
        raise ValueError(f"langs has {len(langs)} labels but there are {x.shape[1]} points")
    if ids is not None and len(ids) != x.shape[1]:
        raise ValueError(f"ids has {len(ids)} entries but there are {x.shape[1]} points")
    if topics is not None:
        topics = list(topics)
        if len(topics) != x.shape[1]:
            raise ValueError(
                f"topics has {len(topics)} entries but there are {x.shape[1]} points; pass one topic per point "
                "(ParallelCorpus.flat_meta('topic') gives them in the order of flat())"
            )
    if not x.dtype.is_floating_point:
        raise TypeError(f"activations must be floating point, got {x.dtype}")
    if not torch.isfinite(x).all():
        layer = int((~torch.isfinite(x)).flatten(1).any(1).nonzero()[0])
        raise ValueError(f"activations contain NaN or Inf (first in layer {layers[layer]}); ILO needs finite vectors")
    return x, layers, langs, ids, topics


def check_baselines(null, bootstrap, seed) -> None:
    """Validate the baseline arguments (before any work, in the single-process and the sharded path)."""
    if not is_int(null) or null < 0 or null == 1:
        raise ValueError(f"null must be 0 (no null) or an int >= 2 permutations (its std needs two), got {null!r}")
    if not is_int(bootstrap) or bootstrap < 0:
        raise ValueError(f"bootstrap must be an int >= 0 (number of item resamples; 0 = none), got {bootstrap!r}")
    if not is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")


def check_scoring(
    codes, languages, ids, k, t, min_count, bootstrap, retrieval
) -> tuple[torch.Tensor | None, int, int, int]:
    """Validate the scoring arguments against the (global) labels.

    Returns ``(item codes or None, k, t, min_count)``, the integers as Python ints (numpy ones are accepted).
    """
    n_langs, n_points = len(languages), len(codes)
    if n_langs < 2:
        raise ValueError(f"ILO compares languages: need at least 2, got {languages}")
    per_lang = torch.bincount(codes, minlength=n_langs)
    small = [languages[i] for i in range(n_langs) if per_lang[i] < 2]
    if small:
        raise ValueError(f"languages with fewer than 2 points: {small}; ILO needs at least 2 per language")
    if not is_int(k) or not 1 <= k < n_points - 1:
        raise ValueError(f"k must be an int with 1 <= k < N - 1 = {n_points - 1}, got {k!r}")
    if not is_int(t) or not 1 <= t <= k:
        raise ValueError(f"t must be an int with 1 <= t <= k = {k}, got {t!r}")
    if not is_int(min_count) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1 (neighbour slots), got {min_count!r}")
    items = None if ids is None else first_appearance_codes(ids)[0]
    if (bootstrap or retrieval) and items is None:
        raise ValueError("bootstrap and retrieval need item ids (which points are translations of each other)")
    if items is not None and int(items.max()) + 1 == n_points:
        unpaired = (
            "every item id is distinct, so no point has a translation to find (Activations made without ids= "
            "carry 0..N-1); pass ids= with the same id for the translations of one item"
        )
        if retrieval:
            raise ValueError(f"retrieval needs translations: {unpaired}")
        warnings.warn(f"translation_share is 0 by construction: {unpaired}", UserWarning, stacklevel=3)
    return items, int(k), int(t), int(min_count)
