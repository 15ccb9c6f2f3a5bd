"""``interp.patch``: write activations during the forward pass, undone on exit.

Each patched site (:mod:`interp.extraction.sites`: a name, a module path or a
hidden-state index) is written where extraction reads it: a forward hook that
returns a new output, a forward pre-hook that returns new inputs (a block's
residual stream, ``hook_z`` at the output projection), or, for
``attn.hook_pattern``, an attention hook (:mod:`interp.models.attention`) that
edits the softmax probabilities and recomputes ``probs · V`` for exactly the
(row, query, head) triples whose probabilities changed -- every other output
stays the kernel's, so a patch that writes what was there is bit-identical.

``hook_resid_mid`` is read at the input of the norm before the MLP, but the
block adds the MLP's output to the residual it kept *before* that norm, so
writing the norm's input would change what the MLP sees and nothing else. It is
written through the attention branch instead: ``attn_out' = new_mid - resid_pre``
(:class:`ResidMidWriter`), so the block carries ``resid_pre + attn_out' = new_mid``
(to one rounding of that subtraction; positions where nothing changes stay
bit-identical). A module path's ``":input"`` changes what that module sees, and
only that.

The new values are kept only at the selected ``positions`` (sequence indices as
the model sees them, pads included: use unpadded or left-padded inputs, where
``-1`` is every row's last token; in generation each step is its own call) and
``heads``. Everything runs inside :func:`interp.models.guard.preserved`: the
model comes back bit-identical, also when a patch function raises or on Ctrl-C.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from interp._validation import is_int
from interp.extraction.backends.base import first_input, first_tensor
from interp.extraction.sites import Site, resolve_sites
from interp.models.adapter import ModelAdapter, get_adapter, resolve_path
from interp.models.attention import AttentionCall, attention_hooks
from interp.models.guard import preserved
from interp.models.interop import unwrap_model
from interp.patching.ops import Heads, Patch, Positions, as_patch

__all__ = ["patch", "run_with_patches", "SitePatcher", "ResidMidWriter"]


def _head_axis(site: Site) -> bool:
    return site.kind in ("z", "pattern")


def _check_heads(site: Site, heads: Heads, adapter: ModelAdapter) -> list[int] | None:
    if heads is None:
        return None
    if not _head_axis(site):
        raise ValueError(f"heads= applies to attn.hook_z and attn.hook_pattern sites, not {site.name!r}")
    heads = [heads] if is_int(heads) else list(heads)
    n = adapter.n_heads
    bad = [h for h in heads if not is_int(h) or not 0 <= h < n]
    if not heads or bad:
        raise ValueError(f"{site.name}: head indices {bad or heads} are invalid; the model has heads 0..{n - 1}")
    return [int(h) for h in heads]


def _check_positions(positions: Positions):
    if positions is None or isinstance(positions, torch.Tensor) and positions.dtype == torch.bool:
        return positions
    items = [positions] if is_int(positions) else list(positions)
    bad = [p for p in items if not is_int(p)]
    if not items or bad:
        raise ValueError(f"positions must be sequence indices or a bool mask [T] / [B, T], got {positions!r}")
    return [int(p) for p in items]


class SitePatcher:
    """Writes one :class:`Patch` at one site; its methods are the torch / attention hooks."""

    def __init__(self, site: Site, op: Patch, positions, heads: list[int] | None):
        self.site, self.op = site, op
        self.positions, self.heads = positions, heads

    def _mask(self, current: torch.Tensor) -> torch.Tensor | None:
        """Where the new values go, broadcastable to ``current [B, T, *feature]`` (None: everywhere)."""
        if self.positions is None and self.heads is None:
            return None
        B, T = current.shape[:2]
        mask = torch.ones(1, T, dtype=torch.bool, device=current.device)
        if isinstance(self.positions, torch.Tensor):
            given = self.positions.to(current.device)
            if given.shape not in ((T,), (B, T)):
                raise ValueError(f"{self.site.name}: the positions mask is {tuple(given.shape)}, the input [{B}, {T}]")
            mask = given.reshape(-1, T)
        elif self.positions is not None:
            bad = [p for p in self.positions if not -T <= p < T]
            if bad:
                raise IndexError(f"{self.site.name}: positions {bad} are outside this input's {T} positions")
            mask = torch.zeros(1, T, dtype=torch.bool, device=current.device)
            mask[0, [p % T for p in self.positions]] = True
        mask = mask.reshape(*mask.shape, *([1] * (current.ndim - 2)))
        if self.heads is not None:
            heads = torch.zeros(current.shape[2], dtype=torch.bool, device=current.device)
            heads[self.heads] = True
            mask = mask & heads.reshape(1, 1, -1, *([1] * (current.ndim - 3)))
        return mask

    def edit(self, current: torch.Tensor) -> torch.Tensor:
        """The patched activation, ``[B, T, *feature]`` in the site's canonical layout."""
        new = self.op.new_value(current, self.site.name)
        mask = self._mask(current)
        return new if mask is None else torch.where(mask, new, current)

    def _edit_raw(self, raw: torch.Tensor) -> torch.Tensor:
        return self.site.raw(self.edit(self.site.canonical(raw))).to(raw.dtype)

    def on_output(self, module, args, output):
        if isinstance(output, torch.Tensor):
            return self._edit_raw(output)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (self._edit_raw(output[0]), *output[1:])
        raise TypeError(f"{self.site.name}: cannot patch a module output of type {type(first_tensor(output))}")

    def on_input(self, module, args, kwargs):
        raw = first_input(args, kwargs)
        new = self._edit_raw(raw)
        if args and args[0] is raw:
            return (new, *args[1:]), kwargs
        key = next(k for k, v in kwargs.items() if v is raw)
        return args, {**kwargs, key: new}

    def on_attention(self, call: AttentionCall, out: torch.Tensor, weights):
        probs = call.probs()  # [B, H, q, kv]
        new = self.edit(probs.transpose(1, 2)).transpose(1, 2)
        changed = (new != probs).any(dim=-1)  # [B, H, q]
        if not bool(changed.any()):
            return out, weights
        recomputed = call.output(new)  # [B, q, H, d]
        out = torch.where(changed.transpose(1, 2)[..., None], recomputed.to(out.dtype), out)
        return out, new


class ResidMidWriter:
    """Writes ``hook_resid_mid`` through the attention branch (see the module docstring).

    A pre-hook on the block keeps its input ``resid_pre``; the hook on the module whose
    output is ``hook_attn_out`` returns ``attn_out + (edit(mid) - mid)`` where ``mid =
    resid_pre + attn_out``, at the positions where the edit changed something.
    """

    def __init__(self, patcher: SitePatcher):
        self.patcher = patcher
        self.resid_pre: torch.Tensor | None = None

    def on_block_input(self, module, args, kwargs) -> None:
        self.resid_pre = first_input(args, kwargs)

    def on_attn_out(self, module, args, output):
        attn_out = output if isinstance(output, torch.Tensor) else output[0]
        mid = self.resid_pre + attn_out
        new_mid = self.patcher.edit(mid).to(mid.dtype)
        changed = new_mid != mid
        self.resid_pre, resid_pre = None, self.resid_pre
        if not bool(changed.any()):
            return output
        new_attn_out = torch.where(changed, new_mid - resid_pre, attn_out)
        return new_attn_out if isinstance(output, torch.Tensor) else (new_attn_out, *output[1:])


class _AttentionChain:
    """Several pattern patches on one block, applied in order."""

    def __init__(self):
        self.patchers: list[SitePatcher] = []

    def __call__(self, call, out, weights):
        for patcher in self.patchers:
            out, weights = patcher.on_attention(call, out, weights)
        return out, weights


@contextlib.contextmanager
def patch(model: nn.Module, patches: Mapping, positions: Positions = None, heads: Heads = None) -> Iterator[nn.Module]:
    """Patch activations of ``model`` for the duration of the ``with`` block.

    Args:
        model: a Hugging Face model of a known family (or an nnsight ``LanguageModel`` around one).
        patches: ``{site: what}``; a site is a name (``"blocks.3.hook_mlp_out"``,
            ``"blocks.2.attn.hook_z"``, ``"blocks.2.attn.hook_pattern"``), a module path or
            a hidden-state index; ``what`` is a tensor (replace), a function
            ``(activation [B, T, *feature], site) -> activation`` (or None), ``"zero"``, or
            :func:`interp.patching.replace` / ``add`` / ``zero`` / ``mean`` / ``apply``.
        positions: default sequence indices (or bool mask ``[T]`` / ``[B, T]``) to patch at.
        heads: default heads (``attn.hook_z`` / ``attn.hook_pattern`` sites only).

    Example::

        with interp.patch(model, {"blocks.5.hook_resid_post": interp.patching.add(v, scale=4.0)}):
            out = model.generate(**inputs, max_new_tokens=20)    # steered

    Errors (unknown site, bad heads/positions) are raised before anything is changed.
    """
    model = unwrap_model(model)
    adapter = get_adapter(model)
    if not isinstance(patches, Mapping) or not patches:
        raise TypeError("patches must be a non-empty dict {site: value, function, 'zero' or interp.patching op}")
    patchers = []
    for key, spec in patches.items():
        (site,) = resolve_sites([key], adapter)
        op = as_patch(spec)
        site_positions = _check_positions(op.positions if op.positions is not None else positions)
        site_heads = _check_heads(site, op.heads if op.heads is not None else heads, adapter)
        patchers.append(SitePatcher(site, op, site_positions, site_heads))
    with contextlib.ExitStack() as stack:
        stack.enter_context(preserved(model))
        chains: dict[int, _AttentionChain] = {}
        for patcher in patchers:
            site = patcher.site
            if site.is_pattern:
                chains.setdefault(site.block, _AttentionChain()).patchers.append(patcher)
                continue
            if site.kind == "resid_mid":
                writer = ResidMidWriter(patcher)
                block = resolve_path(model, adapter.block_path(site.block))
                attn_out = resolve_path(block, adapter.block_layout.attn_out)
                for handle in (block.register_forward_pre_hook(writer.on_block_input, with_kwargs=True),
                               attn_out.register_forward_hook(writer.on_attn_out)):  # fmt: skip
                    stack.callback(handle.remove)
                continue
            module = resolve_path(model, site.module)
            if site.io == "input":
                handle = module.register_forward_pre_hook(patcher.on_input, with_kwargs=True)
            else:
                handle = module.register_forward_hook(patcher.on_output)
            stack.callback(handle.remove)
        if chains:
            stack.enter_context(attention_hooks(model, chains))
        yield model


def run_with_patches(
    model: nn.Module,
    inputs,
    patches: Mapping,
    positions: Positions = None,
    heads: Heads = None,
    grad: bool = False,
    **forward_kwargs,
) -> torch.Tensor:
    """One forward pass under :func:`patch`; returns the logits (or the model's first output).

    ``inputs`` is what a tokenizer returns (a dict / ``BatchEncoding``) or an
    ``input_ids`` tensor ``[B, T]``; ``forward_kwargs`` go to the model (e.g.
    ``logits_to_keep=1``). Runs under ``torch.no_grad()`` unless ``grad=True``.
    """
    kwargs = {"input_ids": inputs} if isinstance(inputs, torch.Tensor) else dict(inputs)
    with patch(model, patches, positions, heads) as hf_model, torch.set_grad_enabled(grad):
        output = hf_model(**kwargs, **forward_kwargs)
    logits = getattr(output, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else first_tensor(output)
