"""The main job: ``interp ilo`` -- extract, score, write tables, figures and a manifest.

Activations are cached in a resumable :class:`~interp.ActivationStore` under
``<cache>/activations/<sha256 of (model, data, languages, split, pooling,
layers, backend, batch size, dtype)>``: a re-run reuses them (the store's own
fingerprint still checks the model weights and the texts), an interrupted run
resumes, and two models never share an entry (no sanitised names).

Outputs are all-or-nothing: tables, figures and the manifest are first
written to a hidden staging folder inside ``out`` and moved into place only
once every one of them exists (the manifest last), so a failure or an
interrupt while writing leaves the previous run's outputs untouched and no
half-written file behind. ``layers_scored`` in the manifest lists the
hidden-state indices of the tables (0 = embeddings, L = after the final norm).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from interp.parallel.launch import DEFAULT_TIMEOUT_S

__all__ = ["run_ilo_job"]


def _cache_key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def run_ilo_job(
    model: str = "gemma-3-270m",
    data: str = "cldr",
    out: str | Path = "out/ilo",
    langs: list[str] | None = None,
    split: str = "dev",
    k: int = 5,
    t: int = 3,
    metric: str = "cosine",
    layers="all",
    pooling: str = "mean",
    backend: str = "hf",
    batch_size: int = 16,
    device: str = "cpu",
    null: int = 50,
    bootstrap: int = 0,
    compat: bool = False,
    progress: bool = True,
    distributed: bool = False,
    device_map: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict:
    """Run the ILO job; return the manifest (also written to ``out/manifest.json``).

    ``distributed=True`` (under ``torchrun``, see docs/scaling.md): every rank
    loads the model on its own device, extracts its contiguous shard of the
    texts (cached per shard) and the scores come from the sharded kNN
    (:func:`interp.ilo.score` with a process group); rank 0 writes the outputs,
    identical to a single-process run. ``device_map`` (e.g. ``"auto"``) splits
    one model over the GPUs of a single process instead.
    """
    import matplotlib

    matplotlib.use("Agg")  # a command-line job writes PNGs; no display needed
    import interp
    from interp.data import load_parallel
    from interp.models.loading import cache_dir

    started = time.time()
    timings = {}
    out = Path(out)
    group, rank, world = None, 0, 1
    if distributed:
        if device_map:
            raise ValueError("distributed runs one model copy per rank; device_map splits one model over the GPUs "
                             "of one process -- use one or the other (see docs/scaling.md)")  # fmt: skip
        import torch.distributed as dist

        from interp.parallel import init_distributed, rank_device, shard_range

        rank, world = init_distributed(timeout_s=timeout_s, device=device)  # cpu -> gloo, cuda -> NCCL
        group, device, progress = dist.group.WORLD, str(rank_device(device)), progress and rank == 0
    corpus = load_parallel(data, langs=langs, split=split)
    texts, labels, ids = corpus.flat()
    if distributed:
        lo, hi = shard_range(len(texts), rank, world)
        texts, labels, ids = texts[lo:hi], labels[lo:hi], ids[lo:hi]
    key = _cache_key({"model": model, "data": data, "langs": list(corpus.langs), "split": split, "pooling": pooling,
                      "layers": layers, "backend": backend, "batch_size": batch_size, "dtype": "float32",
                      **({"shard": [rank, world]} if distributed else {})})  # fmt: skip
    store = cache_dir() / "activations" / key
    tic = time.time()
    net, tokenizer = interp.load_model(model, device=device, **({"device_map": device_map} if device_map else {}))
    timings["load_model_s"] = time.time() - tic
    tic = time.time()
    acts = interp.extract(net, tokenizer, texts, layers=layers, pooling=pooling, backend=backend,
                          batch_size=batch_size, ids=[str(i) for i in ids], labels=labels, store=store,
                          progress=progress)  # fmt: skip
    timings["extract_s"] = time.time() - tic
    tic = time.time()
    result = interp.ilo.score(acts, k=k, t=t, metric=metric, compat=compat, null=null, bootstrap=bootstrap,
                              group=group, timeout=timeout_s if distributed else None)  # fmt: skip
    timings["score_s"] = time.time() - tic
    if rank != 0:  # every rank holds the same tables; rank 0 writes them
        return {"job": "ilo", "rank": rank, "result": result}

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ilo-staging-", dir=out))
    try:
        arguments = {"model": model, "data": data, "langs": list(corpus.langs), "split": split, "k": k, "t": t,
                     "metric": metric, "layers": layers, "pooling": pooling, "backend": backend,
                     "batch_size": batch_size, "device": device, "null": null, "bootstrap": bootstrap,
                     "compat": compat, "world_size": world, "device_map": device_map}  # fmt: skip
        manifest = _write_outputs(staging, result, corpus, store, arguments, timings, started)
        _publish(staging, out, manifest["outputs"])
    except BaseException:
        if created:  # nothing of this run (or an earlier one) is in a folder the run created
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest | {"result": result}


def _write_outputs(staging: Path, result, corpus, store, arguments: dict, timings: dict, started: float) -> dict:
    """Tables, figures and the manifest, written into ``staging``; returns the manifest."""
    import interp
    from interp.plot import plot_cooccurrence, plot_ilo_heatmap, plot_ilo_layers

    result.table.to_csv(staging / "ilo_table.csv", index=False)
    result.by_layer.to_csv(staging / "ilo_by_layer.csv")  # index column "layer" (hidden-state index)
    figures = {
        "ilo_layers.png": plot_ilo_layers,
        "ilo_heatmap.png": plot_ilo_heatmap,
        "cooccurrence.png": plot_cooccurrence,
    }
    for name, plot in figures.items():
        figure = plot(result)
        figure.savefig(staging / name, dpi=120)
        _close(figure)
    timings["total_s"] = time.time() - started
    manifest = {
        "job": "ilo",
        "arguments": arguments,
        "layers_scored": [int(layer) for layer in result.layers],
        "corpus": {"source": corpus.source, "n_langs": corpus.n_langs, "n_items": corpus.n_items},
        "activation_cache": str(store),
        "outputs": ["ilo_table.csv", "ilo_by_layer.csv", *figures],
        "timing": timings,
        "versions": {
            "interp": interp.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            **_versions("transformers", "transformer_lens", "nnsight", "babel"),
        },  # fmt: skip
        "summary": {
            "best_layer": int(result.by_layer["ilo_mean"].idxmax()),
            "best_mean_ilo": float(result.by_layer["ilo_mean"].max()),
        },  # fmt: skip
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return manifest


def _publish(staging: Path, out: Path, outputs: list[str]) -> None:
    """Move the staged outputs into ``out``: the old manifest goes first, the new one last.

    Each move is an atomic rename within one folder, so no file is ever
    half-written; a reader that finds ``manifest.json`` finds the complete set
    it lists.
    """
    (out / "manifest.json").unlink(missing_ok=True)
    for name in outputs:
        os.replace(staging / name, out / name)
    os.replace(staging / "manifest.json", out / "manifest.json")


def _close(figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def _versions(*names: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            found[name] = None
    return found
