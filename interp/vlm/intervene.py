"""ScalingVis: rescale the image-attention logits of a query row by a temperature α.

Semantics (AdaptVis official code, Chen et al. ICML 2025): in the selected
decoder blocks and heads, for the selected query rows, the pre-softmax logits
``QKᵀ/√d`` (after RoPE) of the **image-token key columns** are multiplied by α
**before** the causal/padding mask is added, then the fp32 softmax follows.
α > 1 sharpens attention within the image, α < 1 smooths it; because logits
can have either sign it also changes the total image-vs-text mass.

``rows="last_prompt"`` scales the last prompt token during **prefill only**:
decode steps are never scaled, and later tokens feel the intervention only
through the changed keys/values of that position in blocks ≥ 1 -- exactly the
official behaviour, without its "attention matrix is square" test or its
monkey-patched greedy search. Use it around ``model(...)`` or
``model.generate(...)``::

    with interp.vlm.scale_image_attention(model, alpha=0.5):
        out = model.generate(**inputs, do_sample=False, max_new_tokens=20)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn

from interp._validation import is_int, renamed
from interp.vlm.attention import RowProbe, attention_modules, probing, watch_image_tokens
from interp.vlm.checks import check_alpha
from interp.vlm.geometry import image_token_id
from interp.vlm.trace import resolve_blocks

__all__ = ["scale_image_attention"]


def _resolve_heads(model: nn.Module, heads) -> list[int] | None:
    if isinstance(heads, str):
        if heads != "all":
            raise ValueError(f'heads must be "all" or head indices, got {heads!r}')
        return None
    n_heads = attention_modules(model)[0].config.num_attention_heads
    heads = [heads] if is_int(heads) else list(heads)
    bad = [h for h in heads if not is_int(h) or not 0 <= h < n_heads]
    if not heads or bad:
        raise ValueError(f"head indices {bad or heads} are invalid: the model has heads 0..{n_heads - 1}")
    return sorted({int(h) for h in heads})


def _resolve_rows(rows) -> str | list[int]:
    if rows == "last_prompt":
        return rows
    if isinstance(rows, str):
        raise ValueError(f'rows must be "last_prompt" or absolute token positions, got {rows!r}')
    rows = [rows] if is_int(rows) else list(rows)
    if not rows or any(not is_int(r) or r < 0 for r in rows):
        raise ValueError(f"rows must be non-negative absolute token positions, got {rows!r}")
    return [int(r) for r in rows]


@contextmanager
def scale_image_attention(
    model: nn.Module,
    alpha: float,
    blocks: str | int | Sequence[int] = "all",
    heads: str | int | Sequence[int] = "all",
    rows: str | int | Sequence[int] = "last_prompt",
    *,
    layers=None,
) -> Iterator[RowProbe]:
    """Multiply image-key attention logits of the selected query rows by ``alpha`` (undone on exit).

    Args:
        model: a LLaVA-style VLM (its config has ``image_token_id``).
        alpha: the temperature α > 0 (1 leaves every output bit-identical).
        blocks: ``"all"`` or decoder-block indices (``layers=``: its deprecated old name).
        heads: ``"all"`` or head indices.
        rows: ``"last_prompt"`` (last token of each prefill, decode steps
            untouched) or absolute token positions (as counted in the KV cache).

    Image tokens are found in each new prompt's ``input_ids``
    (``== config.image_token_id``); call the model with ``input_ids``. With
    batches, pad on the left so the last column is every prompt's last token.
    """
    alpha = check_alpha(alpha)
    token_id = image_token_id(model)
    probe = RowProbe(rows=_resolve_rows(rows), alpha=alpha, heads=_resolve_heads(model, heads))
    blocks = resolve_blocks(model, renamed("blocks", blocks, "layers", layers, "all", "scale_image_attention", 4))
    with probing(model, probe, blocks), watch_image_tokens(model, probe, token_id):
        yield probe
