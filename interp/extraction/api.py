"""``interp.extract``: any activation of many texts, pooled or per token, on any backend.

Flow: validate everything (nothing is computed or written before the inputs
are known to be good) -> resolve the sites on the model
(:mod:`.sites`) -> tokenise each text alone -> cut the corpus into shards of
``shard_size`` texts, and each shard into length-sorted padded batches -> run
the backend (hooks / TransformerLens / nnsight) -> pool per site in float32
(:mod:`.collect`) -> keep in memory, or commit each shard to an
:class:`~interp.extraction.store.ActivationStore` when ``store=`` is given.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import os
from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from interp._validation import check_int, check_texts
from interp.extraction.activations import Activations, TokenTable
from interp.extraction.backends import check_backend, get_backend
from interp.extraction.backends.base import input_device
from interp.extraction.collect import run_shard
from interp.extraction.fingerprint import json_digest, legacy_model_digest, model_digest, token_digest
from interp.extraction.pooling import check_pooling
from interp.extraction.shards import pack_shard
from interp.extraction.sites import Site, resolve_layers, resolve_request
from interp.extraction.store import ActivationStore
from interp.models.adapter import ModelAdapter, get_adapter
from interp.models.inputs import Tokenized, pad_id, token_strings, tokenize
from interp.models.interop import bridge_of, unwrap_model
from interp.neighbors.api import torch_matmul_precision

__all__ = ["extract", "resolve_layers", "model_digest", "context_length"]  # resolve_layers: from .sites


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
            "layers": settings["layer_ids"],  # every site's key (ints: hidden-state indices)
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
        "n_hidden_states": settings["n_hidden_states"],
        "ids": ids,
        "labels": labels,
        "pooling": settings["pooling"],
        "model_name": model_name,
    }


def _shard_tokens(tokens: list[Tokenized], rows: range, strings: list[list[str]]) -> tuple:
    """``(token_ids [n_tokens], token_lengths [n_texts], strings)`` of texts ``rows``."""
    ids = torch.tensor([i for r in rows for i in tokens[r].input_ids], dtype=torch.int64)
    lengths = torch.tensor([len(tokens[r].input_ids) for r in rows], dtype=torch.int64)
    return ids, lengths, [t for r in rows for t in strings[r]]


def _check_backend_for(backend: str | None, bridge) -> str:
    """The backend to run: ``"hf"`` by default, ``"transformer_lens"`` for a ``TransformerBridge``."""
    if bridge is None:
        return check_backend(backend or "hf")
    if backend not in (None, "transformer_lens"):
        raise ValueError(
            f"a TransformerBridge is read through its own hook points (backend='transformer_lens'), not "
            f"backend={backend!r}: leave backend unset, or pass the Hugging Face model itself for 'hf' or 'nnsight'"
        )
    return "transformer_lens"


def _check_sites_argument(sites, names_filter):
    if names_filter is None:
        return sites
    if sites is not None:
        raise TypeError("pass sites= or names_filter= (TransformerLens' name for the same selection), not both")
    return names_filter


def extract(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    layers: str | int | Sequence[int] | None = None,
    pooling: str = "mean",
    backend: str | None = None,
    batch_size: int = 16,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    *,
    sites: str | int | Sequence[int | str] | Callable[[str], bool] | None = None,
    names_filter: str | Sequence[str] | Callable[[str], bool] | None = None,
    ids: Sequence | None = None,
    labels: Sequence | None = None,
    padding_side: str | None = None,
    max_length: int | None = None,
    store: str | os.PathLike | None = None,
    shard_size: int = 1024,
) -> Activations:
    """Run ``model`` over ``texts`` and return the activations of chosen sites, pooled or per token.

    Args:
        model: a Hugging Face causal LM or VLM of a family
            :func:`interp.models.get_adapter` knows (any dtype/device), or an
            nnsight ``LanguageModel`` / a TransformerLens ``TransformerBridge``
            around one.
        tokenizer: its tokenizer; each text is tokenised alone with special
            tokens (BOS) and no truncation unless ``max_length`` is set.
        texts: list of strings.
        layers: hidden-state indices: ``"all"`` (``0..L``), an index or a list,
            in Hugging Face ``output_hidden_states`` numbering (0 = embedding
            output, i = output of decoder block i-1, L = after the final norm;
            negative from the end). Default: ``"all"``, unless ``sites`` is given.
        sites: named activation sites (:mod:`interp.extraction.sites`,
            docs/sites.md): ``"blocks.3.hook_mlp_out"``, ``"blocks.*.attn.hook_pattern"``
            (a glob), a module path (``"model.layers.3.mlp.down_proj"``, ``":input"``
            for its input), ints (hidden-state indices), a list of these, or a
            callable ``name -> bool`` over the model's vocabulary.
        names_filter: TransformerLens' name for ``sites`` (a list, a glob or a callable).
        pooling: ``"mean"`` (all tokens incl. BOS, the official ILO choice),
            ``"mean_no_special"``, ``"last"`` or ``"none"`` (per token).
        backend: ``"hf"`` (torch hooks; the default), ``"transformer_lens"``
            or ``"nnsight"``. A ``TransformerBridge`` is read through its own hook
            points: ``"transformer_lens"`` (its default, and the only choice).
        batch_size: texts per forward pass (length-sorted; results do not
            depend on it beyond float rounding).
        dtype: dtype of the returned tensors (pooling is always done in float32);
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
        :class:`Activations`: ``acts[site]`` is ``[n_texts, *feature]`` (pooled)
        or ``[n_tokens, *feature]`` (``"none"``, with ``lengths``); ``acts.tensor``
        stacks sites of one shape (``[n_layers, n_texts, d_model]`` for hidden
        states); token ids and strings of every text come along.
    """
    texts = check_texts(texts)
    check_pooling(pooling)
    bridge = bridge_of(model)
    backend = _check_backend_for(backend, bridge)
    batch_size = check_int("batch_size", batch_size, low=1)
    shard_size = check_int("shard_size", shard_size, low=1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    padding_side = padding_side or getattr(tokenizer, "padding_side", None) or "right"
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    model = unwrap_model(model)
    adapter: ModelAdapter = get_adapter(model)
    site_list: list[Site] = resolve_request(adapter, layers, _check_sites_argument(sites, names_filter))
    keys = [site.key for site in site_list]
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
    flat = token_strings(tokenizer, [i for t in tokens for i in t.input_ids])
    strings, start = [], 0
    for t in tokens:
        strings.append(flat[start : start + len(t.input_ids)])
        start += len(t.input_ids)
    key_width = max(len(t.input_ids) for t in tokens)

    n = len(texts)
    shard_ranges = [range(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    settings = dict(layer_ids=keys, pooling=pooling, dtype=dtype, backend=backend, batch_size=batch_size,
                    shard_size=shard_size, max_length=max_length, padding_side=padding_side,
                    n_hidden_states=adapter.n_hidden_states)  # fmt: skip
    with contextlib.ExitStack() as held:
        done: set[int] = set()
        sink = None
        if store is not None:
            sink = ActivationStore(store)
            header = _store_header(model, tokenizer, adapter, tokens, texts, ids, labels, shard_ranges, settings)
            legacy = {"model_digest": functools.partial(legacy_model_digest, model)}
            done = held.enter_context(sink.writing(header, legacy))
        todo = [i for i in range(len(shard_ranges)) if i not in done]
        results: list[list[torch.Tensor]] = []
        pad = pad_id(tokenizer)
        # progress in tokens, not texts: batches run longest first and languages differ in length, so a
        # count of texts would make the first ETA far too long (and the last far too short)
        n_tokens = [len(t.input_ids) for t in tokens]
        total = sum(n_tokens[r] for i in todo for r in shard_ranges[i])
        with tqdm(total=total, disable=not progress or total == 0, desc=f"extract[{backend}]", unit="tok",
                  unit_scale=True) as bar:  # fmt: skip
            if todo:
                with get_backend(backend)(model, tokenizer, adapter, site_list, bridge=bridge) as runner:
                    for i in todo:
                        rows = shard_ranges[i]
                        values = run_shard(
                            runner, tokens, rows, batch_size, pooling, pad, padding_side, dtype, key_width, bar
                        )
                        if sink is not None:
                            shard_tokens = _shard_tokens(tokens, rows, strings)
                            lengths = shard_tokens[1].clone() if pooling == "none" else None
                            sink.commit(i, pack_shard(values, lengths, *shard_tokens))
                        else:
                            results.append(values)
        if sink is not None:
            return sink.load(verify=False)  # writing() verified resumed shards; the rest were just written
    all_rows = range(n)
    token_ids, token_lengths, flat_strings = _shard_tokens(tokens, all_rows, strings)
    per_site = [torch.cat([shard[a] for shard in results]) for a in range(len(site_list))]
    common = {
        "ids": ids, "labels": labels, "pooling": pooling, "lengths": token_lengths if pooling == "none" else None,
        "model_name": model_name, "tokens": TokenTable(token_ids, token_lengths, flat_strings),
        "n_hidden_states": adapter.n_hidden_states,
        "meta": {"backend": backend, "padding_side": padding_side, "batch_size": batch_size},
    }  # fmt: skip
    if len({tuple(v.shape[1:]) for v in per_site}) == 1:
        return Activations(tensor=torch.stack(per_site), sites=keys, **common)
    return Activations(values=dict(zip(keys, per_site, strict=True)), sites=keys, **common)
