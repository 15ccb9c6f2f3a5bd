"""Pool per-token hidden states of a padded batch into one vector per text.

Pooling is mask-correct: padding never contributes, whatever side it is on,
so a text pools to the same vector in a batch of 1 or 64. Pads are excluded
with ``torch.where`` rather than by multiplying with the mask, because the
hidden states of fully masked pad rows can be NaN under SDPA and ``NaN * 0``
is NaN.

Modes (:data:`POOLINGS`):

``"mean"``             mean over every real token, special tokens (BOS)
                       included -- the official ILO choice;
``"mean_no_special"``  mean over real tokens that are not special tokens;
``"last"``             the last real token;
``"none"``             no pooling: each text's ``[n_tokens, d_model]`` rows.
"""

from __future__ import annotations

import torch

__all__ = ["POOLINGS", "pool", "check_pooling"]

POOLINGS: tuple[str, ...] = ("mean", "mean_no_special", "last", "none")


def check_pooling(pooling: str) -> str:
    """Return ``pooling`` if known, else raise a ValueError listing the modes."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(map(repr, POOLINGS))}")
    return pooling


def pool(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    special_mask: torch.Tensor,
    pooling: str,
) -> torch.Tensor | list[torch.Tensor]:
    """Pool one layer of a padded batch, in float32.

    Args:
        hidden: ``[B, T, *feature]`` states of one site (any float dtype; any
            feature shape, e.g. ``[D]`` or ``[heads, d_head]``).
        attention_mask: ``[B, T]``, 1 for real tokens, 0 for padding.
        special_mask: ``[B, T]``, 1 for special tokens (BOS, EOS, ...).
        pooling: one of :data:`POOLINGS`.

    Returns:
        ``[B, *feature]`` float32 for pooled modes; for ``"none"`` a list of ``B``
        tensors ``[n_tokens_b, *feature]`` in token order.
    """
    check_pooling(pooling)
    if hidden.ndim != 3:
        feature = hidden.shape[2:]
        out = pool(hidden.reshape(*hidden.shape[:2], -1), attention_mask, special_mask, pooling)
        if pooling == "none":
            return [rows.reshape(-1, *feature) for rows in out]
        return out.reshape(-1, *feature)
    # with device_map="auto" a block's output lives on that block's GPU, the masks on the first one
    real = attention_mask.to(hidden.device).bool()
    special_mask = special_mask.to(hidden.device)
    hidden = hidden.float()
    if pooling == "none":
        return [hidden[b][real[b]] for b in range(hidden.shape[0])]
    if pooling == "last":
        positions = torch.arange(real.shape[1], device=real.device).expand_as(real)
        last = torch.where(real, positions, -1).amax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    keep = real & ~special_mask.bool() if pooling == "mean_no_special" else real
    total = torch.where(keep.unsqueeze(-1), hidden, 0.0).sum(dim=1)
    return total / keep.sum(dim=1, keepdim=True).to(total.dtype)
