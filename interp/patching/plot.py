"""The activation-patching heatmap: sites down, positions (with their tokens) across.

Colour is the normalized metric (0 = the corrupted run, 1 = the clean run) on a
diverging scale centred at 0, so activations that push the wrong way show in
the other colour. matplotlib only; returns the ``Figure``, draws into ``ax=``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from interp.extraction.sites import parse_site_name

__all__ = ["plot_patching"]


def _row_labels(sites: list) -> tuple[list[str], str]:
    """Tick labels and axis label: block numbers when every row is the same kind of site in a block."""
    parsed = [parse_site_name(s) if isinstance(s, str) else None for s in sites]
    kinds = {p[0] for p in parsed if p is not None}
    if all(p is not None and p[1] is not None for p in parsed) and len(kinds) == 1:
        suffix = str(sites[0]).split(".", 2)[2]
        return [str(p[1]) for p in parsed], f"block i of blocks.i.{suffix}"
    return [str(s) for s in sites], "patched site"


def plot_patching(result, ax=None, title: str | None = None):
    """Heatmap of ``result.matrix()`` with token strings on the x axis and a labelled colourbar."""
    wide = result.matrix()
    values = wide.to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    if ax is None:
        fig, ax = plt.subplots(figsize=(min(max(0.55 * n_cols + 2.5, 5), 14), min(max(0.28 * n_rows + 1.8, 3.5), 12)),
                               layout="constrained")  # fmt: skip
    else:
        fig = ax.figure
    limit = max(1.0, float(np.nanmax(np.abs(values)))) if np.isfinite(values).any() else 1.0
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    positions = list(wide.columns)
    labels = [f"{repr(result.tokens[p])[1:-1]} ({p})" for p in positions]
    ax.set_xticks(range(n_cols), labels, rotation=60, ha="right", fontsize=8)
    labels_y, ylabel = _row_labels(list(wide.index))
    ax.set_yticks(range(n_rows), labels_y, fontsize=8)
    ax.set_xlabel("position (clean token)")
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"activation patching: clean {result.clean:.2f}, corrupted {result.corrupted:.2f}",
                 fontsize=10)  # fmt: skip
    fig.colorbar(image, ax=ax, shrink=0.85, label="restored (0 = corrupted, 1 = clean)")
    return fig
