"""The tensors of one extraction shard, and reading shards back -- whole or memory-mapped.

A shard holds the rows of a contiguous range of texts (safetensors names):

* ``"hidden"`` ``[n_sites, n_rows, *feature]`` when every site has the same
  feature shape (always for hidden states: the format of earlier versions), else
  ``"site.{a}"`` ``[n_rows, *feature_a]`` for site number ``a``;
* ``"lengths"`` ``[n_texts]`` tokens per text (``pooling="none"`` only: rows are tokens);
* ``"token_ids"`` ``[n_tokens]`` and ``"token_lengths"`` ``[n_texts]``: the texts' tokens;
  ``"token_text"`` (uint8, the strings' UTF-8 bytes end to end) and ``"token_text_offsets"``
  ``[n_tokens + 1]``: each token's string.

Rows are pooled vectors (one per text) or tokens (texts concatenated).
:func:`read_shards` concatenates shards into the per-site tensors of an
:class:`~interp.extraction.activations.Activations`; with ``lazy=True`` each
file is memory-mapped (copy-on-write, nothing is read until a site is
indexed) and a site is concatenated on first access -- a one-shard store is
never copied at all.
"""

from __future__ import annotations

import itertools
import json
import mmap
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from interp.extraction.activations import TokenTable

__all__ = ["pack_shard", "read_shards", "mmap_safetensors", "LazySites"]

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


def _encode_strings(strings: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = [s.encode("utf-8", "surrogatepass") for s in strings]
    offsets = torch.tensor([0, *itertools.accumulate(len(e) for e in encoded)], dtype=torch.int64)
    return torch.frombuffer(bytearray(b"".join(encoded)), dtype=torch.uint8) if offsets[-1] else (
        torch.zeros(0, dtype=torch.uint8)
    ), offsets  # fmt: skip


def _decode_strings(data: torch.Tensor, offsets: torch.Tensor) -> list[str]:
    raw, cuts = data.numpy().tobytes(), offsets.tolist()
    return [raw[a:b].decode("utf-8", "surrogatepass") for a, b in itertools.pairwise(cuts)]


def pack_shard(
    values: Sequence[torch.Tensor],
    lengths: torch.Tensor | None,
    token_ids: torch.Tensor,
    token_lengths: torch.Tensor,
    strings: list[str] | None,
) -> dict[str, torch.Tensor]:
    """The tensors of one shard from per-site rows ``values[a]`` ``[n_rows, *feature]``."""
    if len({tuple(v.shape[1:]) for v in values}) == 1:
        tensors = {"hidden": torch.stack(list(values))}
    else:
        tensors = {f"site.{a}": v for a, v in enumerate(values)}
    if lengths is not None:
        tensors["lengths"] = lengths
    tensors["token_ids"] = token_ids
    tensors["token_lengths"] = token_lengths
    if strings is not None:
        tensors["token_text"], tensors["token_text_offsets"] = _encode_strings(strings)
    return tensors


def mmap_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file as a zero-copy view of a private memory map.

    The map is copy-on-write: writing to a tensor never reaches the file. Pages
    are read from disk when touched.
    """
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    (size,) = struct.unpack("<Q", mapped[:8])
    header = json.loads(mapped[8 : 8 + size])
    header.pop("__metadata__", None)
    base = 8 + size
    tensors = {}
    for name, info in header.items():
        dtype = _DTYPES[info["dtype"]]
        start, stop = info["data_offsets"]
        count = (stop - start) // torch.empty((), dtype=dtype).element_size()
        flat = torch.frombuffer(mapped, dtype=dtype, count=count, offset=base + start) if count else (
            torch.empty(0, dtype=dtype)
        )  # fmt: skip
        tensors[name] = flat.reshape(info["shape"])
    return tensors


def _open_whole(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118


def _site_rows(tensors: dict[str, torch.Tensor], a: int) -> torch.Tensor:
    return tensors["hidden"][a] if "hidden" in tensors else tensors[f"site.{a}"]


class LazySites(Mapping):
    """``{site: rows}`` over memory-mapped shards; a site is concatenated (and kept) on first access."""

    def __init__(self, shards: list[dict[str, torch.Tensor]], positions: dict[int | str, int]):
        self._shards = shards
        self._positions = positions
        self._cache: dict[int | str, torch.Tensor] = {}

    def __getitem__(self, key: int | str) -> torch.Tensor:
        if key not in self._positions:
            raise KeyError(key)
        if key not in self._cache:
            parts = [_site_rows(shard, self._positions[key]) for shard in self._shards]
            self._cache[key] = parts[0] if len(parts) == 1 else torch.cat(parts)
        return self._cache[key]

    def __iter__(self) -> Iterator[int | str]:
        return iter(self._positions)

    def __len__(self) -> int:
        return len(self._positions)


def read_shards(
    paths: Sequence[Path], all_sites: Sequence[int | str], wanted: Sequence[int | str], lazy: bool
) -> tuple[torch.Tensor | Mapping[int | str, torch.Tensor], torch.Tensor | None, TokenTable | None]:
    """``(rows, lengths or None, tokens or None)`` of the ``wanted`` sites over ``paths`` in order.

    ``rows`` is the stacked ``[n_wanted, n_rows, *feature]`` tensor when the shards
    hold one (read whole), else ``{site: rows}`` (lazy: a :class:`LazySites`).
    """
    shards = [(mmap_safetensors(p) if lazy else _open_whole(p)) for p in paths]
    positions = {key: list(all_sites).index(key) for key in wanted}
    values: torch.Tensor | Mapping[int | str, torch.Tensor]
    if lazy:
        values = LazySites(shards, positions)
    elif "hidden" in shards[0]:
        index = list(positions.values())
        every = index == list(range(len(all_sites)))
        values = torch.cat([s["hidden"] if every else s["hidden"][index] for s in shards], dim=1)
    else:
        values = {key: torch.cat([_site_rows(s, a) for s in shards]) for key, a in positions.items()}
    lengths = torch.cat([s["lengths"] for s in shards]) if "lengths" in shards[0] else None
    tokens = None
    if "token_ids" in shards[0]:
        strings = None
        if all("token_text" in s for s in shards):
            strings = [t for s in shards for t in _decode_strings(s["token_text"], s["token_text_offsets"])]
        ids = torch.cat([s["token_ids"] for s in shards])
        tokens = TokenTable(ids, torch.cat([s["token_lengths"] for s in shards]), strings)
    return values, lengths, tokens
