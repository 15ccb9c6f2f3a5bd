"""``interp.extract``: hidden states of many texts, pooled, on any backend.

Flow: validate everything (nothing is computed or written before the inputs
are known to be good) -> tokenise each text alone -> cut the corpus into
shards of ``shard_size`` texts, and each shard into length-sorted padded
batches -> run the backend (hooks / TransformerLens / nnsight) -> pool per
layer in float32 -> keep in memory, or commit each shard to an
:class:`~interp.extraction.store.ActivationStore` when ``store=`` is given.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import os
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from interp._validation import check_texts
from interp.extraction.activations import Activations
from interp.extraction.backends import check_backend, get_backend
from interp.extraction.backends.base import input_device
from interp.extraction.fingerprint import json_digest, legacy_model_digest, model_digest, token_digest
from interp.extraction.pooling import check_pooling, pool
from interp.extraction.store import ActivationStore
from interp.models.adapter import ModelAdapter, get_adapter
from interp.models.inputs import Tokenized, collate, pad_id, plan_batches, tokenize
from interp.neighbors.api import torch_matmul_precision

__all__ = ["extract", "resolve_layers", "model_digest", "context_length"]


def _layer_index(item) -> int:
    """``item`` as a Python int: ints and integer NumPy/torch scalars, never bools or floats."""
    if isinstance(item, bool) or str(getattr(item, "dtype", "")) in ("bool", "torch.bool"):
        raise TypeError(f"layer indices must be ints, got {item!r} (a bool)")
    try:
        return operator.index(item)
    except TypeError:
        raise TypeError(f"layer indices must be ints, got {item!r} ({type(item).__name__})") from None


def resolve_layers(layers: str | int | Sequence[int], n_hidden_states: int) -> list[int]:
    """Validate ``layers`` (``"all"``, an index or a list) against ``0..L``.

    Negative indices count from the end (``-1`` = L, after the final norm).
    Integer NumPy/torch scalars and arrays are accepted like ints and lists.
    Returns sorted, de-duplicated non-negative indices.
    """
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be 'all', an int or a list of ints, got {layers!r}")
        return list(range(n_hidden_states))
    scalar = getattr(layers, "ndim", None) == 0 or not isinstance(layers, Iterable)
    items = [_layer_index(item) for item in ([layers] if scalar else list(layers))]
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


def _check_max_length(max_length) -> int | None:
    if max_length is None:
        return None
    try:
        if isinstance(max_length, bool):
            raise TypeError
        max_length = operator.index(max_length)
    except TypeError:
        raise TypeError(f"max_length must be a positive int or None, got {max_length!r}") from None
    if max_length < 1:
        raise ValueError(f"max_length must be a positive int (tokens kept per text, BOS included), got {max_length}")
    return max_length


def context_length(model: nn.Module) -> int | None:
    """The most positions the (text) model accepts: ``config.max_position_embeddings``, or None."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    limit = getattr(config, "max_position_embeddings", None)
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


def _check_context(tokens: list[Tokenized], texts: list[str], model: nn.Module) -> None:
    limit = context_length(model)
    if limit is None:
        return
    too_long = [i for i, t in enumerate(tokens) if len(t.input_ids) > limit]
    if too_long:
        i = too_long[0]
        raise ValueError(
            f"text {i} ({texts[i][:40]!r}) has {len(tokens[i].input_ids)} tokens but the model accepts at most "
            f"{limit} (config.max_position_embeddings; {len(too_long)} such texts); pass max_length={limit} "
            "to truncate them, or shorten them"
        )


def _check_metadata(name: str, values, n: int) -> list | None:
    if values is None:
        return None
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but there are {n} texts")
    return values


def _model_name(model: nn.Module) -> str:
    return str(getattr(model, "name_or_path", "") or type(model).__name__)


def _check_fits(per_layer: list, layers: list[int], dtype: torch.dtype) -> None:
    """Refuse to cast finite float32 states that overflow ``dtype`` (silent inf otherwise).

    Gemma-style residual streams reach ~1e5, past float16's 65504.
    """
    limit = torch.finfo(dtype).max
    if limit >= torch.finfo(torch.float32).max:
        return
    for index, out in zip(layers, per_layer, strict=True):
        values = torch.cat(out) if isinstance(out, list) else out
        peak = values.abs().nan_to_num(nan=0.0, posinf=0.0).amax().item() if values.numel() else 0.0
        if peak > limit:
            raise ValueError(
                f"hidden-state index {index} reaches |h| = {peak:.4g}, beyond the range of {dtype} "
                f"(max {limit:.4g}): the result would hold inf. Use dtype=torch.bfloat16 or torch.float32"
            )


def _run_shard(
    runner,
    tokens: list[Tokenized],
    lengths: list[int],
    rows: range,
    batch_size: int,
    pooling: str,
    pad: int,
    padding_side: str,
    dtype: torch.dtype,
    bar,
) -> dict[str, torch.Tensor]:
    """Extract texts ``rows``; return the shard's tensors in text order."""
    layers = runner.layers
    pooled: dict[int, list] = {}
    for batch_rows in plan_batches(lengths, rows, batch_size):
        batch = collate(tokens, batch_rows, pad, padding_side)
        with torch.no_grad():
            hidden = runner(batch)
        mask = batch.attention_mask.to(runner.device)
        special = batch.special_mask.to(runner.device)
        per_layer = [pool(hidden[index], mask, special, pooling) for index in layers]
        _check_fits(per_layer, layers, dtype)
        for b, row in enumerate(batch_rows):
            pooled[row] = [layer_out[b].to("cpu", dtype) for layer_out in per_layer]
        bar.update(sum(lengths[r] for r in batch_rows))  # tokens: what a batch costs, so the ETA holds
    ordered = [pooled[r] for r in rows]
    if pooling == "none":
        hidden = torch.stack([torch.cat([text[a] for text in ordered]) for a in range(len(layers))])
        return {"hidden": hidden, "lengths": torch.tensor([lengths[r] for r in rows])}
    return {"hidden": torch.stack([torch.stack([text[a] for text in ordered]) for a in range(len(layers))])}


def _store_header(
    model: nn.Module,
    tokenizer,
    adapter: ModelAdapter,
    tokens: list[Tokenized],
    texts: list[str],
    ids: list,
    labels: list | None,
    shard_ranges: list[range],
    settings: dict,
) -> dict:
    """The manifest header of a store: the fingerprint a resume must match, and what ``load`` needs."""
    try:
        json.dumps([ids, labels])
    except TypeError as err:
        raise TypeError("ids and labels must be JSON-serialisable (str/int/float) to be stored") from err
    config = getattr(model, "config", None)
    device = input_device(adapter.embed)
    model_name = _model_name(model)
    return {
        "fingerprint": {  # what each key covers: interp.extraction.fingerprint
            "model": model_name,
            "weights": model_digest(model),
            "tokenizer": f"{type(tokenizer).__name__}:{getattr(tokenizer, 'name_or_path', '')}:{len(tokenizer)}",
            "tokens": token_digest([t.input_ids for t in tokens], [t.special for t in tokens]),
            # texts, ids and labels together (the key stores made by earlier versions resume with);
            # "texts_only" below lets a refusal say which of the three changed
            "texts": json_digest([texts, ids, labels]),
            "layers": settings["layer_ids"],
            "pooling": settings["pooling"],
            "dtype": str(settings["dtype"]),
            "backend": settings["backend"],
            "batch_size": settings["batch_size"],
            "shard_size": settings["shard_size"],
            "max_length": settings["max_length"],
            "padding_side": settings["padding_side"],
            "attn_implementation": str(getattr(config, "_attn_implementation", None)),
            "device": device.type,
            "matmul_precision": torch_matmul_precision(device),
        },
        "shards": [[r.start, r.stop] for r in shard_ranges],
        "texts_only": json_digest(texts),
        "layers": settings["layer_ids"],
        "ids": ids,
        "labels": labels,
        "pooling": settings["pooling"],
        "model_name": model_name,
    }


def extract(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    layers: str | int | Sequence[int] = "all",
    pooling: str = "mean",
    backend: str = "hf",
    batch_size: int = 16,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    *,
    ids: Sequence | None = None,
    labels: Sequence | None = None,
    padding_side: str | None = None,
    max_length: int | None = None,
    store: str | os.PathLike | None = None,
    shard_size: int = 1024,
) -> Activations:
    """Run ``model`` over ``texts`` and return pooled hidden states.

    Args:
        model: a Hugging Face causal LM or VLM of a family
            :func:`interp.models.get_adapter` knows (any dtype/device).
        tokenizer: its tokenizer; each text is tokenised alone with special
            tokens (BOS) and no truncation unless ``max_length`` is set.
        texts: list of strings.
        layers: ``"all"`` (indices ``0..L``), an index or a list of indices in
            Hugging Face ``output_hidden_states`` numbering: 0 = embedding
            output, i = output of decoder block i-1, L = after the final norm.
        pooling: ``"mean"`` (all tokens incl. BOS, the official ILO choice),
            ``"mean_no_special"``, ``"last"`` or ``"none"`` (per token).
        backend: ``"hf"`` (torch hooks), ``"transformer_lens"`` or ``"nnsight"``.
        batch_size: texts per forward pass (length-sorted; results do not
            depend on it beyond float rounding).
        dtype: dtype of the returned tensor (pooling is always done in float32);
            a ValueError if the states overflow it (Gemma's pass float16's 65504).
        progress: show a tqdm progress bar.
        ids, labels: per-text metadata carried into the result.
        padding_side: ``"right"`` or ``"left"`` (default: the tokenizer's);
            results do not depend on it.
        max_length: truncate texts to this many tokens (BOS included). A text
            longer than the model's context (``config.max_position_embeddings``)
            is refused unless ``max_length`` cuts it to fit.
        store: directory of a resumable on-disk store; shards of
            ``shard_size`` texts are committed as they finish and a re-run
            with the same arguments resumes where it stopped.

    Returns:
        :class:`Activations` with ``tensor`` ``[n_layers, n_texts, d_model]``
        on CPU (``[n_layers, n_tokens, d_model]`` + ``lengths`` for ``"none"``).
    """
    texts = check_texts(texts)
    check_pooling(pooling)
    check_backend(backend)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    padding_side = padding_side or getattr(tokenizer, "padding_side", None) or "right"
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    adapter: ModelAdapter = get_adapter(model)
    layer_ids = resolve_layers(layers, adapter.n_hidden_states)
    ids = _check_metadata("ids", ids, len(texts)) or list(range(len(texts)))
    labels = _check_metadata("labels", labels, len(texts))
    max_length = _check_max_length(max_length)
    tokens = tokenize(tokenizer, texts, max_length)
    _check_context(tokens, texts, model)
    if pooling == "mean_no_special":
        empty = [i for i, t in enumerate(tokens) if all(t.special)]
        if empty:
            raise ValueError(
                f"pooling='mean_no_special' needs a non-special token, but text {empty[0]} "
                f"({texts[empty[0]][:40]!r}) has only special tokens ({len(empty)} such texts); "
                "drop them or use pooling='mean'"
            )
    model_name = _model_name(model)

    n = len(texts)
    shard_ranges = [range(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    settings = dict(layer_ids=layer_ids, pooling=pooling, dtype=dtype, backend=backend, batch_size=batch_size,
                    shard_size=shard_size, max_length=max_length, padding_side=padding_side)  # fmt: skip
    with contextlib.ExitStack() as held:
        done: set[int] = set()
        sink = None
        if store is not None:
            sink = ActivationStore(store)
            header = _store_header(model, tokenizer, adapter, tokens, texts, ids, labels, shard_ranges, settings)
            legacy = {"model_digest": functools.partial(legacy_model_digest, model)}
            done = held.enter_context(sink.writing(header, legacy))
        todo = [i for i in range(len(shard_ranges)) if i not in done]
        results: list[dict[str, torch.Tensor]] = []
        pad = pad_id(tokenizer)
        lengths = [len(t.input_ids) for t in tokens]
        # progress in tokens, not texts: batches run longest first and languages differ in length, so a
        # count of texts would make the first ETA far too long (and the last far too short)
        total = sum(lengths[r] for i in todo for r in shard_ranges[i])
        with tqdm(total=total, disable=not progress or total == 0, desc=f"extract[{backend}]", unit="tok",
                  unit_scale=True) as bar:  # fmt: skip
            if todo:
                with get_backend(backend)(model, tokenizer, adapter, layer_ids) as runner:
                    for i in todo:
                        shard = _run_shard(
                            runner, tokens, lengths, shard_ranges[i], batch_size, pooling, pad, padding_side,
                            dtype, bar,
                        )  # fmt: skip
                        if sink is not None:
                            sink.commit(i, shard)
                        else:
                            results.append(shard)
        if sink is not None:
            return sink.load(verify=False)  # writing() verified resumed shards; the rest were just written
    lengths = torch.cat([r["lengths"] for r in results]) if pooling == "none" else None
    return Activations(
        tensor=torch.cat([r["hidden"] for r in results], dim=1),
        layers=layer_ids,
        ids=ids,
        labels=labels,
        pooling=pooling,
        lengths=lengths,
        model_name=model_name,
        meta={"backend": backend, "padding_side": padding_side, "batch_size": batch_size},
    )
