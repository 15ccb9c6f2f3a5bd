"""The result of an extraction: a tensor plus what its axes mean.

``Activations.tensor`` is float32 (or the requested dtype) on CPU:

* pooled modes: ``[n_layers, n_texts, d_model]``;
* ``pooling="none"``: ``[n_layers, n_tokens, d_model]``, the texts' tokens
  concatenated in text order; ``lengths[j]`` tokens belong to text ``j``
  (:meth:`Activations.tokens` slices one text out).

``layers[a]`` is the hidden-state index of slice ``tensor[a]`` (0 = embedding
output, i = output of block i-1, L = after the final norm); ``ids`` and
``labels`` are the per-text metadata the caller passed (ids default to
``0..n_texts-1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Activations", "as_pooled_stack"]


@dataclass
class Activations:
    tensor: torch.Tensor
    layers: list[int]
    ids: list
    labels: list | None = None
    pooling: str = "mean"
    lengths: torch.Tensor | None = None
    model_name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tensor.ndim != 3 or self.tensor.shape[0] != len(self.layers):
            raise ValueError(
                f"tensor must be [n_layers={len(self.layers)}, n, d_model], got {tuple(self.tensor.shape)}"
            )
        n_rows = int(self.lengths.sum()) if self.lengths is not None else len(self.ids)
        if self.tensor.shape[1] != n_rows:
            raise ValueError(f"tensor has {self.tensor.shape[1]} rows but the metadata describes {n_rows}")

    @property
    def n_texts(self) -> int:
        return len(self.ids)

    @property
    def d_model(self) -> int:
        return self.tensor.shape[-1]

    @property
    def shape(self) -> torch.Size:
        return self.tensor.shape

    def layer(self, index: int) -> torch.Tensor:
        """Rows of hidden-state ``index`` (not the position in ``layers``): ``[n, d_model]``."""
        if index not in self.layers:
            raise KeyError(f"hidden-state index {index} was not extracted; available: {self.layers}")
        return self.tensor[self.layers.index(index)]

    def tokens(self, text: int) -> torch.Tensor:
        """Per-token states of text number ``text`` (``pooling="none"`` only): ``[n_layers, n_tokens, d]``."""
        if self.lengths is None:
            raise ValueError(f"tokens() needs pooling='none'; these activations are pooled ({self.pooling!r})")
        offsets = torch.cumsum(self.lengths, 0) - self.lengths
        start, n = int(offsets[text]), int(self.lengths[text])
        return self.tensor[:, start : start + n]

    def numpy(self) -> np.ndarray:
        """The tensor as a NumPy array (shares memory; bfloat16, which NumPy lacks, is widened to float32 exactly)."""
        if self.tensor.dtype == torch.bfloat16:
            return self.tensor.float().numpy()
        return self.tensor.numpy()

    def __repr__(self) -> str:
        shape = "×".join(map(str, self.tensor.shape))
        layer_text = f"{self.layers[0]}..{self.layers[-1]}" if len(self.layers) > 3 else str(self.layers)
        return (
            f"Activations({shape} {str(self.tensor.dtype).replace('torch.', '')}, pooling={self.pooling!r}, "
            f"layers={layer_text}, n_texts={self.n_texts}, model={self.model_name!r})"
        )


def as_pooled_stack(
    acts, name: str, consumer: str, allow_2d: bool = False
) -> tuple[torch.Tensor, list[int], list | None, list | None]:
    """The one "Activations or tensor" reader of the analysis packages.

    Args:
        acts: pooled :class:`Activations`, a tensor / array ``[n_layers, N, D]``, or (with
            ``allow_2d``) ``[N, D]``, read as one layer.
        name: the argument's name in errors.
        consumer: what needs one vector per text, for the per-token error (e.g. ``"ILO"``).

    Returns:
        ``(x [n_layers, N, D], hidden-state index of each slice, labels, ids)``; a plain tensor's
        slices are numbered ``0..n_layers-1`` and it carries no labels or ids (``None``).
        Values are not checked here (the consumers' messages name their own requirements).
    """
    if isinstance(acts, Activations):
        if acts.lengths is not None:
            raise ValueError(
                f"{name} has per-token states (pooling='none'); {consumer} needs one vector per text: "
                "extract with pooling='mean' (or 'last')"
            )
        return acts.tensor, list(acts.layers), acts.labels, acts.ids
    if not isinstance(acts, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be interp.Activations or a tensor, got {type(acts).__name__}")
    x = torch.as_tensor(acts)
    if allow_2d and x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3:
        shapes = "[n_layers, N, D] or [N, D]" if allow_2d else "[n_layers, N, D]"
        raise ValueError(f"{name} must be {shapes}, got shape {tuple(x.shape)}")
    return x, list(range(x.shape[0])), None, None
