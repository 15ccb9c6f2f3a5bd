"""What makes two extractions give the same numbers: the fingerprint a store resumes on.

A store may only be resumed by a run whose shards would be bit-identical to the ones
already on disk, so its fingerprint covers every input that changes the numbers:

* ``weights``: SHA-256 of every parameter and buffer, byte for byte (tied tensors
  hashed once), with names, shapes, dtypes and the model config;
* ``tokens``: SHA-256 of the token ids and special-token flags the tokenizer actually
  produced for these texts (after ``max_length``) -- two tokenizers of the same class,
  path and size that tokenise differently (say, one without the BOS post-processor) differ
  here; ``tokenizer`` keeps the class, path and size for a readable refusal;
* ``texts`` (with ids and labels), ``layers``, ``pooling``, ``dtype``, ``backend``,
  ``batch_size`` and ``shard_size`` (batch composition changes float rounding),
  ``max_length``, ``padding_side``; ``batch_size`` is recorded but may differ on
  resume (:data:`interp.extraction.store.RESUMABLE_ACROSS`);
* ``attn_implementation`` (SDPA and eager round differently), ``device`` (its type:
  ``cpu``, ``cuda``...) and ``matmul_precision`` (TF32 on or off).

Not covered: the versions of torch, transformers and the kernels they pick -- an upgrade
between two runs of the same store is on the user.

Stores written before a key existed resume on the keys they have; one that has only the
older sampled ``model_digest`` is compared on that (:func:`legacy_model_digest`).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from torch import nn

__all__ = ["MEANING", "describe_differences", "json_digest", "legacy_model_digest", "model_digest", "token_digest"]

#: What each fingerprint key stands for, in the words a refusal uses.
MEANING = {
    "model": "model name",
    "weights": "weights",
    "model_digest": "model weights",
    "tokenizer": "tokenizer class, path or vocabulary size",
    "tokens": "the tokenizer gives different token ids for these texts",
    "texts": "texts",
    "ids": "ids",
    "labels": "labels",
    "layers": "layers",
    "pooling": "pooling",
    "dtype": "dtype",
    "backend": "backend",
    "batch_size": "batch_size",
    "shard_size": "shard_size",
    "max_length": "max_length",
    "padding_side": "padding_side",
    "attn_implementation": "attention implementation (config._attn_implementation)",
    "device": "device type",
    "matmul_precision": "torch float32 matmul precision (TF32)",
}


def describe_differences(keys: list[str]) -> str:
    """``"layers, pooling"``; keys whose name alone is unclear get their meaning in parentheses."""
    return ", ".join(key if MEANING.get(key, key) == key else f"{key} ({MEANING[key]})" for key in keys)


def _config_json(model: nn.Module) -> bytes:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        return config.to_json_string(use_diff=False).encode()
    return b""


def model_digest(model: nn.Module) -> str:
    """SHA-256 of the model's config and of every parameter and buffer, byte for byte.

    Tensors shared between names (tied embeddings) are hashed once and referenced after.
    Offloaded tensors (on the ``meta`` device, weights on disk) contribute their name,
    shape and dtype only. About 1 s per GB of weights on a CPU core.
    """
    digest = hashlib.sha256(_config_json(model))
    seen: dict[tuple[str, int, int], str] = {}
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            tensor = tensor.detach()
            digest.update(f"\0{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            if tensor.device.type == "meta" or tensor.numel() == 0:
                continue
            key = (str(tensor.device), tensor.data_ptr(), tensor.numel())
            if key in seen:
                digest.update(f"=tied:{seen[key]}".encode())
                continue
            seen[key] = name
            flat = tensor.contiguous().reshape(-1).cpu()
            digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def legacy_model_digest(model: nn.Module) -> str:
    """The sampled digest that stores written before ``weights`` recorded as ``model_digest`` (to resume them)."""
    digest = hashlib.sha256(_config_json(model))
    with torch.no_grad():
        for name, param in model.state_dict().items():
            flat = param.detach().reshape(-1)
            digest.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
            digest.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
            digest.update(repr(float(flat.double().sum())).encode())
    return digest.hexdigest()


def token_digest(input_ids: list[list[int]], special: list[list[int]]) -> str:
    """SHA-256 of each text's token ids and special flags (lengths included, so no two corpora collide)."""
    lengths = np.array([len(ids) for ids in input_ids], dtype=np.int64)
    digest = hashlib.sha256(lengths.tobytes())
    digest.update(np.concatenate([np.asarray(ids, dtype=np.int64) for ids in input_ids]).tobytes())
    digest.update(np.concatenate([np.asarray(flags, dtype=np.int8) for flags in special]).tobytes())
    return digest.hexdigest()


def json_digest(values) -> str:
    """SHA-256 of a JSON-serialisable value (non-JSON leaves as ``str``)."""
    payload = json.dumps(values, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
