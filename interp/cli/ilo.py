"""The main job: ``interp ilo`` -- extract, score, write tables, figures, a README and a manifest.

Activations are cached in a resumable :class:`~interp.ActivationStore` (:mod:`interp.cli.cache`):
the key covers only what changes the numbers (model and its files, texts, layers, pooling,
backend, dtype, max length, device), so changing ``--batch-size`` reuses the cache; shards of
``--shard-size`` texts are committed as they finish, so a killed run loses at most one shard
and the same command resumes it; a complete cache is read without loading the model at all.
``--no-cache`` extracts in memory and writes no store.

Outputs are all-or-nothing (:func:`interp.cli.common.publish`): a failure or an interrupt while
writing leaves the previous run's outputs untouched and no half-written file behind. The
folder's ``README.md`` lists its files and columns; ``layers_scored`` in the manifest lists the
hidden-state indices of the tables (0 = embeddings, L = after the final norm); ``timing``
splits the run into loading, extraction, kNN and scoring.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from interp.cli.cache import activation_key, cached, resume_shard_size, store_path
from interp.cli.common import (
    add_ilo_options,
    add_model_options,
    parse_layers,
    publish,
    readme,
    run_manifest,
    write_manifest,
)
from interp.parallel.launch import DEFAULT_TIMEOUT_S

__all__ = ["add_parser", "run_ilo_job", "DTYPES"]

#: ``--dtype`` choices: the model's weight and compute dtype (pooled states are kept in float32).
DTYPES = ("float32", "bfloat16", "float16")


def run_ilo_job(
    model: str = "gemma-3-270m",
    data: str = "cldr",
    out: str | Path = "out/ilo",
    langs: list[str] | None = None,
    split: str | None = None,
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
    shard_size: int = 256,
    max_length: int | None = None,
    dtype: str = "float32",
    cache: bool = True,
    figures: bool = True,
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
    from interp.ilo.api import score

    if dtype not in DTYPES:
        raise SystemExit(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    for name, value in (("--shard-size", shard_size), ("--batch-size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SystemExit(f"{name} must be a positive integer, got {value!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise SystemExit(f"--max-length must be a positive number of tokens (BOS included), got {max_length!r}")
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
    ids = [str(i) for i in ids]
    topics = corpus.flat_meta("topic") if "topic" in corpus.meta else None
    if distributed:
        lo, hi = parallel.shard_range(len(texts), rank, world)
        texts, labels, ids = texts[lo:hi], labels[lo:hi], ids[lo:hi]
        topics = topics[lo:hi] if topics is not None else None
    settings = {"layers": layers, "pooling": pooling, "backend": backend, "dtype": dtype, "max_length": max_length,
                "device": device}  # fmt: skip
    store = store_path(activation_key(model, texts, ids, labels, **settings,
                                      shard=(rank, world) if distributed else None))  # fmt: skip
    acts, source = _activations(model, texts, ids, labels, store, cache, timings, settings, batch_size=batch_size,
                                shard_size=shard_size, progress=progress, device_map=device_map)  # fmt: skip
    result = score(acts, k=k, t=t, metric=metric, compat=compat, null=null, bootstrap=bootstrap, group=group,
                   topics=topics, timeout=timeout_s if distributed else None)  # fmt: skip
    timings.update(result.params["timing"])
    timings["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    if rank != 0:  # every rank holds the same tables; rank 0 writes them
        return {"job": "ilo", "rank": rank, "result": result}

    arguments = {"model": model, "data": data, "langs": list(corpus.langs), "split": split, "k": k, "t": t,
                 "metric": metric, "layers": layers, "pooling": pooling, "backend": backend,
                 "batch_size": batch_size, "shard_size": shard_size, "max_length": max_length, "dtype": dtype,
                 "device": device, "null": null, "bootstrap": bootstrap, "compat": compat, "cache": cache,
                 "world_size": world, "device_map": device_map, "figures": figures}  # fmt: skip
    context = {"model": model, "corpus": _corpus_name(data), "n_langs": corpus.n_langs, "n_items": corpus.n_items}
    fields = {
        "layers_scored": [int(layer) for layer in result.layers],
        "corpus": {
            "source": corpus.source,
            "n_langs": corpus.n_langs,
            "n_items": corpus.n_items,
            "item_fields": sorted(corpus.meta),
        },  # fmt: skip
        "activation_cache": str(store) if cache else None,
        "activations_from": source,
        "summary": {
            "best_layer": int(result.by_layer["ilo_mean"].idxmax()),
            "best_mean_ilo": float(result.by_layer["ilo_mean"].max()),
        },
    }
    with publish(out) as staging:
        outputs = _write_outputs(staging, result, context, figures)
        manifest = write_manifest(staging, run_manifest("ilo", arguments, outputs, started, timings, **fields))
    return manifest | {"result": result}


def _corpus_name(data: str) -> str:
    """A short corpus name for titles: ``flores31.jsonl``, ``cldr``, ``flores200:dev``..."""
    if data.startswith(("jsonl:", "flores200:")) or data.endswith(".jsonl"):
        return Path(data.split(":", 1)[-1]).name or data
    return data


def _activations(model, texts, ids, labels, store: Path, cache: bool, timings: dict, settings: dict, *,
                 batch_size: int, shard_size: int, progress: bool, device_map):  # fmt: skip
    """The activations: from a complete cache (no model loaded), else extracted (into the cache, resumable)."""
    from interp.extraction.api import extract
    from interp.models import loading

    if cache:
        tic = time.time()
        hit = cached(store, ids, labels)
        if hit is not None:
            timings["read_cache_s"] = time.time() - tic
            return hit, "cache"
        shard_size = resume_shard_size(store, shard_size)
    tic = time.time()
    extra = {"device_map": device_map} if device_map else {}
    net, tokenizer = loading.load_model(model, dtype=settings["dtype"], device=settings["device"], **extra)
    timings["load_model_s"] = time.time() - tic
    tic = time.time()
    acts = extract(net, tokenizer, texts, layers=settings["layers"], pooling=settings["pooling"],
                   backend=settings["backend"], batch_size=batch_size, ids=ids, labels=labels,
                   store=store if cache else None, shard_size=shard_size, max_length=settings["max_length"],
                   progress=progress)  # fmt: skip
    timings["extract_s"] = time.time() - tic
    return acts, "extracted"


FILES = {
    "ilo_table.csv": "one row per (layer, language); columns below",
    "ilo_by_layer.csv": "one row per layer: means over languages (ilo_mean, ilo_median, ilo_min, bridge_mean, "
    "reach_mean, and the means of the null and share columns)",
    "cooccurrence.csv": "one row per (layer, language, neighbour_language): slots = how many of the language's "
    "neighbour slots the neighbour language fills, share = slots / all of the language's slots",
    "ilo_layers.png": "ILO per layer, one panel per language family + the all-language mean; dashed: random mixing",
    "ilo_heatmap.png": "ILO per language (grouped by family) and layer, colour scaled to the data",
    "cooccurrence.png": "who neighbours whom at the best layer (diagonal masked, own share in the labels)",
    "shares.png": "ILO vs translation share vs topic share per layer, each with its random-mixing value",
    "translation_share.png": "translation share per layer by family (if the corpus has item ids)",
    "topic_share.png": "topic share per layer by family (if the corpus has topics)",
}


def _write_outputs(staging: Path, result, context: dict, figures: bool = True) -> list[str]:
    """ILO's tables, figures (unless ``figures=False``) and README, written into ``staging``; returns their names."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from interp.ilo import plot

    table = result.table.copy()
    table.insert(2, "family", [_language_field(code, "family") for code in table["language"]])
    table.insert(3, "script", [_language_field(code, "script") for code in table["language"]])
    table.to_csv(staging / "ilo_table.csv", index=False)
    result.by_layer.to_csv(staging / "ilo_by_layer.csv")  # index column "layer" (hidden-state index)
    counts = result.cooccurrence.numpy()
    langs = result.languages
    rows = [(layer, a, b, int(counts[i, ia, ib]), counts[i, ia, ib] / max(counts[i, ia].sum(), 1))
            for i, layer in enumerate(result.layers)
            for ia, a in enumerate(langs) for ib, b in enumerate(langs)]  # fmt: skip
    pd.DataFrame(rows, columns=["layer", "language", "neighbour_language", "slots", "share"]).to_csv(
        staging / "cooccurrence.csv", index=False
    )
    where = f"{context['model']} · {context['corpus']}, {context['n_langs']} languages × {context['n_items']} items"
    drawings = {  # name: (function, its column argument or None)
        "ilo_layers.png": (plot.plot_ilo_layers, "ilo"),
        "ilo_heatmap.png": (plot.plot_ilo_heatmap, "ilo"),
        "cooccurrence.png": (plot.plot_cooccurrence, None),
        "shares.png": (plot.plot_shares, None),
        **{f"{column}.png": (plot.plot_ilo_layers, column) for column in ("translation_share", "topic_share")
           if column in result.table},
    }  # fmt: skip
    if not figures:
        drawings = {}
    for name, (draw, column) in drawings.items():
        figure = draw(result, column, context=where) if column else draw(result, context=where)
        figure.savefig(staging / name, dpi=100)
        plt.close(figure)
    outputs = ["ilo_table.csv", "ilo_by_layer.csv", "cooccurrence.csv", *drawings]
    (staging / "README.md").write_text(_readme(result, where, outputs, list(table.columns)), encoding="utf-8")
    return [*outputs, "README.md"]


def _language_field(code: str, field: str) -> str:
    """``family`` or ``script`` of an ILO language; ``'other'`` / ``''`` for other codes."""
    from interp.data.languages import OTHER_FAMILY, language

    try:
        return getattr(language(code), field)
    except KeyError:
        return OTHER_FAMILY if field == "family" else ""


def _readme(result, where: str, outputs: list[str], columns: list[str]) -> str:
    """The output folder's README: what each file is and what each table column means."""
    from interp.ilo.api import TABLE_COLUMNS

    meanings = {**TABLE_COLUMNS, "family": "language family (interp.data.ILO_LANGUAGES; 'other' if unknown)",
                "script": "writing system (ISO 15924)"}  # fmt: skip
    p = result.params
    intro = (
        f"{where}; k={p['k']}, t={p['t']}, {p['metric']}{' (compat)' if p['compat'] else ''}, {p['null']} label "
        "permutations for the null. Written by `interp ilo`. Layers are hidden-state indices: 0 = embeddings, "
        "i = output of decoder block i-1, the last = after the final norm. Definitions: docs/ilo.md."
    )
    files = {name: FILES.get(name, "") for name in outputs}
    return readme("ILO results", intro, files, {"ilo_table.csv": {name: meanings.get(name, "") for name in columns}})


def run_ilo(args: argparse.Namespace) -> int:
    manifest = run_ilo_job(
        model=args.model, data=args.data, out=args.out, langs=args.langs.split(",") if args.langs else None,
        split=args.split, k=args.k, t=args.t, metric=args.metric, layers=parse_layers(args.layers),
        pooling=args.pooling, backend=args.backend, batch_size=args.batch_size, device=args.device,
        null=args.null, bootstrap=args.bootstrap, compat=args.compat,
        distributed=args.distributed, device_map=args.device_map, timeout_s=args.timeout,
        shard_size=args.shard_size, max_length=args.max_length, dtype=args.dtype, cache=args.cache,
        progress=args.progress, figures=args.figures,
    )  # fmt: skip
    result = manifest.pop("result")
    if manifest.get("rank", 0) != 0:
        return 0  # rank 0 prints and writes
    print(result)
    print(result.by_layer.round(3).to_string())
    timing = ", ".join(f"{key} {value:.1f}" for key, value in manifest["timing"].items())
    print(f"activations: {manifest['activations_from']}; timing: {timing}")
    print(f"wrote {', '.join(manifest['outputs'])} and manifest.json to {args.out}")
    return 0


def add_parser(subparsers) -> None:
    """Add ``ilo`` to an ``argparse`` sub-parser collection."""
    ilo = subparsers.add_parser("ilo", help="the main job: ILO scores across languages, per layer")
    add_model_options(ilo, pooled_only=True)
    ilo.add_argument("--data", default="cldr", help="'cldr' (offline default), flores200:<dir>, jsonl:<path>, hub id")
    ilo.add_argument("--out", default="out/ilo", help="output directory")
    ilo.add_argument("--langs", default=None, help="comma-separated FLORES codes (default: all available)")
    ilo.add_argument("--split", default=None,
                     help="flores200:/hub split (default dev); for jsonl: keep rows whose 'split' is one of "
                          "these (comma-separated; default: every row)")  # fmt: skip
    add_ilo_options(ilo)
    ilo.add_argument("--layers", default="all", help="'all' or comma-separated hidden-state indices")
    ilo.add_argument("--batch-size", type=int, default=16, help="texts per forward pass (not part of the cache key)")
    ilo.add_argument("--shard-size", type=int, default=256,
                     help="texts per committed cache shard: a killed run loses at most one")  # fmt: skip
    ilo.add_argument("--max-length", type=int, default=None, help="truncate texts to this many tokens (BOS included)")
    ilo.add_argument("--dtype", default="float32", choices=DTYPES, help="model weights and compute")
    ilo.add_argument("--no-cache", dest="cache", action="store_false",
                     help="extract in memory: no activation cache is read or written (no resume)")  # fmt: skip
    ilo.add_argument("--device", default="cpu")
    ilo.add_argument("--null", type=int, default=50, help="label permutations for the null (0: none)")
    ilo.add_argument("--bootstrap", type=int, default=0, help="item resamples for 95%% CIs (0: none)")
    ilo.add_argument("--compat", action="store_true", help="official positional self-drop")
    ilo.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    ilo.add_argument("--no-figures", dest="figures", action="store_false", help="tables and README only")
    ilo.add_argument("--distributed", action="store_true",
                     help="under torchrun: shard texts and kNN over the ranks (docs/scaling.md)")  # fmt: skip
    ilo.add_argument("--device-map", default=None, help="e.g. 'auto': split one model over this process's GPUs")
    ilo.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                     help="seconds before a silent rank fails the job")  # fmt: skip
    ilo.set_defaults(func=run_ilo)
