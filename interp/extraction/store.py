"""On-disk activation store: safetensors shards + a JSON manifest, resumable, one writer at a time.

Layout of a store directory::

    manifest.json             what is being extracted, and the committed shards
    shard-00000.safetensors   texts [0, shard_size): "hidden" [n_sites, n, *feature] (or one
    shard-00001.safetensors   ...                    "site.{a}" per site), tokens (:mod:`.shards`)
    .lock                     held by the process writing the store (see below)

Commit protocol (what makes ``kill -9`` safe): a shard is written to a
temporary file, flushed and fsync'ed, renamed into place, and only then
recorded -- with its SHA-256 -- in the manifest, which is itself replaced
atomically. A crash at any point leaves either an orphan temporary file
(deleted by the next writer), a shard file the manifest does not list
(recomputed), or a committed shard. On resume every committed shard is
re-hashed; a missing or corrupt one is reported and recomputed, and
:meth:`ActivationStore.load` refuses to read one whose hash does not match --
a truncated, bit-flipped or swapped shard file included. A full disk is
reported as such; what was committed before it stays, and the same call
resumes once there is space.

One writer: :meth:`ActivationStore.writing` holds an exclusive OS lock on
``.lock`` (:mod:`interp.extraction.lock`) for the whole extraction, so a second
``extract(..., store=d)`` -- another process, or another call in this one --
is refused with :class:`StoreLocked`, naming the holder's PID. The lock dies
with its process, so a killed writer never blocks the next. Temporary file
names carry the writer's PID and a random suffix. Readers take no lock:
:meth:`~ActivationStore.load` reads a complete store while nothing writes it.

The manifest's ``fingerprint`` (:mod:`interp.extraction.fingerprint`: weights,
the tokenizer's actual token ids, texts, layers, pooling, dtype, backend,
shard size...) must match for a resume; a different extraction pointed at the
same directory is refused with the list of what differs. The exception is
:data:`RESUMABLE_ACROSS`: ``batch_size`` only regroups the texts of a shard into
forward passes, which moves float32 results by rounding at most, so a run may
resume another's store with a different batch size (say 8 after an
out-of-memory error at 16); each committed shard records the batch size it was
written with (``committed[i]["batch_size"]``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from interp.extraction.activations import Activations
from interp.extraction.fingerprint import describe_differences
from interp.extraction.lock import LockHeld, WriterLock
from interp.extraction.shards import read_shards

__all__ = ["ActivationStore", "StoreError", "StoreLocked", "FORMAT", "RESUMABLE_ACROSS"]

FORMAT = "interp.activations/1"
#: Fingerprint keys that may differ between the runs writing one store (recorded per shard instead).
RESUMABLE_ACROSS = frozenset({"batch_size"})
MANIFEST = "manifest.json"
LOCK = ".lock"


class StoreError(RuntimeError):
    """The store on disk is incomplete, corrupt, or belongs to another extraction."""


class StoreLocked(StoreError):
    """Another writer holds the store (see :mod:`interp.extraction.lock`)."""


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


def _tmp_path(final: Path) -> Path:
    """A temporary name beside ``final`` that no other writer can pick: ``.<name>.<pid>-<random>.tmp``."""
    return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _is_own_file(name: str) -> bool:
    """The lock file and temporary files: what a store directory may hold besides its data."""
    return name == LOCK or (name.startswith(".") and name.endswith(".tmp"))


def _disk_full(err: BaseException) -> bool:
    # safetensors reports I/O errors as SafetensorError("... (os error 28)"), not OSError
    return getattr(err, "errno", None) == errno.ENOSPC or f"os error {errno.ENOSPC})" in str(err)


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = _tmp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1, ensure_ascii=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _save_shard(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _changed_corpus(header: dict, existing: dict) -> list[str]:
    """Which of texts / ids / labels changed, when their joint fingerprint did."""
    changed = [key for key in ("ids", "labels") if json.loads(json.dumps(header[key])) != existing.get(key)]
    if "texts_only" in existing:
        changed += ["texts"] if header["texts_only"] != existing["texts_only"] else []
    elif not changed:
        changed.append("texts")  # a store from before "texts_only": only the texts are left to differ
    return changed


def _differences(header: dict, existing: dict, legacy: dict[str, Callable[[], object]]) -> list[str]:
    """Fingerprint keys whose values differ, over the keys both runs recorded.

    A key the existing store lacks was added after it was written and is not compared;
    ``legacy`` computes, on demand, the value of a key that only older stores recorded.
    """
    new, old = header["fingerprint"], existing["fingerprint"]
    differs = [key for key in new.keys() & old.keys() - RESUMABLE_ACROSS if new[key] != old[key]]
    differs += [key for key, compute in legacy.items() if key in old and key not in new and compute() != old[key]]
    if "texts" in differs:
        differs = [key for key in differs if key != "texts"] + (_changed_corpus(header, existing) or ["texts"])
    if {"texts", "max_length", "tokenizer"} & set(differs):  # new token ids follow from these: name the cause
        differs = [key for key in differs if key != "tokens"]
    return sorted(set(differs))


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
        self._written_with: dict = {}  # the RESUMABLE_ACROSS settings of this writer, recorded per shard

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
    @contextlib.contextmanager
    def writing(self, header: dict, legacy: dict[str, Callable[[], object]] | None = None) -> Iterator[set[int]]:
        """Hold the store's lock, create or reopen it, and yield the verified committed shards.

        ``header`` holds ``fingerprint``, ``shards`` ([start, stop] ranges) and the
        metadata that :meth:`load` needs; ``legacy`` maps fingerprint keys that only
        older stores recorded to functions computing them (see :func:`_differences`).
        Inside, :meth:`commit` each shard. If the body fails and this call created the
        store but committed nothing, the store is taken away again (it would only refuse
        the corrected call, e.g. a smaller ``batch_size`` after an out-of-memory error),
        and so is a directory this call created.

        Raises:
            StoreLocked: another writer holds the store.
            StoreError: the path is a file or a foreign directory, or the store holds a
                different extraction.
        """
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store path {self.path} is a file; pass a directory (new or empty) for the store")
        dir_existed = self.path.exists()
        lock = WriterLock(self.path / LOCK)
        try:
            lock.acquire()
        except LockHeld as err:
            raise StoreLocked(
                f"activation store {self.path} is locked by {err.holder}, which is writing it now; wait for it "
                "to finish (a store has one writer at a time) or write to another directory"
            ) from None
        created = False
        try:
            created = self.manifest() is None
            yield self.begin(header, legacy or {})
        except BaseException:
            if created:
                self._abandon()
            raise
        finally:
            store_left = self.manifest_path.is_file()
            lock.release(delete=not store_left)  # a directory with no store keeps no lock file
            if not store_left and not dir_existed and self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()

    def begin(self, header: dict, legacy: dict[str, Callable[[], object]]) -> set[int]:
        """Create the store or reopen it for resume; return the verified committed shards.

        Call it through :meth:`writing`, which holds the lock: it deletes the temporary
        files that earlier (crashed) writers left.
        """
        for name in os.listdir(self.path):
            if name != LOCK and _is_own_file(name):
                (self.path / name).unlink(missing_ok=True)
        fingerprint = header.get("fingerprint", {})
        self._written_with = {key: fingerprint[key] for key in sorted(RESUMABLE_ACROSS) if key in fingerprint}
        existing = self.manifest()
        if existing is None:
            if any(not _is_own_file(name) for name in os.listdir(self.path)):
                raise StoreError(f"{self.path} exists and is not an activation store; choose an empty or new directory")
            try:
                _write_json_atomic(self.manifest_path, {"format": FORMAT, **header, "committed": {}, "complete": False})
            except OSError as err:
                if _disk_full(err):
                    raise StoreError(f"no space left on the device of {self.path} to create the store") from err
                raise
            return set()
        differs = _differences(header, existing, legacy)
        if differs:
            raise StoreError(
                f"{self.path} holds a different extraction (differs in: {describe_differences(differs)}); "
                "use a new store directory, or delete this one to start over"
            )
        return self._verified(existing)

    def _verified(self, manifest: dict) -> set[int]:
        good = set()
        for key, entry in manifest["committed"].items():
            path = self.shard_path(int(key))
            if not path.is_file():
                warnings.warn(f"activation store: shard {key} is missing from disk; recomputing it", stacklevel=7)
            elif _sha256(path) != entry["sha256"]:
                message = f"activation store: shard {key} is corrupt (SHA-256 mismatch); recomputing it"
                warnings.warn(message, stacklevel=7)
            else:
                good.add(int(key))
        return good

    def commit(self, index: int, tensors: dict[str, torch.Tensor]) -> None:
        """Write shard ``index`` atomically, then record it in the manifest (inside :meth:`writing`).

        Raises:
            StoreError: the disk is full; the store is left consistent and resumable.
        """
        final = self.shard_path(index)
        tmp = _tmp_path(final)
        try:
            _save_shard(tensors, tmp)
            os.replace(tmp, final)
            manifest = self.manifest()
            entry = {"file": final.name, "sha256": _sha256(final), **self._written_with}
            manifest["committed"][str(index)] = entry
            manifest["complete"] = len(manifest["committed"]) == len(manifest["shards"])
            _write_json_atomic(self.manifest_path, manifest)
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            if _disk_full(err):
                raise StoreError(
                    f"no space left on the device of {self.path} while writing shard {index}; the store is "
                    "consistent and keeps every shard committed before -- free some space and run the same "
                    "extract(..., store=...) call again to resume"
                ) from err
            raise

    def _abandon(self) -> None:
        """Delete a store that has no committed shard: its manifest and temporary files."""
        manifest = self.manifest()
        if manifest is not None and manifest["committed"]:
            return
        for name in os.listdir(self.path):
            if name != LOCK and _is_own_file(name):
                (self.path / name).unlink(missing_ok=True)
        self.manifest_path.unlink(missing_ok=True)

    def progress(self) -> tuple[int, int]:
        """``(committed shards, total shards)``."""
        manifest = self.manifest()
        if manifest is None:
            return (0, 0)
        return len(manifest["committed"]), len(manifest["shards"])

    # -- reading ------------------------------------------------------------
    def load(
        self, layers: list[int | str] | None = None, verify: bool = True, *, sites=None, lazy: bool = False
    ) -> Activations:
        """Read the whole store (or some sites) into :class:`Activations`.

        ``layers`` / ``sites`` (either spelling) pick site keys (hidden-state indices or
        names). ``lazy=True`` memory-maps the shards instead of reading them: nothing is
        loaded until a site is indexed (``verify`` still hashes every shard first, reading
        it once without keeping it). ``verify=False`` skips re-hashing the shards;
        ``extract`` uses it for a store whose shards it has just verified (resumed) or
        written itself.

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
        if layers is not None and sites is not None:
            raise TypeError("pass layers= or sites= (the same selection), not both")
        all_sites = manifest["layers"]  # every site's key (ints: hidden-state indices)
        wanted = all_sites if layers is None and sites is None else list(sites if sites is not None else layers)
        unknown = [i for i in wanted if i not in all_sites]
        if unknown:
            raise KeyError(f"sites {unknown} are not in this store; it has {all_sites}")
        paths = []
        for i in range(n_shards):
            path = self.shard_path(i)
            if not path.is_file() or (verify and _sha256(path) != manifest["committed"][str(i)]["sha256"]):
                raise StoreError(f"shard {i} of {self.path} is missing or corrupt; re-run extract to recompute it")
            paths.append(path)
        rows, lengths, tokens = read_shards(paths, all_sites, wanted, lazy)
        stacked = isinstance(rows, torch.Tensor)
        return Activations(
            tensor=rows if stacked else None,
            values=None if stacked else rows,
            sites=wanted,
            ids=manifest["ids"],
            labels=manifest["labels"],
            pooling=manifest["pooling"],
            lengths=lengths,
            model_name=manifest["model_name"],
            meta={"store": str(self.path), "lazy": lazy},
            tokens=tokens,
            n_hidden_states=manifest.get("n_hidden_states"),
        )
