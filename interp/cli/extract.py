"""``interp demo`` and ``interp extract``.

``interp demo`` loads the embedded offline default model, extracts mean-pooled hidden states
of a few parallel sentences from every layer and prints their shape. ``interp extract`` runs a
corpus (one text per line, or JSONL rows with ``text`` and optional ``id``/``lang``) into a
resumable activation store (:class:`interp.ActivationStore`; re-run the command to resume).
"""

from __future__ import annotations

import argparse

from interp.cli.common import add_model_options, parse_layers, read_texts

__all__ = ["add_parser", "DEMO_SENTENCES"]

DEMO_SENTENCES = [
    "All human beings are born free and equal in dignity and rights.",
    "Tous les êtres humains naissent libres et égaux en dignité et en droits.",
    "Alle Menschen sind frei und gleich an Würde und Rechten geboren.",
    "Todos los seres humanos nacen libres e iguales en dignidad y derechos.",
    "人人生而自由，在尊严和权利上一律平等。",
]


def run_demo(args: argparse.Namespace) -> int:
    from interp.extraction.api import extract
    from interp.models.loading import load_model

    model, tokenizer = load_model(args.model)
    acts = extract(model, tokenizer, DEMO_SENTENCES, pooling=args.pooling, backend=args.backend)
    print(acts)
    print(f"shape: {tuple(acts.tensor.shape)}  (hidden-state indices x sentences x d_model)")
    return 0


def run_extract(args: argparse.Namespace) -> int:
    from interp.extraction.api import extract
    from interp.models.loading import load_model

    texts, ids, labels = read_texts(args.input, "--input")
    model, tokenizer = load_model(args.model)
    acts = extract(model, tokenizer, texts, layers=parse_layers(args.layers), pooling=args.pooling,
                   backend=args.backend, batch_size=args.batch_size, ids=ids, labels=labels, store=args.out,
                   shard_size=args.shard_size)  # fmt: skip
    print(acts)
    print(f"stored in {args.out}")
    return 0


def add_parser(subparsers) -> None:
    """Add ``demo`` and ``extract`` to an ``argparse`` sub-parser collection."""
    demo = subparsers.add_parser("demo", help="extract hidden states of 5 sentences; print the shape")
    add_model_options(demo)
    demo.set_defaults(func=run_demo)
    ext = subparsers.add_parser("extract", help="extract a corpus into a resumable store")
    add_model_options(ext)
    ext.add_argument("--input", required=True, help="text file (one text per line) or JSONL with 'text'")
    ext.add_argument("--out", required=True, help="store directory (re-run to resume)")
    ext.add_argument("--layers", default="all", help="'all' or comma-separated hidden-state indices")
    ext.add_argument("--batch-size", type=int, default=16)
    ext.add_argument("--shard-size", type=int, default=1024)
    ext.set_defaults(func=run_extract)
