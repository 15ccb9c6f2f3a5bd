"""What makes an ILO number interpretable: a null, translation-aware views, CIs.

* :func:`permutation_null` -- ILO ignores *which* sentences neighbour each
  other, and random mixing already scores ≈ 0.999 (k=5, t=3, 31 languages).
  Shuffling the language labels over the points (counts kept, neighbour
  graph fixed) gives the score expected if language identity played no role
  in the geometry; report ILO minus the null mean, and a z-score.
* :func:`translation_share` -- the share of each point's neighbours that are
  translations of the same item in another language; 0 for ILO's "random
  mixing", high only when translations meet.
* :func:`retrieval_accuracy` -- cross-lingual retrieval per language pair:
  is item j of language a closest, among language b's points, to item j of b?
* :func:`bootstrap_ilo` -- percentile CIs over items, with the neighbour graph
  held fixed (items are resampled with all their translations; kNN is not
  recomputed, so the CI reflects which items were sampled, not re-embedding).
  A resample that draws none of a language's items leaves that language's
  ILO undefined (NaN), and :func:`percentile_ci` skips it: with unequal
  languages (a language covering few items) counting it as 0 would drag the
  CI to 0.
"""

from __future__ import annotations

import torch

from interp.ilo.measures import bridge_reach, harmonic, slot_counts

__all__ = ["permutation_null", "translation_share", "retrieval_accuracy", "bootstrap_ilo", "percentile_ci"]


def permutation_null(
    indices: torch.Tensor, codes: torch.Tensor, n_langs: int, t: int, n_perm: int, seed: int = 0, min_count: int = 1
) -> torch.Tensor:
    """ILO under shuffled language labels: ``[n_perm, L, n_langs]`` float64."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_perm):
        shuffled = codes[torch.randperm(len(codes), generator=generator)]
        counts = slot_counts(indices, shuffled, n_langs)
        out.append(bridge_reach(counts, shuffled, n_langs, t, min_count)["ilo"])
    return torch.stack(out)


def translation_share(indices: torch.Tensor, codes: torch.Tensor, items: torch.Tensor, n_langs: int) -> torch.Tensor:
    """Mean share of neighbours that are the same item in another language: ``[L, n_langs]``."""
    same_item = (items[indices] == items[None, :, None]) & (codes[indices] != codes[None, :, None])
    per_point = same_item.double().mean(-1)  # [L, N]
    per_lang = torch.bincount(codes, minlength=n_langs).double()
    return torch.zeros(indices.shape[0], n_langs, dtype=torch.float64).index_add_(1, codes, per_point) / per_lang


def retrieval_accuracy(
    x: torch.Tensor,
    codes: torch.Tensor,
    items: torch.Tensor,
    n_langs: int,
    metric: str = "cosine",
    backend: str = "auto",
) -> torch.Tensor:
    """``acc[l, a, b]``: share of language-a points whose nearest language-b point is the same item.

    ``x`` is ``[L, N, D]``; one exact kNN search per target language b (all
    points as queries), so the cost is one ``N × N`` sweep per layer.
    """
    from interp.neighbors import knn

    acc = torch.full((x.shape[0], n_langs, n_langs), float("nan"), dtype=torch.float64)
    per_lang = torch.bincount(codes, minlength=n_langs).double()
    for b in range(n_langs):
        members = (codes == b).nonzero().squeeze(1)
        found, _ = knn(x[:, members], 1, metric=metric, queries=x, exclude_self=False, backend=backend)  # [L, N, 1]
        hit = (items[members][found[..., 0].cpu()] == items[None, :]).double()  # [L, N]
        acc[:, :, b] = torch.zeros(x.shape[0], n_langs, dtype=torch.float64).index_add_(1, codes, hit) / per_lang
        acc[:, b, b] = float("nan")
    return acc


def bootstrap_ilo(
    counts: torch.Tensor,
    codes: torch.Tensor,
    items: torch.Tensor,
    n_langs: int,
    t: int,
    n_boot: int,
    seed: int = 0,
    min_count: int = 1,
) -> torch.Tensor:
    """ILO of ``n_boot`` item resamples: ``[n_boot, L, n_langs]`` float64.

    Each resample draws items with replacement; a point weighs as often as its
    item was drawn. ``counts`` is :func:`~interp.ilo.measures.slot_counts`.
    NaN where a resample holds no point of the language (ILO undefined).
    """
    n_items = int(items.max()) + 1
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, n_items, (n_boot, n_items), generator=generator)
    item_weight = torch.zeros(n_boot, n_items, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(n_boot, n_items, dtype=torch.float64)
    )
    weight = item_weight[:, items]  # [R, N]
    own = torch.nn.functional.one_hot(codes, n_langs).bool()
    bridged = (((counts > 0) & ~own).sum(-1) >= t).double()  # [L, N]
    off_diagonal = ~torch.eye(n_langs, dtype=torch.bool)
    out = torch.zeros(n_boot, counts.shape[0], n_langs, dtype=torch.float64)
    for a in range(n_langs):
        members = (codes == a).nonzero().squeeze(1)
        w = weight[:, members]  # [R, n_a]
        total = w.sum(1, keepdim=True)  # [R, 1]
        bridge = (w @ bridged[:, members].T) / total.clamp_min(1e-300)  # [R, L]
        slots = torch.einsum("rn,lnb->rlb", w, counts[:, members].double())  # weighted slot counts
        reach = ((slots >= min_count - 1e-9) & (slots > 0) & off_diagonal[a]).sum(-1).double() / (n_langs - 1)
        out[:, :, a] = torch.where(total > 0, harmonic(bridge, reach), float("nan"))
    return out


def percentile_ci(boot: torch.Tensor, low: float = 0.025, high: float = 0.975) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile CI (default 95%) over the resamples (dim 0) of ``boot``, skipping NaN (undefined) ones.

    Linear interpolation between order statistics (numpy's default); NaN
    where every resample is NaN.
    """
    return boot.nanquantile(low, dim=0), boot.nanquantile(high, dim=0)
