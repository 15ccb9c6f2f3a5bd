"""Heatmaps of :class:`~interp.similarity.SimilarityMatrix` with the argmax marked.

The Platonic paper summarises a model pair by the *max* over all layer pairs. That statistic is
selection-biased upwards (the best of many noisy entries), so the figure marks where the max is and
says so under the axes; read it against the same max on a baseline (shuffled pairing, another seed).
matplotlib only; returns the ``Figure``, draws into ``ax=`` when given.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_similarity"]


def _short(label) -> str:
    text = str(label)
    return text.split("_")[0] if "_" in text and len(text) > 4 else text


def plot_similarity(result, layer=None, ax=None, mark_argmax: bool = True, cmap: str = "viridis", vmin=None, vmax=None):
    """Heatmap of one similarity matrix (``layer=`` for language × language results).

    The largest entry (off-diagonal for layer × layer and language × language) gets a red box and is
    named in the title, with a note that a max over many pairs is selection-biased. Within one space
    the colour scale spans the off-diagonal entries (the diagonal, a representation against itself,
    would otherwise flatten the rest); pass ``vmin`` / ``vmax`` to override.
    """
    matrix = result._matrix(layer).numpy()
    n_rows, n_cols = matrix.shape
    if result.same_space and n_rows == n_cols > 1:
        off = matrix[~np.eye(n_rows, dtype=bool)]
        vmin = float(np.nanmin(off)) if vmin is None else vmin
        vmax = float(np.nanmax(off)) if vmax is None else vmax
    if ax is None:
        width, height = min(max(0.32 * n_cols + 3, 6.5), 14), min(max(0.3 * n_rows + 2, 4), 12)
        fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    else:
        fig = ax.figure
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
    small = 7 if max(n_rows, n_cols) > 20 else 9
    ax.set_xticks(range(n_cols), [_short(c) for c in result.cols], rotation=90, fontsize=small)
    ax.set_yticks(range(n_rows), [_short(r) for r in result.rows], fontsize=small)
    ax.set_xlabel(f"{result.col_name} (B)")
    ax.set_ylabel(f"{result.row_name} (A)")
    k = f", k={result.params['k']}" if result.params.get("k") is not None else ""
    title = f"{result.metric}{k}" + (f", layer {layer}" if layer is not None else "")
    if mark_argmax:
        row, col, value = result.argmax(layer)
        r, c = list(result.rows).index(row), list(result.cols).index(col)
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        n_pairs = n_rows * n_cols - (min(n_rows, n_cols) if result.same_space else 0)
        title += f"\nmax {value:.3f} at ({row}, {col}); a max over {n_pairs} entries is selection-biased"
    ax.set_title(title, fontsize=10)
    extend = "max" if result.same_space and np.nanmax(matrix) > image.norm.vmax else "neither"
    fig.colorbar(image, ax=ax, shrink=0.8, label=result.metric, extend=extend)
    return fig
