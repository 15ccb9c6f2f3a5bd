"""``interp freeze-experiment``: single-language fine-tuning with and without frozen
early layers; ILO per layer and per-language held-out loss before and after.

Nothing heavy is imported at module level (``interp --help`` stays fast).
Outputs in ``--out``, published all or nothing (:func:`interp.cli.common.publish`):
``ilo.csv``, ``ilo_by_layer.csv``, ``loss.csv``, ``training.csv``,
``conditions.csv``, ``ilo_by_condition.png``, ``delta_ilo.png``,
``loss_change.png``, ``README.md`` (files and columns) and ``manifest.json``.

Training texts come from ``--train``:

* ``eval:<lang>`` -- split the evaluation corpus by item (``--train-items``):
  ``<lang>``'s texts of the training items train the model, the other items
  (every language) are evaluated; nothing trained on is evaluated;
* a ``.txt`` file (one text per line) or a ``.jsonl`` file (rows with
  ``text``; with ``--train-lang``, only rows whose ``lang`` matches).
"""

from __future__ import annotations

import argparse
import json
import time

from interp.cli.common import (
    add_ilo_options,
    add_model_options,
    publish,
    read_texts,
    readme,
    run_manifest,
    write_manifest,
)

__all__ = ["add_parser", "run_freeze_experiment", "conditions_from_args", "train_items", "n_first_values"]


def train_items(value: str) -> int | float:
    """``--train-items``: a whole number is a count of items (``20``), a decimal a fraction (``0.5``)."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        fraction = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--train-items must be a count of items (e.g. 20) or a fraction in (0, 1) (e.g. 0.5), got {value!r}"
        ) from None
    if not 0 < fraction < 1:
        raise argparse.ArgumentTypeError(
            f"--train-items {value}: a fraction must be in (0, 1); for a count of items write a whole number (e.g. 20)"
        )
    return fraction


def n_first_values(text: str, recipe: str) -> list[int]:
    """``--n-first`` as a list of ints (``[]`` for ``none``), or a clear ``SystemExit``.

    ``official`` freezes blocks ``0..n`` (n >= 0); ``update`` freezes ``0..n-1`` and needs n >= 1.
    """
    if text.strip().lower() == "none":
        return []
    values = []
    for part in text.split(","):
        try:
            values.append(int(part.strip()))
        except ValueError:
            raise SystemExit(
                f"--n-first: {part.strip()!r} is not an integer; give comma-separated block counts like 4,8 or 'none'"
            ) from None
    smallest = 0 if recipe == "official" else 1
    bad = [n for n in values if n < smallest]
    if bad:
        what = ("blocks 0..n_first inclusive, so n_first >= 0" if recipe == "official"
                else "blocks 0..n_first-1, so n_first >= 1 (0 would freeze no block)")  # fmt: skip
        raise SystemExit(f"--n-first {bad[0]}: --recipe {recipe} freezes {what}")
    return values


def conditions_from_args(args: argparse.Namespace) -> dict:
    """The fine-tuned conditions ``{name: FreezeSpec or None}`` of ``--n-first`` / ``--recipe`` / ``--no-full``."""
    from interp.freeze import FreezeSpec

    conditions: dict = {} if args.no_full else {"full": None}
    for n in n_first_values(args.n_first, args.recipe):
        if args.recipe == "official":
            conditions[f"frozen_0-{n}"] = FreezeSpec.official(n)
        else:
            conditions[f"frozen_0-{n - 1}"] = FreezeSpec.official_update(n)
    if not conditions:
        raise SystemExit("no fine-tuned condition: drop --no-full or give --n-first")
    return conditions


def run_freeze_experiment(args: argparse.Namespace) -> int:
    """Run the experiment for parsed arguments; write tables, figures and ``manifest.json``."""
    import matplotlib

    matplotlib.use("Agg")  # a command-line job writes PNGs; no display needed
    from interp.data import load_parallel
    from interp.freeze.experiment import RESULT_COLUMNS, RESULT_FILES, run_experiment, train_heldout_split
    from interp.models.loading import load_model

    started = time.time()
    conditions = conditions_from_args(args)  # bad --n-first fails before anything is loaded
    corpus = load_parallel(args.eval, langs=args.langs.split(",") if args.langs else None, split=args.split)
    if args.max_items:
        corpus = corpus.head(args.max_items)
    train_language = args.train_lang
    if args.train.startswith("eval:"):
        train_language = args.train.split(":", 1)[1]
        train_texts, eval_corpus = train_heldout_split(corpus, train_language, args.train_items, seed=args.seed)
    else:
        train_texts, eval_corpus = read_texts(args.train, "--train", args.train_lang)[0], corpus
    model, tokenizer = load_model(args.model, device=args.device)
    bf16 = {"auto": "auto", "on": True, "off": False}[args.bf16]
    result = run_experiment(
        model, tokenizer, train_texts, eval_corpus, conditions, train_language=train_language, steps=args.steps,
        lr=args.lr, batch_size=args.batch_size, grad_accum=args.grad_accum, max_length=args.max_length,
        seed=args.seed, bf16=bf16, k=args.k, t=args.t, metric=args.metric, pooling=args.pooling,
        backend=args.backend, eval_batch_size=args.eval_batch_size,
        finetune_kwargs={"optimizer": args.optimizer, "weight_decay": args.weight_decay,
                         "warmup_steps": args.warmup_steps},
        progress=not args.quiet,
    )  # fmt: skip
    summary = {}
    for name in result.conditions["condition"]:
        rows = result.ilo_by_layer[result.ilo_by_layer["condition"] == name]
        loss = result.loss[result.loss["condition"] == name]
        summary[name] = {
            "mean_delta_ilo": float(rows["delta_ilo_mean"].mean()),
            "delta_loss_train_language": float(loss.loc[loss["is_train_language"], "delta_loss"].mean())
            if loss["is_train_language"].any() else None,
            "mean_delta_loss_other_languages": float(loss.loc[~loss["is_train_language"], "delta_loss"].mean()),
        }  # fmt: skip
    corpus_fields = {"source": corpus.source, "languages": list(eval_corpus.langs), "n_eval_items": eval_corpus.n_items,
                     "n_train_texts": len(train_texts), "train_language": train_language}  # fmt: skip
    arguments = {key: value for key, value in vars(args).items() if key != "func"}
    with publish(args.out) as staging:
        outputs = result.save(staging)
        intro = (f"`interp freeze-experiment`: {args.model} fine-tuned on {len(train_texts)} texts of "
                 f"{train_language or 'the training file'}, {args.steps} steps; evaluated on {eval_corpus.n_items} "
                 f"held-out items in {eval_corpus.n_langs} languages (k={args.k}, t={args.t}).")  # fmt: skip
        text = readme("Freezing experiment", intro, {name: RESULT_FILES.get(name, "") for name in outputs},
                      RESULT_COLUMNS)  # fmt: skip
        (staging / "README.md").write_text(text, encoding="utf-8")
        outputs = [*outputs, "README.md"]
        manifest = run_manifest("freeze-experiment", arguments, outputs, started, corpus=corpus_fields,
                                conditions=result.conditions.to_dict(orient="records"), summary=summary)  # fmt: skip
        write_manifest(staging, manifest)
    print(result)
    print(result.conditions.to_string(index=False))
    print(json.dumps(summary, indent=1))
    print(f"wrote {', '.join(outputs)} and manifest.json to {args.out}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``freeze-experiment`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "freeze-experiment",
        help="fine-tune on one language with/without frozen early layers; ILO per layer and loss before/after",
        description=__doc__.split("\n\n")[0],
    )
    add_model_options(p, pooled_only=True)
    p.add_argument("--train", required=True,
                   help="eval:<lang> (train on part of --eval) or a .txt/.jsonl file of training texts")  # fmt: skip
    p.add_argument("--train-lang", default=None, help="language of the training texts (filters .jsonl rows)")
    p.add_argument("--train-items", type=train_items, default=0.5,
                   help="with eval:<lang>: items to train on, a count (20) or a fraction (0.5)")  # fmt: skip
    p.add_argument("--eval", default="cldr", help="parallel corpus: 'cldr', flores200:<dir>, jsonl:<path>, hub id")
    p.add_argument("--langs", default=None, help="comma-separated evaluation languages (default: all)")
    p.add_argument("--split", default=None,
                   help="flores200:/hub split (default dev); jsonl: keep rows with these 'split' values")  # fmt: skip
    p.add_argument("--max-items", type=int, default=0, help="keep only the first N items of --eval (0: all)")
    p.add_argument("--out", default="out/freeze", help="output directory")
    p.add_argument("--n-first", default="8",
                   help="comma-separated n_first of frozen conditions (>= 0; update: >= 1), or 'none'")  # fmt: skip
    p.add_argument("--recipe", default="official", choices=["official", "update"],
                   help="official: blocks 0..n_first inclusive (param_freeze.py); update: 0..n_first-1")  # fmt: skip
    p.add_argument("--no-full", action="store_true", help="skip the full fine-tune condition")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", default="auto", choices=["auto", "on", "off"])
    add_ilo_options(p)
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_freeze_experiment)
    return p
