"""``trace_image_attention``: where the last prompt token's attention lands on the image.

For each (image, prompt) pair the processor builds the inputs, one forward pass
runs with :mod:`interp.vlm.attention` probes on the traced layers, and the
post-softmax attention of the query row (by default the last prompt token, the
position that predicts the first answer token) is cut at the image-token span
and reshaped row-major to the patch grid -- ``[n_layers, n_heads, grid_h,
grid_w]`` per sample. Every other layer and row runs on the model's own kernel
(SDPA by default); nothing is switched to eager attention.

Layers are **decoder-block indices**: ``layers=[17]`` is the attention inside
block 17 (whose output is hidden state 18 in ``output_hidden_states`` numbering).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from interp.vlm.attention import RowProbe, attention_modules, probing
from interp.vlm.checks import check_alpha
from interp.vlm.geometry import Box, ImageGeometry, box_mask, image_token_id, image_token_spans

__all__ = ["ImageAttention", "trace_image_attention", "resolve_blocks", "prepare_inputs"]


@dataclass
class ImageAttention:
    """Traced attention of a query row to the image patches.

    Attributes:
        patches: ``[n_samples, n_layers, n_heads, grid_h, grid_w]`` float32
            post-softmax probabilities (each sample's full row sums to 1 over
            image *and* text keys; these are the image part, unnormalised).
        image_share: ``[n_samples, n_layers, n_heads]`` total attention on the
            image tokens (the rest is on text tokens).
        layers: traced decoder-block indices (the ``n_layers`` axis).
        geometries: per sample, how its image maps to the grid (for boxes).
        query_positions: per sample, the traced row's index in its prompt tokens.
        prompts: the prompts, as given.
    """

    patches: torch.Tensor
    image_share: torch.Tensor
    layers: list[int]
    geometries: list[ImageGeometry]
    query_positions: list[int]
    prompts: list[str]

    def __len__(self) -> int:
        return self.patches.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        """``[n_layers, n_heads, grid_h, grid_w]`` of sample ``i``."""
        return self.patches[i]

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.patches.shape[-2:])

    def head_mean(self) -> torch.Tensor:
        """``[n_samples, n_layers, grid_h, grid_w]``: attention averaged over heads."""
        return self.patches.mean(dim=2)

    def layer(self, block: int) -> torch.Tensor:
        """``[n_samples, n_heads, grid_h, grid_w]`` of decoder block ``block``."""
        if block not in self.layers:
            raise KeyError(f"block {block} was not traced; traced blocks are {self.layers}")
        return self.patches[:, self.layers.index(block)]

    def box_masks(self, boxes: Sequence[Box | Sequence[Box]]) -> torch.Tensor:
        """``[n_samples, grid_h, grid_w]`` patch coverage of each sample's box(es) (see :func:`box_mask`)."""
        if len(boxes) != len(self):
            raise ValueError(f"got {len(boxes)} boxes for {len(self)} samples; give one box (or list) per sample")
        return torch.stack([box_mask(b, g.image_size, g) for b, g in zip(boxes, self.geometries, strict=True)])

    def share_table(self) -> pd.DataFrame:
        """Tidy ``sample, layer, head, image_share, text_share``."""
        n, n_layers, n_heads = self.image_share.shape
        idx = torch.cartesian_prod(torch.arange(n), torch.arange(n_layers), torch.arange(n_heads))
        share = self.image_share.flatten().double().numpy()
        return pd.DataFrame(
            {
                "sample": idx[:, 0].numpy(),
                "layer": [self.layers[j] for j in idx[:, 1].tolist()],
                "head": idx[:, 2].numpy(),
                "image_share": share,
                "text_share": 1.0 - share,
            }
        )


def resolve_blocks(model: nn.Module, layers) -> list[int]:
    """``"all"`` or decoder-block indices -> a sorted list, with a clear error when out of range."""
    n_blocks = len(attention_modules(model))
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f'layers must be "all" or decoder-block indices, got {layers!r}')
        return list(range(n_blocks))
    blocks = [layers] if isinstance(layers, int) else list(layers)
    if not blocks:
        raise ValueError("layers is empty; pass 'all' or at least one decoder-block index")
    bad = [b for b in blocks if not isinstance(b, int) or not 0 <= b < n_blocks]
    if bad:
        raise ValueError(f"decoder-block indices {bad} are out of range: the model has blocks 0..{n_blocks - 1}")
    return sorted(set(blocks))


def _open_image(image):
    from PIL import Image

    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return im.convert("RGB")
    if not hasattr(image, "size") or not hasattr(image, "convert"):
        raise TypeError(f"images must be PIL images or paths, got {type(image).__name__}")
    return image


def prepare_inputs(model: nn.Module, processor, image, prompt: str) -> tuple[dict, ImageGeometry, tuple[int, int]]:
    """Process one (image, prompt) pair and check its image tokens.

    Returns the model inputs (on the model's device, pixel values in its dtype),
    the image geometry and the ``(start, end)`` span of the image tokens.
    """
    token_id = image_token_id(model)
    image = _open_image(image)
    marker = getattr(processor, "image_token", "<image>")
    if not isinstance(prompt, str):
        raise TypeError(f"prompts must be strings, got {type(prompt).__name__}")
    n_markers = prompt.count(marker)
    if n_markers == 0:
        raise ValueError(
            f"prompt has no {marker} token: put {marker!r} where the image goes, e.g. '{marker}\\nUSER: …'"
        )
    if n_markers != 1:
        raise ValueError(f"prompt has {n_markers} {marker} tokens but one image was given; use one {marker} per image")
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    spans = image_token_spans(inputs["input_ids"], token_id)[0]
    geometry = ImageGeometry.from_processor(processor, image.size)
    if len(spans) != 1:
        raise ValueError(f"expected one run of image tokens after processing, found {len(spans)}")
    start, end = spans[0]
    if end - start != geometry.n_patches:
        raise ValueError(
            f"the image span has {end - start} tokens but the patch grid {geometry.grid} has {geometry.n_patches}; "
            "processor and model disagree on image size / patch size / feature-select strategy"
        )
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    inputs = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}
    return inputs, geometry, (start, end)


def trace_image_attention(
    model: nn.Module,
    processor,
    images,
    prompts: str | Sequence[str],
    layers: str | int | Sequence[int] = "all",
    query: str | int = "last",
    *,
    alpha: float = 1.0,
    progress: bool = True,
) -> ImageAttention:
    """Trace the attention of a prompt position to the image patches, per layer and head.

    Args:
        model: a LLaVA-style VLM (its config has ``image_token_id``).
        processor: its processor (expands ``<image>`` into the patch tokens).
        images: PIL images or paths, one per prompt (or a single image).
        prompts: prompts, each with exactly one ``<image>``.
        layers: ``"all"`` or decoder-block indices.
        query: ``"last"`` (the last prompt token) or a token index into the
            processed prompt (negative counts from the end).
        alpha: trace under ScalingVis: the query row's image-key logits are
            scaled by α in every traced layer and head (``query="last"`` only;
            see :func:`~interp.vlm.scale_image_attention`). The maps are then
            post-intervention. Layers that are not traced are not scaled.
        progress: show a progress bar.

    Returns:
        :class:`ImageAttention` with ``patches [n_samples, n_layers, n_heads, grid_h, grid_w]``.
        Equal (to float32 rounding) to the matching rows of eager ``output_attentions``.
    """
    if isinstance(prompts, str):
        prompts, images = [prompts], [images]
    prompts = list(prompts)
    images = list(images) if isinstance(images, (list, tuple)) else [images]
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images for {len(prompts)} prompts; give one image per prompt")
    if not prompts:
        raise ValueError("no prompts given")
    if not (query == "last" or isinstance(query, int)):
        raise ValueError(f'query must be "last" or a token index, got {query!r}')
    if alpha != 1.0 and query != "last":
        raise ValueError("alpha scales the last prompt row (the official AdaptVis row); use query='last' with alpha")
    alpha = check_alpha(alpha)
    blocks = resolve_blocks(model, layers)
    patches, shares, geometries, positions = [], [], [], []
    for image, prompt in tqdm(list(zip(images, prompts, strict=True)), desc="trace", disable=not progress):
        inputs, geometry, (start, end) = prepare_inputs(model, processor, image, prompt)
        n_tokens = inputs["input_ids"].shape[1]
        position = n_tokens - 1 if query == "last" else query % n_tokens if -n_tokens <= query < n_tokens else None
        if position is None:
            raise ValueError(f"query index {query} is outside the prompt's {n_tokens} tokens")
        is_image = inputs["input_ids"] == image_token_id(model)
        probe = RowProbe(key_is_image=is_image, rows=[position], alpha=alpha, record=True)
        with probing(model, probe, blocks), torch.no_grad():
            model(**inputs, use_cache=False)
        rows = torch.stack([probe.records[b][0, :, 0] for b in blocks])  # [n_layers, H, kv]
        gh, gw = geometry.grid
        patches.append(rows[:, :, start:end].reshape(len(blocks), -1, gh, gw).cpu())
        shares.append(rows[:, :, start:end].sum(-1).cpu())
        geometries.append(geometry)
        positions.append(position)
    if len({p.shape for p in patches}) != 1:
        raise ValueError("samples have different patch grids; trace them separately")
    return ImageAttention(torch.stack(patches), torch.stack(shares), blocks, geometries, positions, prompts)
