"""interp.vlm figures: what each draws, read back from the matplotlib artists -- chance lines at the
chance values, one shared colour scale and colour bar per head grid, see-through overlays, token
strings on the axes -- and the explorer (a frame without widgets; a clear error without ipywidgets)."""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from interp.vlm import (  # noqa: E402
    ImageAttention,
    ImageGeometry,
    alignment_table,
    block_curves,
    correctness_auroc,
    explore_attention,
    explorer_frame,
    plot_alignment_curves,
    plot_correctness_auroc,
    plot_head_grid,
    plot_head_summary,
    plot_image_attention,
    plot_query_alignment,
)

GEO = ImageGeometry((80, 60), (0.8, 0.8), (0.0, 0.0), (64, 48), 8, "resize")  # 6 × 8 grid, 80×60 image
IMAGE = Image.new("RGB", (80, 60), (200, 180, 40))
BOXES = {"red box": (10, 10, 30, 30), "blue ball": (40, 20, 70, 50)}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _trace(n=3, blocks=(0, 1, 2), heads=4, seed=0, tokens=None) -> ImageAttention:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, len(blocks), heads, 6 * 8 + 5, generator=g) * 2
    probs = torch.softmax(logits, -1)[..., :48].reshape(n, len(blocks), heads, 6, 8)
    return ImageAttention(probs, probs.sum((-2, -1)), list(blocks), [GEO] * n, [60] * n, ["p"] * n, tokens)


def _masks(n):
    from interp.vlm import box_mask

    return [box_mask(list(BOXES.values()), (80, 60), GEO)] * n


def test_alignment_curves_draw_the_chance_levels():
    trace = _trace(n=6)
    table = alignment_table(trace, _masks(6), correct=[True, False] * 3)
    curves = block_curves(table, "mass")
    ax = plot_alignment_curves(curves, "mass")
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_label() == "chance (uniform attention)"  # same boxes: one line
    mask = _masks(1)[0].double()
    assert np.allclose(dashed[0].get_ydata(), float(mask.sum()) / 48)  # box area share of the 48 patches
    # groups with different boxes: one chance line per group, at that group's mean chance
    table.loc[table["sample"] % 2 == 1, "mass_chance"] = 0.5
    ax = plot_alignment_curves(block_curves(table, "mass"), "mass")
    dashed = {ln.get_label(): ln.get_ydata() for ln in ax.get_lines() if ln.get_linestyle() == "--"}
    assert set(dashed) == {"chance, correct", "chance, incorrect"}
    assert np.allclose(dashed["chance, incorrect"], 0.5)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "correct (n=3)" in legend
    with pytest.raises(ValueError, match="no rows for metric"):
        plot_alignment_curves(curves, "cosine")


def test_correctness_auroc_plot_has_the_half_line():
    table = alignment_table(_trace(n=6), _masks(6), correct=[True, True, False, True, False, False])
    ax = plot_correctness_auroc(pd.concat([correctness_auroc(table, m) for m in ("mass", "pointing")]))
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert np.allclose(lines["chance (0.5)"].get_ydata(), 0.5)
    assert {"mass", "pointing"} <= set(lines) and ax.get_ylim() == (0.0, 1.0)


@pytest.mark.parametrize("style", ["alpha", "contour", "heat"])
def test_overlay_styles_keep_the_image(style):
    values = torch.zeros(6, 8)
    values[1, 2], values[4, 6] = 0.3, 0.1
    ax = plot_image_attention(values, IMAGE, GEO, BOXES, style=style)
    images = ax.get_images()
    assert np.asarray(images[0].get_array()).shape[:2] == (60, 80)  # the original image, full resolution
    if style == "alpha":
        rgba = np.asarray(images[1].get_array())
        assert rgba.shape == (6, 8, 4)
        assert rgba[0, 0, 3] == 0 and rgba[1, 2, 3] == pytest.approx(0.85)  # zero attention: fully clear
        assert 0 < rgba[4, 6, 3] < rgba[1, 2, 3]
    elif style == "contour":
        assert len(images) == 1 and ax.collections  # lines only
    else:
        assert images[1].get_alpha() == pytest.approx(0.85)
    assert len(ax.figure.axes) == 2  # the map and its colour bar
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["red box", "blue ball"]
    with pytest.raises(ValueError, match="style must be one of"):
        plot_image_attention(values, IMAGE, GEO, style="glow")


def test_head_grid_blocks_by_heads_one_shared_scale():
    trace = _trace(n=2, blocks=(0, 1, 2), heads=4)
    fig = plot_head_grid(trace, 1, image=IMAGE, boxes=BOXES, blocks="all")
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 12  # 3 blocks × 4 heads
    colorbars = [ax for ax in fig.axes if ax not in panels]
    assert len(colorbars) == 1
    vmax = float(trace.patches[1].max())
    assert colorbars[0].get_ylim()[1] == pytest.approx(vmax, rel=1e-6)
    row_labels = [ax.get_ylabel() for ax in panels if ax.get_ylabel()]
    assert row_labels == ["0", "1", "2"]
    col_titles = [ax.get_title() for ax in panels if ax.get_title()]
    assert col_titles == ["0", "1", "2", "3"]
    single = plot_head_grid(trace, 0, block=2, ncols=2)
    assert len([ax for ax in single.axes if ax.get_images()]) == 4
    with pytest.raises(ValueError, match="were not traced"):
        plot_head_grid(trace, 0, blocks=[5])
    with pytest.raises(TypeError, match="not both"):
        plot_head_grid(trace, 0, block=1, blocks=[1])


def test_head_grid_scales_to_32_by_32():
    trace = _trace(n=1, blocks=range(32), heads=32, seed=1)
    fig = plot_head_grid(trace, 0, blocks="all", width=10)
    assert fig.get_size_inches()[0] == pytest.approx(10)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 32 * 32
    assert len([ax for ax in panels if ax.get_title()]) == 16  # every other head labelled


def test_head_summary_is_centred_on_chance():
    trace = _trace(n=4)
    table = alignment_table(trace, _masks(4))
    ax = plot_head_summary(table, "mass")
    image = ax.get_images()[0]
    values = np.asarray(image.get_array())
    ref = table[table["head"] != "mean"].groupby(["block", "head"])["mass"].mean().unstack().to_numpy()
    assert np.allclose(values, ref)
    chance = table["mass_chance"].mean()
    assert image.norm(chance) == pytest.approx(0.5)  # chance sits at the white middle of the colour map
    assert len(ax.texts) == 3 * 4 and "chance" in ax.get_title()
    with pytest.raises(ValueError, match="no per-head rows"):
        plot_head_summary(table[table["head"] == "mean"])


def test_query_alignment_has_token_strings_on_the_axis():
    tokens = ["USER", ":", "red", "box", "?", "ASSISTANT", ":"]
    trace = _trace(n=len(tokens), tokens=tokens)
    table = alignment_table(trace, _masks(len(tokens)), heads="mean")
    ax = plot_query_alignment(table, trace.query_tokens)
    assert [t.get_text() for t in ax.get_yticklabels()] == tokens
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    assert np.asarray(ax.get_images()[0].get_array()).shape == (7, 3)
    with pytest.raises(ValueError, match="token strings"):
        plot_query_alignment(table, tokens[:3])


def test_explorer_frame_and_missing_ipywidgets(monkeypatch):
    trace = _trace(n=3, tokens=["red", "box", ":"])
    ax = explorer_frame(trace, 2, block=1, head=3, image=IMAGE, boxes=BOXES)
    title = ax.get_title()
    assert "':'" in title and "block 1, head 3" in title
    shown = np.asarray(ax.get_images()[1].get_array())[..., 3]
    assert shown.shape == (6, 8)
    ax = explorer_frame(trace, 0, block=0, head="mean")
    assert np.allclose(np.asarray(ax.get_images()[0].get_array()), trace.patches[0, 0].mean(0).numpy(), atol=1e-7)
    with pytest.raises(ValueError, match="out of range"):
        explorer_frame(trace, 5, block=0)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"interp\[notebook\]"):
        explore_attention(trace, IMAGE, BOXES)


def test_explorer_widgets_when_installed():
    pytest.importorskip("ipywidgets")
    trace = _trace(n=3, tokens=["red", "box", ":"])
    box = explore_attention(trace, IMAGE, BOXES)
    sliders = box.children[0].children
    assert [s.description for s in sliders] == ["block", "head"]
    assert list(sliders[1].options) == ["mean", 0, 1, 2, 3]
    assert [label for label, _ in box.children[1].options][2].endswith("':'")
