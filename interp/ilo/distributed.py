"""ILO over ``torch.distributed`` ranks: ``interp.ilo.score(..., group=...)``.

Each rank passes its contiguous shard of the points (activations
``[L, n_r, D]``, its ``n_r`` language labels and item ids); the global point
set is the concatenation of the shards in rank order. The flow is the
single-process one (:mod:`interp.ilo.api`) with every per-point step kept on
the rank that owns the point and only *per-language sums* crossing ranks:

* labels and ids (N small Python values) and the scalar arguments are
  exchanged once (:func:`~interp.neighbors.distributed.all_gather_object`,
  bounded by ``timeout``), so every rank has the global language codes in the
  single-process order, and ranks called with different ``k``, ``t``, ... all
  raise the same ``ValueError`` instead of silently disagreeing;
* neighbours come from :func:`interp.neighbors.distributed.knn_sharded`
  (bit-identical rows; each rank keeps only its own ``[L, n_r, k]`` lists);
* bridge and reach need, per (layer, language), the number of bridging
  points and the ``[n_langs, n_langs]`` neighbour-slot co-occurrence counts:
  integers, summed locally and ``all_reduce``-d -- never the ``N × k`` lists;
* the permutation null does the same for every permutation (the permutations
  come from the same seeded generator on every rank) in one ``all_reduce``;
* the bootstrap reduces per-language weighted sums (integer-valued float64,
  exact in any order); retrieval runs one sharded 1-NN search per target
  language and reduces hit counts;
* the translation share averages per-point *fractions*, whose float sum
  depends on order, so its per-point same-item counts (``[L, N]``, uint8 for
  k < 256: 1/8k of the neighbour lists' size) are all-gathered and summed in
  point order. (An integer ``all_reduce`` of per-language counts divided once
  by ``k n_a`` would avoid the gather, but rounds differently from the
  single-process mean of per-point fractions, so it is not used.)

All reduced quantities are integers (exact in any summation order) and the
final divisions are those of the single-process code, so every rank returns
the single-process tables bit for bit. ``ILOResult.indices`` holds this
rank's rows only (global indices).
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist

from interp.ilo.api import ILOResult, _check, _codes, _inputs, _tables
from interp.ilo.baselines import percentile_ci
from interp.ilo.measures import harmonic, slot_counts
from interp.neighbors.distributed import (
    DEFAULT_TIMEOUT,
    _comm_device,
    _wait,
    all_gather_object,
    check_same_arguments,
    gather_rows,
    knn_sharded,
)

__all__ = ["score_sharded"]


def _all_reduce(t: torch.Tensor, what: str, group, timeout: timedelta) -> torch.Tensor:
    device = _comm_device(group)
    buf = t.to(device).contiguous()
    _wait(dist.all_reduce(buf, group=group, async_op=True), what, timeout)
    return buf.to(t.device)


def _local_sums(counts: torch.Tensor, codes_local: torch.Tensor, n_langs: int, t: int) -> torch.Tensor:
    """Per-language sums of one rank: ``[L, n_langs, 1 + n_langs]`` int64 (bridging points | slot counts)."""
    own = torch.nn.functional.one_hot(codes_local, n_langs).bool()  # [n_r, n_langs]
    bridged = (((counts > 0) & ~own).sum(-1) >= t).long()  # [L, n_r]
    n_layers = counts.shape[0]
    out = torch.zeros(n_layers, n_langs, 1 + n_langs, dtype=torch.int64)
    out[:, :, 0].index_add_(1, codes_local, bridged)
    out[:, :, 1:].index_add_(1, codes_local, counts.long())
    return out


def _scores(sums: torch.Tensor, per_lang: torch.Tensor, n_langs: int, min_count: int) -> dict[str, torch.Tensor]:
    """:func:`interp.ilo.measures.bridge_reach` from the reduced sums (same arithmetic)."""
    bridge = sums[..., 0].double() / per_lang.double()
    cooccurrence = sums[..., 1:]
    off_diagonal = ~torch.eye(n_langs, dtype=torch.bool)
    reach_raw = ((cooccurrence >= min_count) & off_diagonal).sum(-1)
    reach = reach_raw.double() / (n_langs - 1)
    return {"bridge": bridge, "reach_raw": reach_raw, "reach": reach, "ilo": harmonic(bridge, reach),
            "cooccurrence": cooccurrence}  # fmt: skip


def _bootstrap(counts, codes, codes_local, items, lo, n_langs, t, n_boot, seed, min_count, group, timeout):
    """:func:`interp.ilo.baselines.bootstrap_ilo` with per-language sums reduced over ranks."""
    n_items = int(items.max()) + 1
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, n_items, (n_boot, n_items), generator=generator)
    item_weight = torch.zeros(n_boot, n_items, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(n_boot, n_items, dtype=torch.float64)
    )
    items_local = items[lo : lo + len(codes_local)]
    own = torch.nn.functional.one_hot(codes_local, n_langs).bool()
    bridged = (((counts > 0) & ~own).sum(-1) >= t).double()  # [L, n_r]
    off_diagonal = ~torch.eye(n_langs, dtype=torch.bool)
    out = torch.zeros(n_boot, counts.shape[0], n_langs, dtype=torch.float64)
    for a in range(n_langs):
        members = (codes_local == a).nonzero().squeeze(1)
        w = item_weight[:, items_local[members]]  # [R, n_a on this rank]
        # integer-valued float64 sums: exact, so the reduction order does not matter
        part = torch.cat([(w @ bridged[:, members].T).unsqueeze(-1),
                          torch.einsum("rn,lnb->rlb", w, counts[:, members].double())], -1)  # fmt: skip
        part = _all_reduce(part, f"reducing bootstrap sums of language {a}", group, timeout)
        total = item_weight[:, items[codes == a]].sum(1, keepdim=True)
        bridge, slots = part[..., 0] / total.clamp_min(1e-300), part[..., 1:]
        reach = ((slots >= min_count - 1e-9) & (slots > 0) & off_diagonal[a]).sum(-1).double() / (n_langs - 1)
        # a resample that drew none of language a's items leaves its ILO undefined (skipped by the CI)
        out[:, :, a] = torch.where(total > 0, harmonic(bridge, reach), float("nan"))
    return out


def _retrieval(x, codes, codes_local, items, lo, n_langs, metric, backend, group, timeout):
    """:func:`interp.ilo.baselines.retrieval_accuracy` with sharded 1-NN searches."""
    acc = torch.full((x.shape[0], n_langs, n_langs), float("nan"), dtype=torch.float64)
    per_lang = torch.bincount(codes, minlength=n_langs).double()
    items_local = items[lo : lo + x.shape[1]]
    for b in range(n_langs):
        members = (codes == b).nonzero().squeeze(1)  # global, ascending = rank order of the shards
        mine = (codes_local == b).nonzero().squeeze(1)
        found, _ = knn_sharded(x[:, mine], 1, metric=metric, queries=x, exclude_self=False, backend=backend,
                               group=group, timeout=timeout)  # fmt: skip
        hit = (items[members][found[..., 0].cpu()] == items_local[None, :]).long()  # [L, n_r]
        hits = torch.zeros(x.shape[0], n_langs, dtype=torch.int64).index_add_(1, codes_local, hit)
        hits = _all_reduce(hits, f"reducing retrieval hits of language {b}", group, timeout)
        acc[:, :, b] = hits.double() / per_lang
        acc[:, b, b] = float("nan")
    return acc


def score_sharded(
    acts,
    langs=None,
    k: int = 5,
    t: int = 3,
    metric: str = "cosine",
    compat: bool = False,
    *,
    ids=None,
    min_count: int = 1,
    null: int = 0,
    bootstrap: int = 0,
    retrieval: bool = False,
    seed: int = 0,
    backend: str = "auto",
    group=None,
    timeout: float | timedelta | None = None,
) -> ILOResult:
    """:func:`interp.ilo.score` on this rank's shard; collective (every rank of ``group`` calls it).

    Arguments as :func:`interp.ilo.score`, with ``acts`` ``[L, n_r, D]`` (or
    Activations), ``langs`` and ``ids`` for this rank's points only. Every
    rank returns the same tables, equal bit for bit to the single-process
    result on the concatenated shards; ``indices`` is ``[L, n_r, k]``.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("score(..., group=...) needs an initialised process group; see interp.launch")
    if group is None:
        group = dist.group.WORLD
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    timeout = timeout if isinstance(timeout, timedelta) else timedelta(seconds=float(timeout))
    rank = dist.get_rank(group)
    try:
        x, layers, langs, ids = _inputs(acts, langs, ids)
        problem = ""
    except (TypeError, ValueError) as err:
        x, layers, problem = None, None, str(err)
    # one object exchange, bounded by `timeout`: every rank's validity, layers, labels, ids (N small values)
    # and scalar arguments
    settings = {"k": k, "t": t, "metric": metric, "compat": bool(compat), "min_count": min_count, "null": null,
                "bootstrap": bootstrap, "retrieval": bool(retrieval), "seed": seed,
                "dtype": None if problem else str(x.dtype)}  # fmt: skip
    mine = (problem, layers, None if problem else langs, None if problem else ids, settings)
    shared = all_gather_object(mine, "exchanging labels, ids and arguments (sharded ILO)", group, timeout)
    if problem:
        raise ValueError(f"rank {rank}: {problem}")
    bad = [r for r, (p, *_) in enumerate(shared) if p]
    if bad:
        raise ValueError(f"rank {rank}: the input of rank(s) {bad} is invalid (see their error); nothing was computed")
    check_same_arguments([s[4] for s in shared], rank, "interp.ilo.score")
    if any(s[1] != layers for s in shared):
        raise ValueError(f"rank {rank}: the ranks pass different layers: {[s[1] for s in shared]}")
    if any((s[3] is None) != (ids is None) for s in shared):
        raise ValueError(f"rank {rank}: some ranks pass item ids and some do not; pass them on every rank")
    sizes = [len(s[2]) for s in shared]
    lo = sum(sizes[:rank])
    codes, languages = _codes([label for s in shared for label in s[2]])
    all_ids = None if ids is None else [i for s in shared for i in s[3]]
    items, k, t, min_count = _check(codes, languages, all_ids, k, t, min_count, bootstrap, retrieval)
    n_langs, n_points = len(languages), len(codes)
    codes_local = codes[lo : lo + len(langs)]
    per_lang = torch.bincount(codes, minlength=n_langs)

    x = x.to(_comm_device(group)) if dist.get_backend(group) == "nccl" else x  # NCCL moves CUDA tensors only
    if compat:
        found, _ = knn_sharded(x, k + 1, metric=metric, exclude_self=False, backend=backend, group=group,
                               timeout=timeout)  # fmt: skip
        indices = found[..., 1:]
    else:
        indices, _ = knn_sharded(x, k, metric=metric, exclude_self=True, backend=backend, group=group, timeout=timeout)
    indices = indices.cpu()
    counts = slot_counts(indices, codes, n_langs)  # [L, n_r, n_langs], this rank's points only
    sums = _all_reduce(_local_sums(counts, codes_local, n_langs, t), "reducing ILO counts", group, timeout)
    scores = _scores(sums, per_lang, n_langs, min_count)

    columns = {name: scores[name] for name in ("bridge", "reach", "reach_raw", "ilo")}
    if null:
        generator = torch.Generator().manual_seed(seed)
        shuffles = [codes[torch.randperm(n_points, generator=generator)] for _ in range(null)]
        local = torch.stack([
            _local_sums(slot_counts(indices, s, n_langs), s[lo : lo + len(langs)], n_langs, t) for s in shuffles
        ])  # fmt: skip
        reduced = _all_reduce(local, "reducing null counts", group, timeout)
        null_ilo = torch.stack([
            _scores(reduced[p], torch.bincount(s, minlength=n_langs), n_langs, min_count)["ilo"]
            for p, s in enumerate(shuffles)
        ])  # fmt: skip
        columns["null_mean"] = null_ilo.mean(0)
        columns["null_std"] = null_ilo.std(0)
        columns["ilo_minus_null"] = scores["ilo"] - columns["null_mean"]
        columns["z"] = columns["ilo_minus_null"] / columns["null_std"].clamp_min(1e-12)
    if items is not None:
        items_local = items[lo : lo + len(langs)]
        same = (items[indices] == items_local[None, :, None]) & (codes[indices] != codes_local[None, :, None])
        small = torch.uint8 if indices.shape[-1] <= 255 else torch.int32  # counts are <= k: 1 byte each for k < 256
        same_count = gather_rows(same.sum(-1).to(small), sizes, 1, group, timeout)  # [L, N]
        per_point = same_count.double() / indices.shape[-1]  # == mean of the 0/1 slots, as single-process
        columns["translation_share"] = (
            torch.zeros(len(layers), n_langs, dtype=torch.float64).index_add_(1, codes, per_point) / per_lang.double()
        )
    if bootstrap:
        boot = _bootstrap(counts, codes, codes_local, items, lo, n_langs, t, bootstrap, seed, min_count, group, timeout)
        columns["ilo_ci_low"], columns["ilo_ci_high"] = percentile_ci(boot)

    table, by_layer = _tables(columns, layers, languages)
    params = {"k": k, "t": t, "metric": metric, "compat": compat, "min_count": min_count, "null": null,
              "bootstrap": bootstrap, "seed": seed, "n_points": n_points, "world_size": len(sizes)}  # fmt: skip
    return ILOResult(
        table=table,
        by_layer=by_layer,
        cooccurrence=scores["cooccurrence"],
        languages=languages,
        layers=layers,
        params=params,
        indices=indices,
        retrieval=_retrieval(x, codes, codes_local, items, lo, n_langs, metric, backend, group, timeout)
        if retrieval
        else None,
    )
