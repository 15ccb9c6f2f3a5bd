"""``trace_image_attention``: where the last prompt token's attention lands on the image.

For each (image, prompt) pair the processor builds the inputs, one forward pass
runs with :mod:`interp.vlm.attention` probes on the traced blocks, and the
post-softmax attention of the query row (by default the last prompt token, the
position that predicts the first answer token) is cut at the image-token span
and reshaped row-major to the patch grid -- ``[n_blocks, n_heads, grid_h,
grid_w]`` per sample. Every other block and row runs on the model's own kernel
(SDPA by default); nothing is switched to eager attention.

``blocks`` are **decoder-block indices**: ``blocks=[17]`` is the attention inside
block 17 (whose output is hidden state 18 in ``output_hidden_states`` numbering;
``layers`` always means hidden-state indices in ``interp``). The old spelling
``layers=`` / ``ImageAttention.layers`` works for one release with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from interp._validation import check_int, is_int, renamed
from interp.vlm.attention import RowProbe, attention_modules, probing
from interp.vlm.checks import check_alpha
from interp.vlm.geometry import Box, ImageGeometry, box_mask, image_token_id, image_token_spans

__all__ = [
    "ImageAttention",
    "trace_image_attention",
    "trace_query_tokens",
    "resolve_blocks",
    "prepare_batch",
    "prepare_inputs",
]


@dataclass
class ImageAttention:
    """Traced attention of a query row to the image patches.

    Attributes:
        patches: ``[n_samples, n_blocks, n_heads, grid_h, grid_w]`` float32
            post-softmax probabilities (each sample's full row sums to 1 over
            image *and* text keys; these are the image part, unnormalised).
        image_share: ``[n_samples, n_blocks, n_heads]`` total attention on the
            image tokens (the rest is on text tokens).
        blocks: traced decoder-block indices (the ``n_blocks`` axis).
        geometries: per sample, how its image maps to the grid (for boxes).
        query_positions: per sample, the traced row's index in its prompt tokens.
        prompts: the prompts, as given.
        query_tokens: per sample, the query token's string (``None`` if not recorded).
    """

    patches: torch.Tensor
    image_share: torch.Tensor
    blocks: list[int]
    geometries: list[ImageGeometry]
    query_positions: list[int]
    prompts: list[str]
    query_tokens: list[str] | None = None

    def __len__(self) -> int:
        return self.patches.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        """``[n_blocks, n_heads, grid_h, grid_w]`` of sample ``i``."""
        return self.patches[i]

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.patches.shape[-2:])

    def head_mean(self) -> torch.Tensor:
        """``[n_samples, n_blocks, grid_h, grid_w]``: attention averaged over heads."""
        return self.patches.mean(dim=2)

    def block(self, block: int) -> torch.Tensor:
        """``[n_samples, n_heads, grid_h, grid_w]`` of decoder block ``block``."""
        if block not in self.blocks:
            raise KeyError(f"block {block} was not traced; traced blocks are {self.blocks}")
        return self.patches[:, self.blocks.index(block)]

    @property
    def layers(self) -> list[int]:
        """Deprecated name of :attr:`blocks` (decoder-block indices; ``layers`` means hidden states in interp)."""
        warnings.warn("ImageAttention.layers is deprecated; use .blocks (decoder-block indices)", DeprecationWarning,
                      stacklevel=2)  # fmt: skip
        return self.blocks

    def layer(self, block: int) -> torch.Tensor:
        """Deprecated name of :meth:`block`."""
        warnings.warn("ImageAttention.layer() is deprecated; use .block()", DeprecationWarning, stacklevel=2)
        return self.block(block)

    def box_masks(self, boxes: Sequence[Box | Sequence[Box]]) -> torch.Tensor:
        """``[n_samples, grid_h, grid_w]`` patch coverage of each sample's box(es) (see :func:`box_mask`)."""
        if len(boxes) != len(self):
            raise ValueError(f"got {len(boxes)} boxes for {len(self)} samples; give one box (or list) per sample")
        return torch.stack([box_mask(b, g.image_size, g) for b, g in zip(boxes, self.geometries, strict=True)])

    def share_table(self) -> pd.DataFrame:
        """Tidy ``sample, block, head, image_share, text_share``."""
        n, n_blocks, n_heads = self.image_share.shape
        idx = torch.cartesian_prod(torch.arange(n), torch.arange(n_blocks), torch.arange(n_heads))
        share = self.image_share.flatten().double().numpy()
        return pd.DataFrame(
            {
                "sample": idx[:, 0].numpy(),
                "block": [self.blocks[j] for j in idx[:, 1].tolist()],
                "head": idx[:, 2].numpy(),
                "image_share": share,
                "text_share": 1.0 - share,
            }
        )


def resolve_blocks(model: nn.Module, blocks) -> list[int]:
    """``"all"`` or decoder-block indices -> a sorted list, with a clear error when out of range."""
    n_blocks = len(attention_modules(model))
    if isinstance(blocks, str):
        if blocks != "all":
            raise ValueError(f'blocks must be "all" or decoder-block indices, got {blocks!r}')
        return list(range(n_blocks))
    blocks = [blocks] if is_int(blocks) else list(blocks)
    if not blocks:
        raise ValueError("blocks is empty; pass 'all' or at least one decoder-block index")
    bad = [b for b in blocks if not is_int(b) or not 0 <= b < n_blocks]
    if bad:
        raise ValueError(f"decoder-block indices {bad} are out of range: the model has blocks 0..{n_blocks - 1}")
    return sorted({int(b) for b in blocks})


def _open_image(image):
    from PIL import Image

    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return im.convert("RGB")
    if not hasattr(image, "size") or not hasattr(image, "convert"):
        raise TypeError(f"images must be PIL images or paths, got {type(image).__name__}")
    return image


def _check_prompt(prompt, marker: str) -> None:
    if not isinstance(prompt, str):
        raise TypeError(f"prompts must be strings, got {type(prompt).__name__}")
    n_markers = prompt.count(marker)
    if n_markers == 0:
        raise ValueError(
            f"prompt has no {marker} token: put {marker!r} where the image goes, e.g. '{marker}\\nUSER: …'"
        )
    if n_markers != 1:
        raise ValueError(f"prompt has {n_markers} {marker} tokens but one image was given; use one {marker} per image")


def prepare_batch(
    model: nn.Module, processor, images: Sequence, prompts: Sequence[str]
) -> tuple[dict, list[ImageGeometry], list[tuple[int, int]]]:
    """Process (image, prompt) pairs as one left-padded batch and check their image tokens.

    Returns the model inputs ``[B, S]`` (on the model's device, pixel values in
    its dtype), each image's geometry, and each row's ``(start, end)`` image span.
    """
    token_id = image_token_id(model)
    marker = getattr(processor, "image_token", "<image>")
    for prompt in prompts:
        _check_prompt(prompt, marker)
    images = [_open_image(image) for image in images]
    kwargs = {"padding": True, "padding_side": "left"} if len(prompts) > 1 else {}
    inputs = processor(images=images, text=list(prompts), return_tensors="pt", **kwargs)
    geometries = [ImageGeometry.from_processor(processor, image.size) for image in images]
    spans = []
    for row, geometry in zip(image_token_spans(inputs["input_ids"], token_id), geometries, strict=True):
        if len(row) != 1:
            raise ValueError(f"expected one run of image tokens after processing, found {len(row)}")
        start, end = row[0]
        if end - start != geometry.n_patches:
            raise ValueError(
                f"the image span has {end - start} tokens but the patch grid {geometry.grid} has "
                f"{geometry.n_patches}; processor and model disagree on image size / patch size / feature-select "
                "strategy"
            )
        spans.append((start, end))
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    inputs = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}
    return inputs, geometries, spans


def prepare_inputs(model: nn.Module, processor, image, prompt: str) -> tuple[dict, ImageGeometry, tuple[int, int]]:
    """:func:`prepare_batch` for one pair: ``(inputs, geometry, (start, end))``."""
    inputs, geometries, spans = prepare_batch(model, processor, [image], [prompt])
    return inputs, geometries[0], spans[0]


def _query_positions(query: str | int, attention_mask: torch.Tensor) -> list[int]:
    """Padded-batch column of each row's query token (``query`` counts in the unpadded prompt)."""
    width = attention_mask.shape[1]
    lengths = attention_mask.sum(1).tolist()
    positions = []
    for n in lengths:
        q = n - 1 if query == "last" else query
        if not -n <= q < n:
            raise ValueError(f"query index {query} is outside the prompt's {n} tokens")
        positions.append(width - n + q % n)  # left padding: the prompt occupies the last n columns
    return positions


def trace_image_attention(
    model: nn.Module,
    processor,
    images,
    prompts: str | Sequence[str],
    blocks: str | int | Sequence[int] = "all",
    query: str | int = "last",
    *,
    alpha: float = 1.0,
    batch_size: int = 1,
    progress: bool = True,
    layers=None,
) -> ImageAttention:
    """Trace the attention of a prompt position to the image patches, per decoder block and head.

    Args:
        model: a LLaVA-style VLM (its config has ``image_token_id``).
        processor: its processor (expands ``<image>`` into the patch tokens).
        images: PIL images or paths, one per prompt (or a single image).
        prompts: prompts, each with exactly one ``<image>``.
        blocks: ``"all"`` or decoder-block indices (``layers=``: its deprecated old name).
        query: ``"last"`` (the last prompt token) or a token index into the
            processed prompt (negative counts from the end); padding is not counted.
        alpha: trace under ScalingVis: the query row's image-key logits are
            scaled by α in every traced block and head (``query="last"`` only;
            see :func:`~interp.vlm.scale_image_attention`). The maps are then
            post-intervention. Blocks that are not traced are not scaled.
        batch_size: pairs per forward pass (left-padded; results equal batch 1
            to float rounding, RoPE being relative).
        progress: show a progress bar.

    Returns:
        :class:`ImageAttention` with ``patches [n_samples, n_blocks, n_heads, grid_h, grid_w]``.
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
    blocks = resolve_blocks(model, renamed("blocks", blocks, "layers", layers, "all", "trace_image_attention"))
    batch_size = check_int("batch_size", batch_size, low=1)
    token_id = image_token_id(model)
    patches, shares, geometries, positions, tokens = [], [], [], [], []
    batches = [range(i, min(i + batch_size, len(prompts))) for i in range(0, len(prompts), batch_size)]
    for batch in tqdm(batches, desc="trace", disable=not progress):
        inputs, geos, spans = prepare_batch(model, processor, [images[i] for i in batch], [prompts[i] for i in batch])
        mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
        columns = _query_positions(query, mask)
        rows = sorted(set(columns))
        probe = RowProbe(key_is_image=inputs["input_ids"] == token_id, rows=rows, alpha=alpha, record=True)
        with probing(model, probe, blocks), torch.no_grad():
            model(**inputs, use_cache=False)
        pads = (mask.shape[1] - mask.sum(1)).tolist()
        for j, (geometry, (start, end), column) in enumerate(zip(geos, spans, columns, strict=True)):
            row = torch.stack([probe.records[b][j, :, rows.index(column)] for b in blocks])  # [n_blocks, H, kv]
            gh, gw = geometry.grid
            patches.append(row[:, :, start:end].reshape(len(blocks), -1, gh, gw).cpu())
            shares.append(row[:, :, start:end].sum(-1).cpu())
            geometries.append(geometry)
            positions.append(column - int(pads[j]))
            tokens.append(_token_string(processor, int(inputs["input_ids"][j, column])))
    if len({p.shape for p in patches}) != 1:
        raise ValueError("samples have different patch grids; trace them separately")
    return ImageAttention(torch.stack(patches), torch.stack(shares), blocks, geometries, positions, prompts, tokens)


def _token_string(processor, token_id: int) -> str:
    tokenizer = getattr(processor, "tokenizer", processor)
    return str(tokenizer.convert_ids_to_tokens(token_id))


def trace_query_tokens(
    model: nn.Module,
    processor,
    image,
    prompt: str,
    queries: str | Sequence[int] = "text",
    blocks: str | int | Sequence[int] = "all",
) -> ImageAttention:
    """Trace the attention of many query tokens of one prompt to the image patches, in one forward pass.

    The result is an :class:`ImageAttention` whose *samples are the query tokens*: ``patches
    [n_queries, n_blocks, n_heads, grid_h, grid_w]``, ``query_positions`` the tokens' indices in the
    processed prompt and ``query_tokens`` their strings (for axis labels), the geometry repeated.
    Every alignment function accepts it as it is (one box mask per query: ``[mask] * n_queries``).

    Args:
        model, processor, image, prompt: one (image, prompt) pair (one ``<image>`` in the prompt).
        queries: ``"text"`` (every token after the image, the default), ``"all"`` (every token that
            is not an image token), or token indices into the processed prompt (negative count from
            the end).
        blocks: ``"all"`` or decoder-block indices.
    """
    blocks = resolve_blocks(model, blocks)
    inputs, geometry, (start, end) = prepare_inputs(model, processor, image, prompt)
    n = inputs["input_ids"].shape[1]
    if isinstance(queries, str):
        if queries not in ("text", "all"):
            raise ValueError(f'queries must be "text", "all" or token indices, got {queries!r}')
        rows = list(range(end, n)) if queries == "text" else [*range(start), *range(end, n)]
    else:
        given = [queries] if isinstance(queries, int) else list(queries)
        bad = [q for q in given if not isinstance(q, int) or not -n <= q < n]
        if not given or bad:
            raise ValueError(f"query indices {bad or given} are invalid: the processed prompt has {n} tokens")
        rows = sorted({q % n for q in given})
    if not rows:
        raise ValueError("no query tokens selected (the prompt ends with the image?)")
    token_id = image_token_id(model)
    probe = RowProbe(key_is_image=inputs["input_ids"] == token_id, rows=rows, record=True)
    with probing(model, probe, blocks), torch.no_grad():
        model(**inputs, use_cache=False)
    records = torch.stack([probe.records[b][0] for b in blocks])  # [n_blocks, H, n_rows, kv]
    gh, gw = geometry.grid
    image_part = records[..., start:end].permute(2, 0, 1, 3)  # [n_rows, n_blocks, H, patches]
    patches = image_part.reshape(len(rows), len(blocks), -1, gh, gw).cpu()
    tokens = [_token_string(processor, int(inputs["input_ids"][0, r])) for r in rows]
    return ImageAttention(patches, image_part.sum(-1).cpu(), blocks, [geometry] * len(rows), rows,
                          [prompt] * len(rows), tokens)  # fmt: skip
