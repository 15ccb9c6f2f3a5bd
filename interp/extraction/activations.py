"""The result of an extraction: per-site tensors plus what their axes mean.

An :class:`Activations` holds one tensor per extracted *site*
(:mod:`interp.extraction.sites`): integer keys are hidden-state indices (0 =
embedding output, i = output of block i-1, L = after the final norm), string
keys are site names (``"blocks.3.hook_mlp_out"``) or module paths. Every site's
tensor is float32 (or the requested dtype) on CPU with rows first:

* pooled modes: ``[n_texts, *feature]``;
* ``pooling="none"``: ``[n_tokens, *feature]``, the texts' tokens concatenated in
  text order; ``lengths[j]`` tokens belong to text ``j``.

``feature`` is ``[d_model]`` for residual-stream sites, ``[n_heads, d_head]`` for
``attn.hook_z`` and ``[n_heads, K]`` for ``attn.hook_pattern`` (one row per query
token, keys in text positions, ``K`` = the longest text). When every site has
the same feature shape -- always for hidden states -- :attr:`Activations.tensor`
stacks them: ``[n_sites, n_rows, *feature]`` (``[n_layers, n_texts, d_model]``
for the classic extraction), sharing memory with the per-site views.

Access: ``acts[site]`` (a name, an int, or a name that equals an extracted
hidden state), ``acts.layer(i)`` (negative indices count from the end as
extraction counted them), per text ``acts.states(j)``, ``acts.tokens(j)`` (token
ids), ``acts.str_tokens(j)`` (token strings), ``acts.pattern(j, block)``
(``[heads, q, k]``), and ``acts.padded()`` (``[sites, texts, max_len, *feature]``
with a mask). ``ids`` and ``labels`` are the per-text metadata the caller
passed (ids default to ``0..n_texts-1``).

A store opened lazily (:meth:`~interp.extraction.store.ActivationStore.load`
with ``lazy=True``) fills the per-site tensors from memory-mapped shards on
first access.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from interp.extraction.sites import hidden_index_of

__all__ = ["Activations", "TokenTable", "as_pooled_stack", "text_span"]


@dataclass(frozen=True)
class TokenTable:
    """The tokens of every text: ``ids [n_tokens]`` int64 (texts concatenated), ``lengths [n_texts]``,
    and ``strings`` (one per token, each id decoded alone) or None."""

    ids: torch.Tensor
    lengths: torch.Tensor
    strings: list[str] | None = None

    def span(self, text: int) -> slice:
        return text_span(self.lengths, text)


def text_span(lengths: torch.Tensor, text: int) -> slice:
    """The rows of text ``text`` when texts of ``lengths`` rows each are concatenated."""
    start = int(lengths[:text].sum())
    return slice(start, start + int(lengths[text]))


def _key_index(key) -> int | None:
    if isinstance(key, (bool, np.bool_)):
        return None
    try:
        return operator.index(key)
    except TypeError:
        return None


class Activations:
    """Per-site activations of many texts (see the module docstring).

    Construct it from a stacked tensor (``Activations(tensor, layers, ids, ...)``:
    ``tensor[a]`` is hidden-state ``layers[a]``) or from ``values={site: rows}``.
    """

    def __init__(
        self,
        tensor: torch.Tensor | None = None,
        layers: Sequence[int] | None = None,
        ids: Sequence | None = None,
        labels: Sequence | None = None,
        pooling: str = "mean",
        lengths: torch.Tensor | None = None,
        model_name: str = "",
        meta: dict | None = None,
        *,
        values: Mapping[int | str, torch.Tensor] | None = None,
        sites: Sequence[int | str] | None = None,
        tokens: TokenTable | None = None,
        n_hidden_states: int | None = None,
    ):
        if (tensor is None) == (values is None):
            raise TypeError("pass either tensor (stacked, with layers or sites) or values ({site: rows})")
        if tensor is not None:
            keys = list(sites) if sites is not None else list(layers if layers is not None else [])
            if tensor.ndim < 3 or tensor.shape[0] != len(keys):
                raise ValueError(f"tensor must be [n_sites={len(keys)}, n, *feature], got {tuple(tensor.shape)}")
            self._stacked = tensor
            self._values: Mapping[int | str, torch.Tensor] = {k: tensor[a] for a, k in enumerate(keys)}
        else:
            keys = list(sites) if sites is not None else list(values)
            self._stacked = None
            self._values = values
        if len(set(keys)) != len(keys):
            raise ValueError(f"site keys must be unique, got {keys}")
        self.sites: list[int | str] = keys
        self.ids = list(ids) if ids is not None else []
        self.labels = list(labels) if labels is not None else None
        self.pooling = pooling
        self.lengths = lengths
        self.model_name = model_name
        self.meta = dict(meta or {})
        self.token_table = tokens
        self.n_hidden_states = n_hidden_states
        if tensor is not None:
            n_rows = int(lengths.sum()) if lengths is not None else len(self.ids)
            if tensor.shape[1] != n_rows:
                raise ValueError(f"tensor has {tensor.shape[1]} rows but the metadata describes {n_rows}")

    # -- shape --------------------------------------------------------------
    @property
    def n_texts(self) -> int:
        return len(self.ids)

    @property
    def n_blocks(self) -> int | None:
        return None if self.n_hidden_states is None else self.n_hidden_states - 1

    @property
    def tensor(self) -> torch.Tensor:
        """``[n_sites, n_rows, *feature]``: every site stacked (they must share a feature shape)."""
        if self._stacked is None:
            shapes = {k: tuple(self._values[k].shape[1:]) for k in self.sites}
            if len(set(shapes.values())) > 1:
                raise ValueError(
                    f"the sites have different shapes per row ({shapes}), so they do not stack into one tensor; "
                    "index one site: acts['blocks.0.attn.hook_pattern']"
                )
            self._stacked = torch.stack([self._values[k] for k in self.sites])
            self._values = {k: self._stacked[a] for a, k in enumerate(self.sites)}
        return self._stacked

    @property
    def layers(self) -> list[int]:
        """The hidden-state index of every site (all sites must be hidden states)."""
        out, other = [], []
        for key in self.sites:
            index = hidden_index_of(key, self.n_blocks)
            (out if index is not None else other).append(index if index is not None else key)
        if other:
            raise ValueError(
                f"sites {other} are not hidden states, so these activations have no layer numbering; "
                "index them by name (acts[site]) or use acts.sites"
            )
        return out

    @property
    def d_model(self) -> int:
        return self[self.sites[0]].shape[-1]

    @property
    def shape(self) -> torch.Size:
        return self.tensor.shape

    def site_shape(self, site: int | str) -> tuple[int, ...]:
        """The feature shape of one row of ``site``."""
        return tuple(self[site].shape[1:])

    # -- lookup -------------------------------------------------------------
    def _resolve(self, key) -> int | str:
        index = _key_index(key)
        if index is not None:
            if index < 0:
                if self.n_hidden_states is None:
                    raise KeyError(
                        f"hidden-state index {index} counts from the end, but these activations do not know the "
                        "model's depth; use a non-negative index"
                    )
                index += self.n_hidden_states
            wanted = index
        elif isinstance(key, str):
            if key in self._values:
                return key
            wanted = hidden_index_of(key, self.n_blocks)
        else:
            raise TypeError(f"a site is an int (hidden-state index) or a name, got {type(key).__name__}")
        if wanted is not None:
            for site in self.sites:
                if hidden_index_of(site, self.n_blocks) == wanted:
                    return site
        what = f"hidden-state index {wanted}" if index is not None else f"site {key!r}"
        raise KeyError(f"{what} was not extracted; available sites: {self.sites}")

    def __getitem__(self, key: int | str) -> torch.Tensor:
        """Rows of one site: ``[n_texts, *feature]`` pooled, ``[n_tokens, *feature]`` per token."""
        return self._values[self._resolve(key)]

    def __contains__(self, key) -> bool:
        try:
            self._resolve(key)
        except (KeyError, TypeError):
            return False
        return True

    def layer(self, index: int) -> torch.Tensor:
        """Rows of hidden-state ``index`` (negative: from the end, as extraction counted): ``[n, d_model]``."""
        return self[index]

    # -- per text -----------------------------------------------------------
    def _per_token(self, what: str) -> None:
        if self.lengths is None:
            raise ValueError(f"{what} needs pooling='none'; these activations are pooled ({self.pooling!r})")

    def _check_text(self, text: int) -> int:
        index = _key_index(text)
        if index is None or not -self.n_texts <= index < self.n_texts:
            raise IndexError(f"text {text!r} does not exist; there are {self.n_texts} texts")
        return index % self.n_texts

    def states(self, text: int, site: int | str | None = None) -> torch.Tensor:
        """Per-token rows of text ``text`` (``pooling="none"``).

        Returns ``[n_tokens, *feature]`` for one ``site``, or every site stacked
        ``[n_sites, n_tokens, *feature]`` (they must share a feature shape).
        """
        self._per_token("states()")
        span = text_span(self.lengths, self._check_text(text))
        if site is not None:
            return self[site][span]
        return self.tensor[:, span]

    def _tokens(self) -> TokenTable:
        if self.token_table is None:
            raise ValueError("these activations carry no token ids (built by hand, or loaded from an older store)")
        return self.token_table

    def tokens(self, text: int) -> torch.Tensor:
        """Token ids of text ``text``, ``[n_tokens]`` int64, as the tokenizer produced them."""
        return self._tokens().ids[self._tokens().span(self._check_text(text))]

    def str_tokens(self, text: int) -> list[str]:
        """The tokens of text ``text`` as strings (each id decoded alone, as TransformerLens' ``to_str_tokens``)."""
        table = self._tokens()
        if table.strings is None:
            raise ValueError("these activations carry token ids but no token strings")
        return table.strings[table.span(self._check_text(text))]

    def pattern(self, text: int, block: int) -> torch.Tensor:
        """Attention of text ``text`` in decoder block ``block``: ``[n_heads, q, k]`` (``pooling="none"``)."""
        rows = self.states(text, f"blocks.{block}.attn.hook_pattern")  # [q, H, K]
        return rows[:, :, : rows.shape[0]].transpose(0, 1)

    def padded(self, sites: Sequence[int | str] | None = None, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Every text right-padded to the longest: ``([n_sites, n_texts, max_len, *feature], mask [n_texts, max_len])``.

        ``mask`` is True on real tokens; padded rows hold ``fill``. The sites must share a feature shape.
        """
        self._per_token("padded()")
        keys = [self._resolve(s) for s in (self.sites if sites is None else sites)]
        shapes = {tuple(self._values[k].shape[1:]) for k in keys}
        if len(shapes) > 1:
            raise ValueError(f"padded() stacks sites of one feature shape; these have {sorted(shapes)}")
        lengths = self.lengths.tolist()
        width = max(lengths)
        first = self._values[keys[0]]
        out = torch.full((len(keys), self.n_texts, width, *first.shape[1:]), fill, dtype=first.dtype)
        mask = torch.zeros(self.n_texts, width, dtype=torch.bool)
        start = 0
        for j, n in enumerate(lengths):
            for a, key in enumerate(keys):
                out[a, j, :n] = self._values[key][start : start + n]
            mask[j, :n] = True
            start += n
        return out, mask

    # -- conversion ---------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The tensor as a NumPy array (shares memory; bfloat16, which NumPy lacks, is widened to float32 exactly)."""
        tensor = self.tensor
        return tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()

    def __repr__(self) -> str:
        first = self._values[self.sites[0]]
        if self._stacked is not None or all(self._values[k].shape == first.shape for k in self.sites):
            shape = "×".join(map(str, [len(self.sites), *first.shape]))
        else:
            shape = f"{len(self.sites)} sites × {first.shape[0]} rows"
        keys = self.sites
        what = "layers" if all(isinstance(k, int) for k in keys) else "sites"
        if len(keys) <= 3:
            text = str(keys)
        else:
            text = f"{keys[0]}..{keys[-1]}" if what == "layers" else str([*keys[:2], "...", keys[-1]])
        return (
            f"Activations({shape} {str(first.dtype).replace('torch.', '')}, pooling={self.pooling!r}, "
            f"{what}={text}, n_texts={self.n_texts}, model={self.model_name!r})"
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
