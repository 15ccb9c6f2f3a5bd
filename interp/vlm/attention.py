"""Row-wise attention probabilities computed beside the model's own attention kernel.

Tracing attention usually means ``output_attentions=True``, which forces the
whole model onto eager attention and materialises every ``[heads, seq, seq]``
matrix. AdaptVis needs one query row (the last prompt token) per layer, so this
module computes just that row, and leaves the layer's output to the fast kernel.

Design:

* transformers (≥ 4.48) looks each layer's attention function up by name,
  ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]``, and builds the mask
  with ``ALL_MASK_ATTENTION_FUNCTIONS`` under the same name. For a base kernel
  ``b`` (``"sdpa"``, ``"eager"``, ``"flash_attention_2"``...) we register the name
  ``"interp+b"`` in both registries: the mask is ``b``'s mask and the function is
  :func:`rows_attention`, which first calls ``b`` unchanged.
* :func:`probing` switches the *text* config to ``"interp+b"`` and attaches a
  :class:`RowProbe` to the attention modules of the chosen layers (an instance
  attribute). Layers without a probe only run ``b``. On exit the config name and
  the attributes are restored, even after an exception (a Ctrl-C included), and
  ``"interp+b"`` leaves both registries again once no probing uses it.
* In a probed layer, :func:`rows_attention` recomputes the selected query rows
  eagerly -- ``logits = q_rows · kᵀ · scaling`` (GQA keys repeated), then the
  probe's α on image-key columns of the selected heads (**before** the mask is
  added, as in the official AdaptVis code), then the model's logit soft-cap if it
  has one (Gemma 2), then the mask, then an fp32 softmax.
  The probabilities go to the probe (tracing); if α ≠ 1 the rows' outputs for the
  selected heads are replaced by ``probs · V`` (ScalingVis). Extra cost: one
  ``[heads, rows, seq]`` product per probed layer.

Row selection (:meth:`RowProbe.rows_for`) works in cache coordinates: a call with
``q_len`` queries over ``kv_len`` keys holds positions ``kv_len - q_len ...
kv_len - 1``. ``"last_prompt"`` is the last row of a prefill (a call whose cache
was empty, ``q_len == kv_len``), so decode steps are never touched -- the
official "prefill only" rule without its "attention matrix is square" test.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from interp.models import get_adapter

__all__ = ["RowProbe", "probing", "rows_attention", "attention_modules", "watch_image_tokens", "PROBE_ATTR", "PREFIX"]

PROBE_ATTR = "_interp_row_probe"
PREFIX = "interp+"


@dataclass
class RowProbe:
    """What to do in the probed layers.

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


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``[B, H_kv, S, d] -> [B, H_kv * groups, S, d]`` (grouped-query attention)."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _row_mask(attention_mask: torch.Tensor | None, rows: torch.Tensor, q_len: int, kv_len: int) -> torch.Tensor:
    """The mask of the selected rows, ``[B|1, 1|H, r, kv]`` (bool: True = attend; float: additive)."""
    if attention_mask is None or attention_mask.ndim == 2:
        # SDPA's causal fast path (no mask) or a flash-style [B, kv] padding mask.
        positions = kv_len - q_len + rows
        causal = torch.arange(kv_len, device=rows.device)[None, :] <= positions[:, None]
        mask = causal[None, None]
        if attention_mask is not None:
            mask = mask & attention_mask[:, None, None, :kv_len].bool()
        return mask
    return attention_mask[..., rows, :kv_len]


def rows_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The ``"interp+<base>"`` attention function (see the module docstring).

    Shapes (transformers' attention-interface contract): ``query [B, H, q, d]``,
    ``key/value [B, H_kv, kv, d]``; returns ``[B, q, H, d]``.
    """
    base_name = module.config._attn_implementation.removeprefix(PREFIX)
    if base_name == "eager":  # each model file defines its own eager function; use that one
        base = getattr(sys.modules[type(module).__module__], "eager_attention_forward", _eager_attention)
    else:
        base = ALL_ATTENTION_FUNCTIONS[base_name]
    out, _ = base(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    probe: RowProbe | None = module.__dict__.get(PROBE_ATTR)
    if probe is None:
        return out, None
    q_len, kv_len = query.shape[2], key.shape[2]
    selected = probe.rows_for(q_len, kv_len)
    if not selected:
        return out, None
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    groups = query.shape[1] // key.shape[1]
    rows = torch.tensor(selected, device=query.device)
    keys = _repeat_kv(key, groups)
    logits = torch.matmul(query[:, :, rows], keys.transpose(2, 3)) * scaling  # [B, H, r, kv]
    n_heads = query.shape[1]
    if probe.alpha != 1.0:
        heads = torch.zeros(n_heads, dtype=torch.bool, device=query.device)
        heads[list(range(n_heads)) if probe.heads is None else list(probe.heads)] = True
        cols = probe.image_columns(kv_len, query.device)  # [B, kv]
        scaled = heads[None, :, None, None] & cols[:, None, None, :]
        logits = torch.where(scaled, logits * probe.alpha, logits)
    logits = _softcapped(logits, kwargs.get("softcap"))
    mask = _row_mask(attention_mask, rows, q_len, kv_len)
    logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    if probe.record:
        probe.records[module.layer_idx] = probs.detach()
    if probe.alpha != 1.0:
        rows_out = torch.matmul(probs.to(value.dtype), _repeat_kv(value, groups))  # [B, H, r, d]
        head_idx = torch.arange(n_heads) if probe.heads is None else torch.tensor(list(probe.heads))
        head_idx = head_idx.to(query.device)
        out = out.clone()
        out[:, rows[:, None], head_idx[None, :]] = rows_out.transpose(1, 2)[:, :, head_idx]
    return out, None


def _softcapped(logits: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Gemma-2-style logit soft-capping ``softcap · tanh(logits / softcap)`` (after α, before the mask)."""
    return logits if softcap is None else torch.tanh(logits / softcap) * softcap


def _eager_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    """Plain eager attention (transformers' ``eager_attention_forward`` is per-model, not registered)."""
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    groups = query.shape[1] // key.shape[1]
    logits = _softcapped(torch.matmul(query, _repeat_kv(key, groups).transpose(2, 3)) * scaling, softcap)
    if attention_mask is not None:
        logits = logits + attention_mask[..., : key.shape[2]]
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(probs, _repeat_kv(value, groups)).transpose(1, 2).contiguous(), probs


def _register(base: str) -> str:
    """Register ``"interp+<base>"`` in transformers' attention and mask registries (idempotent)."""
    name = PREFIX + base
    if base != "eager" and base not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(f"attention implementation {base!r} is not registered in transformers' AttentionInterface")
    if base not in ALL_MASK_ATTENTION_FUNCTIONS:
        raise ValueError(f"attention implementation {base!r} has no mask function; load the model with sdpa or eager")
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, rows_attention)
    if name not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    return name


#: ``"interp+<base>"`` -> open :func:`probing` contexts using it; ``_ADDED``: those names that
#: probing registered itself (taken out of both registries when their last user exits).
_USERS: Counter[str] = Counter()
_ADDED: set[str] = set()


@contextmanager
def _registered(base: str) -> Iterator[str]:
    """``"interp+<base>"`` registered for the duration (shared by overlapping contexts, then unregistered)."""
    name = PREFIX + base
    try:
        _USERS[name] += 1
        if name not in ALL_ATTENTION_FUNCTIONS or name not in ALL_MASK_ATTENTION_FUNCTIONS:
            _ADDED.add(name)
        yield _register(base)
    finally:
        _USERS[name] -= 1
        if _USERS[name] <= 0:
            del _USERS[name]
            if name in _ADDED:  # transformers has no unregister: drop the class-wide entries themselves
                _ADDED.discard(name)
                AttentionInterface._global_mapping.pop(name, None)
                AttentionMaskInterface._global_mapping.pop(name, None)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every decoder block of the (text) model."""
    modules = []
    for i, block in enumerate(get_adapter(model).blocks):
        attn = getattr(block, "self_attn", None)
        if attn is None or not hasattr(attn, "layer_idx"):
            raise ValueError(
                f"decoder block {i} ({type(block).__name__}) has no transformers-style self_attn with a layer_idx; "
                "interp.vlm supports models whose attention goes through transformers' AttentionInterface"
            )
        modules.append(attn)
    return modules


@contextmanager
def probing(model: nn.Module, probe: RowProbe, blocks: Sequence[int]) -> Iterator[RowProbe]:
    """Attach ``probe`` to the attention of decoder blocks ``blocks`` (undone on exit)."""
    modules = attention_modules(model)
    config = modules[0].config
    original = config._attn_implementation
    if isinstance(original, str) and original.startswith(PREFIX):
        raise RuntimeError("interp.vlm probes are already active on this model; nested tracing is not supported")
    with _registered(original or "eager") as name:
        try:
            config._attn_implementation = name
            for i in blocks:
                setattr(modules[i], PROBE_ATTR, probe)
            yield probe
        finally:
            for module in modules:
                module.__dict__.pop(PROBE_ATTR, None)
            config._attn_implementation = original


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
