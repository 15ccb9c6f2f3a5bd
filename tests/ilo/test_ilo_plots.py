"""ILO figures a reader can read (issue 16): languages by family then script everywhere, titles that
name the model, corpus and k/t, labelled colourbars scaled to the data, the co-occurrence diagonal
masked, identifiable lines, the random-mixing value as a reference line."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

import interp
from interp.data import ILO_CODES, by_family

matplotlib.use("Agg")
from interp.ilo import plot  # noqa: E402

CONTEXT = "tiny-model · slice.jsonl, 31 languages × 6 items"


@pytest.fixture(scope="module")
def result():
    g = torch.Generator().manual_seed(11)
    n_items = 6
    items = torch.randn(n_items, 8, generator=g)
    x = torch.stack([torch.cat([items + 0.9 * torch.randn(n_items, 8, generator=g) for _ in ILO_CODES])
                     for _ in range(3)])  # fmt: skip
    langs = [code for code in ILO_CODES for _ in range(n_items)]
    ids = [j for _ in ILO_CODES for j in range(n_items)]
    topics = [("a", "b")[j % 2] for j in ids]
    return interp.ilo.score(x, langs, k=5, t=3, ids=ids, topics=topics, null=4)


def _texts(figure) -> str:
    found = [t.get_text() for t in figure.findobj(matplotlib.text.Text)]
    return "\n".join(found)


def test_small_multiples_by_family_with_identifiable_lines(result):
    figure = plot.plot_ilo_layers(result, context=CONTEXT)
    titles = [ax.get_title() for ax in figure.axes if ax.get_visible()]
    assert titles[0] == "all languages"
    assert titles[1:] == ["Austronesian (7)", "IE Germanic (5)", "IE Indo-Aryan (4)", "IE Romance (2)",
                          "IE Slavic (6)", "Sino-Tibetan (2)", "other families"]  # fmt: skip
    text = _texts(figure)
    assert CONTEXT in text and "k=5, t=3, cosine" in text
    for code in ILO_CODES:  # every language is named at its line's end
        assert code.split("_")[0] in text, code
    assert "tel (Dravidian)" in text and "random mixing (permutation null)" in text
    slavic = figure.axes[5]
    colours = [line.get_color() for line in slavic.get_lines()[:6]]
    assert len(set(colours)) == 6  # six distinct colours for the six Slavic languages
    reference = [line for line in figure.axes[1].get_lines() if line.get_linestyle() == "--"]
    assert len(reference) == 1  # the null mean is a line, not a band
    assert np.allclose(reference[0].get_ydata(), result.by_layer["null_mean"].to_numpy())
    low, high = figure.axes[1].get_ylim()
    assert low <= 0 and high >= result.by_layer["null_mean"].max()


def test_heatmap_rows_by_family_and_a_colourbar_scaled_to_the_data(result):
    figure = plot.plot_ilo_heatmap(result, context=CONTEXT)
    heat, bar = figure.axes[0], figure.axes[1]
    rows = [t.get_text() for t in heat.get_yticklabels()]
    assert rows == [code.split("_")[0] for code in by_family(ILO_CODES)]
    image = heat.get_images()[0]
    values = result.pivot("ilo").to_numpy()
    assert image.get_clim() == pytest.approx((values.min(), values.max()))
    assert bar.get_ylabel().startswith("ILO (colour range = data range")
    assert CONTEXT in heat.get_title() and "k=5, t=3" in heat.get_title()


def test_cooccurrence_by_family_with_the_diagonal_masked(result):
    layer = 2
    figure = plot.plot_cooccurrence(result, layer=layer, context=CONTEXT)
    ax = figure.axes[0]
    order = by_family(ILO_CODES)
    assert [t.get_text() for t in ax.get_xticklabels()] == [code.split("_")[0] for code in order]
    data = ax.get_images()[0].get_array()
    assert data.mask.diagonal().all() and not data.mask[~np.eye(31, dtype=bool)].any()
    counts = result.cooccurrence[result.layers.index(layer)].double().numpy()
    index = [result.languages.index(code) for code in order]
    share = counts[np.ix_(index, index)] / counts[np.ix_(index, index)].sum(1, keepdims=True)
    assert np.allclose(data.data[~np.eye(31, dtype=bool)], share[~np.eye(31, dtype=bool)])
    first = ax.get_yticklabels()[0].get_text()  # the own-language share is in the row label
    assert first == f"{order[0].split('_')[0]} {100 * share[0, 0]:3.0f}%"
    assert figure.axes[1].get_ylabel() == "share of the row language's neighbour slots"


def test_shares_figure_has_every_measure_and_its_reference(result):
    figure = plot.plot_shares(result, context=CONTEXT)
    left, right = figure.axes[:2]
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["ILO (mean over languages)",
                                                                     "random mixing (permutation null)"]  # fmt: skip
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert labels == ["translation share of neighbours", "translation share of neighbours: chance",
                      "same-topic other-language share", "same-topic other-language share: chance"]  # fmt: skip
    topic = right.get_lines()[2].get_ydata()
    assert np.allclose(topic, result.by_layer["topic_share"].to_numpy())
    assert CONTEXT in figure.get_suptitle()


def test_share_small_multiples_use_the_chance_line(result):
    figure = plot.plot_ilo_layers(result, "topic_share", context=CONTEXT)
    assert "chance (random neighbours)" in _texts(figure)
    dashed = [line for line in figure.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert np.allclose(dashed[0].get_ydata(), result.by_layer["topic_share_chance"].to_numpy())


def test_languages_outside_the_ilo_set_still_plot():
    x = torch.randn(2, 40, 6, generator=torch.Generator().manual_seed(2))
    res = interp.ilo.score(x, ["xx", "yy", "eng_Latn", "zz"] * 10, k=3, t=1)
    figure = plot.plot_ilo_layers(res)
    assert [ax.get_title() for ax in figure.axes if ax.get_visible()] == ["all languages", "other families"]
    rows = [t.get_text() for t in plot.plot_ilo_heatmap(res).axes[0].get_yticklabels()]
    assert rows == ["eng", "xx", "yy", "zz"]
