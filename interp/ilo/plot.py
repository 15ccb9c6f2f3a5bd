"""Figures for ILO results (matplotlib only: offline, no CDN, no JavaScript).

Each function takes an :class:`interp.ilo.ILOResult`, returns a
``matplotlib.figure.Figure`` (shown inline in Jupyter, ``fig.savefig(...)`` for
a PNG) and draws nothing global: pass ``ax=`` to draw into your own axes.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_ilo_layers", "plot_ilo_heatmap", "plot_cooccurrence"]


def _axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def plot_ilo_layers(result, column: str = "ilo", ax=None, legend: bool = True):
    """One thin line per language across layers, the mean in bold, the null's mean ± 2 sd as a band."""
    fig, ax = _axes(ax, (9, 4.5))
    pivot = result.pivot(column)
    cmap = plt.get_cmap("tab20", max(len(pivot), 1))
    for i, (language, row) in enumerate(pivot.iterrows()):
        ax.plot(pivot.columns, row.values, color=cmap(i), lw=0.9, alpha=0.7, label=language)
    ax.plot(pivot.columns, pivot.mean(0).values, color="black", lw=2.5, label="mean")
    if column == "ilo" and "null_mean" in result.table:
        null = result.pivot("null_mean").mean(0)
        spread = 2 * result.pivot("null_std").mean(0)
        ax.fill_between(null.index, null - spread, null + spread, color="grey", alpha=0.25, label="null ±2 sd")
    ax.set_xlabel("hidden-state index (0 = embeddings)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(column)
    ax.set_ylim(-0.02, 1.02)
    p = result.params
    ax.set_title(f"{column} per layer (k={p['k']}, t={p['t']}, {p['metric']}{', compat' if p['compat'] else ''})")
    if legend:
        ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def plot_ilo_heatmap(result, column: str = "ilo", ax=None):
    """Language × layer heatmap of one column, languages in the corpus order."""
    pivot = result.pivot(column)
    fig, ax = _axes(ax, (0.35 * len(pivot.columns) + 3, 0.28 * len(pivot) + 1.5))
    image = ax.imshow(pivot.values, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(pivot.columns)), pivot.columns)
    ax.set_yticks(range(len(pivot)), pivot.index, fontsize=7)
    ax.set_xlabel("hidden-state index")
    ax.set_title(column)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def plot_cooccurrence(result, layer: int | None = None, ax=None, normalize: bool = True):
    """Language × language neighbour co-occurrence at one layer (default: the best mean-ILO layer).

    Row a, column b: share of language a's neighbour slots filled by language b.
    """
    layer = int(result.by_layer["ilo_mean"].idxmax()) if layer is None else layer
    if layer not in result.layers:
        raise KeyError(f"layer {layer} was not scored; available: {result.layers}")
    matrix = result.cooccurrence[result.layers.index(layer)].double().numpy()
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    n = len(result.languages)
    fig, ax = _axes(ax, (0.3 * n + 2.5, 0.3 * n + 1.5))
    image = ax.imshow(matrix, cmap="magma", interpolation="nearest")
    labels = [name.split("_")[0] for name in result.languages]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("neighbour's language")
    ax.set_ylabel("point's language")
    ax.set_title(f"neighbour co-occurrence, layer {layer}")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of slots" if normalize else "slots")
    return fig
