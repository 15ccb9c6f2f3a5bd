"""Figures for VLM attention: heat-maps over the image, per-head grids, per-layer alignment curves.

Heat-maps are drawn on the **processed canvas** -- the resized and cropped (or
padded) image the vision tower actually saw -- so every patch is a square cell
and nothing the model did not see is shown; boxes are mapped through the same
:class:`~interp.vlm.geometry.ImageGeometry`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from interp._validation import renamed
from interp.vlm.geometry import Box, ImageGeometry

__all__ = ["processed_view", "plot_image_attention", "plot_head_grid", "plot_alignment_curves"]


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def processed_view(image, geometry: ImageGeometry):
    """The image as the vision tower sees it: ``geometry.processed_size`` RGB (PIL)."""
    from PIL import Image

    sx, sy = geometry.scale
    ox, oy = geometry.offset
    w, h = geometry.image_size
    resized = image.convert("RGB").resize((max(1, round(w * sx)), max(1, round(h * sy))), Image.BICUBIC)
    out_w, out_h = geometry.processed_size
    canvas = Image.new("RGB", (out_w, out_h), (0, 0, 0))
    canvas.paste(resized, (int(round(-ox)), int(round(-oy))))
    return canvas


def plot_image_attention(
    attention: torch.Tensor,
    image,
    geometry: ImageGeometry,
    boxes: Box | Sequence[Box] | dict[str, Box] | None = None,
    ax=None,
    cmap: str = "inferno",
    opacity: float = 0.6,
    title: str | None = None,
    label: str = "attention",
):
    """One ``[grid_h, grid_w]`` map (attention, or a box mask) over the processed image, with the boxes drawn.

    ``boxes`` are in original-image pixels: one box, a list, or ``{label: box}``;
    ``label`` names the colour bar. Returns the matplotlib axes.
    """
    attention = torch.as_tensor(attention, dtype=torch.float32)
    if attention.shape != geometry.grid:
        raise ValueError(f"attention map has shape {tuple(attention.shape)}, the patch grid is {geometry.grid}")
    ax = _axes(ax, (4, 4))
    width, height = geometry.processed_size
    if image is not None:
        ax.imshow(processed_view(image, geometry), extent=(0, width, height, 0))
    shown = ax.imshow(
        attention.numpy(), cmap=cmap, alpha=opacity if image is not None else 1.0, extent=(0, width, height, 0)
    )
    ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label=label)
    if boxes is not None:
        _draw_boxes(ax, geometry, boxes, labels=True)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def _draw_boxes(ax, geometry: ImageGeometry, boxes, labels: bool) -> None:
    """Outline boxes (original pixels; one, a list or ``{label: box}``) on the processed canvas."""
    from matplotlib.patches import Rectangle

    if isinstance(boxes, dict):
        items = list(boxes.items())
    elif len(boxes) and isinstance(boxes[0], (int, float, np.number)):
        items = [("", boxes)]
    else:
        items = [("", b) for b in boxes]
    for label, box in items:
        x0, y0, x1, y1 = geometry.to_processed(box)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="cyan", linewidth=1.5))
        if label and labels:
            ax.text(x0, y0 - 3, label, color="cyan", fontsize=8, va="bottom")


def plot_head_grid(trace, sample: int, block: int | None = None, image=None, boxes=None, ncols: int = 8, *,
                   layer: int | None = None):  # fmt: skip
    """Every head of one traced decoder block for one sample, on a shared colour scale. Returns the figure.

    ``layer=`` is the deprecated old name of ``block``.
    """
    import matplotlib.pyplot as plt

    block = renamed("block", block, "layer", layer, None, "plot_head_grid")
    if block is None:
        raise TypeError("plot_head_grid needs block= (a traced decoder-block index)")
    maps = trace.block(block)[sample]  # [H, gh, gw]
    n_heads = maps.shape[0]
    ncols = min(ncols, n_heads)
    nrows = -(-n_heads // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols, 2.0 * nrows), squeeze=False)
    vmax = float(maps.max())
    geometry = trace.geometries[sample]
    width, height = geometry.processed_size
    canvas = None if image is None else processed_view(image, geometry)
    for h, ax in enumerate(axes.flat):
        if h >= n_heads:
            ax.axis("off")
            continue
        if canvas is not None:
            ax.imshow(canvas, extent=(0, width, height, 0))
        ax.imshow(
            maps[h].numpy(),
            cmap="inferno",
            vmin=0,
            vmax=vmax,
            alpha=0.6 if canvas is not None else 1.0,
            extent=(0, width, height, 0),
        )
        if boxes is not None:
            _draw_boxes(ax, geometry, boxes, labels=False)
        ax.set_title(f"head {h}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"block {block}, sample {sample} (shared scale, max {vmax:.3g})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_alignment_curves(curves: pd.DataFrame, metric: str | None = None, ax=None, title: str | None = None):
    """Per-block mean ± CI curves, one line per group (e.g. correct vs incorrect answers).

    ``curves`` has columns ``block``, ``mean``, ``ci_low``, ``ci_high`` and
    optionally ``group`` and ``metric`` (as returned by
    :func:`interp.vlm.alignment.block_curves`).
    """
    required = {"block", "mean", "ci_low", "ci_high"}
    if not required <= set(curves.columns):
        raise ValueError(f"curves needs columns {sorted(required)}, got {list(curves.columns)}")
    if metric is not None and "metric" in curves.columns:
        curves = curves[curves["metric"] == metric]
    ax = _axes(ax, (6, 3.5))
    groups = curves.groupby("group", sort=False) if "group" in curves.columns else [("all", curves)]
    for name, frame in groups:
        frame = frame.sort_values("block")
        line = ax.plot(frame["block"], frame["mean"], marker="o", markersize=3, label=str(name))[0]
        ax.fill_between(frame["block"], frame["ci_low"], frame["ci_high"], color=line.get_color(), alpha=0.2)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("decoder block")
    ax.set_ylabel(metric or (curves["metric"].iloc[0] if "metric" in curves.columns else "value"))
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax
