"""On-disk activation store: safetensors shards + a JSON manifest, resumable.

Layout of a store directory::

    manifest.json             what is being extracted, and the committed shards
    shard-00000.safetensors   texts [0, shard_size): "hidden" [n_layers, n, d_model]
    shard-00001.safetensors   ...                    (+ "lengths" [n] for pooling="none")

Commit protocol (what makes ``kill -9`` safe): a shard is written to a
temporary file, flushed and fsync'ed, renamed into place, and only then
recorded -- with its SHA-256 -- in the manifest, which is itself replaced
atomically. A crash at any point leaves either an orphan temporary file
(ignored), a shard file the manifest does not list (recomputed), or a
committed shard. On resume every committed shard is re-hashed; a missing or
corrupt one is reported and recomputed, and :meth:`ActivationStore.load`
refuses to read one whose hash does not match.

The manifest's ``fingerprint`` (model digest, tokenizer, texts, layers,
pooling, dtype, backend, batching) must match for a resume; a different
extraction pointed at the same directory is refused with the list of what
differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from interp.extraction.activations import Activations

__all__ = ["ActivationStore", "StoreError", "FORMAT"]

FORMAT = "interp.activations/1"
MANIFEST = "manifest.json"


class StoreError(RuntimeError):
    """The store on disk is incomplete, corrupt, or belongs to another extraction."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1, ensure_ascii=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _changed_corpus(header: dict, existing: dict) -> list[str]:
    """Which of texts / ids / labels changed, when their joint fingerprint did."""
    changed = [key for key in ("ids", "labels") if json.loads(json.dumps(header[key])) != existing.get(key)]
    if "texts_only" in existing:
        changed += ["texts"] if header["texts_only"] != existing["texts_only"] else []
    elif not changed:
        changed.append("texts")  # a store from before "texts_only": only the texts are left to differ
    return changed


class ActivationStore:
    """A directory of activation shards (see module docstring).

    Example::

        acts = interp.extract(model, tok, texts, store="acts/gemma-udhr")  # resumable
        store = ActivationStore("acts/gemma-udhr")
        store.progress()            # (committed shards, total shards)
        store.load(layers=[6, 12])  # read only some layers
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict | None:
        """The manifest, or None if the directory holds no store yet."""
        if not self.manifest_path.is_file():
            return None
        try:
            with open(self.manifest_path, encoding="utf-8") as handle:
                manifest = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise StoreError(
                f"{self.manifest_path} is not valid JSON ({err}); the store cannot be trusted -- "
                "delete the directory to start over"
            ) from err
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise StoreError(f"{self.manifest_path} is not an interp activation store (format {found!r})")
        return manifest

    def shard_path(self, index: int) -> Path:
        return self.path / f"shard-{index:05d}.safetensors"

    # -- writing ------------------------------------------------------------
    def begin(self, header: dict) -> set[int]:
        """Create the store or reopen it for resume; return the verified committed shards.

        ``header`` holds ``fingerprint``, ``shards`` ([start, stop] ranges) and
        the metadata that :meth:`load` needs.
        """
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store path {self.path} is a file; pass a directory (new or empty) for the store")
        existing = self.manifest()
        if existing is None:
            if self.path.exists() and any(self.path.iterdir()):
                raise StoreError(f"{self.path} exists and is not an activation store; choose an empty or new directory")
            self.path.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(self.manifest_path, {"format": FORMAT, **header, "committed": {}, "complete": False})
            return set()
        differs = sorted(
            key
            for key in header["fingerprint"].keys() | existing["fingerprint"].keys()
            if header["fingerprint"].get(key) != existing["fingerprint"].get(key)
        )
        if "texts" in differs:
            differs = sorted({*differs, *_changed_corpus(header, existing)} - {"texts"}) or differs
        if differs:
            raise StoreError(
                f"{self.path} holds a different extraction (differs in: {', '.join(differs)}); "
                "use a new store directory, or delete this one to start over"
            )
        return self._verified(existing)

    def _verified(self, manifest: dict) -> set[int]:
        good = set()
        for key, entry in manifest["committed"].items():
            path = self.shard_path(int(key))
            if not path.is_file():
                warnings.warn(f"activation store: shard {key} is missing from disk; recomputing it", stacklevel=3)
            elif _sha256(path) != entry["sha256"]:
                message = f"activation store: shard {key} is corrupt (SHA-256 mismatch); recomputing it"
                warnings.warn(message, stacklevel=3)
            else:
                good.add(int(key))
        return good

    def commit(self, index: int, tensors: dict[str, torch.Tensor]) -> None:
        """Write shard ``index`` atomically, then record it in the manifest."""
        final = self.shard_path(index)
        tmp = final.with_name(f".{final.name}.tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        manifest = self.manifest()
        manifest["committed"][str(index)] = {"file": final.name, "sha256": _sha256(final)}
        manifest["complete"] = len(manifest["committed"]) == len(manifest["shards"])
        _write_json_atomic(self.manifest_path, manifest)

    def abandon(self, remove_dir: bool) -> bool:
        """Delete a store that has no committed shard (its manifest and temporary files).

        ``remove_dir`` also removes the directory if it is then empty. A store
        with committed shards is left alone. Returns whether anything was removed.
        """
        manifest = self.manifest()
        if manifest is None or manifest["committed"]:
            return False
        for tmp in [*self.path.glob(".shard-*.safetensors.tmp"), self.path / f".{MANIFEST}.tmp"]:
            tmp.unlink(missing_ok=True)
        self.manifest_path.unlink()
        if remove_dir and not any(self.path.iterdir()):
            self.path.rmdir()
        return True

    def progress(self) -> tuple[int, int]:
        """``(committed shards, total shards)``."""
        manifest = self.manifest()
        if manifest is None:
            return (0, 0)
        return len(manifest["committed"]), len(manifest["shards"])

    # -- reading ------------------------------------------------------------
    def load(self, layers: list[int] | None = None, verify: bool = True) -> Activations:
        """Read the whole store (or some hidden-state indices) into :class:`Activations`.

        ``verify=False`` skips re-hashing the shards; ``extract`` uses it for a store whose
        shards it has just verified (resumed) or written itself.

        Raises:
            StoreError: shards missing (an unfinished run -- call ``extract``
                again with the same arguments to resume) or corrupt.
        """
        manifest = self.manifest()
        if manifest is None:
            raise StoreError(f"no activation store at {self.path}")
        n_shards = len(manifest["shards"])
        missing = [i for i in range(n_shards) if str(i) not in manifest["committed"]]
        if missing:
            raise StoreError(
                f"store {self.path} is incomplete: {len(missing)} of {n_shards} shards not committed "
                f"(first: {missing[:5]}); run the same extract(..., store=...) call again to resume"
            )
        all_layers = manifest["layers"]
        wanted = all_layers if layers is None else list(layers)
        unknown = [i for i in wanted if i not in all_layers]
        if unknown:
            raise KeyError(f"hidden-state indices {unknown} are not in this store; it has {all_layers}")
        rows = [all_layers.index(i) for i in wanted]
        parts, lengths = [], []
        for i in range(n_shards):
            path = self.shard_path(i)
            if not path.is_file() or (verify and _sha256(path) != manifest["committed"][str(i)]["sha256"]):
                raise StoreError(f"shard {i} of {self.path} is missing or corrupt; re-run extract to recompute it")
            with safe_open(str(path), framework="pt") as handle:
                hidden = handle.get_tensor("hidden")
                parts.append(hidden[rows] if rows != list(range(len(all_layers))) else hidden)
                if "lengths" in handle.keys():  # noqa: SIM118 (safe_open has no __contains__)
                    lengths.append(handle.get_tensor("lengths"))
        return Activations(
            tensor=torch.cat(parts, dim=1),
            layers=wanted,
            ids=manifest["ids"],
            labels=manifest["labels"],
            pooling=manifest["pooling"],
            lengths=torch.cat(lengths) if lengths else None,
            model_name=manifest["model_name"],
            meta={"store": str(self.path)},
        )
