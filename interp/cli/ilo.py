"""The main job: ``interp ilo`` -- extract, score, write tables, figures and a manifest.

Activations are cached in a resumable :class:`~interp.ActivationStore` under
``<cache>/activations/<sha256 of (model, data, languages, split, pooling,
layers, backend, batch size, dtype)>``: a re-run reuses them (the store's own
fingerprint still checks the model weights and the texts), an interrupted run
resumes, and two models never share an entry (no sanitised names).

Outputs are all-or-nothing (:func:`interp.cli.common.publish`): a failure or
an interrupt while writing leaves the previous run's outputs untouched and no
half-written file behind. ``layers_scored`` in the manifest lists the
hidden-state indices of the tables (0 = embeddings, L = after the final norm).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from interp.cli.common import add_ilo_options, add_model_options, parse_layers, publish, run_manifest, write_manifest
from interp.parallel.launch import DEFAULT_TIMEOUT_S

__all__ = ["add_parser", "run_ilo_job"]


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
    """Run the ILO job; return the manifest (also written to ``out/manifest.json``) with the ``result``.

    ``distributed=True`` (under ``torchrun``, see docs/scaling.md): every rank
    loads the model on its own device, extracts its contiguous shard of the
    texts (cached per shard) and the scores come from the sharded kNN
    (:func:`interp.ilo.score` with a process group); rank 0 writes the outputs,
    identical to a single-process run. ``device_map`` (e.g. ``"auto"``) splits
    one model over the GPUs of a single process instead.
    """
    import matplotlib

    matplotlib.use("Agg")  # a command-line job writes PNGs; no display needed
    from interp.data import load_parallel
    from interp.extraction.api import extract
    from interp.ilo.api import score
    from interp.models.loading import cache_dir, load_model

    started = time.time()
    timings = {}
    group, rank, world = None, 0, 1
    if distributed:
        if device_map:
            raise ValueError("distributed runs one model copy per rank; device_map splits one model over the GPUs "
                             "of one process -- use one or the other (see docs/scaling.md)")  # fmt: skip
        import torch.distributed as dist

        from interp import parallel

        rank, world = parallel.init_distributed(timeout_s=timeout_s, device=device)  # cpu -> gloo, cuda -> NCCL
        group, device, progress = dist.group.WORLD, str(parallel.rank_device(device)), progress and rank == 0
    corpus = load_parallel(data, langs=langs, split=split)
    texts, labels, ids = corpus.flat()
    if distributed:
        lo, hi = parallel.shard_range(len(texts), rank, world)
        texts, labels, ids = texts[lo:hi], labels[lo:hi], ids[lo:hi]
    key = _cache_key({"model": model, "data": data, "langs": list(corpus.langs), "split": split, "pooling": pooling,
                      "layers": layers, "backend": backend, "batch_size": batch_size, "dtype": "float32",
                      **({"shard": [rank, world]} if distributed else {})})  # fmt: skip
    store = cache_dir() / "activations" / key
    tic = time.time()
    net, tokenizer = load_model(model, device=device, **({"device_map": device_map} if device_map else {}))
    timings["load_model_s"] = time.time() - tic
    tic = time.time()
    acts = extract(net, tokenizer, texts, layers=layers, pooling=pooling, backend=backend, batch_size=batch_size,
                   ids=[str(i) for i in ids], labels=labels, store=store, progress=progress)  # fmt: skip
    timings["extract_s"] = time.time() - tic
    tic = time.time()
    result = score(acts, k=k, t=t, metric=metric, compat=compat, null=null, bootstrap=bootstrap, group=group,
                   timeout=timeout_s if distributed else None)  # fmt: skip
    timings["score_s"] = time.time() - tic
    if rank != 0:  # every rank holds the same tables; rank 0 writes them
        return {"job": "ilo", "rank": rank, "result": result}

    arguments = {"model": model, "data": data, "langs": list(corpus.langs), "split": split, "k": k, "t": t,
                 "metric": metric, "layers": layers, "pooling": pooling, "backend": backend,
                 "batch_size": batch_size, "device": device, "null": null, "bootstrap": bootstrap,
                 "compat": compat, "world_size": world, "device_map": device_map}  # fmt: skip
    fields = {
        "layers_scored": [int(layer) for layer in result.layers],
        "corpus": {"source": corpus.source, "n_langs": corpus.n_langs, "n_items": corpus.n_items},
        "activation_cache": str(store),
        "summary": {
            "best_layer": int(result.by_layer["ilo_mean"].idxmax()),
            "best_mean_ilo": float(result.by_layer["ilo_mean"].max()),
        },
    }
    with publish(out) as staging:
        outputs = _write_outputs(staging, result)
        manifest = write_manifest(staging, run_manifest("ilo", arguments, outputs, started, timings, **fields))
    return manifest | {"result": result}


def _write_outputs(staging: Path, result) -> list[str]:
    """ILO's tables and figures, written into ``staging``; returns their file names."""
    import matplotlib.pyplot as plt

    from interp.ilo import plot

    result.table.to_csv(staging / "ilo_table.csv", index=False)
    result.by_layer.to_csv(staging / "ilo_by_layer.csv")  # index column "layer" (hidden-state index)
    figures = {
        "ilo_layers.png": plot.plot_ilo_layers,
        "ilo_heatmap.png": plot.plot_ilo_heatmap,
        "cooccurrence.png": plot.plot_cooccurrence,
    }
    for name, draw in figures.items():
        figure = draw(result)
        figure.savefig(staging / name, dpi=120)
        plt.close(figure)
    return ["ilo_table.csv", "ilo_by_layer.csv", *figures]


def run_ilo(args: argparse.Namespace) -> int:
    manifest = run_ilo_job(
        model=args.model, data=args.data, out=args.out, langs=args.langs.split(",") if args.langs else None,
        split=args.split, k=args.k, t=args.t, metric=args.metric, layers=parse_layers(args.layers),
        pooling=args.pooling, backend=args.backend, batch_size=args.batch_size, device=args.device,
        null=args.null, bootstrap=args.bootstrap, compat=args.compat,
        distributed=args.distributed, device_map=args.device_map, timeout_s=args.timeout,
    )  # fmt: skip
    result = manifest.pop("result")
    if manifest.get("rank", 0) != 0:
        return 0  # rank 0 prints and writes
    print(result)
    print(result.by_layer.round(3).to_string())
    print(f"wrote {', '.join(manifest['outputs'])} and manifest.json to {args.out}")
    return 0


def add_parser(subparsers) -> None:
    """Add ``ilo`` to an ``argparse`` sub-parser collection."""
    ilo = subparsers.add_parser("ilo", help="the main job: ILO scores across languages, per layer")
    add_model_options(ilo, pooled_only=True)
    ilo.add_argument("--data", default="cldr", help="'cldr' (offline default), flores200:<dir>, jsonl:<path>, hub id")
    ilo.add_argument("--out", default="out/ilo", help="output directory")
    ilo.add_argument("--langs", default=None, help="comma-separated FLORES codes (default: all available)")
    ilo.add_argument("--split", default="dev")
    add_ilo_options(ilo)
    ilo.add_argument("--layers", default="all", help="'all' or comma-separated hidden-state indices")
    ilo.add_argument("--batch-size", type=int, default=16)
    ilo.add_argument("--device", default="cpu")
    ilo.add_argument("--null", type=int, default=50, help="label permutations for the null (0: none)")
    ilo.add_argument("--bootstrap", type=int, default=0, help="item resamples for 95%% CIs (0: none)")
    ilo.add_argument("--compat", action="store_true", help="official positional self-drop")
    ilo.add_argument("--distributed", action="store_true",
                     help="under torchrun: shard texts and kNN over the ranks (docs/scaling.md)")  # fmt: skip
    ilo.add_argument("--device-map", default=None, help="e.g. 'auto': split one model over this process's GPUs")
    ilo.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                     help="seconds before a silent rank fails the job")  # fmt: skip
    ilo.set_defaults(func=run_ilo)
