"""Hooks inside attention: see and edit the softmax probabilities beside the model's own kernel.

Attention probabilities usually mean ``output_attentions=True``, which needs
eager attention for the *whole* model and materialises every ``[heads, seq, seq]``
matrix. Here the model keeps its kernel (SDPA by default) and only the attention
modules that carry a hook do extra work:

* transformers (>= 4.48) looks each layer's attention function up by name,
  ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]``, and builds the mask
  with ``ALL_MASK_ATTENTION_FUNCTIONS`` under the same name. For a base kernel
  ``b`` (``"sdpa"``, ``"eager"``, ``"flash_attention_2"``...) :func:`registered`
  adds the name ``"interp+b"`` to both registries: the mask is ``b``'s mask and
  the function is :func:`interposed_attention`, which first calls ``b``
  unchanged, then hands an :class:`AttentionCall` to each hook the module
  carries (the instance attribute :data:`HOOKS_ATTR`).
* :func:`attention_hooks` switches the text config to ``"interp+b"`` and
  attaches hooks to the attention modules of chosen decoder blocks; on exit the
  attribute lists and the config name are restored, even after an exception or
  a Ctrl-C, and ``"interp+b"`` leaves both registries once no context uses it.
  Contexts nest (an extraction inside a patch): the outermost switches the config.
* A hook is a callable ``hook(call, out, weights) -> (out, weights)`` with
  ``out [B, q, H, d]`` the attention output before the output projection and
  ``weights`` what the kernel returned (``None`` for SDPA). It may compute the
  probabilities of any query rows with :meth:`AttentionCall.probs` -- the one
  formula: ``q · kᵀ · scaling`` (GQA keys repeated), an optional ``pre_mask``
  edit of the logits, the logit soft-cap, the mask, an fp32 softmax -- return
  them as ``weights`` (an attention-pattern recorder), or replace rows of
  ``out`` with :meth:`AttentionCall.output` of edited probabilities (pattern
  patching, ScalingVis).

Data flow: decoder block -> attention module (q, k, v after RoPE) ->
``"interp+b"`` -> base kernel ``b`` -> hooks -> output projection. Blocks without
hooks only run ``b``, so everything they compute stays bit-identical.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from interp.models.adapter import get_adapter, resolve_path

__all__ = [
    "PREFIX",
    "HOOKS_ATTR",
    "AttentionCall",
    "AttentionHook",
    "attention_hooks",
    "attention_modules",
    "interposed_attention",
    "register_interposer",
    "registered",
    "repeat_kv",
    "softcapped",
]

PREFIX = "interp+"
#: instance attribute of an attention module: the list of its hooks while a context is open
HOOKS_ATTR = "_interp_attention_hooks"

AttentionHook = Callable[["AttentionCall", torch.Tensor, "torch.Tensor | None"], tuple]


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``[B, H_kv, S, d] -> [B, H_kv * groups, S, d]`` (grouped-query attention)."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def softcapped(logits: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Gemma-2-style logit soft-capping ``softcap · tanh(logits / softcap)``."""
    return logits if softcap is None else torch.tanh(logits / softcap) * softcap


def _row_mask(
    attention_mask: torch.Tensor | None, rows: torch.Tensor, q_len: int, kv_len: int, sliding_window: int | None
) -> torch.Tensor:
    """The mask of the selected rows, ``[B|1, 1|H, r, kv]`` (bool: True = attend; float: additive)."""
    if attention_mask is None or attention_mask.ndim == 2:
        # SDPA's causal fast path (no mask) or a flash-style [B, kv] padding mask.
        positions = kv_len - q_len + rows
        keys = torch.arange(kv_len, device=rows.device)[None, :]
        causal = keys <= positions[:, None]
        if sliding_window is not None:
            causal = causal & (keys > positions[:, None] - sliding_window)
        mask = causal[None, None]
        if attention_mask is not None:
            mask = mask & attention_mask[:, None, None, :kv_len].bool()
        return mask
    return attention_mask[..., rows, :kv_len]


@dataclass
class AttentionCall:
    """One call of an attention module, as the kernel saw it.

    Shapes (transformers' attention-interface contract): ``query [B, H, q, d]``,
    ``key/value [B, H_kv, kv, d]`` after RoPE (and after the KV cache update);
    ``attention_mask`` whatever the base kernel's mask function built for the
    model (bool for SDPA, additive float for eager, ``None`` on SDPA's causal
    fast path, ``[B, kv]`` for flash attention).
    """

    module: nn.Module
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    attention_mask: torch.Tensor | None
    scaling: float
    softcap: float | None = None
    sliding_window: int | None = None
    kwargs: dict = field(default_factory=dict)

    @property
    def q_len(self) -> int:
        return self.query.shape[2]

    @property
    def kv_len(self) -> int:
        return self.key.shape[2]

    @property
    def n_heads(self) -> int:
        return self.query.shape[1]

    def probs(
        self,
        rows: Sequence[int] | None = None,
        pre_mask: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Softmax attention of query ``rows`` (all by default): ``[B, H, r, kv]`` float32.

        ``pre_mask`` edits the scaled logits before the soft-cap and the mask
        (AdaptVis' temperature). Fully masked rows (padding queries) come out as 0.
        """
        rows_t = torch.arange(self.q_len, device=self.query.device) if rows is None else (
            torch.as_tensor(list(rows), device=self.query.device, dtype=torch.long)
        )  # fmt: skip
        groups = self.query.shape[1] // self.key.shape[1]
        query = self.query if rows is None else self.query[:, :, rows_t]
        logits = torch.matmul(query, repeat_kv(self.key, groups).transpose(2, 3)) * self.scaling
        if pre_mask is not None:
            logits = pre_mask(logits)
        logits = softcapped(logits, self.softcap)
        mask = _row_mask(self.attention_mask, rows_t, self.q_len, self.kv_len, self.sliding_window)
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        return probs.nan_to_num(nan=0.0)  # a query row with every key masked (a pad) has no distribution

    def output(self, probs: torch.Tensor) -> torch.Tensor:
        """``probs · V`` for ``probs [B, H, r, kv]``: ``[B, r, H, d]`` (the layout of the kernel's output)."""
        groups = self.query.shape[1] // self.key.shape[1]
        return torch.matmul(probs.to(self.value.dtype), repeat_kv(self.value, groups)).transpose(1, 2)


def _registries():
    """transformers' attention and mask registries (imported on first use: ``import interp`` stays light)."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    return ALL_ATTENTION_FUNCTIONS, AttentionInterface, ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface


def _eager_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    """Plain eager attention (transformers' ``eager_attention_forward`` is per-model, not registered)."""
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    groups = query.shape[1] // key.shape[1]
    logits = softcapped(torch.matmul(query, repeat_kv(key, groups).transpose(2, 3)) * scaling, softcap)
    if attention_mask is not None:
        logits = logits + attention_mask[..., : key.shape[2]]
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(probs, repeat_kv(value, groups)).transpose(1, 2).contiguous(), probs


def _base_function(module: nn.Module) -> Callable:
    base_name = module.config._attn_implementation.removeprefix(PREFIX)
    if base_name == "eager":  # each model file defines its own eager function; use that one
        return getattr(sys.modules[type(module).__module__], "eager_attention_forward", _eager_attention)
    return _registries()[0][base_name]


def interposed_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``"interp+<base>"`` attention function: the base kernel, then the module's hooks.

    Returns ``(out [B, q, H, d], weights)`` like every attention function; the
    weights are the base kernel's unless a hook returns its own.
    """
    out, weights = _base_function(module)(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
    )
    hooks = module.__dict__.get(HOOKS_ATTR)
    if not hooks:
        return out, weights
    call = AttentionCall(
        module, query, key, value, attention_mask,
        scaling=query.shape[-1] ** -0.5 if scaling is None else scaling,
        softcap=kwargs.get("softcap"), sliding_window=kwargs.get("sliding_window"), kwargs=kwargs,
    )  # fmt: skip
    for hook in list(hooks):
        out, weights = hook(call, out, weights)
    return out, weights


def register_interposer(base: str) -> str:
    """Register ``"interp+<base>"`` in transformers' attention and mask registries (idempotent)."""
    name = PREFIX + base
    functions, interface, masks, mask_interface = _registries()
    if base != "eager" and base not in functions:
        raise ValueError(f"attention implementation {base!r} is not registered in transformers' AttentionInterface")
    if base not in masks:
        raise ValueError(f"attention implementation {base!r} has no mask function; load the model with sdpa or eager")
    if name not in functions:
        interface.register(name, interposed_attention)
    if name not in masks:
        mask_interface.register(name, masks[base])
    return name


#: ``"interp+<base>"`` -> open contexts using it; ``_ADDED``: those names that a context
#: registered itself (taken out of both registries when their last user exits).
_USERS: Counter[str] = Counter()
_ADDED: set[str] = set()


@contextmanager
def registered(base: str) -> Iterator[str]:
    """``"interp+<base>"`` registered for the duration (shared by overlapping contexts, then unregistered)."""
    name = PREFIX + base
    functions, interface, masks, mask_interface = _registries()
    try:
        _USERS[name] += 1
        if name not in functions or name not in masks:
            _ADDED.add(name)
        yield register_interposer(base)
    finally:
        _USERS[name] -= 1
        if _USERS[name] <= 0:
            del _USERS[name]
            if name in _ADDED:  # transformers has no unregister: drop the class-wide entries themselves
                _ADDED.discard(name)
                interface._global_mapping.pop(name, None)
                mask_interface._global_mapping.pop(name, None)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every decoder block of the (text) model, in block order."""
    adapter = get_adapter(model)
    layout = adapter.block_layout
    modules = []
    for i, block in enumerate(adapter.blocks):
        attn = resolve_path(block, layout.attn) if layout is not None else getattr(block, "self_attn", None)
        if attn is None or not hasattr(getattr(attn, "config", None), "_attn_implementation"):
            raise ValueError(
                f"decoder block {i} ({type(block).__name__}) has no transformers attention module with a config; "
                "attention patterns need models whose attention goes through transformers' AttentionInterface "
                "(Llama, Gemma, Qwen, Mistral, GPT-2, GPT-NeoX, LLaVA)"
            )
        modules.append(attn)
    return modules


@contextmanager
def attention_hooks(model: nn.Module, hooks: Mapping[int, AttentionHook]) -> Iterator[None]:
    """Attach ``hooks[block]`` to the attention of each decoder block ``block`` (undone on exit).

    The text config runs ``"interp+<its kernel>"`` for the duration; blocks
    without a hook run the kernel alone.
    """
    modules = attention_modules(model)
    bad = [b for b in hooks if not isinstance(b, int) or not 0 <= b < len(modules)]
    if bad:
        raise IndexError(f"decoder blocks {bad} do not exist; the model has blocks 0..{len(modules) - 1}")
    config = modules[0].config
    original = config._attn_implementation
    nested = isinstance(original, str) and original.startswith(PREFIX)
    base = original.removeprefix(PREFIX) if nested else (original or "eager")
    attached: list[tuple[nn.Module, AttentionHook]] = []
    with registered(base) as name:
        try:
            if not nested:
                config._attn_implementation = name
            for block, hook in hooks.items():
                module = modules[block]
                module.__dict__.setdefault(HOOKS_ATTR, []).append(hook)
                attached.append((module, hook))
            yield
        finally:
            for module, hook in reversed(attached):
                live = module.__dict__.get(HOOKS_ATTR, [])
                live[:] = [h for h in live if h is not hook]
                if not live:
                    module.__dict__.pop(HOOKS_ATTR, None)
            if not nested:
                config._attn_implementation = original
