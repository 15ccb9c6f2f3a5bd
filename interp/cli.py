"""Command line: ``interp ilo`` (the main job), ``interp freeze-experiment``, ``interp demo`` and ``interp extract``.

``interp demo`` loads the embedded offline default model, extracts mean-pooled
hidden states of a few parallel sentences from every layer and prints their
shape. ``interp extract`` runs a corpus (one text per line, or JSONL rows with
``text`` and optional ``id``/``lang``) into a resumable activation store.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from interp.freeze_cli import add_freeze_parser
from interp.parallel.launch import DEFAULT_TIMEOUT_S

DEMO_SENTENCES = [
    "All human beings are born free and equal in dignity and rights.",
    "Tous les êtres humains naissent libres et égaux en dignité et en droits.",
    "Alle Menschen sind frei und gleich an Würde und Rechten geboren.",
    "Todos los seres humanos nacen libres e iguales en dignidad y derechos.",
    "人人生而自由，在尊严和权利上一律平等。",
]


def _read_corpus(path: Path) -> tuple[list[str], list, list | None]:
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        missing = [i for i, r in enumerate(rows) if "text" not in r]
        if missing:
            raise SystemExit(f"{path}: rows {missing[:5]} have no 'text' field")
        ids = [r.get("id", i) for i, r in enumerate(rows)]
        labels = [r["lang"] for r in rows] if all("lang" in r for r in rows) else None
        return [r["text"] for r in rows], ids, labels
    texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts, list(range(len(texts))), None


def _parse_layers(value: str):
    return "all" if value == "all" else [int(x) for x in value.split(",")]


def cmd_demo(args: argparse.Namespace) -> int:
    import interp

    model, tokenizer = interp.load_model(args.model)
    acts = interp.extract(model, tokenizer, DEMO_SENTENCES, pooling=args.pooling, backend=args.backend)
    print(acts)
    print(f"shape: {tuple(acts.tensor.shape)}  (hidden-state indices x sentences x d_model)")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    import interp

    texts, ids, labels = _read_corpus(Path(args.input))
    model, tokenizer = interp.load_model(args.model)
    acts = interp.extract(
        model,
        tokenizer,
        texts,
        layers=_parse_layers(args.layers),
        pooling=args.pooling,
        backend=args.backend,
        batch_size=args.batch_size,
        ids=ids,
        labels=labels,
        store=args.out,
        shard_size=args.shard_size,
    )
    print(acts)
    print(f"stored in {args.out}")
    return 0


def cmd_ilo(args: argparse.Namespace) -> int:
    from interp.ilo_job import run_ilo_job

    manifest = run_ilo_job(
        model=args.model, data=args.data, out=args.out, langs=args.langs.split(",") if args.langs else None,
        split=args.split, k=args.k, t=args.t, metric=args.metric, layers=_parse_layers(args.layers),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interp", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default="gemma-3-270m", help="HF id/path or 'gemma-3-270m' (embedded, offline)")
    common.add_argument("--backend", default="hf", choices=["hf", "transformer_lens", "nnsight"])
    common.add_argument("--pooling", default="mean", choices=["mean", "mean_no_special", "last", "none"])
    demo = sub.add_parser("demo", parents=[common], help="extract hidden states of 5 sentences; print the shape")
    demo.set_defaults(func=cmd_demo)
    ext = sub.add_parser("extract", parents=[common], help="extract a corpus into a resumable store")
    ext.add_argument("--input", required=True, help="text file (one text per line) or JSONL with 'text'")
    ext.add_argument("--out", required=True, help="store directory (re-run to resume)")
    ext.add_argument("--layers", default="all", help="'all' or comma-separated hidden-state indices")
    ext.add_argument("--batch-size", type=int, default=16)
    ext.add_argument("--shard-size", type=int, default=1024)
    ext.set_defaults(func=cmd_extract)
    ilo = sub.add_parser("ilo", parents=[common], help="the main job: ILO scores across languages, per layer")
    ilo.add_argument("--data", default="cldr", help="'cldr' (offline default), flores200:<dir>, jsonl:<path>, hub id")
    ilo.add_argument("--out", default="out/ilo", help="output directory")
    ilo.add_argument("--langs", default=None, help="comma-separated FLORES codes (default: all available)")
    ilo.add_argument("--split", default="dev")
    ilo.add_argument("--k", type=int, default=5)
    ilo.add_argument("--t", type=int, default=3)
    ilo.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"])
    ilo.add_argument("--layers", default="all", help="'all' or comma-separated hidden-state indices")
    ilo.add_argument("--batch-size", type=int, default=16)
    ilo.add_argument("--device", default="cpu")
    ilo.add_argument("--null", type=int, default=50, help="label permutations for the null (0: none)")
    ilo.add_argument("--bootstrap", type=int, default=0, help="item resamples for 95%% CIs (0: none)")
    ilo.add_argument("--compat", action="store_true", help="official positional self-drop")
    ilo.add_argument("--distributed", action="store_true",
                     help="under torchrun: shard texts and kNN over the ranks (docs/scaling.md)")  # fmt: skip
    ilo.add_argument("--device-map", default=None, help="e.g. 'auto': split one model over this process's GPUs")
    ilo.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds before a silent rank fails the job"
    )
    ilo.set_defaults(func=cmd_ilo)

    add_freeze_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
