"""Tokenise once, then cut length-sorted, padded batches: the one input path of extraction and fine-tuning.

Texts are tokenised one by one exactly as a batch-1 loop would
(``add_special_tokens=True``, so BOS is kept, no truncation unless asked).
A token is *special* if the tokenizer added it or its id is one of
``tokenizer.all_special_ids`` -- a ``"<bos>"`` or ``"<eos>"`` written in the
text becomes that special token, and ``"mean_no_special"`` leaves it out too.
Tokenised texts are grouped into batches of similar length (longest first,
so an out-of-memory error shows up on the first batch rather than the last),
and padded on the requested side. ``position_ids`` are computed from the
attention mask, so left padding does not shift rotary positions: each real
token gets the position it has when its text runs alone. Fine-tuning and the
per-language loss use the same tokenisation and right-padded batches
(:mod:`interp.freeze.batching` adds the loss).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from interp._validation import is_int

__all__ = ["Tokenized", "Batch", "tokenize", "plan_batches", "collate", "pad_id", "token_strings", "cache_kwarg"]


@dataclass(frozen=True)
class Tokenized:
    """One text's token ids and which of them are special tokens."""

    input_ids: list[int]
    special: list[int]


@dataclass(frozen=True)
class Batch:
    """A padded batch. All tensors ``[B, T]``; ``rows`` are text indices."""

    rows: list[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    special_mask: torch.Tensor


def tokenize(tokenizer, texts: list[str], max_length: int | None = None, allow_empty: bool = False) -> list[Tokenized]:
    """Tokenise each text alone; raise if a text yields no tokens (unless ``allow_empty``)."""
    special_ids = frozenset(getattr(tokenizer, "all_special_ids", None) or ())
    out = []
    for i, text in enumerate(texts):
        enc = tokenizer(
            text,
            add_special_tokens=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_special_tokens_mask=True,
            return_attention_mask=False,
        )
        ids = list(enc["input_ids"])
        if not ids and not allow_empty:
            raise ValueError(f"text {i} ({text[:40]!r}) tokenises to zero tokens; remove it or add special tokens")
        added = enc["special_tokens_mask"]
        out.append(Tokenized(ids, [int(bool(a) or tid in special_ids) for tid, a in zip(ids, added, strict=True)]))
    return out


def plan_batches(lengths: list[int], rows: range | list[int], batch_size: int) -> list[list[int]]:
    """Group ``rows`` into batches of ``batch_size``, longest texts first.

    Ties in length keep text order, so the plan is deterministic.
    """
    order = sorted(rows, key=lambda r: (-lengths[r], r))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(tokens: list[Tokenized], rows: list[int], pad_id: int, padding_side: str) -> Batch:
    """Pad the texts ``rows`` into one batch on ``padding_side``."""
    width = max(len(tokens[r].input_ids) for r in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    attention = torch.zeros(shape, dtype=torch.long)
    special = torch.zeros(shape, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(tokens[r].input_ids)
        cols = slice(0, n) if padding_side == "right" else slice(width - n, width)
        input_ids[b, cols] = torch.tensor(tokens[r].input_ids)
        attention[b, cols] = 1
        special[b, cols] = torch.tensor(tokens[r].special)
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(rows, input_ids, attention, position_ids, special)


def pad_id(tokenizer) -> int:
    """The id used for padding: the pad, else eos, else bos token (any valid id: padding is masked out)."""
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, attr, None)
        if is_int(value):
            return int(value)
    return 0


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """Each token id decoded alone (TransformerLens' ``to_str_tokens``): ``" Paris"``, not ``"▁Paris"``.

    A byte-level token that is part of a multi-byte character decodes to ``"\ufffd"``,
    as it does in the tokenizer. Each distinct id is decoded once.
    """
    distinct = sorted(set(ids))
    decoded = tokenizer.batch_decode([[i] for i in distinct], clean_up_tokenization_spaces=False)
    lookup = dict(zip(distinct, decoded, strict=True))
    return [lookup[i] for i in ids]


def cache_kwarg(model) -> str:
    """The name of the KV-cache argument: transformers >= 5.2x calls it ``cache``, older 5.x ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
