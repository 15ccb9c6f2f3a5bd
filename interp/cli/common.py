"""What every ``interp`` job shares: its options, its input files, its manifest, how it publishes.

* Options are declared once here and read their choices from the registries
  (:data:`interp.extraction.BACKENDS`, :data:`interp.extraction.POOLINGS`,
  :data:`interp.neighbors.DISTANCE_METRICS`), so a new backend or pooling appears in every job.
* :func:`read_texts` reads a ``.txt`` (one text per line) or ``.jsonl`` corpus through the
  one JSONL reader (:func:`interp.data.jsonl.iter_jsonl_objects`).
* :func:`run_manifest` is the one manifest layout (job, arguments, outputs, timing,
  versions, and the job's own fields).
* :func:`readme` is the one README layout of an output folder: what each file is and what
  each table column means.
* :func:`publish` makes a job's outputs all-or-nothing: everything is written into a
  staging folder inside ``out`` and renamed into place, the old manifest removed first
  and the new one moved last, so a reader that finds ``manifest.json`` finds the complete
  set it lists; a failure (an exception or Ctrl-C) leaves the previous run's outputs as they
  were, and a folder the run created is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from interp.data.jsonl import iter_jsonl_objects
from interp.extraction.backends import BACKENDS
from interp.extraction.pooling import POOLINGS
from interp.neighbors.api import DISTANCE_METRICS
from interp.version import __version__

__all__ = [
    "add_model_options",
    "add_ilo_options",
    "parse_layers",
    "read_texts",
    "run_manifest",
    "publish",
    "readme",
    "write_manifest",
    "versions",
]

MODEL_HELP = "HF id/path or 'gemma-3-270m' (embedded, offline)"


def add_model_options(parser: argparse.ArgumentParser, pooled_only: bool = False) -> None:
    """``--model``, ``--backend`` (extraction engine) and ``--pooling``; ``pooled_only`` drops ``none``."""
    parser.add_argument("--model", default="gemma-3-270m", help=MODEL_HELP)
    parser.add_argument("--backend", default="hf", choices=list(BACKENDS), help="extraction engine")
    poolings = [p for p in POOLINGS if not (pooled_only and p == "none")]
    parser.add_argument("--pooling", default="mean", choices=poolings)


def add_ilo_options(parser: argparse.ArgumentParser) -> None:
    """``--k``, ``--t`` and ``--metric`` of :func:`interp.ilo.score`."""
    parser.add_argument("--k", type=int, default=5, help="neighbours per point")
    parser.add_argument("--t", type=int, default=3, help="a point bridges if its neighbours span >= t languages")
    parser.add_argument("--metric", default="cosine", choices=list(DISTANCE_METRICS))


def parse_layers(value: str):
    """``--layers``: ``'all'`` or comma-separated hidden-state indices."""
    if value == "all":
        return "all"
    try:
        return [int(x) for x in value.split(",")]
    except ValueError:
        raise SystemExit(
            f"--layers {value!r}: give 'all' or comma-separated hidden-state indices like 0,6,12"
        ) from None


def read_texts(path: str | Path, option: str, language: str | None = None) -> tuple[list[str], list, list | None]:
    """``(texts, ids, labels)`` of a ``.txt`` file (one text per line) or a ``.jsonl`` file.

    JSONL rows need ``text`` and may have ``id`` (default: the row number) and ``lang`` (the
    labels, if every row has one). ``language`` keeps only the JSONL rows with that ``lang``
    (a plain-text file is taken whole).
    Problems are a ``SystemExit`` naming ``option`` and the file (and line).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SystemExit(f"{option}: no such file {path}")
    if path.suffix != ".jsonl":
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return texts, list(range(len(texts))), None
    try:
        rows = list(iter_jsonl_objects(path))
    except ValueError as err:
        raise SystemExit(f"{option}: {err}") from None
    missing = [number for number, row in rows if "text" not in row]
    if missing:
        raise SystemExit(f"{option}: {path}: lines {missing[:5]} have no 'text' field")
    rows = [row for _, row in rows]
    ids = [row.get("id", i) for i, row in enumerate(rows)]
    if language is not None:
        keep = [i for i, row in enumerate(rows) if row.get("lang") == language]
        if not keep:
            raise SystemExit(f"{option}: {path}: no row has lang={language!r}")
        rows, ids = [rows[i] for i in keep], [ids[i] for i in keep]
    labels = [row["lang"] for row in rows] if all("lang" in row for row in rows) else None
    return [row["text"] for row in rows], ids, labels


def versions(*names: str) -> dict:
    """Versions of interp, torch, Python and the named distributions (None where not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    found = {"interp": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            found[name] = None
    return found


def run_manifest(job: str, arguments: dict, outputs: list[str], started: float, timing: dict | None = None,
                 **fields) -> dict:  # fmt: skip
    """The manifest every job writes: ``job, arguments, <fields>, outputs, timing, versions``."""
    return {
        "job": job,
        "arguments": arguments,
        **fields,
        "outputs": list(outputs),
        "timing": {**(timing or {}), "total_s": time.time() - started},
        "versions": versions("transformers", "transformer_lens", "nnsight", "babel"),
    }


def write_manifest(staging: Path, manifest: dict) -> dict:
    """Write ``manifest`` as ``manifest.json`` into ``staging`` (it is published last); return it."""
    text = json.dumps(manifest, indent=1, ensure_ascii=False, default=str)
    (staging / "manifest.json").write_text(text, encoding="utf-8")
    return manifest


def readme(
    title: str, intro: str, files: dict[str, str], columns: dict[str, dict[str, str]], manifest: bool = True
) -> str:
    """An output folder's ``README.md``: ``files`` ({name: what it is}; ``manifest.json`` added
    unless ``manifest=False``) and, per table, ``columns`` ({table: {column: meaning}})."""
    lines = [f"# {title}", "", intro, "", "## Files", ""]
    lines += [f"- `{name}`: {what}" for name, what in files.items()]
    if manifest:
        lines.append("- `manifest.json`: the arguments, corpus, timing (seconds; peak RSS where measured) and versions")
    lines.append("")
    for table, meanings in columns.items():
        lines += [f"## Columns of `{table}`", "", *[f"- `{name}`: {what}" for name, what in meanings.items()], ""]
    return "\n".join(lines)


@contextmanager
def publish(out: str | Path) -> Iterator[Path]:
    """A staging folder for a job's outputs; on leaving the block, they are published into ``out``.

    The block writes its files and, last, :func:`write_manifest`; the files its ``outputs``
    lists are then moved into ``out`` all or nothing (see the module docstring).
    """
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        yield staging
        outputs = json.loads((staging / "manifest.json").read_text(encoding="utf-8"))["outputs"]
        (out / "manifest.json").unlink(missing_ok=True)
        for name in outputs:
            os.replace(staging / name, out / name)
        os.replace(staging / "manifest.json", out / "manifest.json")
    except BaseException:
        if created:  # nothing of this run (or an earlier one) is in a folder the run created
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
