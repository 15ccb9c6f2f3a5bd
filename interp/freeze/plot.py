"""Figures of the freezing experiment (matplotlib only).

Each function takes a :class:`~interp.freeze.FreezeExperimentResult`, returns
a ``matplotlib.figure.Figure`` and draws nothing global (pass ``ax=`` to draw
into your own axes). The x axis is the hidden-state index: 0 = embeddings,
``i+1`` = output of decoder block ``i``, ``L`` = after the final norm.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_ilo_by_condition", "plot_delta_ilo", "plot_loss_change"]

_XLABEL = "hidden-state index (0 = embeddings; block i -> i+1)"


def _axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _colors(names: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    tuned = [n for n in names if n != "base"]
    colors = {n: cmap(i % 10) for i, n in enumerate(tuned)}
    colors["base"] = (0.0, 0.0, 0.0, 1.0)
    return colors


def _conditions(result) -> list[str]:
    return list(result.conditions["condition"])


def plot_ilo_by_condition(result, ax=None):
    """Mean ILO over languages per hidden-state index, one line per condition (base in black)."""
    fig, ax = _axes(ax, (8, 4))
    names = _conditions(result)
    colors = _colors(names)
    table = result.ilo_by_layer
    for name in names:
        rows = table[table["condition"] == name]
        ax.plot(rows["layer"], rows["ilo_mean"], marker="o", ms=3, lw=2.2 if name == "base" else 1.5,
                color=colors[name], label=name)  # fmt: skip
    ax.set_xlabel(_XLABEL)
    ax.set_ylabel("mean ILO over languages")
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("ILO per layer before and after single-language fine-tuning")
    ax.legend(fontsize=8, frameon=False)
    return fig


def plot_delta_ilo(result, ax=None):
    """ΔILO (condition − base, mean over languages) per hidden-state index.

    One line per fine-tuned condition; a shaded band in the condition's colour
    covers the hidden states that depend on frozen parameters only (ΔILO = 0 there).
    """
    fig, ax = _axes(ax, (8, 4))
    names = [n for n in _conditions(result) if n != "base"]
    colors = _colors(_conditions(result))
    table = result.ilo_by_layer
    ax.axhline(0.0, color="grey", lw=0.8)
    for name in names:
        rows = table[table["condition"] == name]
        ax.plot(rows["layer"], rows["delta_ilo_mean"], marker="o", ms=3, color=colors[name], label=name)
        frozen = rows.loc[rows["frozen_path"], "layer"]
        if len(frozen):
            ax.axvspan(frozen.min() - 0.5, frozen.max() + 0.5, color=colors[name], alpha=0.08)
    ax.set_xlabel(_XLABEL)
    ax.set_ylabel("ΔILO vs base (mean over languages)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lang = result.params.get("train_language")
    ax.set_title(f"ΔILO per layer after fine-tuning{f' on {lang}' if lang else ''} (shaded: frozen path)")
    ax.legend(fontsize=8, frameon=False)
    return fig


def plot_loss_change(result, ax=None, column: str = "delta_loss"):
    """Per-language change of held-out LM loss vs base, grouped bars per fine-tuned condition.

    The fine-tuning language (if known) is marked with ``*``. Negative = better than base.
    """
    loss = result.loss
    names = [n for n in _conditions(result) if n != "base"]
    colors = _colors(_conditions(result))
    langs = list(dict.fromkeys(loss["language"]))
    fig, ax = _axes(ax, (max(6, 0.45 * len(langs) * max(1, len(names)) ** 0.5 + 2), 4))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(langs))
    for j, name in enumerate(names):
        rows = loss[loss["condition"] == name].set_index("language").loc[langs]
        ax.bar(x + (j - (len(names) - 1) / 2) * width, rows[column], width, color=colors[name], label=name)
    train = result.params.get("train_language")
    ax.set_xticks(x, [f"{lang}*" if lang == train else lang for lang in langs], rotation=60, ha="right",
                  fontsize=7)  # fmt: skip
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_ylabel("Δ loss vs base (nats/token)" if column == "delta_loss" else column)
    ax.set_title("held-out LM loss change per language" + (f"\n(* = fine-tuning language {train})" if train else ""))
    if names:
        ax.legend(fontsize=8, frameon=False)
    return fig
