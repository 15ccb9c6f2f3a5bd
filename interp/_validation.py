"""The argument checks every package shares: one rule, one message, for each kind of input.

Public functions take user input and either return it in canonical form or raise an
error that says what was wrong and how to fix it:

* :func:`is_int` / :func:`check_int` -- an integer is a Python or NumPy integer, never a bool;
* :func:`as_tensor` -- torch or numpy input as a floating (or bool) tensor;
* :func:`as_float_tensor` -- a non-empty, finite floating tensor of an accepted rank;
* :func:`check_texts` -- a list of valid-Unicode strings (not one string);
* :func:`encode_labels` (sorted codes, as ``numpy.unique``) and :func:`first_appearance_codes`
  (codes in order of first appearance: the order of ILO's and similarity's language tables);
* :func:`renamed` -- an argument's old spelling keeps working for one release, with a
  ``DeprecationWarning`` that names the new one.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch

__all__ = [
    "is_int",
    "check_int",
    "as_tensor",
    "as_float_tensor",
    "check_texts",
    "encode_labels",
    "first_appearance_codes",
    "renamed",
    "renamed_attribute",
]


def is_int(value) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value, low: int | None = None, high: int | None = None, why: str = "") -> int:
    """``value`` as a Python int in ``[low, high]`` (either bound optional), or a ``ValueError`` saying so."""
    if not is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = {(False, False): "", (True, False): f" >= {low}", (False, True): f" <= {high}",
                  (True, True): f" with {low} <= {name} <= {high}"}[low is not None, high is not None]  # fmt: skip
        raise ValueError(f"{name} must be an int{bounds}{why}, got {value!r}")
    return int(value)


def as_tensor(name: str, x, shape: str = "", allow_bool: bool = False) -> torch.Tensor:
    """``x`` (torch or numpy) as a floating (or, with ``allow_bool``, bool) tensor; ``shape`` names it in errors."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array {shape}".rstrip() + f", got {type(x).__name__}")
    if not (x.dtype.is_floating_point or (allow_bool and x.dtype == torch.bool)):
        kinds = "floating point (or bool)" if allow_bool else "floating point"
        raise TypeError(f"{name} must be {kinds}, got {x.dtype}; cast it with .float()")
    return x


def as_float_tensor(name: str, x, shapes: dict[int, str] | None = None) -> torch.Tensor:
    """``x`` (torch or numpy) as a non-empty, finite floating tensor, or an error that says what is wrong.

    ``shapes`` maps the accepted ``ndim`` to its name in messages (default ``[N, D]`` / ``[B, N, D]``).
    """
    shapes = shapes or {2: "[N, D]", 3: "[B, N, D]"}
    allowed = " or ".join(shapes.values())
    x = as_tensor(name, x, allowed)
    if x.ndim not in shapes:
        raise ValueError(f"{name} must be {allowed}, got shape {tuple(x.shape)}")
    if 0 in x.shape:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or Inf (first at index {bad}); clean the inputs first")
    return x


def check_texts(texts, what: str = "texts") -> list[str]:
    """``texts`` as a non-empty list of valid-Unicode strings; ``what`` names them in errors."""
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings, not a single string; wrap it: [text]")
    try:
        texts = list(texts)
    except TypeError as err:
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}") from err
    if not texts:
        raise ValueError(f"{what} is empty; pass at least one string")
    bad = [(i, type(t).__name__) for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        shown = ", ".join(f"#{i} is {name}" for i, name in bad[:5])
        raise TypeError(f"{what} must all be strings; {len(bad)} are not ({shown})")
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # lone surrogates, e.g. from a bad decode: no tokenizer takes them
            raise ValueError(
                f"text {i} ({text[:40]!r}) is not valid Unicode ({err.reason} at position {err.start}); "
                "clean it, e.g. text.encode('utf-8', 'replace').decode('utf-8')"
            ) from None
    return texts


def encode_labels(labels) -> tuple[torch.Tensor, np.ndarray]:
    """Map arbitrary labels (strings, ints) to codes ``0..C-1``, classes **sorted**.

    Returns ``(codes [N] int64, classes [C])`` with ``classes[codes] == labels``
    (as ``numpy.unique``).
    """
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    return torch.from_numpy(codes.astype(np.int64)), classes


def first_appearance_codes(values) -> tuple[torch.Tensor, list]:
    """``(codes [N] int64, distinct values in order of first appearance)``."""
    order = list(dict.fromkeys(values))
    lookup = {v: i for i, v in enumerate(order)}
    return torch.tensor([lookup[v] for v in values], dtype=torch.int64), order


def renamed(new: str, value, old: str, old_value, default, where: str, stacklevel: int = 3):
    """The value of argument ``new``, which used to be called ``old`` (``old_value`` is None unless given).

    The old spelling still works, with a ``DeprecationWarning``; giving both is a ``TypeError``.
    """
    if old_value is None:
        return value
    if value is not default and value != default:
        raise TypeError(f"{where}: pass {new}= only ({old}= is its deprecated old name)")
    warnings.warn(
        f"{where}: {old}= is deprecated and will be removed in the next release; use {new}= (same meaning)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return old_value


def renamed_attribute(module: str, name: str, renames: dict[str, str], namespace: dict):
    """A module ``__getattr__`` body: an old attribute name returns the new one's value, with a warning."""
    if name not in renames:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(f"{module}.{name} is deprecated; use {module}.{renames[name]} (same value)", DeprecationWarning,
                  stacklevel=3)  # fmt: skip
    return namespace[renames[name]]
