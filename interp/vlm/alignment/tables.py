"""Alignment over a dataset: one tidy table of every sample, decoder block and head, and its aggregates.

Data flow: per-sample attention (an :class:`~interp.vlm.ImageAttention` or tensors) and coverage
masks -> :func:`alignment_table` (the metrics of :mod:`.metrics`, one row per sample × block × head)
-> :func:`block_curves` (mean ± CI per block, split by correctness) and :func:`correctness_auroc`
(per block, how well a sample's alignment separates correct from incorrect answers).
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

from interp._validation import as_tensor, renamed
from interp.vlm.alignment.metrics import (
    ALIGNMENT_METRICS,
    _as_float64,
    _auroc,
    _check_attn,
    _check_mask,
    _check_threshold,
    _cosine,
    _mass,
    _patch_auroc,
    _pointing,
)
from interp.vlm.trace import ImageAttention

__all__ = ["alignment_table", "block_curves", "correctness_auroc", "layer_curves"]


# --------------------------------------------------------------------------- dataset table


def _samples(attn) -> list[torch.Tensor]:
    """Per-sample views in their own dtype/device (converted to float64 one sample at a time)."""
    if isinstance(attn, (torch.Tensor, np.ndarray)):
        t = as_tensor("attn", attn)
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
            t = as_tensor(f"attn[{i}]", x)
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
