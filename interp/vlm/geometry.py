"""Image-token bookkeeping: where the image tokens are, and which image pixels each one saw.

A LLaVA-style processor turns an image of ``(width, height)`` pixels into a
square ``processed`` canvas (336×336 for LLaVA-1.5) and the vision tower cuts
that canvas into a ``grid_h × grid_w`` grid of ``patch × patch`` cells (24×24
for CLIP ViT-L/14-336). Image token ``k`` of an image (CLS dropped, the
``"default"`` feature-select strategy) is the cell at row ``k // grid_w``,
column ``k % grid_w`` -- row-major, as the official AdaptVis code reshapes it.

:class:`ImageGeometry` follows the processor's own pre-processing so boxes
given in original-image pixels land on the right patches:

* ``"crop"`` -- resize the shortest edge to ``S`` (the long edge becomes
  ``int(S * long / short)``, truncated, as transformers computes it), then
  center-crop ``crop_h × crop_w`` with offset ``(resized - crop) // 2``
  (transformers' ``center_crop``; the same formula covers padding when the
  image is smaller than the crop). This is llava-hf's ``CLIPImageProcessor``.
* ``"resize"`` -- resize straight to ``height × width`` (no crop).
* ``"pad"`` -- pad to a square of side ``max(w, h)`` centred at offsets
  ``((side - w) // 2, (side - h) // 2)``, then resize (and crop) as above
  (the original LLaVA ``expand2square``; ``LlavaImageProcessor(do_pad=True)``).

Coordinates are continuous pixel edges: a box ``(x0, y0, x1, y1)`` covers
``x0 ≤ x < x1``; resizing by ``new / old`` scales them linearly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ImageGeometry", "box_mask", "image_token_spans", "image_token_id"]

Box = Sequence[float]


@dataclass(frozen=True)
class ImageGeometry:
    """How one image maps onto the vision tower's patch grid.

    Attributes:
        image_size: original ``(width, height)`` in pixels.
        scale: ``(sx, sy)`` original pixel -> processed pixel.
        offset: ``(ox, oy)`` processed coordinate = original · scale - offset.
        processed_size: ``(width, height)`` of the canvas the vision tower sees.
        patch: patch side in processed pixels.
        mode: ``"crop"``, ``"resize"`` or ``"pad"`` (see the module docstring).
    """

    image_size: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]
    processed_size: tuple[int, int]
    patch: int
    mode: str

    @property
    def grid(self) -> tuple[int, int]:
        """``(grid_h, grid_w)``: patch rows and columns."""
        return self.processed_size[1] // self.patch, self.processed_size[0] // self.patch

    @property
    def n_patches(self) -> int:
        gh, gw = self.grid
        return gh * gw

    @classmethod
    def from_processor(cls, processor, image_size: tuple[int, int], patch: int | None = None) -> ImageGeometry:
        """Geometry of an image of ``image_size = (width, height)`` under ``processor``.

        ``processor`` is a LLaVA processor (its ``image_processor`` and
        ``patch_size`` are used) or an image processor (then give ``patch``).
        """
        image_processor = getattr(processor, "image_processor", processor)
        patch = patch or getattr(processor, "patch_size", None)
        if not patch:
            raise ValueError("the patch size is unknown: pass a LLaVA processor (it has .patch_size) or patch=14")
        width, height = _check_size(image_size)
        size = _as_dict(getattr(image_processor, "size", None))
        crop = _as_dict(getattr(image_processor, "crop_size", None))
        do_resize = getattr(image_processor, "do_resize", True)
        do_crop = getattr(image_processor, "do_center_crop", False)
        # 1. optional pad to a centred square (LlavaImageProcessor's pad_to_square, i.e. expand2square)
        pad_x = pad_y = 0
        w, h = width, height
        if getattr(image_processor, "do_pad", False):
            if not hasattr(image_processor, "pad_to_square"):
                raise ValueError(
                    f"{type(image_processor).__name__} pads (do_pad=True) in a way interp does not model; "
                    "pass ImageGeometry(...) explicitly or a processor with do_pad=False"
                )
            w = h = max(width, height)
            pad_x, pad_y = (w - width) // 2, (h - height) // 2
        # 2. resize (shortest edge, long edge truncated as transformers does; or fixed height × width)
        new_w, new_h = w, h
        if do_resize and "shortest_edge" in size:
            new_w, new_h = _shortest_edge_size(w, h, int(size["shortest_edge"]))
        elif do_resize and {"height", "width"} <= size.keys():
            new_w, new_h = int(size["width"]), int(size["height"])
        elif do_resize:
            raise ValueError(f"unsupported image-processor size {size}; expected shortest_edge or height and width")
        sx, sy = new_w / w, new_h / h
        # 3. optional center crop at offset (resized - crop) // 2
        ox = oy = 0.0
        out_w, out_h = new_w, new_h
        if do_crop:
            out_w, out_h = int(crop["width"]), int(crop["height"])
            ox, oy = float((new_w - out_w) // 2), float((new_h - out_h) // 2)
        mode = "pad" if pad_x or pad_y else "crop" if do_crop else "resize"
        return cls((width, height), (sx, sy), (ox - pad_x * sx, oy - pad_y * sy), (out_w, out_h), int(patch), mode)

    @classmethod
    def pad(cls, image_size: tuple[int, int], side: int = 336, patch: int = 14) -> ImageGeometry:
        """Pad-to-square then resize to ``side × side`` (original LLaVA ``expand2square``)."""
        width, height = _check_size(image_size)
        square = max(width, height)
        s = side / square
        ox, oy = -((square - width) // 2) * s, -((square - height) // 2) * s
        return cls((width, height), (s, s), (ox, oy), (side, side), patch, "pad")

    def to_processed(self, box: Box) -> tuple[float, float, float, float]:
        """A box ``(x0, y0, x1, y1)`` in original pixels -> processed-canvas pixels (unclipped)."""
        x0, y0, x1, y1 = self.check_box(box)
        sx, sy = self.scale
        ox, oy = self.offset
        return x0 * sx - ox, y0 * sy - oy, x1 * sx - ox, y1 * sy - oy

    def patch_box(self, row: int, col: int) -> tuple[float, float, float, float]:
        """The original-image pixels seen by patch ``(row, col)`` (may extend past the image when padded)."""
        sx, sy = self.scale
        ox, oy = self.offset
        p = self.patch
        return (col * p + ox) / sx, (row * p + oy) / sy, ((col + 1) * p + ox) / sx, ((row + 1) * p + oy) / sy

    def check_box(self, box: Box) -> tuple[float, float, float, float]:
        if len(box) != 4:
            raise ValueError(f"a box is (x0, y0, x1, y1) in image pixels, got {box!r}")
        x0, y0, x1, y1 = (float(v) for v in box)
        width, height = self.image_size
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"box {box!r} is empty or inverted: need x0 < x1 and y0 < y1")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise ValueError(
                f"box {box!r} lies (partly) outside the {width}×{height} image; boxes are (x0, y0, x1, y1) "
                "in pixels of the original image, before the processor resizes it"
            )
        return x0, y0, x1, y1


def box_mask(boxes: Box | Sequence[Box] | dict[str, Box], image_size: tuple[int, int], geometry) -> torch.Tensor:
    """Fraction of each patch covered by the box(es): ``[grid_h, grid_w]`` float32 in [0, 1].

    Args:
        boxes: one ``(x0, y0, x1, y1)`` box in original-image pixels, or several
            (a list or ``{label: box}``; their union is covered -- overlaps are
            not counted twice).
        image_size: ``(width, height)`` of the original image.
        geometry: an :class:`ImageGeometry`, or a processor to derive it from.

    Parts of a box that the processor crops away cover no patch.
    """
    if isinstance(boxes, dict):  # {label: box}
        boxes = list(boxes.values())
    geo = geometry if isinstance(geometry, ImageGeometry) else ImageGeometry.from_processor(geometry, image_size)
    if tuple(geo.image_size) != tuple(_check_size(image_size)):
        raise ValueError(f"geometry is for an image of {geo.image_size}, not {tuple(image_size)}")
    if len(boxes) and not isinstance(boxes[0], (int, float, np.number)):
        box_list = [geo.to_processed(b) for b in boxes]
    else:
        box_list = [geo.to_processed(boxes)]
    if not box_list:
        raise ValueError("no boxes given")
    gh, gw = geo.grid
    p = geo.patch
    # Exact union area by coordinate compression: cut the canvas at every box
    # edge and patch line; each elementary rectangle is inside the union or not.
    x_edges = np.clip([b[i] for b in box_list for i in (0, 2)], 0, gw * p)
    y_edges = np.clip([b[i] for b in box_list for i in (1, 3)], 0, gh * p)
    xs = np.unique(np.concatenate([np.arange(gw + 1) * p, x_edges]))
    ys = np.unique(np.concatenate([np.arange(gh + 1) * p, y_edges]))
    cx, cy = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    inside = np.zeros((len(cy), len(cx)), dtype=bool)
    for x0, y0, x1, y1 in box_list:
        inside |= ((cy >= y0) & (cy < y1))[:, None] & ((cx >= x0) & (cx < x1))[None, :]
    area = np.diff(ys)[:, None] * np.diff(xs)[None, :] * inside
    row = np.minimum((cy // p).astype(int), gh - 1)
    col = np.minimum((cx // p).astype(int), gw - 1)
    cover = np.zeros((gh, gw))
    np.add.at(cover, (row[:, None], col[None, :]), area)
    return torch.from_numpy(np.clip(cover / (p * p), 0.0, 1.0)).float()


def image_token_id(model) -> int:
    """The image placeholder id from a VLM's config (``image_token_id``, or the older ``image_token_index``)."""
    config = getattr(model, "config", None)
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise ValueError(
        f"{type(model).__name__} has no image_token_id in its config, so image tokens cannot be located; "
        "interp.vlm needs a LLaVA-style model (e.g. LlavaForConditionalGeneration)"
    )


def image_token_spans(input_ids: torch.Tensor, token_id: int) -> list[list[tuple[int, int]]]:
    """Contiguous runs of ``token_id`` per row of ``input_ids`` ``[B, S]``: ``[[(start, end), ...], ...]``."""
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
    is_img = (input_ids == token_id).to(torch.int8)
    edges = torch.diff(is_img, dim=1, prepend=is_img.new_zeros(len(is_img), 1), append=is_img.new_zeros(len(is_img), 1))
    spans = []
    for row in edges:
        starts = (row == 1).nonzero().flatten().tolist()
        ends = (row == -1).nonzero().flatten().tolist()
        spans.append(list(zip(starts, ends, strict=True)))
    return spans


def _shortest_edge_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """transformers' ``get_resize_output_image_size(default_to_square=False)``: the long edge is truncated."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def _as_dict(size) -> dict:
    if size is None:
        return {}
    if isinstance(size, dict):
        return {k: v for k, v in size.items() if v is not None}
    return {k: getattr(size, k) for k in ("shortest_edge", "height", "width") if getattr(size, k, None) is not None}


def _check_size(image_size) -> tuple[int, int]:
    if len(image_size) != 2 or min(image_size) <= 0:
        raise ValueError(f"image_size must be (width, height) in pixels, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])
