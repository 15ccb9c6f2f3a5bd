"""Tokenised texts -> padded causal-LM batches, and the summed next-token loss.

Shared by the fine-tuning runner and the per-language loss. Texts are tokenised
one by one with the tokenizer's special tokens (BOS) by the same code as
extraction (:mod:`interp.models.inputs`); a batch is right-padded, and the
loss counts only real next-token targets, so it does not depend on how texts
are batched. The loss is returned as a **sum** over
target tokens plus the number of targets, so callers can normalise over any
set of micro-batches (token-weighted gradient accumulation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from interp._validation import is_int
from interp.models.inputs import Tokenized, collate, tokenize

__all__ = ["tokenize_for_lm", "lm_batch", "summed_nll"]


def tokenize_for_lm(tokenizer, texts: list[str], max_length: int | None) -> list[Tokenized]:
    """Each text's tokens (:func:`interp.models.inputs.tokenize`: special tokens added, truncated to ``max_length``).

    Texts with no token are kept (and skipped by the callers with those of one token: no target).
    """
    if max_length is not None and (not is_int(max_length) or max_length < 2):
        raise ValueError(f"max_length must be None or an int >= 2 (a target needs 2 tokens), got {max_length!r}")
    return tokenize(tokenizer, texts, max_length, allow_empty=True)


def lm_batch(tokens: list[Tokenized], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask``, both ``[B, T]`` int64, on ``device``."""
    batch = collate(tokens, list(range(len(tokens))), pad, "right")
    return batch.input_ids.to(device), batch.attention_mask.to(device)


def summed_nll(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, per_row: bool = False):
    """Summed next-token negative log-likelihood of a right-padded batch.

    Args:
        ids, mask: ``[B, T]`` from :func:`lm_batch`.
        per_row: also return the sum and target count per row.

    Returns:
        ``(total, n_targets)`` -- a scalar tensor (float32, differentiable) and
        an int; with ``per_row`` also ``[B]`` sums and ``[B]`` counts.
    """
    logits = model(input_ids=ids, attention_mask=mask).logits  # [B, T, V]
    targets = ids[:, 1:]
    valid = mask[:, 1:].bool()
    # flat [B*(T-1), V] rows: 2-3x faster on CPU than class-dim-1 over the transposed [B, V, T-1] view
    flat = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    nll = F.cross_entropy(flat, targets.reshape(-1), reduction="none").view(targets.shape)  # [B, T-1]
    nll = nll.masked_fill(~valid, 0.0)
    total = nll.sum()
    count = int(valid.sum())
    if per_row:
        return total, count, nll.sum(1), valid.sum(1)
    return total, count
