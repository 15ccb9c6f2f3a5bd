"""An interactive attention explorer for Jupyter: sliders for decoder block, head and query token.

``explore_attention(trace, image, boxes)`` shows one map of an :class:`~interp.vlm.ImageAttention`
over the image and lets you move through its decoder blocks, heads (and the head mean) and samples
-- for a :func:`~interp.vlm.trace_query_tokens` trace the samples are the prompt's query tokens,
listed by their strings. It needs ``ipywidgets`` (``pip install "interp[notebook]"``, which also
makes tqdm's progress bars render in notebooks); without it a clear ``ImportError`` says so.
:func:`explorer_frame` draws one frame without widgets (what every slider move redraws).
"""

from __future__ import annotations

from interp.vlm.plot import plot_image_attention

__all__ = ["explore_attention", "explorer_frame"]


def _map(trace, sample: int, block: int, head):
    maps = trace.block(block)[sample].float()  # [H, gh, gw]
    return maps.mean(0) if head == "mean" else maps[int(head)]


def _sample_label(trace, sample: int) -> str:
    tokens = getattr(trace, "query_tokens", None)
    if tokens and len(set(trace.prompts)) == 1 and len(trace) > 1:  # a trace_query_tokens trace
        return f"query token {sample} {tokens[sample]!r}"
    text = f"sample {sample}"
    return text + (f", query {tokens[sample]!r}" if tokens else "")


def explorer_frame(trace, sample: int, block: int, head="mean", image=None, boxes=None, ax=None,
                   style: str = "alpha", scale: str = "block"):  # fmt: skip
    """Draw one explorer frame: the map of (sample, block, head) over the image. Returns the axes.

    ``scale``: ``"block"`` (colour scale = the block's maximum over heads, so heads compare) or
    ``"map"`` (this map's own maximum).
    """
    if scale not in ("block", "map"):
        raise ValueError(f"scale must be 'block' or 'map', got {scale!r}")
    if not 0 <= sample < len(trace):
        raise ValueError(f"sample {sample} out of range: the trace has {len(trace)}")
    values = _map(trace, sample, block, head)
    vmax = float(trace.block(block)[sample].max()) if scale == "block" else None
    share = float(values.sum())
    title = f"{_sample_label(trace, sample)} | block {block}, head {head} | image share {share:.2f}"
    return plot_image_attention(values, image, trace.geometries[sample], boxes, ax=ax, style=style, vmax=vmax,
                                title=title)  # fmt: skip


def explore_attention(trace, image=None, boxes=None, *, style: str = "alpha", figsize=(5.5, 4.5)):
    """Sliders for decoder block, head and sample / query token over one trace (Jupyter only).

    Args:
        trace: an :class:`~interp.vlm.ImageAttention` (e.g. from
            :func:`~interp.vlm.trace_query_tokens`, to step through the prompt's tokens).
        image: the image (one for all samples, or a list, one per sample).
        boxes: boxes to outline (one set for all samples, or a list of sets, one per sample).

    Returns:
        The ``ipywidgets`` container (display it, or leave it last in a cell).
    """
    try:
        import ipywidgets as widgets
    except ImportError as err:
        raise ImportError(
            "explore_attention needs ipywidgets: pip install 'interp[notebook]' (or pip install ipywidgets); "
            "without it use explorer_frame(trace, sample, block, head, image, boxes) for single frames"
        ) from err
    import matplotlib.pyplot as plt
    from IPython.display import display

    n_heads = trace.patches.shape[2]
    per_sample_images = isinstance(image, (list, tuple))
    per_sample_boxes = isinstance(boxes, list) and len(boxes) == len(trace) and not _is_box(boxes[0])
    block = widgets.SelectionSlider(options=list(trace.blocks), value=trace.blocks[0], description="block")
    head = widgets.SelectionSlider(options=["mean", *range(n_heads)], value="mean", description="head")
    sample = widgets.SelectionSlider(
        options=[(_sample_label(trace, i), i) for i in range(len(trace))], value=0, description="sample",
        layout=widgets.Layout(width="95%"),
    )  # fmt: skip
    output = widgets.Output()

    def redraw(*_):
        i = sample.value
        with output:
            output.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=figsize, layout="constrained")
            explorer_frame(trace, i, block.value, head.value, image[i] if per_sample_images else image,
                           boxes[i] if per_sample_boxes else boxes, ax=ax, style=style)  # fmt: skip
            display(fig)
            plt.close(fig)

    for control in (block, head, sample):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([block, head]), sample, output])


def _is_box(x) -> bool:
    return isinstance(x, (tuple, list)) and len(x) == 4 and all(isinstance(v, (int, float)) for v in x)
