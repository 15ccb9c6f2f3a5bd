"""Tokenised texts -> padded causal-LM batches, and the summed next-token loss.

Shared by the fine-tuning runner and the per-language loss. Texts are tokenised
one by one with the tokenizer's special tokens (BOS), like extraction; a batch
is right-padded, and the loss counts only real next-token targets, so it does
not depend on how texts are batched. The loss is returned as a **sum** over
target tokens plus the number of targets, so callers can normalise over any
set of micro-batches (token-weighted gradient accumulation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["tokenize", "collate", "summed_nll"]


def tokenize(tokenizer, texts: list[str], max_length: int | None) -> list[list[int]]:
    """Token ids of each text (special tokens added; truncated to ``max_length`` if given)."""
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length must be None or an int >= 2 (a target needs 2 tokens), got {max_length!r}")
    out = []
    for text in texts:
        enc = tokenizer(text, truncation=max_length is not None, max_length=max_length)
        out.append(list(enc["input_ids"]))
    return out


def pad_id(tokenizer) -> int:
    """Id used for padding (masked out everywhere, so any valid id would do)."""
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


def collate(sequences: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask``, both ``[B, T]`` int64."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def summed_nll(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, per_row: bool = False):
    """Summed next-token negative log-likelihood of a right-padded batch.

    Args:
        ids, mask: ``[B, T]`` from :func:`collate`.
        per_row: also return the sum and target count per row.

    Returns:
        ``(total, n_targets)`` -- a scalar tensor (float32, differentiable) and
        an int; with ``per_row`` also ``[B]`` sums and ``[B]`` counts.
    """
    logits = model(input_ids=ids, attention_mask=mask).logits  # [B, T, V]
    targets = ids[:, 1:]
    valid = mask[:, 1:].bool()
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")  # [B, T-1]
    nll = nll.masked_fill(~valid, 0.0)
    total = nll.sum()
    count = int(valid.sum())
    if per_row:
        return total, count, nll.sum(1), valid.sum(1)
    return total, count
