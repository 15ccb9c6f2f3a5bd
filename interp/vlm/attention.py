"""Row-wise attention probabilities for AdaptVis, computed beside the model's own attention kernel.

Tracing attention usually means ``output_attentions=True``, which forces the
whole model onto eager attention and materialises every ``[heads, seq, seq]``
matrix. AdaptVis needs one query row (the last prompt token) per layer, so a
:class:`RowProbe` computes just that row and leaves the layer's output to the
fast kernel. The machinery -- an ``"interp+<kernel>"`` attention function that
runs the model's kernel, then hooks attached to chosen attention modules -- is
generic and lives in :mod:`interp.models.attention`; this module adds the VLM
part:

* :class:`RowProbe` is such a hook. In a probed layer it recomputes the selected
  query rows (:meth:`interp.models.attention.AttentionCall.probs`:
  ``q_rows · kᵀ · scaling``, GQA keys repeated), with the probe's α on the
  image-key columns of the selected heads **before** the mask is added (as in
  the official AdaptVis code), then the model's logit soft-cap if it has one
  (Gemma 2), the mask and an fp32 softmax. The probabilities go to the probe
  (tracing); if α ≠ 1 the rows' outputs for the selected heads are replaced by
  ``probs · V`` (ScalingVis). Extra cost: one ``[heads, rows, seq]`` product per
  probed layer.
* :func:`probing` attaches a probe to the chosen blocks (undone on exit, a
  Ctrl-C included); :func:`watch_image_tokens` keeps the probe's image-key
  columns in sync with each new prompt.

Row selection (:meth:`RowProbe.rows_for`) works in cache coordinates: a call with
``q_len`` queries over ``kv_len`` keys holds positions ``kv_len - q_len ...
kv_len - 1``. ``"last_prompt"`` is the last row of a prefill (a call whose cache
was empty, ``q_len == kv_len``), so decode steps are never touched -- the
official "prefill only" rule without its "attention matrix is square" test.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from interp.models.attention import (
    HOOKS_ATTR,
    PREFIX,
    AttentionCall,
    attention_hooks,
    attention_modules,
    interposed_attention,
)

__all__ = ["RowProbe", "probing", "rows_attention", "attention_modules", "watch_image_tokens", "PROBE_ATTR", "PREFIX"]

#: the attribute a probed attention module carries (the generic hook list of :mod:`interp.models.attention`)
PROBE_ATTR = HOOKS_ATTR
#: the ``"interp+<kernel>"`` attention function (kept under its earlier name)
rows_attention = interposed_attention


@dataclass(eq=False)
class RowProbe:
    """What to do in the probed layers (an :data:`interp.models.attention.AttentionHook`).

    Attributes:
        key_is_image: ``[B, S_prompt]`` bool, image-token positions of the prompt
            (keys past ``S_prompt`` -- generated tokens -- are text).
        rows: ``"last_prompt"`` or absolute (cache) positions of the query rows.
        alpha: multiplier of the image-key logits of those rows (1 = observe only).
        heads: heads to scale (``None`` = all); tracing always records all heads.
        record: keep the probabilities in :attr:`records`.
        records: ``{layer_idx: [B, H, n_rows, kv_len] float32}``.
    """

    key_is_image: torch.Tensor | None = None
    rows: str | Sequence[int] = "last_prompt"
    alpha: float = 1.0
    heads: Sequence[int] | None = None
    record: bool = False
    records: dict[int, torch.Tensor] = field(default_factory=dict)

    def rows_for(self, q_len: int, kv_len: int) -> list[int]:
        """Indices (within this call's queries) of the rows to recompute."""
        if self.rows == "last_prompt":
            return [q_len - 1] if q_len == kv_len else []
        first = kv_len - q_len
        return [p - first for p in self.rows if first <= p < kv_len]

    def image_columns(self, kv_len: int, device: torch.device) -> torch.Tensor:
        """``[B, kv_len]`` bool: which keys are image tokens."""
        if self.key_is_image is None:
            raise RuntimeError("the probe does not know where the image tokens are; run the model with input_ids")
        img = self.key_is_image.to(device)
        if img.shape[1] >= kv_len:
            return img[:, :kv_len]
        return torch.cat([img, img.new_zeros(img.shape[0], kv_len - img.shape[1])], dim=1)

    def _scale_image_keys(self, call: AttentionCall, logits: torch.Tensor) -> torch.Tensor:
        heads = torch.zeros(call.n_heads, dtype=torch.bool, device=logits.device)
        heads[list(range(call.n_heads)) if self.heads is None else list(self.heads)] = True
        cols = self.image_columns(call.kv_len, logits.device)  # [B, kv]
        scaled = heads[None, :, None, None] & cols[:, None, None, :]
        return torch.where(scaled, logits * self.alpha, logits)

    def __call__(self, call: AttentionCall, out: torch.Tensor, weights):
        selected = self.rows_for(call.q_len, call.kv_len)
        if not selected:
            return out, weights
        pre_mask = partial(self._scale_image_keys, call) if self.alpha != 1.0 else None
        probs = call.probs(selected, pre_mask=pre_mask)
        if self.record:
            self.records[call.module.layer_idx] = probs.detach()
        if self.alpha != 1.0:
            rows = torch.tensor(selected, device=out.device)
            rows_out = call.output(probs)  # [B, r, H, d]
            head_idx = torch.arange(call.n_heads) if self.heads is None else torch.tensor(list(self.heads))
            head_idx = head_idx.to(out.device)
            out = out.clone()
            out[:, rows[:, None], head_idx[None, :]] = rows_out[:, :, head_idx]
        return out, weights


@contextmanager
def probing(model: nn.Module, probe: RowProbe, blocks: Sequence[int]) -> Iterator[RowProbe]:
    """Attach ``probe`` to the attention of decoder blocks ``blocks`` (undone on exit)."""
    config = attention_modules(model)[0].config
    original = config._attn_implementation
    if isinstance(original, str) and original.startswith(PREFIX):
        raise RuntimeError("interp.vlm probes are already active on this model; nested tracing is not supported")
    with attention_hooks(model, dict.fromkeys(blocks, probe)):
        yield probe


def _cache_is_empty(kwargs: dict) -> bool:
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    return cache is None or cache.get_seq_length() == 0


class _ImageTokenWatcher:
    """Forward pre-hook on the VLM: at each new prompt (empty cache) store where its image tokens are."""

    def __init__(self, probe: RowProbe, token_id: int):
        self.probe = probe
        self.token_id = token_id

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not _cache_is_empty(kwargs):
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise ValueError("interp.vlm needs input_ids (not only inputs_embeds) to locate the image tokens")
        self.probe.key_is_image = input_ids == self.token_id


@contextmanager
def watch_image_tokens(model: nn.Module, probe: RowProbe, token_id: int) -> Iterator[RowProbe]:
    """Keep ``probe.key_is_image`` in sync with the prompts ``model`` is called on (hook removed on exit)."""
    handle = model.register_forward_pre_hook(_ImageTokenWatcher(probe, token_id), with_kwargs=True)
    try:
        yield probe
    finally:
        handle.remove()
