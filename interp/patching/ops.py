"""What a patch writes at a site: replace, add (steer), zero, mean-ablate, or any function.

Every operation maps the site's live activation ``current [B, T, *feature]`` (the
site's canonical layout, :meth:`interp.extraction.sites.Site.canonical`) to a
new tensor of the same shape; :mod:`.hooks` then keeps the new values only at
the selected positions and heads. Values broadcast like this:

* ``[*feature]`` -- the same vector at every batch row and position;
* ``[T, *feature]`` -- one per position (``T`` = the live sequence length), the same for every row;
* ``[B, T, *feature]`` -- everything given.

So the per-token states of a clean run (``acts.states(0, site)``, ``[T, *feature]``)
patch straight into a corrupted run of the same length, and a steering vector
``[d_model]`` adds everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["Patch", "Replace", "Add", "Zero", "Mean", "Apply", "as_patch", "replace", "add", "zero", "mean", "apply"]

Positions = int | Sequence[int] | torch.Tensor | None
Heads = int | Sequence[int] | None


def broadcast_value(value: torch.Tensor, current: torch.Tensor, what: str) -> torch.Tensor:
    """``value`` broadcast to ``current [B, T, *feature]`` (see the module docstring), on its device and dtype."""
    value = torch.as_tensor(value).to(device=current.device, dtype=current.dtype)
    feature = current.shape[2:]
    n = len(feature)
    if tuple(value.shape[value.ndim - n :]) != tuple(feature) or value.ndim - n not in (0, 1, 2):
        raise ValueError(
            f"{what}: a value of shape {tuple(value.shape)} does not fit this activation "
            f"[batch={current.shape[0]}, positions={current.shape[1]}, {list(feature)}]; pass {list(feature)}, "
            f"[{current.shape[1]}, ...] (one per position) or the full [{current.shape[0]}, {current.shape[1]}, ...]"
        )
    if value.ndim - n == 1 and value.shape[0] != current.shape[1]:
        raise ValueError(
            f"{what}: the value has {value.shape[0]} positions but the input has {current.shape[1]}; "
            "patch inputs of the same token length (or pass one vector for every position)"
        )
    if value.ndim - n == 2 and tuple(value.shape[:2]) != tuple(current.shape[:2]):
        raise ValueError(f"{what}: the value is [{value.shape[0]}, {value.shape[1]}, ...] but the activation is "
                         f"[{current.shape[0]}, {current.shape[1]}, ...]")  # fmt: skip
    return value.expand_as(current)


@dataclass(frozen=True, kw_only=True)
class Patch:
    """Base class. ``positions`` / ``heads`` override the ones given to :func:`interp.patch` for this site.

    ``positions``: an index or indices of the sequence axis (negative from the
    end), or a bool mask ``[T]`` / ``[B, T]``; ``heads``: head indices (only for
    sites with a head axis, ``attn.hook_z`` and ``attn.hook_pattern``).
    """

    positions: Positions = None
    heads: Heads = None

    def new_value(self, current: torch.Tensor, site: str) -> torch.Tensor:
        """The activation to write instead of ``current`` (every concrete patch defines it)."""
        raise NotImplementedError(f"{type(self).__name__} must define new_value(current, site)")


@dataclass(frozen=True, kw_only=True)
class Replace(Patch):
    """Write ``value`` (e.g. the same site of a clean run)."""

    value: torch.Tensor

    def new_value(self, current, site):
        return broadcast_value(self.value, current, f"replace at {site}")


@dataclass(frozen=True, kw_only=True)
class Add(Patch):
    """Add ``scale · vector`` (activation steering)."""

    vector: torch.Tensor
    scale: float = 1.0

    def new_value(self, current, site):
        return current + self.scale * broadcast_value(self.vector, current, f"add at {site}")


@dataclass(frozen=True, kw_only=True)
class Zero(Patch):
    """Zero ablation."""

    def new_value(self, current, site):
        return torch.zeros_like(current)


@dataclass(frozen=True, kw_only=True)
class Mean(Patch):
    """Mean ablation: write the mean of ``reference`` -- a tensor, or :class:`~interp.extraction.Activations`
    holding this site (its rows, texts or tokens, are averaged)."""

    reference: object

    def new_value(self, current, site):
        reference = self.reference
        if not isinstance(reference, torch.Tensor):
            try:
                rows = reference[site]
            except (KeyError, TypeError) as err:
                raise ValueError(f"mean ablation at {site}: the reference activations do not hold this site") from err
            reference = rows.double().mean(0)
        return broadcast_value(reference, current, f"mean ablation at {site}")


@dataclass(frozen=True, kw_only=True)
class Apply(Patch):
    """``fn(activation [B, T, *feature], site) -> new activation`` (None: unchanged), as a TransformerLens hook."""

    fn: Callable[[torch.Tensor, str], torch.Tensor | None]

    def new_value(self, current, site):
        out = self.fn(current, site)
        if out is None:
            return current
        if not isinstance(out, torch.Tensor) or out.shape != current.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the patch function at {site} returned {shape}; it must return None or a tensor "
                             f"of the activation's shape {tuple(current.shape)}")  # fmt: skip
        return out


def replace(value: torch.Tensor, positions: Positions = None, heads: Heads = None) -> Replace:
    return Replace(value=value, positions=positions, heads=heads)


def add(vector: torch.Tensor, scale: float = 1.0, positions: Positions = None, heads: Heads = None) -> Add:
    return Add(vector=vector, scale=scale, positions=positions, heads=heads)


def zero(positions: Positions = None, heads: Heads = None) -> Zero:
    return Zero(positions=positions, heads=heads)


def mean(reference, positions: Positions = None, heads: Heads = None) -> Mean:
    return Mean(reference=reference, positions=positions, heads=heads)


def apply(fn: Callable, positions: Positions = None, heads: Heads = None) -> Apply:
    return Apply(fn=fn, positions=positions, heads=heads)


def as_patch(spec) -> Patch:
    """A :class:`Patch` from what users write: a Patch, a tensor (replace), a function, or ``"zero"``."""
    if isinstance(spec, Patch):
        return spec
    if isinstance(spec, torch.Tensor):
        return Replace(value=spec)
    if isinstance(spec, str):
        if spec == "zero":
            return Zero()
        raise ValueError(f"unknown patch {spec!r}; write 'zero', a tensor, a function or interp.patching.mean(acts)")
    if callable(spec):
        return Apply(fn=spec)
    raise TypeError(
        f"a patch is a tensor (replace), a function (activation, site) -> activation, 'zero', or one of "
        f"interp.patching.replace/add/zero/mean/apply; got {type(spec).__name__}"
    )
