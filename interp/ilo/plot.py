"""Figures for ILO results (matplotlib only: offline, no CDN, no JavaScript).

Every figure orders languages the same way -- by family, then script
(:func:`interp.data.languages.by_family`) -- so relatives sit together, and every
title names what was measured: the model, the corpus (``context=``, e.g.
``"gemma-3-270m · flores31.jsonl, 31 languages × 1004 items"``) and k / t / metric.

* :func:`plot_ilo_layers` -- small multiples: one panel per language family (small
  families merged into "other"), one identifiable line per language, plus a panel of the
  all-language mean with the range over languages; the random-mixing value (the
  permutation null's mean, or a share's chance level) is a dashed reference line.
* :func:`plot_ilo_heatmap` -- language × layer, family bands marked, a colourbar
  labelled with the column and scaled to the data.
* :func:`plot_cooccurrence` -- language × language share of neighbour slots at one layer,
  ordered by family; the diagonal (a language's own share) is masked so the colour scale
  shows who neighbours whom, and written into the row labels instead.
* :func:`plot_shares` -- ILO against the translation share and the topic share per layer
  (means over languages), each with its random-mixing reference: does the geometry mix
  languages by meaning or at random?

Each function takes an :class:`interp.ilo.ILOResult` and returns a ``matplotlib.figure.Figure``
(shown inline in Jupyter, ``fig.savefig(...)`` for a PNG); nothing global is changed.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from interp.data.languages import OTHER_FAMILY, by_family, family_groups, language

__all__ = ["plot_ilo_layers", "plot_ilo_heatmap", "plot_cooccurrence", "plot_shares", "REFERENCE"]

#: The random-mixing reference of a column: (column holding it, its legend label).
REFERENCE = {
    "ilo": ("null_mean", "random mixing (permutation null)"),
    "ilo_share_of_null": (None, "random mixing (= 1)"),
    "translation_share": ("translation_share_chance", "chance (random neighbours)"),
    "topic_share": ("topic_share_chance", "chance (random neighbours)"),
}
LABELS = {
    "ilo": "ILO",
    "bridge": "bridge",
    "reach": "reach",
    "ilo_share_of_null": "ILO / random-mixing ILO",
    "translation_share": "translation share of neighbours",
    "topic_share": "same-topic other-language share",
}


def _title(result, what: str, context: str | None) -> str:
    p = result.params
    where = context or p.get("model") or ""
    setting = f"k={p.get('k')}, t={p.get('t')}, {p.get('metric')}{', compat' if p.get('compat') else ''}"
    return f"{what}\n{where}{' · ' if where else ''}{setting}"


def _short(code: str) -> str:
    return code.split("_")[0]


def _reference(result, column: str) -> np.ndarray | float | None:
    """The column's random-mixing value per layer (mean over languages), or None."""
    source, _ = REFERENCE.get(column, (None, None))
    if column == "ilo_share_of_null" and "ilo_share_of_null" in result.table:
        return 1.0
    if source is None or source not in result.table:
        return None
    return result.pivot(source).mean(0).to_numpy()


def _family_of(code: str) -> str:
    try:
        return language(code).family
    except KeyError:
        return OTHER_FAMILY


def plot_ilo_layers(result, column: str = "ilo", context: str | None = None, ax=None, legend: bool = True):
    """``column`` per layer: small multiples by language family plus the all-language mean.

    With ``ax=`` (one axes of your own), one line per family (the mean of its languages)
    and the all-language mean are drawn there instead.
    """
    pivot = result.pivot(column)
    layers = pivot.columns.to_numpy()
    reference = _reference(result, column)
    ref_label = REFERENCE.get(column, (None, "reference"))[1]
    label = LABELS.get(column, column)
    groups = family_groups(list(pivot.index), min_size=2)
    values = pivot.to_numpy()
    top = max(float(np.nanmax(values)), float(np.max(reference)) if reference is not None else 0.0)
    ylim = (min(0.0, float(np.nanmin(values))) - 0.02 * top, 1.06 * top if top > 0 else 1.0)
    if ax is not None:
        fig = ax.figure
        colours = plt.get_cmap("tab10")
        for i, (family, members) in enumerate(groups):
            ax.plot(layers, pivot.loc[members].mean(0), color=colours(i % 10), lw=1.4,
                    label=f"{family} ({len(members)})")  # fmt: skip
        ax.plot(layers, pivot.mean(0), color="black", lw=2.5, label="all languages")
        if reference is not None:
            ax.plot(layers, np.broadcast_to(reference, layers.shape), "k--", lw=1, label=ref_label)
        ax.set(xlabel="hidden-state index (0 = embeddings)", ylabel=label, ylim=ylim)
        ax.set_title(_title(result, f"{label} per layer, mean per family", context), fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if legend:
            ax.legend(fontsize=7, frameon=False, loc="best")
        return fig
    n_panels = len(groups) + 1
    n_cols = min(4, n_panels)
    n_rows = math.ceil(n_panels / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.1 * n_cols, 2.5 * n_rows + 0.9), sharex=True, sharey=True,
                             layout="constrained", squeeze=False)  # fmt: skip
    flat = axes.ravel()
    mean = pivot.mean(0).to_numpy()
    first = flat[0]
    first.fill_between(layers, pivot.min(0), pivot.max(0), color="grey", alpha=0.25, lw=0)
    first.plot(layers, mean, color="black", lw=2.2)
    _label_ends(first, layers, [mean], [f"mean of {len(pivot)}"], ["black"], ylim)
    first.text(0.03, 0.03, "band: range over languages", transform=first.transAxes, fontsize=7, color="0.35")
    first.set_title("all languages", fontsize=9)
    colours = plt.get_cmap("tab10")
    for panel, (family, members) in zip(flat[1:], groups, strict=False):
        lines = [pivot.loc[code].to_numpy() for code in members]
        tones = [colours(i % 10) for i in range(len(members))]
        for line, tone in zip(lines, tones, strict=True):
            panel.plot(layers, line, color=tone, lw=1.3)
        panel.plot(layers, mean, color="black", lw=1, alpha=0.6, ls=":")
        names = [_short(code) if family != OTHER_FAMILY else f"{_short(code)} ({_family_of(code)})" for code in members]
        _label_ends(panel, layers, lines, names, tones, ylim)
        panel.set_title(f"{family} ({len(members)})" if family != OTHER_FAMILY else "other families", fontsize=9)
    for panel in flat[:n_panels]:
        if reference is not None:
            panel.plot(layers, np.broadcast_to(reference, layers.shape), "k--", lw=0.9)
        panel.set_ylim(*ylim)
        panel.grid(alpha=0.25, lw=0.5)
        ticks = MaxNLocator(integer=True, nbins=6).tick_values(layers[0], layers[-1])
        panel.set_xticks([tick for tick in ticks if layers[0] <= tick <= layers[-1]])  # none under the labels
    for panel in flat[n_panels:]:
        panel.set_visible(False)
    for panel in axes[-1]:
        panel.set_xlabel("hidden state (0 = emb.)", fontsize=8)
    for panel in axes[:, 0]:
        panel.set_ylabel(label, fontsize=8)
    if legend:
        keys = [plt.Line2D([], [], color="black", lw=1, ls=":", alpha=0.6, label="all-language mean")]
        if reference is not None:
            keys.append(plt.Line2D([], [], color="black", lw=0.9, ls="--", label=ref_label))
        fig.legend(handles=keys, loc="outside lower center", ncol=len(keys), fontsize=8, frameon=False)
    fig.suptitle(_title(result, f"{label} per layer, by language family", context), fontsize=10)
    return fig


def _label_ends(ax, x, lines, names, colours, ylim, gap: float = 0.075) -> None:
    """Write each line's name at its right end, nudged apart so no two names overlap.

    ``gap`` is the least vertical distance between two names, as a share of the y range.
    """
    span = ylim[1] - ylim[0]
    ends = [float(line[-1]) for line in lines]
    order = sorted(range(len(ends)), key=lambda i: ends[i])
    placed: list[float] = []
    for i in order:
        y = max(ends[i], placed[-1] + gap * span) if placed else ends[i]
        placed.append(y)
    overflow = placed[-1] - (ylim[1] - 0.02 * span) if placed else 0
    if overflow > 0:  # push the stack down, keeping the gaps, but not below the axis
        placed = [max(y - overflow, ylim[0] + gap * span * k) for k, y in enumerate(placed)]
    for i, y in zip(order, placed, strict=True):
        ax.annotate(names[i], xy=(x[-1], ends[i]), xytext=(x[-1] + 0.04 * (x[-1] - x[0] or 1), y),
                    fontsize=7.5, color=colours[i], va="center", ha="left", annotation_clip=False)  # fmt: skip
    ax.set_xlim(x[0], x[-1] + 0.42 * (x[-1] - x[0] or 1))


def _family_bands(ax, codes: list[str], axis: str = "y", colour: str = "white") -> None:
    """Thin lines between families and the family names beside the rows (or above the columns)."""
    families = [_family_of(code) for code in codes]
    starts = [i for i in range(len(codes)) if i == 0 or families[i] != families[i - 1]]
    for i in starts[1:]:
        (ax.axhline if axis == "y" else ax.axvline)(i - 0.5, color=colour, lw=1.6 if colour == "white" else 0.8)


def _family_labels(ax, codes: list[str]) -> None:
    families = [_family_of(code) for code in codes]
    starts = [i for i in range(len(codes)) if i == 0 or families[i] != families[i - 1]] + [len(codes)]
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        ax.annotate(families[a], xy=(1.01, 1 - (a + b) / 2 / len(codes)), xycoords="axes fraction", fontsize=7,
                    va="center", ha="left", color="0.25")  # fmt: skip


def plot_ilo_heatmap(result, column: str = "ilo", context: str | None = None, ax=None, cmap: str = "viridis"):
    """Language × layer heatmap of one column; languages by family, colour scaled to the data."""
    order = by_family(result.languages)
    pivot = result.pivot(column).loc[order]
    values = pivot.to_numpy(dtype=float)
    if ax is None:
        width = max(7.5, 0.36 * len(pivot.columns) + 4.2)
        fig, ax = plt.subplots(figsize=(width, 0.24 * len(pivot) + 1.9), layout="constrained")
    else:
        fig = ax.figure
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    image = ax.imshow(values, aspect="auto", cmap=cmap, vmin=low, vmax=high if high > low else low + 1e-9,
                      interpolation="nearest")  # fmt: skip
    _family_bands(ax, order)
    ax.set_xticks(range(len(pivot.columns)), pivot.columns, fontsize=8)
    ax.set_yticks(range(len(pivot)), [_short(code) for code in order], fontsize=7)
    ax.set_xlabel("hidden-state index (0 = embeddings)")
    label = LABELS.get(column, column)
    ax.set_title(_title(result, f"{label} per language and layer (languages grouped by family)", context), fontsize=9)
    bar = fig.colorbar(image, ax=ax, shrink=0.85, pad=0.16)
    bar.set_label(f"{label} (colour range = data range {low:.2f}–{high:.2f})", fontsize=8)
    _family_labels(ax, order)
    return fig


def plot_cooccurrence(result, layer: int | None = None, context: str | None = None, ax=None):
    """Language × language share of neighbour slots at one layer (default: the best mean-ILO layer).

    Row a, column b: share of language a's neighbour slots filled by language b. The diagonal
    (a's own share) is masked -- it would dominate the colour scale -- and printed in the row
    labels; rows and columns are ordered by family.
    """
    layer = int(result.by_layer["ilo_mean"].idxmax()) if layer is None else layer
    if layer not in result.layers:
        raise KeyError(f"layer {layer} was not scored; available: {result.layers}")
    order = by_family(result.languages)
    index = [result.languages.index(code) for code in order]
    counts = result.cooccurrence[result.layers.index(layer)].double().numpy()[np.ix_(index, index)]
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    own = np.diag(share).copy()
    masked = np.ma.masked_array(share, mask=np.eye(len(order), dtype=bool))
    n = len(order)
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.26 * n + 3.6, 0.26 * n + 1.9), layout="constrained")
    else:
        fig = ax.figure
    colours = plt.get_cmap("magma_r").with_extremes(bad="0.82")
    image = ax.imshow(masked, cmap=colours, vmin=0, vmax=max(float(masked.max()), 1e-9), interpolation="nearest")
    _family_bands(ax, order, "y", "0.45")
    _family_bands(ax, order, "x", "0.45")
    ax.set_xticks(range(n), [_short(code) for code in order], rotation=90, fontsize=7)
    ax.set_yticks(range(n), [f"{_short(code)} {100 * o:3.0f}%" for code, o in zip(order, own, strict=True)],
                  fontsize=7)  # fmt: skip
    ax.set_xlabel("neighbour's language")
    ax.set_ylabel("point's language   (own-language share of its slots; diagonal in grey)", fontsize=8)
    ax.set_title(_title(result, f"who neighbours whom at hidden state {layer} (languages grouped by family)", context),
                 fontsize=9)  # fmt: skip
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the row language's neighbour slots")
    return fig


def plot_shares(result, context: str | None = None):
    """ILO vs the translation and topic shares per layer (means over languages), with their references.

    Left: ILO and the permutation null (random mixing). Right: the share of neighbours that
    are translations, and that are same-topic sentences in another language, each with its
    chance level (neighbours drawn at random). High ILO with shares at chance means the
    languages mix without meeting their translations or topics.
    """
    table = result.by_layer
    layers = table.index.to_numpy()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    left.plot(layers, table["ilo_mean"], color="black", lw=2, label="ILO (mean over languages)")
    if "null_mean" in table:
        left.plot(layers, table["null_mean"], "k--", lw=1, label=REFERENCE["ilo"][1])
    left.set(xlabel="hidden-state index (0 = embeddings)", ylabel="ILO", ylim=(0, 1.05))
    left.set_title("ILO and its random-mixing value", fontsize=9)
    left.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    drawn = False
    for column, colour in (("translation_share", "tab:blue"), ("topic_share", "tab:orange")):
        if column not in table:
            continue
        drawn = True
        right.plot(layers, table[column], color=colour, lw=2, label=LABELS[column])
        chance = f"{column}_chance"
        if chance in table:
            right.plot(layers, table[chance], color=colour, ls="--", lw=1, label=f"{LABELS[column]}: chance")
    if not drawn:
        right.text(0.5, 0.5, "no item ids or topics:\nno share to show", ha="center", va="center",
                   transform=right.transAxes)  # fmt: skip
    right.set(xlabel="hidden-state index (0 = embeddings)", ylabel="share of a point's k neighbours")
    right.set_ylim(bottom=0)
    right.set_title("do neighbours share meaning? (means over languages)", fontsize=9)
    right.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    for panel in (left, right):
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.grid(alpha=0.25, lw=0.5)
    fig.suptitle(_title(result, "ILO vs translation share vs topic share", context), fontsize=10)
    return fig
