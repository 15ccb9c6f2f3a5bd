"""Named activation sites: a TransformerLens-style vocabulary, resolved on every architecture.

A *site* is one activation of the forward pass. Users name it the way
TransformerLens names its hook points; :func:`resolve_sites` turns the names
into :class:`Site` objects that say where the tensor is read on this model --
a module of the adapter's layout and whether it is that module's input, output
or attention weights -- so that every backend (torch hooks, TransformerLens
bridge hook points, nnsight envoys) and the patching package read and write the
same tensor. This module is the one place where the vocabulary meets the
layouts of :mod:`interp.models.adapter`.

Vocabulary (``i`` = decoder block; the shape is per token, after ``[batch, pos]``):

==============================  ==============  =============================================================
site                            per token       what it is
==============================  ==============  =============================================================
``hook_embed``                  ``[d]``         output of the token embedding (Gemma: scaled by √d inside it)
``hook_pos_embed``              ``[d]``         output of the learned position embedding (GPT-2 only)
``blocks.{i}.hook_resid_pre``   ``[d]``         input of block ``i`` (= hidden state ``i``)
``blocks.{i}.attn.hook_pattern`` ``[H, K]``      softmax attention of this query over the keys (rows = queries)
``blocks.{i}.attn.hook_z``      ``[H, d_head]`` per-head outputs, the input of the output projection
``blocks.{i}.hook_attn_out``    ``[d]``         what attention adds to the residual stream
``blocks.{i}.hook_resid_mid``   ``[d]``         the residual stream between attention and MLP
``blocks.{i}.hook_mlp_out``     ``[d]``         what the MLP adds to the residual stream
``blocks.{i}.hook_resid_post``  ``[d]``         output of block ``i`` (= hidden state ``i+1``, before the final norm)
``ln_final.hook_normalized``    ``[d]``         output of the final norm (= hidden state ``L``)
``<module path>``               any             output of any submodule, e.g. ``"model.layers.3.mlp.down_proj"``
``<module path>:input``         any             its first input (``":output"``: the output, explicitly)
integer ``j``                   ``[d]``         hidden-state index ``j`` (negative: from the end)
==============================  ==============  =============================================================

Integers keep meaning hidden-state indices (0 = embeddings, ``L`` = after the
final norm) and are kept as integer keys; a name that is the same tensor as a
hidden state (``blocks.3.hook_resid_post`` is hidden state 4) knows it
(:attr:`Site.hidden_index`), so results can be looked up either way.

Where an architecture has no exact equivalent, the resolution is:

* **Gemma 2/3** normalise each branch before the residual add
  (``post_attention_layernorm``, ``post_feedforward_layernorm``): ``hook_attn_out``
  and ``hook_mlp_out`` are those norms' outputs -- what is added to the stream, as
  TransformerLens' ``ln1_post`` / ``ln2_post`` placement -- and ``hook_resid_mid``
  is the input of ``pre_feedforward_layernorm``.
* **GPT-2** computes q, k, v with one fused ``c_attn``: ``hook_z`` is the input of
  ``attn.c_proj``, and q/k/v are not in the vocabulary (read
  ``"transformer.h.{i}.attn.c_attn"`` and split it in three along the last axis).
* **GPT-NeoX** with ``use_parallel_residual`` (the default, Pythia) adds attention
  and MLP to the same input: there is no ``hook_resid_mid``, and asking for it is
  an error, as in TransformerLens.
* ``hook_pattern``'s key axis is in *text* positions: key ``k`` of text ``j`` is
  its ``k``-th token whatever the padding side, and rows are padded with zeros
  to ``K``, the longest text of the extraction.
* ``ln_final.hook_normalized`` is the final norm's output with its weight, which
  is TransformerLens bridge's ``ln_final.hook_out`` (TransformerLens'
  ``hook_normalized`` of an RMSNorm is before the weight).
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from interp.models.adapter import ModelAdapter, resolve_path

__all__ = [
    "Site",
    "SITE_KINDS",
    "resolve_sites",
    "vocabulary",
    "hidden_index_of",
    "hidden_state_name",
    "parse_site_name",
    "resolve_layers",
    "resolve_request",
]

#: kinds of named sites (``"hidden"``: an integer hidden-state index; ``"module"``: a module path)
SITE_KINDS: tuple[str, ...] = (
    "hidden", "embed", "pos_embed", "resid_pre", "pattern", "z", "attn_out", "resid_mid", "mlp_out", "resid_post",
    "ln_final", "module",
)  # fmt: skip

_BLOCK_SITE = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_attn_out|hook_mlp_out"
                         r"|attn\.hook_z|attn\.hook_pattern)$")  # fmt: skip
_KIND_OF = {
    "hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid", "hook_resid_post": "resid_post",
    "hook_attn_out": "attn_out", "hook_mlp_out": "mlp_out", "attn.hook_z": "z", "attn.hook_pattern": "pattern",
}  # fmt: skip
_SUFFIX_OF = {kind: suffix for suffix, kind in _KIND_OF.items()}
_GLOBAL = {"hook_embed": "embed", "hook_pos_embed": "pos_embed", "ln_final.hook_normalized": "ln_final"}
_BLOCK_ORDER = ("resid_pre", "pattern", "z", "attn_out", "resid_mid", "mlp_out", "resid_post")


@dataclass(frozen=True)
class Site:
    """One resolved activation site.

    Attributes:
        key: how results name it -- the int for a hidden-state index asked as an
            int, else the canonical name.
        name: the TransformerLens-style name (for ints: the name of that state).
        kind: one of :data:`SITE_KINDS`.
        block: the decoder block it belongs to (None outside blocks).
        hidden_index: the hidden-state index this tensor equals, if any.
        module: model-relative dotted path of the module it is read at.
        io: ``"input"`` (first positional argument), ``"output"`` (first tensor
            of the output) or ``"weights"`` (the attention module's ``output[1]``).
        n_heads: split the last axis into ``[n_heads, -1]`` (``hook_z``).
        outside_backbone: the module is outside the backbone (e.g. ``lm_head``),
            so the full model must run.
    """

    key: int | str
    name: str
    kind: str
    block: int | None
    hidden_index: int | None
    module: str
    io: str
    n_heads: int | None = None
    outside_backbone: bool = False

    @property
    def is_pattern(self) -> bool:
        return self.kind == "pattern"

    def canonical(self, raw: torch.Tensor) -> torch.Tensor:
        """The raw tensor at the module as ``[B, T, *feature]``.

        ``hook_z`` ``[B, T, H·d_head] -> [B, T, H, d_head]``; a pattern
        ``[B, H, q, k] -> [B, q, H, k]`` (queries on the token axis, like every site).
        """
        if self.is_pattern:
            return raw.transpose(1, 2)
        if self.n_heads is not None:
            return raw.reshape(*raw.shape[:2], self.n_heads, -1)
        return raw

    def raw(self, canonical: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`canonical` (how a patched tensor goes back into the model)."""
        if self.is_pattern:
            return canonical.transpose(1, 2)
        if self.n_heads is not None:
            return canonical.reshape(*canonical.shape[:2], -1)
        return canonical


def hidden_state_name(index: int, n_blocks: int) -> str:
    """The vocabulary name of hidden-state ``index`` (0..L)."""
    if index == 0:
        return "blocks.0.hook_resid_pre"
    if index < n_blocks:
        return f"blocks.{index - 1}.hook_resid_post"
    return "ln_final.hook_normalized"


def parse_site_name(name: str) -> tuple[str, int | None] | None:
    """``(kind, block)`` of a vocabulary name, or None if it is not one."""
    if name in _GLOBAL:
        return _GLOBAL[name], None
    match = _BLOCK_SITE.match(name)
    if match:
        return _KIND_OF[match.group(2)], int(match.group(1))
    return None


def hidden_index_of(name: int | str, n_blocks: int | None) -> int | None:
    """The hidden-state index that site ``name`` equals, if any (needs ``n_blocks`` for names)."""
    if isinstance(name, int):
        return name
    parsed = parse_site_name(name) if n_blocks is not None else None
    if parsed is None:
        return None
    kind, block = parsed
    if kind == "ln_final":
        return n_blocks
    if kind == "resid_pre" and block < n_blocks:
        return block
    if kind == "resid_post" and block < n_blocks - 1:
        return block + 1
    return None


def vocabulary(adapter: ModelAdapter) -> list[str]:
    """Every vocabulary name this model has, in forward order."""
    names = ["hook_embed"] + (["hook_pos_embed"] if adapter.layout.pos_embed else [])
    layout = adapter.block_layout
    for i in range(adapter.n_blocks):
        kinds = _BLOCK_ORDER if layout is not None else ("resid_pre", "resid_post")
        names += [f"blocks.{i}.{_SUFFIX_OF[k]}" for k in kinds if not (k == "resid_mid" and layout.resid_mid is None)]
    return [*names, "ln_final.hook_normalized"]


def _hidden_site(index: int, adapter: ModelAdapter, key: int | str, name: str, kind: str) -> Site:
    L = adapter.n_blocks
    if index == 0:
        module, io = adapter.block_path(0), "input"
    elif index < L:
        module, io = adapter.block_path(index - 1), "output"
    else:
        module, io = adapter.layout.final_norm, "output"
    block = None if index == L else max(index - 1, 0)
    return Site(key, name, kind, block, index, module, io)


def _unknown_architecture(adapter: ModelAdapter, name: str) -> ValueError:
    return ValueError(
        f"site {name!r} needs to know the parts of a decoder block, but {type(adapter.blocks[0]).__name__} is not "
        "a block family interp knows (interp.models.adapter.BLOCK_LAYOUTS); use a module path such as "
        f"'{adapter.block_path(0)}.mlp' (output) or '...:input', or hidden-state indices"
    )


def _named_site(name: str, kind: str, block: int | None, adapter: ModelAdapter) -> Site:
    L = adapter.n_blocks
    if block is not None and not 0 <= block < L:
        raise IndexError(f"site {name!r}: block {block} does not exist; this model has blocks 0..{L - 1}")
    hidden = hidden_index_of(name, L)
    if kind in ("resid_pre", "resid_post") or kind == "ln_final":
        module = adapter.block_path(block) if block is not None else adapter.layout.final_norm
        io = "input" if kind == "resid_pre" else "output"
        return Site(name, name, kind, block, hidden, module, io)
    if kind == "embed":
        return Site(name, name, kind, None, None, adapter.layout.embed, "output")
    if kind == "pos_embed":
        if adapter.layout.pos_embed is None:
            raise ValueError(
                f"site 'hook_pos_embed': {type(adapter.model).__name__} has no learned position embedding "
                "(rotary models add positions inside attention); hook_embed is its whole embedding"
            )
        return Site(name, name, kind, None, None, adapter.layout.pos_embed, "output")
    layout = adapter.block_layout
    if layout is None:
        raise _unknown_architecture(adapter, name)
    prefix = adapter.block_path(block)
    if kind == "resid_mid":
        if layout.resid_mid is None:
            raise ValueError(
                f"site {name!r} does not exist in {type(adapter.blocks[0]).__name__}: with a parallel residual "
                "(use_parallel_residual=True) attention and MLP read the same input and are added together, so "
                f"there is no state between them; use blocks.{block}.hook_resid_pre, hook_attn_out, hook_mlp_out"
            )
        return Site(name, name, kind, block, None, f"{prefix}.{layout.resid_mid}", "input")
    if kind == "attn_out":
        return Site(name, name, kind, block, None, f"{prefix}.{layout.attn_out}", "output")
    if kind == "mlp_out":
        return Site(name, name, kind, block, None, f"{prefix}.{layout.mlp_out}", "output")
    if kind == "z":
        if adapter.n_heads is None:
            raise ValueError(f"site {name!r}: the model config has no num_attention_heads to split heads by")
        return Site(name, name, kind, block, None, f"{prefix}.{layout.attn_out_proj}", "input", adapter.n_heads)
    return Site(name, name, "pattern", block, None, f"{prefix}.{layout.attn}", "weights")


def _module_site(spec: str, adapter: ModelAdapter) -> Site:
    path, _, io = spec.partition(":")
    io = io or "output"
    if io not in ("input", "output"):
        raise ValueError(f"site {spec!r}: a module path may end in ':input' or ':output', not ':{io}'")
    module = resolve_path(adapter.model, path) if path else None
    if module is None:
        raise ValueError(
            f"site {spec!r} is neither a site name ({', '.join(_examples())}, ...) nor a module path of "
            f"{type(adapter.model).__name__} (see model.named_modules()); names of this model: "
            "interp.extraction.sites.vocabulary(interp.get_adapter(model))"
        )
    block = _block_of(path, adapter)
    backbone = adapter.layout.backbone
    outside = bool(backbone) and path != backbone and not path.startswith(backbone + ".")
    key = path if io == "output" else f"{path}:input"
    return Site(key, key, "module", block, None, path, io, outside_backbone=outside)


def _block_of(path: str, adapter: ModelAdapter) -> int | None:
    prefix = adapter.layout.blocks + "."
    if not path.startswith(prefix):
        return None
    head = path[len(prefix) :].split(".")[0]
    return int(head) if head.isdigit() else None


def _examples() -> list[str]:
    return ["'blocks.3.hook_resid_post'", "'blocks.3.attn.hook_pattern'", "'hook_embed'"]


def _as_index(item, what: str = "site indices") -> int:
    """``item`` as a Python int: ints and integer NumPy/torch scalars, never bools or floats."""
    if isinstance(item, bool) or str(getattr(item, "dtype", "")) in ("bool", "torch.bool"):
        raise TypeError(f"{what} must be ints, got {item!r} (a bool)")
    try:
        return operator.index(item)
    except TypeError:
        raise TypeError(f"{what} must be ints, got {item!r} ({type(item).__name__})") from None


def resolve_layers(layers: str | int | Sequence[int], n_hidden_states: int) -> list[int]:
    """Validate ``layers`` (``"all"``, an index or a list) against ``0..L``.

    Negative indices count from the end (``-1`` = L, after the final norm).
    Integer NumPy/torch scalars and arrays are accepted like ints and lists.
    Returns sorted, de-duplicated non-negative indices.
    """
    if isinstance(layers, str):
        if layers != "all":
            hint = ""
            if parse_site_name(layers) or any(ch in layers for ch in "*?[") or "." in layers:
                hint = f"; {layers!r} is a site name: pass it as sites={layers!r} (layers are hidden-state indices)"
            raise ValueError(f"layers must be 'all', an int or a list of ints, got {layers!r}{hint}")
        return list(range(n_hidden_states))
    scalar = getattr(layers, "ndim", None) == 0 or not isinstance(layers, Iterable)
    items = [_as_index(item, "layer indices") for item in ([layers] if scalar else list(layers))]
    if not items:
        raise ValueError("layers is empty; pass 'all' or at least one hidden-state index")
    out = set()
    for item in items:
        if not -n_hidden_states <= item < n_hidden_states:
            raise IndexError(
                f"layer index {item} is out of range: this model has hidden-state indices "
                f"0..{n_hidden_states - 1} (0 = embeddings, {n_hidden_states - 1} = after the final norm)"
            )
        out.add(item % n_hidden_states)
    return sorted(out)


def resolve_request(adapter: ModelAdapter, layers=None, sites=None) -> list[Site]:
    """The sites of an extraction: ``layers`` (hidden-state indices, sorted), then ``sites`` in their order.

    With neither, every hidden state (``layers="all"``).
    """
    if layers is None and sites is None:
        layers = "all"
    out: dict[int | str, Site] = {}
    if layers is not None:
        for index in resolve_layers(layers, adapter.n_hidden_states):
            name = hidden_state_name(index, adapter.n_blocks)
            out[index] = _hidden_site(index, adapter, index, name, "hidden")
    for site in resolve_sites(sites, adapter) if sites is not None else []:
        out.setdefault(site.key, site)
    return list(out.values())


def _expand(spec, adapter: ModelAdapter) -> list[int | str]:
    """Sites as a list of ints and strings, globs and callables expanded over the vocabulary."""
    names = vocabulary(adapter)
    if callable(spec) and not isinstance(spec, (str, nn.Module)):
        chosen = [n for n in names if spec(n)]
        if not chosen:
            raise ValueError("names_filter selected no site of this model; the names are those of vocabulary(adapter)")
        return chosen
    items = [spec] if isinstance(spec, (str, int)) or getattr(spec, "ndim", None) == 0 else list(spec)
    if not items:
        raise ValueError("sites is empty; pass a site name, a glob such as 'blocks.*.hook_mlp_out', or an index")
    out: list[int | str] = []
    for item in items:
        if isinstance(item, str) and any(ch in item for ch in "*?["):
            matched = [n for n in names if fnmatch.fnmatchcase(n, item)]
            if not matched:
                raise ValueError(f"the pattern {item!r} matches no site of this model (e.g. {', '.join(_examples())})")
            out += matched
        elif isinstance(item, str):
            out.append(item)
        else:
            try:
                out.append(_as_index(item))
            except TypeError:
                raise TypeError(f"a site is a name, a module path or an int, got {item!r}") from None
    return out


def resolve_sites(spec: int | str | Sequence | Callable[[str], bool], adapter: ModelAdapter) -> list[Site]:
    """Resolve sites on a model: names, globs, a ``names_filter`` callable, module paths or ints.

    Duplicates are dropped (first occurrence kept); the order is the one given
    (globs and callables expand in forward order). Errors say what was wrong:
    an unknown name, a block or index out of range, a site the architecture
    does not have.
    """
    n_hidden = adapter.n_hidden_states
    sites: dict[int | str, Site] = {}
    for item in _expand(spec, adapter):
        if isinstance(item, int):
            if not -n_hidden <= item < n_hidden:
                raise IndexError(
                    f"layer index {item} is out of range: this model has hidden-state indices 0..{n_hidden - 1} "
                    f"(0 = embeddings, {n_hidden - 1} = after the final norm)"
                )
            index = item % n_hidden
            site = _hidden_site(index, adapter, index, hidden_state_name(index, adapter.n_blocks), "hidden")
        else:
            parsed = parse_site_name(item)
            if parsed is None and re.match(r"^(blocks\.\d+\.|hook_|ln_final\.)", item):
                raise ValueError(
                    f"unknown site {item!r}; the vocabulary is blocks.{{i}}.hook_resid_pre|hook_resid_mid|"
                    "hook_resid_post|hook_attn_out|hook_mlp_out, blocks.{i}.attn.hook_z|attn.hook_pattern, "
                    "hook_embed, hook_pos_embed, ln_final.hook_normalized (docs/sites.md), or a module path"
                )
            site = _named_site(item, *parsed, adapter) if parsed else _module_site(item, adapter)
        sites.setdefault(site.key, site)
    return list(sites.values())
