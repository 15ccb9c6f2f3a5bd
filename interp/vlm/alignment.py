"""Attention-to-object alignment: how much of the traced attention lands on the queried objects.

AdaptVis (Chen et al., ICML 2025) reads, layer by layer, the post-softmax attention of the last
prompt token to the image patches and relates it to the object boxes. The paper's exact metric is
not public (see ``adaptvis.md`` §2), so this module offers the readings in use, each from its
definition, and the aggregation that the paper's claim ("the AUROC of the attention-annotation
overlap peaks in layers 17-18") needs.

Data contract (one sample):

- ``attn`` ``[n_blocks, n_heads, grid_h, grid_w]``: post-softmax probabilities from the query
  token to each image patch. They are **not** renormalised over the image: the rest of the row's
  mass is on text tokens, so ``attn.sum((-2, -1))`` is the image share of the row.
- ``mask`` ``[grid_h, grid_w]`` in ``[0, 1]``: the fraction of each patch covered by the object
  box (or the union of boxes), as produced by ``box_mask``.

Metrics (``a`` = one flattened attention map, ``m`` = the flattened coverage mask):

- ``mass`` = Σ a·m / Σ a: share of the *image* attention inside the box (partially covered
  patches count by their coverage). ``mass_total`` = Σ a·m: share of the query's *whole*
  attention row (image + text) inside the box. ``image_share`` = Σ a.
- ``auroc``: AUROC of patch attention as a score for the binary box mask ``m >= threshold``
  (Mann-Whitney U / (n_in · n_out), ties counted 1/2): the probability that a random patch
  inside the box gets more attention than a random patch outside it.
- ``pointing``: 1 if the argmax patch (ties -> lowest row-major flat index) has coverage > 0.
- ``cosine``: a·m / (‖a‖ ‖m‖). Cosine is scale-invariant, so it equals the third-party
  "cosine-similarity overlap" of the sum-normalised map against the sum-normalised mask.

Head mean: the ``"mean"`` head averages the attention **maps** over heads first and then computes
the metric on that map (not the mean of per-head metrics; for ``mass`` both differ).

Undefined cases give NaN, never an error, so one odd sample does not stop a dataset run:
an empty mask (no patch with coverage > 0, e.g. a box cropped away by the processor) makes every
box metric NaN (``image_share`` does not use the mask); ``auroc`` is also NaN when the binary
mask is all-0 (box under ``threshold`` of every patch) or all-1 (no outside patch); ``mass`` and
``cosine`` are NaN when the map is all zero. :func:`alignment_table` warns about empty masks
(or raises with ``on_empty="raise"``).
Invalid input (shape mismatch, mask outside ``[0, 1]``, NaN/Inf or negative attention) raises.
Inputs may be float32/float16/bfloat16 tensors on any device; metrics are computed in float64
on the CPU (ties are judged on the values as given).

Aggregation works on the tidy table: :func:`block_curves` gives mean ± CI per decoder block, split
by a column such as ``correct``; :func:`correctness_auroc` gives, per block, the AUROC of a per-sample
score at separating correct from incorrect answers (the "most consistent reading" of the paper).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from interp._validation import renamed
from interp.vlm.trace import ImageAttention

__all__ = [
    "ALIGNMENT_METRICS",
    "alignment_table",
    "attention_mass",
    "correctness_auroc",
    "cosine_overlap",
    "block_curves",
    "layer_curves",
    "patch_auroc",
    "pointing_game",
]

ALIGNMENT_METRICS = ("mass", "mass_total", "image_share", "auroc", "pointing", "cosine")


# --------------------------------------------------------------------------- validation


def _as_float64(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if not (x.dtype.is_floating_point or x.dtype == torch.bool):
        raise TypeError(f"{name} must be floating point (or bool for a mask), got {x.dtype}")
    return x.detach().to("cpu", torch.float64)


def _check_attn(attn: torch.Tensor, where: str = "") -> None:
    if not torch.isfinite(attn).all():
        bad = (~torch.isfinite(attn)).nonzero()[0].tolist()
        raise ValueError(
            f"attention{where} contains NaN or Inf (first at index {bad}); "
            "trace in float32 or check the model's outputs before computing alignment"
        )
    low = float(attn.min()) if attn.numel() else 0.0
    if low < 0:
        raise ValueError(
            f"attention{where} has negative values (min {low:.4g}); these metrics need post-softmax "
            "probabilities, not pre-softmax logits (the official AdaptVis dump is logits: apply softmax over the "
            "whole row first)"
        )


def _check_mask(mask: torch.Tensor, grid: tuple[int, int], where: str = "") -> None:
    if tuple(mask.shape[-2:]) != grid or mask.ndim != 2:
        raise ValueError(
            f"mask{where} has shape {tuple(mask.shape)} but the attention grid is {grid}: "
            "pass one [grid_h, grid_w] coverage mask per sample (see box_mask)"
        )
    if torch.isnan(mask).any():
        raise ValueError(f"mask{where} contains NaN; coverage masks must be in [0, 1]")
    low, high = float(mask.min()), float(mask.max())
    if low < 0 or high > 1:
        raise ValueError(
            f"mask{where} has values in [{low:.4g}, {high:.4g}], outside [0, 1]; it must be the fraction of each "
            "patch covered by the box(es) (clip or use box_mask)"
        )


def _prepare(attn, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate one call of the tensor-level metrics: ``attn [..., gh, gw]``, ``mask`` broadcastable."""
    a = _as_float64(attn, "attn")
    m = _as_float64(mask, "mask")
    if a.ndim < 2 or m.ndim < 2:
        raise ValueError(
            f"attn and mask need at least 2 dims [.., grid_h, grid_w], got attn {tuple(a.shape)}, mask {tuple(m.shape)}"
        )
    if a.shape[-2:] != m.shape[-2:]:
        raise ValueError(
            f"attn grid {tuple(a.shape[-2:])} (attn shape {tuple(a.shape)}) does not match mask grid "
            f"{tuple(m.shape[-2:])} (mask shape {tuple(m.shape)})"
        )
    try:
        torch.broadcast_shapes(a.shape, m.shape)
    except RuntimeError:
        raise ValueError(
            f"mask shape {tuple(m.shape)} does not broadcast against attn shape {tuple(a.shape)}; "
            "pass a [grid_h, grid_w] mask or one with matching leading dims"
        ) from None
    _check_attn(a)
    if torch.isnan(m).any() or (m.numel() and (float(m.min()) < 0 or float(m.max()) > 1)):
        raise ValueError(
            f"mask values must be coverage fractions in [0, 1], got range [{float(m.min()):.4g}, {float(m.max()):.4g}]"
            + (" with NaN" if torch.isnan(m).any() else "")
        )
    return a, m


# --------------------------------------------------------------------------- tensor-level metrics


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.nan)


def _region(m: torch.Tensor) -> torch.Tensor:
    """``[...]`` bool: the mask has at least one patch with coverage > 0."""
    return (m > 0).flatten(-2).any(-1)


def _mass(a: torch.Tensor, m: torch.Tensor, normalize: bool) -> torch.Tensor:
    inside = (a * m).flatten(-2).sum(-1)
    out = _safe_div(inside, a.flatten(-2).sum(-1)) if normalize else inside
    return torch.where(_region(m), out, torch.nan)


def attention_mass(attn, mask, normalize: bool = True) -> torch.Tensor:
    """Attention mass inside the object box(es).

    Args:
        attn: ``[..., grid_h, grid_w]`` post-softmax attention to the image patches.
        mask: coverage mask broadcastable to ``attn`` (usually ``[grid_h, grid_w]``), values in ``[0, 1]``.
        normalize: ``True`` -> Σ a·m / Σ a, the share of the *image* attention inside the box;
            ``False`` -> Σ a·m, the share of the whole attention row (image + text) inside the box.

    Returns:
        float64 ``[...]``. NaN where the mask is empty (no coverage > 0) or, with ``normalize``,
        where the map sums to 0.
    """
    return _mass(*_prepare(attn, mask), normalize)


def _auroc(scores: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """AUROC along the last dim (Mann-Whitney U / (n_pos · n_neg), ties 1/2), batched over leading dims.

    ``scores [..., n]`` float64, finite where valid; ``positive`` / ``valid`` bool, broadcastable.
    Invalid entries count as neither class, so their scores (even NaN) do not matter.
    One sort per row, then per tie group g (equal scores): U = Σ_g pos_g · (neg_below_g + ½ neg_g),
    which is the rank-sum statistic with average ranks for ties. NaN where a row has no valid
    positive or no valid negative.
    """
    shape = torch.broadcast_shapes(scores.shape, positive.shape, *(() if valid is None else (valid.shape,)))
    valid = torch.ones((), dtype=torch.bool).expand(shape) if valid is None else valid.expand(shape)
    positive = positive.expand(shape)
    ordered, order = scores.expand(shape).sort(dim=-1)
    pos = (positive & valid).gather(-1, order).to(torch.float64)
    neg = (~positive & valid).gather(-1, order).to(torch.float64)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    group = starts.cumsum(-1) - 1  # tie-group id of each sorted entry
    neg_in = torch.zeros_like(neg).scatter_add_(-1, group, neg)
    pos_in = torch.zeros_like(pos).scatter_add_(-1, group, pos)
    neg_below = neg_in.cumsum(-1) - neg_in
    u = (pos_in * (neg_below + 0.5 * neg_in)).sum(-1)
    return _safe_div(u, pos.sum(-1) * neg.sum(-1))


def _patch_auroc(a: torch.Tensor, m: torch.Tensor, threshold: float) -> torch.Tensor:
    return _auroc(a.flatten(-2), (m >= threshold).flatten(-2))


def _check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")


def patch_auroc(attn, mask, threshold: float = 0.5) -> torch.Tensor:
    """AUROC of patch attention against the binary box mask ``mask >= threshold``.

    AUROC = U / (n_in · n_out) with U the Mann-Whitney statistic of the inside patches (ties
    count 1/2): P(a random inside patch gets more attention than a random outside patch).
    Computed with one sort per map (tie groups, no pairwise loop), vectorised over all leading dims.

    Args:
        attn: ``[..., grid_h, grid_w]``.
        mask: coverage mask broadcastable to ``attn``, values in ``[0, 1]``.
        threshold: a patch is "inside" when its coverage is ``>= threshold`` (0.5 by default).

    Returns:
        float64 ``[...]``; NaN where the binary mask is all-0 or all-1 (AUROC undefined), which
        includes an empty mask.
    """
    _check_threshold(threshold)
    return _patch_auroc(*_prepare(attn, mask), threshold)


def _pointing(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    shape = torch.broadcast_shapes(a.shape, m.shape)
    flat = a.expand(shape).flatten(-2)
    index = torch.arange(flat.shape[-1]).expand(flat.shape)
    is_max = flat == flat.max(-1, keepdim=True).values
    first = torch.where(is_max, index, flat.shape[-1]).min(-1, keepdim=True).values
    hit = m.expand(shape).flatten(-2).gather(-1, first).squeeze(-1) > 0
    return torch.where(_region(m), hit.to(torch.float64), torch.nan)


def pointing_game(attn, mask) -> torch.Tensor:
    """Pointing game: 1.0 if the most attended patch lies inside the box (coverage > 0), else 0.0.

    Ties for the maximum go to the lowest flat (row-major) patch index.

    Args:
        attn: ``[..., grid_h, grid_w]``.
        mask: coverage mask broadcastable to ``attn``, values in ``[0, 1]``.

    Returns:
        float64 ``[...]`` of 0.0 / 1.0; NaN where the mask is empty.
    """
    return _pointing(*_prepare(attn, mask))


def _cosine(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    dot = (a * m).flatten(-2).sum(-1)
    norms = a.flatten(-2).norm(dim=-1) * m.flatten(-2).norm(dim=-1)
    return torch.where(_region(m), _safe_div(dot, norms), torch.nan)


def cosine_overlap(attn, mask) -> torch.Tensor:
    """Cosine similarity between the flattened attention map and the flattened coverage mask.

    Equal to the cosine of the sum-normalised map and the sum-normalised mask (cosine is
    scale-invariant), i.e. the third-party "cosine-similarity overlap" reading.

    Returns:
        float64 ``[...]``; NaN where the mask is empty or the map is all zero.
    """
    return _cosine(*_prepare(attn, mask))


# --------------------------------------------------------------------------- dataset table


def _check_dtype(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    return x


def _samples(attn) -> list[torch.Tensor]:
    """Per-sample views in their own dtype/device (converted to float64 one sample at a time)."""
    if isinstance(attn, (torch.Tensor, np.ndarray)):
        t = _check_dtype(attn, "attn")
        if t.ndim == 4:
            return [t]
        if t.ndim == 5:
            return list(t.unbind(0))
        raise ValueError(
            f"attn must be [n_blocks, n_heads, grid_h, grid_w] (one sample) or "
            f"[n_samples, n_blocks, n_heads, grid_h, grid_w], got shape {tuple(t.shape)}"
        )
    if isinstance(attn, Sequence) and not isinstance(attn, str):
        out = []
        for i, x in enumerate(attn):
            t = _check_dtype(x, f"attn[{i}]")
            if t.ndim != 4:
                raise ValueError(
                    f"attn[{i}] has shape {tuple(t.shape)}; each sample must be [n_blocks, n_heads, grid_h, grid_w]"
                )
            out.append(t)
        return out
    raise TypeError(f"attn must be a tensor or a list of per-sample tensors, got {type(attn).__name__}")


def _masks(masks, n: int) -> list[torch.Tensor]:
    if isinstance(masks, (torch.Tensor, np.ndarray)):
        t = _as_float64(masks, "masks")
        if t.ndim == 2:
            t = t.unsqueeze(0)
        if t.ndim != 3:
            raise ValueError(f"masks must be [n_samples, grid_h, grid_w] or [grid_h, grid_w], got {tuple(t.shape)}")
        out = list(t.unbind(0))
    elif isinstance(masks, Sequence) and not isinstance(masks, str):
        out = [_as_float64(m, f"masks[{i}]") for i, m in enumerate(masks)]
    else:
        raise TypeError(f"masks must be a tensor or a list of per-sample masks, got {type(masks).__name__}")
    if len(out) != n:
        raise ValueError(f"got {n} attention samples but {len(out)} masks; pass one mask per sample")
    return out


def _per_list(values, n: int, name: str) -> list:
    values = list(values.tolist() if isinstance(values, (torch.Tensor, np.ndarray)) else values)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but there are {n} samples")
    return values


def alignment_table(
    attn,
    masks,
    *,
    correct=None,
    sample_ids=None,
    blocks: Sequence[int] | None = None,
    heads: Literal["both", "each", "mean"] = "both",
    metrics: Sequence[str] = ALIGNMENT_METRICS,
    threshold: float = 0.5,
    on_empty: Literal["nan", "raise"] = "nan",
    progress: bool = False,
    layers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Alignment metrics of every sample, decoder block and head as one tidy table.

    Args:
        attn: per-sample attention: an :class:`~interp.vlm.ImageAttention` (its traced
            ``blocks`` label the rows), a list of ``[n_blocks, n_heads, grid_h, grid_w]`` tensors
            (grids may differ between samples), a stacked ``[n_samples, n_blocks, n_heads, gh, gw]``
            tensor, or one sample's 4-D tensor.
        masks: per-sample coverage masks: a list of ``[gh, gw]`` or a ``[n_samples, gh, gw]`` tensor.
        correct: optional per-sample answer correctness (bool), copied into a ``correct`` column.
        sample_ids: optional per-sample ids for the ``sample`` column (default ``0..n-1``).
        blocks: decoder-block index of each traced row (default ``0..n_blocks-1``), e.g. the
            ``blocks`` the trace was run with (``layers=``: its deprecated old name).
        heads: ``"each"`` -> one row per head (int); ``"mean"`` -> one row for the head-mean map
            (maps averaged over heads first, then the metric); ``"both"`` -> both.
        metrics: subset of :data:`ALIGNMENT_METRICS`.
        threshold: coverage threshold of the binary mask used by ``auroc``.
        on_empty: ``"nan"`` (warn, metrics NaN) or ``"raise"`` for samples whose mask has no
            patch with coverage > 0.
        progress: show a tqdm bar over samples.

    Returns:
        DataFrame with columns ``sample, block, head`` (+ ``correct``) and one column per metric;
        ``head`` is an int or the string ``"mean"``.
    """
    blocks = renamed("blocks", blocks, "layers", layers, None, "alignment_table")
    if isinstance(attn, ImageAttention):
        blocks = attn.blocks if blocks is None else blocks
        attn = attn.patches
    unknown = [m for m in metrics if m not in ALIGNMENT_METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(ALIGNMENT_METRICS)}")
    if heads not in ("both", "each", "mean"):
        raise ValueError(f"heads must be 'both', 'each' or 'mean', got {heads!r}")
    if on_empty not in ("nan", "raise"):
        raise ValueError(f"on_empty must be 'nan' or 'raise', got {on_empty!r}")
    _check_threshold(threshold)
    samples = _samples(attn)
    n = len(samples)
    if n == 0:
        raise ValueError("attn has no samples")
    mask_list = _masks(masks, n)
    ids = list(range(n)) if sample_ids is None else _per_list(sample_ids, n, "sample_ids")
    if len(set(ids)) != n:
        raise ValueError("sample_ids must be unique (the aggregation helpers pair rows by sample id)")
    if correct is not None:
        correct = _per_list(correct, n, "correct")
        if not all(isinstance(c, (bool, np.bool_)) or c in (0, 1) for c in correct):
            raise ValueError("correct must hold one bool per sample")
        correct = [bool(c) for c in correct]
    n_blocks = samples[0].shape[0]
    block_ids = list(range(n_blocks)) if blocks is None else [int(x) for x in blocks]
    if len(block_ids) != n_blocks:
        raise ValueError(f"blocks has {len(block_ids)} entries but attn has {n_blocks} block rows")

    frames, empty = [], []
    for i, (a, m) in enumerate(tqdm(list(zip(samples, mask_list, strict=True)), disable=not progress, desc="align")):
        where = f" of sample {ids[i]!r}"
        if a.shape[0] != n_blocks:
            raise ValueError(f"attn{where} has {a.shape[0]} block rows, expected {n_blocks} like the first sample")
        a = _as_float64(a, "attn")
        _check_attn(a, where)
        _check_mask(m, tuple(a.shape[-2:]), where)
        if not bool((m > 0).any()):
            if on_empty == "raise":
                raise ValueError(f"mask{where} is empty (no patch with coverage > 0); the box may lie outside the crop")
            empty.append(ids[i])
        maps, labels = [], []
        if heads in ("each", "both"):
            maps.append(a)
            labels += list(range(a.shape[1]))
        if heads in ("mean", "both"):
            maps.append(a.mean(1, keepdim=True))
            labels.append("mean")
        x = torch.cat(maps, 1)  # [L, H', gh, gw]
        cols = {}
        for name in metrics:
            if name == "mass":
                cols[name] = _mass(x, m, normalize=True)
            elif name == "mass_total":
                cols[name] = _mass(x, m, normalize=False)
            elif name == "image_share":
                cols[name] = x.flatten(-2).sum(-1)
            elif name == "auroc":
                cols[name] = _patch_auroc(x, m, threshold)
            elif name == "pointing":
                cols[name] = _pointing(x, m)
            else:
                cols[name] = _cosine(x, m)
        n_rows = x.shape[0] * x.shape[1]
        frame = {
            "sample": [ids[i]] * n_rows,
            "block": np.repeat(block_ids, x.shape[1]),
            "head": pd.array(labels * x.shape[0], dtype=object),
        }
        if correct is not None:
            frame["correct"] = [correct[i]] * n_rows
        frame.update({k: v.reshape(-1).numpy() for k, v in cols.items()})
        frames.append(pd.DataFrame(frame))
    if empty:
        warnings.warn(
            f"{len(empty)} sample(s) have an empty object mask (no patch with coverage > 0), their metrics are NaN: "
            f"{empty[:10]}{' ...' if len(empty) > 10 else ''}",
            stacklevel=2,
        )
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- aggregation


def _check_table(table: pd.DataFrame, metric: str, extra: Sequence[str] = ()) -> None:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a DataFrame from alignment_table, got {type(table).__name__}")
    missing = [c for c in ("sample", "block", "head", metric, *extra) if c not in table.columns]
    if missing:
        hint = " (pass correct= to alignment_table)" if "correct" in missing else ""
        raise ValueError(
            f"table lacks columns {missing}{hint}; it has {list(table.columns)} (build it with alignment_table)"
        )


def _select_heads(table: pd.DataFrame, head) -> pd.DataFrame:
    if head == "all":
        return table
    heads = [head] if isinstance(head, (int, str, np.integer)) else list(head)
    keep = table["head"].isin(heads)
    if not keep.any():
        raise ValueError(f"head {head!r} not in the table; it has heads {list(pd.unique(table['head']))}")
    return table[keep]


def _interval(values: np.ndarray, ci: float, method: str, n_boot: int, seed: int) -> tuple[float, float]:
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    if method == "t":
        from scipy.stats import t as student_t

        half = student_t.ppf((1 + ci) / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
        return float(values.mean() - half), float(values.mean() + half)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, n, size=(n_boot, n))].mean(1)
    low, high = np.quantile(means, [(1 - ci) / 2, (1 + ci) / 2])
    return float(low), float(high)


def block_curves(
    table: pd.DataFrame,
    metric: str | Sequence[str] = "mass",
    *,
    head="mean",
    split: str | None = "correct",
    ci: float = 0.95,
    method: Literal["t", "bootstrap"] = "t",
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-block mean ± CI of metric(s) over samples, optionally split by a column.

    CI methods: ``"t"`` -> mean ± t_{(1+ci)/2, n-1} · s / √n (s = sample std, ddof 1);
    ``"bootstrap"`` -> percentile bootstrap of the mean: ``n_boot`` resamples with replacement
    drawn as ``numpy.random.default_rng(seed).integers(0, n, (n_boot, n))`` afresh for every
    (metric, block, head, group) cell, CI = the ``(1-ci)/2`` and ``(1+ci)/2`` quantiles
    (numpy's linear interpolation) of the resampled means. NaN values (undefined metrics) are
    dropped first; ``n`` counts the rest; with n < 2 the CI is NaN.

    Args:
        table: output of :func:`alignment_table`.
        metric: one metric column or several.
        head: ``"mean"`` (head-mean rows), an int head, a list of heads, or ``"all"``.
        split: column to split by (``"correct"`` -> groups ``"correct"`` / ``"incorrect"``;
            another column -> its values as strings); ``None`` -> one group ``"all"``.

    Returns:
        DataFrame ``metric, block, head, group, n, mean, std, ci_low, ci_high``.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    if method == "bootstrap" and n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    names = [metric] if isinstance(metric, str) else list(metric)
    rows = []
    for name in names:
        _check_table(table, name, () if split is None else (split,))
        sub = _select_heads(table, head)
        if split is None:
            groups = pd.Series("all", index=sub.index)
        elif split == "correct":
            groups = sub["correct"].map({True: "correct", False: "incorrect"})
            if groups.isna().any():
                raise ValueError("the correct column must be bool")
        else:
            groups = sub[split].astype(str)
        for (block, h, group), cell in sub[name].groupby([sub["block"], sub["head"], groups], sort=True):
            values = cell.to_numpy(dtype=np.float64)
            values = values[~np.isnan(values)]
            low, high = _interval(values, ci, method, n_boot, seed)
            rows.append(
                {
                    "metric": name,
                    "block": block,
                    "head": h,
                    "group": group,
                    "n": len(values),
                    "mean": float(values.mean()) if len(values) else math.nan,
                    "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return pd.DataFrame(rows, columns=["metric", "block", "head", "group", "n", "mean", "std", "ci_low", "ci_high"])


def layer_curves(*args, **kwargs) -> pd.DataFrame:
    """Deprecated name of :func:`block_curves` (its rows are decoder blocks, not hidden states)."""
    warnings.warn("layer_curves is deprecated; use block_curves (same arguments)", DeprecationWarning, stacklevel=2)
    return block_curves(*args, **kwargs)


def correctness_auroc(table: pd.DataFrame, metric: str = "mass", *, head="mean") -> pd.DataFrame:
    """Per decoder block: AUROC of a per-sample alignment score at separating correct from incorrect answers.

    AUROC = P(score of a correct sample > score of an incorrect sample) + ½ P(equal), i.e. the
    Mann-Whitney U of the correct samples / (n_correct · n_incorrect). 0.5 = no relation; > 0.5 =
    correct answers have better-aligned attention. Samples whose score is NaN are dropped for
    that block; NaN if a class is then empty.

    Args:
        table: output of :func:`alignment_table` built with ``correct=``.
        metric: the per-sample score column.
        head: ``"mean"``, an int head, a list of heads or ``"all"``.

    Returns:
        DataFrame ``metric, block, head, auroc, n_correct, n_incorrect``.
    """
    _check_table(table, metric, ("correct",))
    sub = _select_heads(table, head)
    if sub.duplicated(["block", "head", "sample"]).any():
        raise ValueError("table has duplicate (sample, block, head) rows; sample ids must be unique")
    wide = sub.pivot(index=["block", "head"], columns="sample", values=metric)
    labels = sub.drop_duplicates("sample").set_index("sample")["correct"]
    if sub.groupby("sample")["correct"].nunique().max() > 1:
        raise ValueError("correct must be constant within a sample")
    labels = labels.reindex(wide.columns)
    if not labels.map(lambda c: isinstance(c, (bool, np.bool_))).all():
        raise ValueError("the correct column must be bool")
    scores = torch.tensor(wide.to_numpy(dtype=np.float64))
    valid = ~torch.isnan(scores)
    positive = torch.tensor(labels.to_numpy(dtype=bool))
    auc = _auroc(torch.nan_to_num(scores, nan=0.0), positive, valid)
    out = wide.index.to_frame(index=False)
    out.insert(0, "metric", metric)
    out["auroc"] = auc.numpy()
    out["n_correct"] = (valid & positive).sum(1).numpy()
    out["n_incorrect"] = (valid & ~positive).sum(1).numpy()
    return out
