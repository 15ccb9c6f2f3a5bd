"""Attention-to-object alignment metrics of one attention map (tensor level).

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

import torch

from interp._validation import as_tensor

__all__ = ["ALIGNMENT_METRICS", "attention_mass", "cosine_overlap", "patch_auroc", "pointing_game"]

ALIGNMENT_METRICS = ("mass", "mass_total", "image_share", "auroc", "pointing", "cosine")


# --------------------------------------------------------------------------- validation


def _as_float64(x, name: str) -> torch.Tensor:
    return as_tensor(name, x, allow_bool=True).detach().to("cpu", torch.float64)


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
