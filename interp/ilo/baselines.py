"""What makes an ILO number interpretable: a null, translation-aware views, CIs.

* :func:`permutation_null` -- ILO ignores *which* sentences neighbour each
  other, and random mixing already scores ≈ 0.999 (k=5, t=3, 31 languages).
  Shuffling the language labels over the points (counts kept, neighbour
  graph fixed) gives the score expected if language identity played no role
  in the geometry; report ILO minus the null mean, and a z-score.
* :func:`translation_share` -- the share of each point's neighbours that are
  translations of the same item in another language; 0 for ILO's "random
  mixing", high only when translations meet.
* :func:`topic_share` -- the share of each point's neighbours that are sentences
  of the same topic in another language (FLORES-200's topic labels; a
  translation counts too, it has the same topic): the geometry mixes languages
  *by meaning* when it is high, and at random when it sits at
  :func:`chance_share`, its value for neighbours drawn uniformly at random.
  Both shares are one formula, :func:`other_language_share`, over different
  groupings of the points (items, topics).
* :func:`retrieval_accuracy` -- cross-lingual retrieval per language pair:
  is item j of language a closest, among language b's points, to item j of b?
* :func:`bootstrap_ilo` -- percentile CIs over items, with the neighbour graph
  held fixed (items are resampled with all their translations; kNN is not
  recomputed, so the CI reflects which items were sampled, not re-embedding).
  A resample that draws none of a language's items leaves that language's
  ILO undefined (NaN), and :func:`percentile_ci` skips it: with unequal
  languages (a language covering few items) counting it as 0 would drag the
  CI to 0.

Each takes the ``points`` layout (:mod:`interp.ilo.points`; default: all points in
this process): per-point work runs on this process's rows (``indices``/``counts``
hold those rows only), cross-point sums go through ``points.sum``.
"""

from __future__ import annotations

import torch

from interp.ilo.measures import bridging, harmonic, language_sums, scores_from_sums, slot_counts
from interp.ilo.points import LocalPoints, Points

__all__ = [
    "permutation_null",
    "other_language_share",
    "translation_share",
    "topic_share",
    "chance_share",
    "retrieval_accuracy",
    "bootstrap_ilo",
    "percentile_ci",
]


def permutation_null(
    indices: torch.Tensor,
    codes: torch.Tensor,
    n_langs: int,
    t: int,
    n_perm: int,
    seed: int = 0,
    min_count: int = 1,
    *,
    points: Points | None = None,
) -> torch.Tensor:
    """ILO under shuffled language labels: ``[n_perm, L, n_langs]`` float64.

    ``indices`` ``[L, n, k]`` are the neighbours of this process's rows, ``codes`` ``[N]``
    the languages of all points.
    """
    points = points or LocalPoints(len(codes))
    generator = torch.Generator().manual_seed(seed)
    shuffles = [codes[torch.randperm(len(codes), generator=generator)] for _ in range(n_perm)]
    local = torch.stack([language_sums(slot_counts(indices, s, n_langs), s[points.rows], n_langs, t) for s in shuffles])
    sums = points.sum(local, "reducing null counts")
    per_lang = torch.bincount(codes, minlength=n_langs)  # a permutation keeps every language's size
    return torch.stack([scores_from_sums(sums[p], per_lang, n_langs, min_count)["ilo"] for p in range(n_perm)])


def other_language_share(
    indices: torch.Tensor, codes: torch.Tensor, groups: torch.Tensor, n_langs: int, *, points: Points | None = None
) -> torch.Tensor:
    """Mean share of neighbours in another language *and* the point's group: ``[L, n_langs]`` float64.

    For point ``i`` of language ``a``: ``|{j in kNN(i) : group(j) = group(i), lang(j) != a}| / k``,
    averaged over ``a``'s points. ``groups`` ``[N]`` are integer group codes of all points (item
    ids: the translation share; topics: the topic share). The per-point share is a fraction and
    its mean a float sum, so the per-point counts are brought into point order
    (``points.gather``) before it is taken.
    """
    points = points or LocalPoints(len(codes))
    rows = points.rows
    same = (groups[indices] == groups[rows][None, :, None]) & (codes[indices] != codes[rows][None, :, None])
    per_point = (
        points.gather(same.sum(-1), "gathering same-group counts", indices.shape[-1]).double() / indices.shape[-1]
    )  # [L, N]
    per_lang = torch.bincount(codes, minlength=n_langs).double()
    return torch.zeros(indices.shape[0], n_langs, dtype=torch.float64).index_add_(1, codes, per_point) / per_lang


def translation_share(
    indices: torch.Tensor, codes: torch.Tensor, items: torch.Tensor, n_langs: int, *, points: Points | None = None
) -> torch.Tensor:
    """Mean share of neighbours that are the same item in another language: ``[L, n_langs]``."""
    return other_language_share(indices, codes, items, n_langs, points=points)


def topic_share(
    indices: torch.Tensor, codes: torch.Tensor, topics: torch.Tensor, n_langs: int, *, points: Points | None = None
) -> torch.Tensor:
    """Mean share of neighbours that are same-topic sentences in another language: ``[L, n_langs]``."""
    return other_language_share(indices, codes, topics, n_langs, points=points)


def chance_share(codes: torch.Tensor, groups: torch.Tensor, n_langs: int) -> torch.Tensor:
    """:func:`other_language_share` expected for neighbours drawn uniformly at random: ``[n_langs]`` float64.

    A random other point of a language-``a`` point ``i`` is in another language and ``i``'s
    group with probability ``|{j != i : group(j) = group(i), lang(j) != a}| / (N - 1)``; the
    value is its mean over ``a``'s points. It needs only the labels, so every process of a
    sharded run computes it alone. For translations of ``n`` items in every one of ``L``
    languages it is ``(L - 1) / (N - 1)``.
    """
    n_points = len(codes)
    n_groups = int(groups.max()) + 1
    joint = torch.zeros(n_groups, n_langs, dtype=torch.float64).index_put_(
        (groups, codes), torch.ones(n_points, dtype=torch.float64), accumulate=True
    )  # [groups, languages] point counts
    other = joint.sum(1, keepdim=True) - joint  # same group, another language
    per_point = other[groups, codes] / (n_points - 1)
    per_lang = torch.bincount(codes, minlength=n_langs).double()
    return torch.zeros(n_langs, dtype=torch.float64).index_add_(0, codes, per_point) / per_lang


def retrieval_accuracy(
    x: torch.Tensor,
    codes: torch.Tensor,
    items: torch.Tensor,
    n_langs: int,
    metric: str = "cosine",
    backend: str = "auto",
    *,
    points: Points | None = None,
) -> torch.Tensor:
    """``acc[l, a, b]``: share of language-a points whose nearest language-b point is the same item.

    ``x`` is ``[L, n, D]`` (this process's rows); one exact kNN search per target
    language b (all points as queries), so the cost is one ``N × N`` sweep per layer.
    """
    points = points or LocalPoints(len(codes))
    codes_here, items_here = codes[points.rows], items[points.rows]
    acc = torch.full((x.shape[0], n_langs, n_langs), float("nan"), dtype=torch.float64)
    per_lang = torch.bincount(codes, minlength=n_langs).double()
    for b in range(n_langs):
        members = (codes == b).nonzero().squeeze(1)  # global, ascending: the order of the sharded targets too
        mine = (codes_here == b).nonzero().squeeze(1)
        found, _ = points.knn(x[:, mine], 1, metric=metric, queries=x, exclude_self=False, backend=backend)
        hit = (items[members][found[..., 0].cpu()] == items_here[None, :]).long()  # [L, n]
        hits = torch.zeros(x.shape[0], n_langs, dtype=torch.int64).index_add_(1, codes_here, hit)
        hits = points.sum(hits, f"reducing retrieval hits of language {b}")
        acc[:, :, b] = hits.double() / per_lang
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
    *,
    points: Points | None = None,
) -> torch.Tensor:
    """ILO of ``n_boot`` item resamples: ``[n_boot, L, n_langs]`` float64.

    Each resample draws items with replacement; a point weighs as often as its
    item was drawn. ``counts`` is :func:`~interp.ilo.measures.slot_counts` of this
    process's rows. NaN where a resample holds no point of the language (ILO undefined).
    """
    points = points or LocalPoints(len(codes))
    codes_here, items_here = codes[points.rows], items[points.rows]
    n_items = int(items.max()) + 1
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, n_items, (n_boot, n_items), generator=generator)
    item_weight = torch.zeros(n_boot, n_items, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(n_boot, n_items, dtype=torch.float64)
    )
    bridged = bridging(counts, codes_here, n_langs, t).double()  # [L, n]
    off_diagonal = ~torch.eye(n_langs, dtype=torch.bool)
    out = torch.zeros(n_boot, counts.shape[0], n_langs, dtype=torch.float64)
    for a in range(n_langs):
        members = (codes_here == a).nonzero().squeeze(1)
        w = item_weight[:, items_here[members]]  # [R, n_a here]
        # weighted bridging points and slot counts: integer-valued float64, exact in any order
        part = torch.cat([(w @ bridged[:, members].T).unsqueeze(-1),
                          torch.einsum("rn,lnb->rlb", w, counts[:, members].double())], -1)  # fmt: skip
        part = points.sum(part, f"reducing bootstrap sums of language {a}")
        total = item_weight[:, items[codes == a]].sum(1, keepdim=True)  # [R, 1]
        bridge, slots = part[..., 0] / total.clamp_min(1e-300), part[..., 1:]
        reach = ((slots >= min_count - 1e-9) & (slots > 0) & off_diagonal[a]).sum(-1).double() / (n_langs - 1)
        out[:, :, a] = torch.where(total > 0, harmonic(bridge, reach), float("nan"))
    return out


def percentile_ci(boot: torch.Tensor, low: float = 0.025, high: float = 0.975) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile CI (default 95%) over the resamples (dim 0) of ``boot``, skipping NaN (undefined) ones.

    Linear interpolation between order statistics (numpy's default); NaN
    where every resample is NaN.
    """
    return boot.nanquantile(low, dim=0), boot.nanquantile(high, dim=0)
