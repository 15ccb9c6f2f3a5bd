"""From a backend's per-batch site tensors to the rows of a shard, in text order.

For each length-sorted padded batch the backend returns ``{site: [B, T, *feature]}``;
here attention patterns get their key axis put in text positions
(:func:`align_keys`), every site is pooled with the batch's mask in float32
(:mod:`.pooling`), checked against the output dtype's range, cast, and the rows
are put back in text order. :func:`run_shard` returns one shard's per-site rows.
"""

from __future__ import annotations

import torch

from interp.extraction.pooling import pool
from interp.extraction.sites import Site
from interp.models.inputs import Tokenized, collate, plan_batches

__all__ = ["align_keys", "check_fits", "run_shard"]


def align_keys(pattern: torch.Tensor, attention_mask: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, T, H, T]`` attention with keys in batch columns -> ``[B, T, H, width]`` with keys in text positions.

    Key ``k`` of a row becomes the row's ``k``-th real token whatever the
    padding side (a row's real tokens are contiguous, as :func:`~interp.models.inputs.collate`
    pads); keys past a text's length are 0.
    """
    B, T, H, _ = pattern.shape
    real = attention_mask.to(pattern.device).bool()
    first = real.int().argmax(dim=1)  # [B]: column of each row's first real token
    keys = torch.arange(width, device=pattern.device)
    columns = (first[:, None] + keys[None, :]).clamp(max=T - 1)  # [B, width]
    gathered = pattern.gather(3, columns[:, None, None, :].expand(B, T, H, width))
    inside = keys[None, :] < real.sum(dim=1, keepdim=True)  # [B, width]
    return torch.where(inside[:, None, None, :], gathered, 0.0)


def check_fits(site: Site, values: torch.Tensor | list[torch.Tensor], dtype: torch.dtype) -> None:
    """Refuse to cast finite float32 states that overflow ``dtype`` (silent inf otherwise).

    Gemma-style residual streams reach ~1e5, past float16's 65504.
    """
    limit = torch.finfo(dtype).max
    if limit >= torch.finfo(torch.float32).max:
        return
    values = torch.cat(values) if isinstance(values, list) else values
    if not values.numel():
        return
    peak = values.abs().nan_to_num(nan=0.0, posinf=0.0).amax().item()
    if peak > limit:
        what = f"hidden-state index {site.key}" if site.kind == "hidden" else f"site {site.name!r}"
        raise ValueError(
            f"{what} reaches |h| = {peak:.4g}, beyond the range of {dtype} "
            f"(max {limit:.4g}): the result would hold inf. Use dtype=torch.bfloat16 or torch.float32"
        )


def run_shard(
    runner,
    tokens: list[Tokenized],
    rows: range,
    batch_size: int,
    pooling: str,
    pad: int,
    padding_side: str,
    dtype: torch.dtype,
    key_width: int,
    bar,
) -> list[torch.Tensor]:
    """Extract texts ``rows``; return each site's rows in text order (``runner.sites`` order).

    Pooled: ``[n_texts, *feature]`` per site; ``"none"``: ``[n_tokens, *feature]``.
    """
    sites: list[Site] = runner.sites
    lengths = [len(t.input_ids) for t in tokens]
    pooled: dict[int, list[torch.Tensor]] = {}
    for batch_rows in plan_batches(lengths, rows, batch_size):
        batch = collate(tokens, batch_rows, pad, padding_side)
        with torch.no_grad():
            captured = runner(batch)
        mask = batch.attention_mask.to(runner.device)
        special = batch.special_mask.to(runner.device)
        per_site = []
        for site in sites:
            values = captured[site.key]
            if site.is_pattern:
                values = align_keys(values, mask, key_width)
            out = pool(values, mask, special, pooling)
            check_fits(site, out, dtype)
            per_site.append(out)
        for b, row in enumerate(batch_rows):
            pooled[row] = [site_out[b].to("cpu", dtype) for site_out in per_site]
        bar.update(sum(lengths[r] for r in batch_rows))  # tokens: what a batch costs, so the ETA holds
    ordered = [pooled[r] for r in rows]
    if pooling == "none":
        return [torch.cat([text[a] for text in ordered]) for a in range(len(sites))]
    return [torch.stack([text[a] for text in ordered]) for a in range(len(sites))]
