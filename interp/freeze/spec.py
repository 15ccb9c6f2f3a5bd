"""Which parameters to freeze, architecture-agnostically, and undoing it exactly.

A :class:`FreezeSpec` names parts of a transformer in the vocabulary of the
model adapter (:func:`interp.models.get_adapter`): decoder **blocks** (by
block index), the token **embeddings**, the **final norm**, the **LM head**,
and optionally any other submodule by dotted path (``modules=``; e.g. a VLM's
vision tower). The adapter resolves these parts for every architecture it
knows (Llama/Gemma/Qwen/Mistral, LLaVA, GPT-2, GPT-NeoX, bare base models), so
the same spec works on all of them.

Block indices are **decoder-block** indices, not hidden-state indices: block
``i`` produces hidden-state index ``i + 1`` (index 0 is the embedding output,
index ``L`` the state after the final norm; see ``docs/index.md``). So freezing
blocks ``0..8`` plus the embeddings leaves hidden states ``0..9`` unchanged by
training. Negative block indices count from the end (``-1`` = last block).

:func:`freeze` applies a spec at once and returns a :class:`Freezing` handle.
The handle remembers the ``requires_grad`` flag of *every* parameter of the
model, not only the frozen ones, and :meth:`Freezing.restore` writes them all
back -- so it doubles as a context manager that restores the exact flags on
exit, also when the body raises. Several handles on one model must be restored
last in, first out (as nested ``with`` blocks do); an out-of-order
``restore()`` raises instead of mixing up the flags::

    with freeze(model, blocks=range(9), embeddings=True, final_norm=True, lm_head=True) as frozen:
        frozen.trainable          # names of the parameters still trainable
        train(model)
    # every requires_grad is as before

Freezing only switches ``requires_grad`` off; parameters that were already
frozen stay frozen, nothing is switched on. Tied input/output embeddings (Gemma,
GPT-2) are one ``Parameter``: freezing the embeddings also freezes the LM head
and vice versa; :func:`freeze` warns when the spec asks for only one of them.

The official recipe (HLTCHKUST/interlingua ``src/param_freeze.py::
selective_grad_freeze``) is :func:`official_selective_freeze`; the competing
helper ``src/freeze.py::freeze_update`` is :func:`official_freeze_update`.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from torch import nn

from interp._validation import check_int, is_int
from interp.models.adapter import ModelAdapter, get_adapter, resolve_path

__all__ = [
    "FreezeSpec",
    "Freezing",
    "TiedEmbeddingsWarning",
    "freeze",
    "official_selective_freeze",
    "official_freeze_update",
    "block_to_hidden_state",
    "frozen_path_layers",
]


class TiedEmbeddingsWarning(UserWarning):
    """The input embedding and the LM head share weights; freezing one froze both."""


def block_to_hidden_state(block: int) -> int:
    """Hidden-state index produced by decoder block ``block`` (``block + 1``)."""
    return block + 1


def _as_blocks(blocks) -> tuple[int, ...]:
    if blocks is None:
        return ()
    if isinstance(blocks, bool):
        raise TypeError("blocks must be an int or an iterable of ints (decoder-block indices), got a bool")
    if is_int(blocks):
        return (int(blocks),)
    if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Iterable):
        raise TypeError(
            f"blocks must be an int or an iterable of ints (decoder-block indices, e.g. range(9)), got {blocks!r}"
        )
    out = tuple(blocks)
    bad = [b for b in out if not is_int(b)]
    if bad:
        raise TypeError(f"blocks must contain ints (decoder-block indices), got {bad[:3]}")
    return tuple(int(b) for b in out)


@dataclass(frozen=True)
class FreezeSpec:
    """What to freeze. See the module docstring for the block-index convention.

    Attributes:
        blocks: decoder-block indices (block ``i`` -> hidden-state index ``i+1``);
            negative ones count from the end. Duplicates are allowed.
        embeddings: the token embedding (``embed_tokens`` / ``wte`` / ``embed_in``).
        final_norm: the norm after the last block (``model.norm`` / ``ln_f``).
        lm_head: the output projection (``lm_head``).
        modules: further dotted submodule paths, relative to the model
            (e.g. ``"model.vision_tower"``).
    """

    blocks: tuple[int, ...] = ()
    embeddings: bool = False
    final_norm: bool = False
    lm_head: bool = False
    modules: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", _as_blocks(self.blocks))
        mods = (self.modules,) if isinstance(self.modules, str) else tuple(self.modules or ())
        bad = [m for m in mods if not isinstance(m, str) or not m]
        if bad:
            raise TypeError(f"modules must be non-empty dotted paths (str), got {bad[:3]}")
        object.__setattr__(self, "modules", mods)
        for name in ("embeddings", "final_norm", "lm_head"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def coerce(cls, spec) -> FreezeSpec | None:
        """``None`` (freeze nothing), a :class:`FreezeSpec`, or a mapping of its fields."""
        if spec is None or isinstance(spec, FreezeSpec):
            return spec
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"blocks", "embeddings", "final_norm", "lm_head", "modules"}
            if unknown:
                raise TypeError(
                    f"unknown freezing option(s) {sorted(unknown)}; use blocks, embeddings, final_norm, "
                    "lm_head, modules"
                )
            return cls(**spec)
        raise TypeError(f"a freezing spec must be None, a FreezeSpec or a dict of its fields, got {spec!r}")

    @classmethod
    def official(cls, n_first: int = 8) -> FreezeSpec:
        """The official ``selective_grad_freeze`` recipe: blocks ``0..n_first`` **inclusive**
        (``n_first + 1`` blocks), embeddings, final norm and LM head."""
        _check_n_first(n_first)
        return cls(tuple(range(n_first + 1)), True, True, True)

    @classmethod
    def official_update(cls, n_first: int = 7) -> FreezeSpec:
        """The official ``freeze_update`` helper: blocks ``0..n_first-1`` (``n_first`` blocks),
        embeddings, final norm and LM head."""
        _check_n_first(n_first)
        return cls(tuple(range(n_first)), True, True, True)

    def block_indices(self, n_blocks: int) -> list[int]:
        """Sorted, de-duplicated non-negative block indices for a model with ``n_blocks`` blocks."""
        bad = [b for b in self.blocks if not -n_blocks <= b < n_blocks]
        if bad:
            raise IndexError(
                f"block index {bad[0]} is out of range: the model has {n_blocks} decoder blocks "
                f"(valid indices 0..{n_blocks - 1}, or -{n_blocks}..-1 from the end). Block indices are "
                f"decoder-block indices: block i produces hidden-state index i+1."
            )
        return sorted({b % n_blocks for b in self.blocks})

    def describe(self, n_blocks: int | None = None) -> str:
        """Human-readable summary, e.g. ``'blocks 0-8, embeddings, final norm, LM head'``."""
        parts = []
        blocks = self.block_indices(n_blocks) if n_blocks is not None else sorted(set(self.blocks))
        if blocks:
            parts.append("blocks " + _ranges(blocks))
        parts += [name for flag, name in ((self.embeddings, "embeddings"), (self.final_norm, "final norm"),
                                          (self.lm_head, "LM head")) if flag]  # fmt: skip
        parts += list(self.modules)
        return ", ".join(parts) if parts else "nothing"


def _check_n_first(n_first) -> None:
    check_int("n_first", n_first, low=0)


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``'0-2,5'``."""
    spans, start, prev = [], values[0], values[0]
    for value in values[1:]:
        if value != prev + 1:
            spans.append(str(start) if start == prev else f"{start}-{prev}")
            start = value
        prev = value
    spans.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(spans)


def _params(module: nn.Module | None) -> list[nn.Parameter]:
    return [] if module is None else list(module.parameters())


def _resolve(model: nn.Module, adapter: ModelAdapter, spec: FreezeSpec) -> list[nn.Parameter]:
    """Every parameter the spec names (validated; nothing is changed)."""
    chosen: list[nn.Parameter] = []
    for b in spec.block_indices(adapter.n_blocks):
        chosen += _params(adapter.blocks[b])
    if spec.embeddings:
        chosen += _params(adapter.embed)
    if spec.final_norm:
        chosen += _params(adapter.final_norm)
    if spec.lm_head:
        if adapter.lm_head is None:
            raise ValueError(
                f"lm_head=True but this {type(model).__name__} has no LM head (a bare base model); pass lm_head=False"
            )
        chosen += _params(adapter.lm_head)
    for path in spec.modules:
        module = resolve_path(model, path)
        if module is None:
            raise ValueError(f"modules: {path!r} is not a submodule of {type(model).__name__}")
        chosen += _params(module)
    return chosen


def tied_embeddings(adapter: ModelAdapter) -> bool:
    """Whether the LM head shares a parameter with the input embedding."""
    if adapter.lm_head is None:
        return False
    embed = {id(p) for p in adapter.embed.parameters()}
    return any(id(p) in embed for p in adapter.lm_head.parameters())


def _reachable_params(model: nn.Module, skip: set[int]) -> set[int]:
    """ids of the parameters reachable from ``model`` without entering a module whose id is in ``skip``.

    A weight shared by a skipped and a kept module (tied embeddings) is reachable.
    """
    found: set[int] = set()
    stack, seen = [model], set()
    while stack:
        module = stack.pop()
        if id(module) in seen or id(module) in skip:
            continue
        seen.add(id(module))
        found.update(id(p) for p in module.parameters(recurse=False))
        stack.extend(module.children())
    return found


def frozen_path_layers(model: nn.Module, spec: FreezeSpec | Mapping | None) -> int:
    """Number of hidden-state indices, from 0, that training ``model`` under ``spec`` cannot change.

    Derived from the actual parameters, not from the spec's names: hidden state ``h`` (``0 <= h <= L``)
    can depend on every parameter of the model except those only reachable through blocks ``h..L-1``,
    the final norm (when ``h < L``) and the LM head. It is on a *frozen path* when all of those are
    frozen -- already ``requires_grad=False`` or frozen by ``spec`` (``None``: nothing). So GPT-2's
    learned position embedding (``transformer.wpe``), which ``embeddings=True`` does not freeze, keeps
    even hidden state 0 off the path until it is frozen too (``modules=("transformer.wpe",)``); a VLM's
    vision tower and projector count as well (freeze them with ``modules=`` for a frozen path). The
    count is a prefix: index ``h`` depends on everything index ``h - 1`` does.

    Args:
        model: a model :func:`interp.models.get_adapter` knows (not changed).
        spec: a :class:`FreezeSpec`, a dict of its fields, or None.
    Returns:
        ``0..L+1``: hidden states ``0..n-1`` are unchanged by training (their ΔILO is exactly 0).
    """
    adapter = get_adapter(model)
    spec = FreezeSpec.coerce(spec)
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    if spec is not None:
        frozen |= {id(p) for p in _resolve(model, adapter, spec)}
    n_blocks = adapter.n_blocks
    head = set() if adapter.lm_head is None else {id(adapter.lm_head)}
    count = 0
    for h in range(n_blocks + 1):
        skip = {id(block) for block in list(adapter.blocks)[h:]} | head
        if h < n_blocks:
            skip.add(id(adapter.final_norm))
        if not _reachable_params(model, skip) <= frozen:
            break
        count += 1
    return count


#: model -> weak references to its active :class:`Freezing` handles, oldest first (a stack).
_ACTIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _live_handles(model: nn.Module) -> list:
    """The model's active handles, oldest first (handles that were garbage-collected are dropped)."""
    refs = [ref for ref in _ACTIVE.get(model, []) if ref() is not None and ref().active]
    if refs:
        _ACTIVE[model] = refs
    else:
        _ACTIVE.pop(model, None)
    return [ref() for ref in refs]


def count_scalars(model: nn.Module) -> tuple[int, int]:
    """``(trainable, frozen)``: scalars (elements) of ``model`` that do / do not require grad."""
    trainable = frozen = 0
    for p in model.parameters():
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


class Freezing:
    """A freezing applied to a model (returned by :func:`freeze`).

    Several handles may be active on one model, but they must be restored in reverse order (last in,
    first out, as nested ``with`` blocks do): each remembers the flags as they were when *it* was
    applied, so restoring an older one first would unfreeze what a newer one froze, and the newer one
    would later re-freeze what the older one had frozen. :meth:`restore` raises ``RuntimeError``
    instead of doing that.

    Attributes:
        model: the model.
        spec: the :class:`FreezeSpec` applied.
        frozen: names of the parameters this call froze (``named_parameters``
            order; a tied weight appears once, under its first name).
        trainable: names of the parameters that still require grad.
        tied: whether input and output embeddings are tied.
    """

    def __init__(self, model: nn.Module, spec: FreezeSpec) -> None:
        self.model = model
        self.spec = spec
        adapter = get_adapter(model)
        self.n_blocks = adapter.n_blocks
        chosen = _resolve(model, adapter, spec)
        self.tied = tied_embeddings(adapter)
        chosen_ids = {id(p) for p in chosen}
        named = list(model.named_parameters())
        if not any(p.requires_grad and id(p) not in chosen_ids for _, p in named):
            raise ValueError(
                f"freezing {spec.describe(adapter.n_blocks)} would leave no parameter of "
                f"{type(model).__name__} trainable (it has {adapter.n_blocks} blocks); freeze fewer blocks "
                "or parts, or check that the model's parameters are not already frozen"
            )
        if self.tied and spec.embeddings != spec.lm_head:
            asked, other = ("embeddings", "LM head") if spec.embeddings else ("LM head", "embeddings")
            warnings.warn(
                f"{type(model).__name__} ties its input embeddings and LM head (one shared weight): freezing "
                f"the {asked} also freezes the {other}",
                TiedEmbeddingsWarning,
                stacklevel=3,
            )
        self._saved = [(p, p.requires_grad) for _, p in named]
        self.frozen = [name for name, p in named if id(p) in chosen_ids and p.requires_grad]
        self.active = True
        _ACTIVE[model] = [weakref.ref(h) for h in _live_handles(model)] + [weakref.ref(self)]
        try:
            for p in chosen:
                p.requires_grad_(False)
        except BaseException:
            self.restore()
            raise
        self.trainable = [name for name, p in named if p.requires_grad]

    @property
    def n_trainable(self) -> int:
        """Number of trainable scalars (elements) left."""
        return count_scalars(self.model)[0]

    @property
    def n_frozen(self) -> int:
        """Number of scalars (elements) that do not require grad."""
        return count_scalars(self.model)[1]

    def restore(self) -> None:
        """Write back every parameter's original ``requires_grad`` (idempotent).

        Raises:
            RuntimeError: a freezing applied to the same model *after* this one is still active;
                restore that one first (nothing is changed).
        """
        if not self.active:
            return
        newer = _live_handles(self.model)
        newer = newer[newer.index(self) + 1 :] if self in newer else []
        if newer:
            raise RuntimeError(
                f"cannot restore {self!r} while a later freezing of the same model is active ({newer[-1]!r}): "
                "restore handles in reverse order (last in, first out, as nested with-blocks do), "
                "i.e. restore the newer one first"
            )
        for p, flag in self._saved:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        self.active = False
        _live_handles(self.model)  # drop this handle from the stack

    def __enter__(self) -> Freezing:
        return self

    def __exit__(self, *exc) -> bool:
        self.restore()
        return False

    def __repr__(self) -> str:
        state = "active" if self.active else "restored"
        return (
            f"Freezing({self.spec.describe(self.n_blocks)}; {len(self.frozen)} tensors frozen, "
            f"{len(self.trainable)} trainable; {state})"
        )


def freeze(
    model: nn.Module,
    blocks: int | Iterable[int] = (),
    embeddings: bool = False,
    final_norm: bool = False,
    lm_head: bool = False,
    *,
    modules: Iterable[str] = (),
    spec: FreezeSpec | Mapping | None = None,
) -> Freezing:
    """Switch ``requires_grad`` off for the named parts of ``model``, now.

    Args:
        model: a model :func:`interp.models.get_adapter` knows.
        blocks: decoder-block indices (block ``i`` produces hidden-state index ``i+1``).
        embeddings, final_norm, lm_head: freeze these parts.
        modules: further dotted submodule paths to freeze.
        spec: a :class:`FreezeSpec` (or dict) instead of the keyword arguments.

    Returns:
        A :class:`Freezing`; call ``.restore()`` or use it as a context manager
        to restore every ``requires_grad`` flag exactly.

    Raises:
        IndexError: a block index out of range.
        ValueError: nothing would remain trainable; an unknown module path;
            ``lm_head=True`` on a model without one; an unknown architecture.
    """
    if spec is None:
        spec = FreezeSpec(blocks, embeddings, final_norm, lm_head, tuple(modules))
    else:
        if blocks or embeddings or final_norm or lm_head or tuple(modules):
            raise TypeError("pass either spec= or the blocks/embeddings/final_norm/lm_head/modules arguments")
        spec = FreezeSpec.coerce(spec)
    return Freezing(model, spec)


def official_selective_freeze(model: nn.Module, n_first: int = 8) -> Freezing:
    """The official freezing recipe, exactly.

    Reproduces HLTCHKUST/interlingua ``src/param_freeze.py::selective_grad_freeze(model,
    n_first=8, embed=True, final=True)``: it freezes decoder blocks ``0..n_first``
    **inclusive** -- ``range(n_first + 1)``, i.e. **9 blocks for n_first=8**, although
    the official docstring says "first 8 layers" -- plus the token embeddings, the
    final norm and the LM head. Everything from block ``n_first + 1`` up stays
    trainable. Unlike the official helper (Llama attribute paths only) it works for
    every architecture :func:`interp.models.get_adapter` knows, and the returned
    :class:`Freezing` can restore the flags.

    The other official helper, ``freeze_update``, freezes ``range(n_first)``: see
    :func:`official_freeze_update`.
    """
    return Freezing(model, FreezeSpec.official(n_first))


def official_freeze_update(model: nn.Module, n_first: int = 7) -> Freezing:
    """HLTCHKUST/interlingua ``src/freeze.py::freeze_update(n_first=7)``: blocks
    ``0..n_first-1`` (``range(n_first)``, 7 blocks by default), embeddings, final norm
    and LM head. It is one block short of :func:`official_selective_freeze` for the
    same ``n_first``; it matches the hidden-state reading of "the first n layers"
    (hidden states 1..n = blocks 0..n-1)."""
    return Freezing(model, FreezeSpec.official_update(n_first))
