"""Figures for VLM attention: maps over the image, head grids that scale, alignment curves with chance.

Data flow: an :class:`~interp.vlm.ImageAttention` (or one ``[grid_h, grid_w]`` map) and the image
-> :func:`plot_image_attention` / :func:`plot_head_grid` (maps drawn over the image); an alignment
table (:func:`~interp.vlm.alignment_table`) or its aggregates -> :func:`plot_alignment_curves`,
:func:`plot_correctness_auroc`, :func:`plot_head_summary` and :func:`plot_query_alignment`, each
drawing the chance level of the metric (attention that ignores the box).

Maps are drawn on the **processed canvas** -- the resized and cropped (or padded) image the vision
tower actually saw -- so every patch is a square cell and nothing the model did not see is shown;
the image itself is drawn at its own resolution, mapped through the same
:class:`~interp.vlm.geometry.ImageGeometry` as the boxes. Overlays keep the image visible:
``style="alpha"`` (default) colours each patch by its attention with an opacity that grows with
it, so unattended patches stay clear; ``style="contour"`` draws iso-lines only; ``style="heat"``
is a uniform-opacity heat-map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from interp._validation import renamed
from interp.vlm.geometry import Box, ImageGeometry

__all__ = [
    "processed_view",
    "plot_image_attention",
    "plot_head_grid",
    "plot_alignment_curves",
    "plot_correctness_auroc",
    "plot_head_summary",
    "plot_query_alignment",
    "STYLES",
]

#: overlay styles of :func:`plot_image_attention` and :func:`plot_head_grid`
STYLES = ("alpha", "contour", "heat")
_CHANCE_STYLE = dict(linestyle="--", linewidth=1.2)


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
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


def _show_image(ax, image, geometry: ImageGeometry) -> None:
    """The original image at full resolution, placed on the processed canvas (cropped parts fall outside)."""
    sx, sy = geometry.scale
    ox, oy = geometry.offset
    w, h = geometry.image_size
    ax.set_facecolor("black")  # padding, if any
    ax.imshow(np.asarray(image.convert("RGB")), extent=(-ox, w * sx - ox, h * sy - oy, -oy), interpolation="lanczos")


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")


def _overlay(ax, values: np.ndarray, geometry: ImageGeometry, style: str, cmap, vmax: float, opacity: float,
             with_image: bool):  # fmt: skip
    """Draw one ``[gh, gw]`` map; returns a ScalarMappable for the colour bar."""
    import matplotlib as mpl

    width, height = geometry.processed_size
    extent = (0, width, height, 0)
    norm = mpl.colors.Normalize(vmin=0.0, vmax=vmax if vmax > 0 else 1.0)
    cmap = mpl.colormaps[cmap] if isinstance(cmap, str) else cmap
    mappable = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    if not with_image or style == "heat":
        ax.imshow(values, cmap=cmap, norm=norm, alpha=opacity if with_image else 1.0, extent=extent,
                  interpolation="nearest")  # fmt: skip
    elif style == "alpha":
        rgba = cmap(norm(values))
        rgba[..., 3] = opacity * np.clip(norm(values), 0.0, 1.0) ** 0.7  # low attention stays see-through
        ax.imshow(rgba, extent=extent, interpolation="nearest")
    else:  # contour: iso-lines at fractions of the maximum, drawn through the patch centres
        gh, gw = values.shape
        patch = geometry.patch
        xs, ys = (np.arange(gw) + 0.5) * patch, (np.arange(gh) + 0.5) * patch
        top = float(values.max())
        if top > 0:
            levels = top * np.array([0.25, 0.5, 0.75])
            ax.contour(xs, ys, values, levels=levels, cmap=cmap, norm=norm, linewidths=[1.0, 1.6, 2.2])
    return mappable


def plot_image_attention(
    attention: torch.Tensor,
    image,
    geometry: ImageGeometry,
    boxes: Box | Sequence[Box] | dict[str, Box] | None = None,
    ax=None,
    cmap: str = "inferno",
    opacity: float = 0.85,
    title: str | None = None,
    label: str = "attention",
    *,
    style: str = "alpha",
    vmax: float | None = None,
    colorbar: bool = True,
):
    """One ``[grid_h, grid_w]`` map (attention, or a box mask) over the image, with the boxes drawn.

    Args:
        attention: ``[grid_h, grid_w]``.
        image: the original PIL image (or ``None``: the map alone).
        geometry: how the image maps onto the patch grid (``trace.geometries[i]``).
        boxes: in original-image pixels: one box, a list, or ``{label: box}`` (labels drawn).
        style: ``"alpha"`` (opacity grows with attention: the image stays visible), ``"contour"``
            (iso-lines at 25/50/75 % of the maximum) or ``"heat"`` (uniform ``opacity``).
        opacity: the maximum opacity of the overlay.
        vmax: top of the colour scale (default: the map's maximum).
        label: the colour bar's label.

    Returns:
        The matplotlib axes.
    """
    _check_style(style)
    attention = torch.as_tensor(attention, dtype=torch.float32)
    if attention.shape != geometry.grid:
        raise ValueError(f"attention map has shape {tuple(attention.shape)}, the patch grid is {geometry.grid}")
    ax = _axes(ax, (4, 4))
    values = attention.numpy()
    if image is not None:
        _show_image(ax, image, geometry)
    top = float(values.max()) if vmax is None else float(vmax)
    mappable = _overlay(ax, values, geometry, style, cmap, top, opacity, image is not None)
    if colorbar:
        ax.figure.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04, label=label)
    if boxes is not None:
        _draw_boxes(ax, geometry, boxes, labels=True)
    width, height = geometry.processed_size
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def _box_items(boxes) -> list[tuple[str, Box]]:
    if isinstance(boxes, dict):
        return list(boxes.items())
    if len(boxes) and isinstance(boxes[0], (int, float, np.number)):
        return [("", boxes)]
    return [("", b) for b in boxes]


_BOX_COLORS = ("#00e5ff", "#7CFC00", "#ff66ff", "#ffffff")


def _draw_boxes(ax, geometry: ImageGeometry, boxes, labels: bool, linewidth: float = 1.5) -> None:
    """Outline boxes (original pixels; one, a list or ``{label: box}``) on the processed canvas."""
    from matplotlib import patheffects
    from matplotlib.patches import Rectangle

    outline = [patheffects.withStroke(linewidth=linewidth + 1.5, foreground="black")]
    for k, (label, box) in enumerate(_box_items(boxes)):
        color = _BOX_COLORS[k % len(_BOX_COLORS)]
        x0, y0, x1, y1 = geometry.to_processed(box)
        rect = Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=linewidth)
        rect.set_path_effects(outline)
        ax.add_patch(rect)
        if label and labels:
            text = ax.text(x0, y0 - 1, label, color=color, fontsize=8, va="bottom", clip_on=True)
            text.set_path_effects(outline)


def _resolve_grid_blocks(trace, block, blocks) -> list[int]:
    if blocks is None:
        if block is None:
            raise TypeError("plot_head_grid needs block= (one traced decoder block) or blocks= (several, or 'all')")
        return [block]
    if block is not None:
        raise TypeError("pass block= or blocks=, not both")
    chosen = list(trace.blocks) if isinstance(blocks, str) and blocks == "all" else list(blocks)
    missing = [b for b in chosen if b not in trace.blocks]
    if missing or not chosen:
        raise ValueError(f"blocks {missing or chosen} were not traced; traced blocks are {trace.blocks}")
    return chosen


def plot_head_grid(trace, sample: int, block: int | None = None, image=None, boxes=None, ncols: int = 8, *,
                   blocks=None, style: str = "alpha", width: float = 10.0, cmap: str = "inferno",
                   layer: int | None = None):  # fmt: skip
    """Small multiples of every head, on one shared colour scale with one colour bar. Returns the figure.

    Two layouts:

    * ``block=b``: the heads of one decoder block, ``ncols`` per row (as before);
    * ``blocks=[...]`` or ``blocks="all"``: a blocks × heads grid (rows: blocks, columns: heads),
      labelled on the margins -- LLaVA-1.5's 32 × 32 fits at ``width`` inches with panels of
      ``width / 32``; label ticks thin out so they stay readable.

    Args:
        trace: an :class:`~interp.vlm.ImageAttention`.
        sample: which sample (for :func:`~interp.vlm.trace_query_tokens` traces: which query token;
            its string is shown in the title).
        image, boxes: drawn under / over every panel (boxes without labels).
        style: overlay style (see :func:`plot_image_attention`).
        width: figure width in inches (about a notebook's width by default).
        layer: deprecated name of ``block``.
    """
    import matplotlib.pyplot as plt

    _check_style(style)
    block = renamed("block", block, "layer", layer, None, "plot_head_grid")
    chosen = _resolve_grid_blocks(trace, block, blocks)
    maps = trace.patches[sample][[trace.blocks.index(b) for b in chosen]].float()  # [nb, H, gh, gw]
    n_heads = maps.shape[1]
    if len(chosen) == 1:
        ncols = min(ncols, n_heads)
        nrows = -(-n_heads // ncols)
        cells = [(h // ncols, h % ncols, 0, h) for h in range(n_heads)]
    else:
        nrows, ncols = len(chosen), n_heads
        cells = [(r, h, r, h) for r in range(nrows) for h in range(n_heads)]
    panel = width / (ncols + 0.6)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel * nrows + 0.7), squeeze=False,
                             gridspec_kw=dict(wspace=0.04, hspace=0.04 if len(chosen) > 1 else 0.25))  # fmt: skip
    vmax = float(maps.max())
    geometry = trace.geometries[sample]
    width_px, height_px = geometry.processed_size
    small = panel < 0.6
    for ax in axes.flat:
        ax.axis("off")
    mappable = None
    for r, c, bi, h in cells:
        ax = axes[r, c]
        ax.axis("on")
        if image is not None:
            _show_image(ax, image, geometry)
        mappable = _overlay(ax, maps[bi, h].numpy(), geometry, style, cmap, vmax, 0.9, image is not None)
        if boxes is not None:
            _draw_boxes(ax, geometry, boxes, labels=False, linewidth=0.8 if small else 1.2)
        ax.set_xlim(0, width_px)
        ax.set_ylim(height_px, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_linewidth(0.3)
        if len(chosen) == 1:
            ax.set_title(f"head {h}", fontsize=8, pad=2)
        else:
            every = max(1, math.ceil(ncols / 16))
            if r == 0 and h % every == 0:
                ax.set_title(str(h), fontsize=7 if small else 8, pad=2)
            if c == 0 and r % max(1, math.ceil(nrows / 16)) == 0:
                ax.set_ylabel(str(chosen[r]), fontsize=7 if small else 8, rotation=0, ha="right", va="center")
    label = "attention (post-softmax, share of the row)"
    fig.colorbar(mappable, ax=axes, fraction=0.03 if ncols > 8 else 0.04, pad=0.015, label=label, shrink=0.9)
    what = f"sample {sample}"
    tokens = getattr(trace, "query_tokens", None)
    if tokens:
        what += f", query token {tokens[sample]!r}"
    if len(chosen) == 1:
        fig.suptitle(f"block {chosen[0]}, {what}: every head (shared scale, max {vmax:.3g})", fontsize=10)
    else:
        fig.suptitle(f"{what}: decoder blocks (rows) × heads (columns), shared scale", fontsize=10)
        fig.supxlabel("head", fontsize=9)
        fig.supylabel("decoder block", fontsize=9)
    return fig


def _chance_lines(ax, frame: pd.DataFrame, color, label: str | None) -> None:
    if "chance" not in frame.columns or frame["chance"].isna().all():
        return
    ax.plot(frame["block"], frame["chance"], color=color, label=label, **_CHANCE_STYLE)


def plot_alignment_curves(curves: pd.DataFrame, metric: str | None = None, ax=None, title: str | None = None):
    """Per-block mean ± CI curves, one line per group (e.g. correct vs incorrect answers), with chance.

    ``curves`` has columns ``block``, ``mean``, ``ci_low``, ``ci_high`` and optionally ``group``,
    ``metric`` and ``chance`` (as returned by :func:`interp.vlm.alignment.block_curves`). The chance
    level (attention that ignores the box) is a dashed line: one grey line when every group has the
    same chance, else one per group in its colour (the boxes differ between groups).
    """
    required = {"block", "mean", "ci_low", "ci_high"}
    if not required <= set(curves.columns):
        raise ValueError(f"curves needs columns {sorted(required)}, got {list(curves.columns)}")
    if metric is not None and "metric" in curves.columns:
        curves = curves[curves["metric"] == metric]
        if curves.empty:
            raise ValueError(f"no rows for metric {metric!r} in curves")
    ax = _axes(ax, (6, 3.5))
    groups = list(curves.groupby("group", sort=False)) if "group" in curves.columns else [("all", curves)]
    shared = "chance" in curves.columns and curves.groupby("block")["chance"].agg(lambda c: np.ptp(c) < 1e-9).all()
    for name, frame in groups:
        frame = frame.sort_values("block")
        line = ax.plot(frame["block"], frame["mean"], marker="o", markersize=3, label=f"{name} (n={_n(frame)})")[0]
        ax.fill_between(frame["block"], frame["ci_low"], frame["ci_high"], color=line.get_color(), alpha=0.2)
        if not shared:
            _chance_lines(ax, frame, line.get_color(), f"chance, {name}")
    if shared:
        _chance_lines(ax, groups[0][1].sort_values("block"), "0.35", "chance (uniform attention)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("decoder block")
    ax.set_ylabel(metric or (curves["metric"].iloc[0] if "metric" in curves.columns else "value"))
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def _n(frame: pd.DataFrame) -> str:
    if "n" not in frame.columns:
        return "?"
    low, high = int(frame["n"].min()), int(frame["n"].max())
    return str(low) if low == high else f"{low}-{high}"


def plot_correctness_auroc(table: pd.DataFrame, ax=None, title: str | None = None):
    """Per-block AUROC of alignment at separating correct from incorrect answers, chance 0.5 dashed.

    ``table``: :func:`~interp.vlm.correctness_auroc`'s output (one or several metrics: one line each).
    """
    required = {"block", "auroc", "metric"}
    if not required <= set(table.columns):
        raise ValueError(f"table needs columns {sorted(required)} (from correctness_auroc), got {list(table.columns)}")
    ax = _axes(ax, (6, 3.5))
    for name, frame in table.groupby("metric", sort=False):
        frame = frame.sort_values("block")
        ax.plot(frame["block"], frame["auroc"], marker="o", markersize=3, label=str(name))
    ax.axhline(0.5, color="0.35", label="chance (0.5)", **_CHANCE_STYLE)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("decoder block")
    ax.set_ylabel("AUROC, correct vs incorrect")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def _centred_norm(values: np.ndarray, chance: float):
    """A diverging norm whose white middle is the chance level (the data's own range on each side)."""
    import matplotlib as mpl

    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if math.isfinite(chance) and low < chance < high:
        return mpl.colors.TwoSlopeNorm(vmin=low, vcenter=chance, vmax=high)
    if math.isfinite(chance):
        span = max(abs(high - chance), abs(low - chance), 1e-12)
        return mpl.colors.Normalize(vmin=chance - span, vmax=chance + span)
    return mpl.colors.Normalize(vmin=low, vmax=high)


def _chance_colorbar(ax, shown, label: str, chance: float, **kwargs) -> None:
    """Colour bar with the chance level drawn as a black line (named in the bar's label, not over its ticks)."""
    if math.isfinite(chance):
        label = f"{label}\n(black line: chance {chance:.3g})"
    bar = ax.figure.colorbar(shown, ax=ax, label=label, **kwargs)
    if math.isfinite(chance):
        bar.ax.axhline(chance, color="black", linewidth=2)


def plot_head_summary(table: pd.DataFrame, metric: str = "mass", ax=None, title: str | None = None,
                      annotate: bool | None = None, cmap: str = "RdBu_r"):  # fmt: skip
    """Block × head heat-map of a metric's mean over samples, centred on its chance level.

    A diverging colour map puts the mean chance level (``<metric>_chance`` of the table, e.g. the
    boxes' area share for ``mass``) at its white middle: red heads look at the boxes more than
    attention that ignores them would, blue ones less. Scales to any number of heads (cells are
    annotated with their values when the grid is at most 12 × 12).

    Args:
        table: :func:`~interp.vlm.alignment_table` output with per-head rows.
    """

    if metric not in table.columns:
        raise ValueError(f"table has no column {metric!r}; it has {list(table.columns)}")
    heads = table[table["head"] != "mean"]
    if heads.empty:
        raise ValueError("the table has no per-head rows; build it with heads='each' or 'both'")
    grid = heads.pivot_table(index="block", columns="head", values=metric, aggfunc="mean").sort_index()
    chance_col = f"{metric}_chance"
    chance = float(heads[chance_col].mean()) if chance_col in heads.columns else math.nan
    values = grid.to_numpy(dtype=float)
    ax = _axes(ax, (min(10.0, 1.6 + 0.45 * values.shape[1]), 1.2 + 0.4 * values.shape[0]))
    norm = _centred_norm(values, chance)
    shown = ax.imshow(values, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    _chance_colorbar(ax, shown, f"mean {metric}", chance, fraction=0.05, pad=0.02)
    n_blocks, n_heads = values.shape
    ax.set_xticks(range(0, n_heads, max(1, math.ceil(n_heads / 16))))
    ax.set_xticklabels([str(grid.columns[i]) for i in range(0, n_heads, max(1, math.ceil(n_heads / 16)))])
    ax.set_yticks(range(0, n_blocks, max(1, math.ceil(n_blocks / 16))))
    ax.set_yticklabels([str(grid.index[i]) for i in range(0, n_blocks, max(1, math.ceil(n_blocks / 16)))])
    ax.set_xlabel("head")
    ax.set_ylabel("decoder block")
    if annotate or (annotate is None and n_blocks <= 12 and n_heads <= 12):
        for (r, c), v in np.ndenumerate(values):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(norm(v) - 0.5) > 0.3 else "black")  # fmt: skip
    n = heads["sample"].nunique()
    ax.set_title(title or f"{metric} per block and head (mean of {n} samples; chance {chance:.3g})", fontsize=10)
    return ax


def plot_query_alignment(table: pd.DataFrame, tokens: Sequence[str], metric: str = "mass", ax=None,
                         title: str | None = None, cmap: str = "RdBu_r"):  # fmt: skip
    """Query tokens × decoder blocks heat-map of a metric, token strings on the axis, centred on chance.

    ``table``: :func:`~interp.vlm.alignment_table` of a :func:`~interp.vlm.trace_query_tokens`
    trace (its samples are the query tokens, in order); the head-mean rows are used. ``tokens``:
    ``trace.query_tokens``.
    """

    if metric not in table.columns:
        raise ValueError(f"table has no column {metric!r}; it has {list(table.columns)}")
    rows = table[table["head"] == "mean"]
    if rows.empty:
        raise ValueError("the table has no head-mean rows; build it with heads='mean' or 'both'")
    grid = rows.pivot_table(index="sample", columns="block", values=metric, aggfunc="mean").sort_index()
    if len(grid) != len(tokens):
        raise ValueError(f"the table has {len(grid)} query tokens (samples) but {len(tokens)} token strings")
    values = grid.to_numpy(dtype=float)
    chance_col = f"{metric}_chance"
    chance = float(rows[chance_col].mean()) if chance_col in rows.columns else math.nan
    ax = _axes(ax, (1.8 + 0.55 * values.shape[1], 0.8 + 0.22 * values.shape[0]))
    norm = _centred_norm(values, chance)
    shown = ax.imshow(values, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    _chance_colorbar(ax, shown, f"{metric} (head mean)", chance, fraction=0.06, pad=0.03)
    ax.set_yticks(range(len(tokens)))
    ax.set_yticklabels([repr(t) if t.strip() != t or not t else t for t in tokens], fontsize=8)
    ax.set_xticks(range(values.shape[1]))
    ax.set_xticklabels([str(b) for b in grid.columns])
    ax.set_xlabel("decoder block")
    ax.set_ylabel("query token")
    ax.set_title(title or f"which tokens look at the boxes: {metric} (chance {chance:.3g})", fontsize=10)
    return ax
