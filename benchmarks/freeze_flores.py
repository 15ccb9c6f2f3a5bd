"""The layer-freezing experiment on FLORES-200, 31 languages, several seeds -- resumable.

Question (Wilie et al. 2025, second finding): does fine-tuning on ONE language lower the
early layers' ILO, does freezing the early layers (the official recipe) preserve it, and
does freezing help the other languages' held-out loss?

Design (every choice is a flag; the defaults are what docs/results.md reports):

* training: the fine-tuning language's FLORES ``train`` split (701 sentences),
  ``--steps`` AdamW steps of ``--batch-size`` sentences, lr ``--lr``, seeds ``--seeds``
  (the seed sets the data order and the training RNG; the same for every condition);
* conditions: ``base`` (evaluated once), ``full`` (every parameter trains) and one
  official selective freeze per ``--n-first`` (blocks 0..n_first inclusive, embeddings,
  final norm and LM head frozen: :meth:`interp.freeze.FreezeSpec.official`);
* evaluation, on held-out items only (``dev`` + ``test`` splits: ids never trained, in
  any language): ILO per hidden state and language on ``--ilo-items`` items x 31
  languages (k=5, t=3, cosine), and the per-language next-token loss on the first
  ``--loss-items`` of them (the same random subset of the held-out items, seeded by
  ``--item-seed``; the subset sizes keep the run within the machine's budget).

Resumable: each (seed, condition) result -- and ``base`` -- is written to
``<out>/runs/<name>/`` atomically (a staging folder renamed into place) as soon as it is
done; a re-run skips finished runs and refuses to mix runs of other settings
(``<out>/plan.json``). ``--report <dir>`` then (or at the end) aggregates every finished
run into tables (means over seeds with 95% Student-t intervals: :mod:`interp.freeze.seeds`)
and figures.

usage: nice -n 10 python benchmarks/freeze_flores.py --data ../shared/data/flores31.jsonl \\
           --out /tmp/freeze_flores [--report docs/figures] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from machine import describe

from interp.cli.common import readme
from interp.data import ILO_CODES, by_family, language, load_parallel
from interp.freeze import BASE, FreezeSpec, evaluate_condition, finetune, seed_intervals
from interp.models import load_model

EARLY = range(1, 10)  # hidden states 1..9: the outputs of blocks 0..8, the official recipe's frozen blocks


def _settings(args) -> dict:
    return {"data": str(Path(args.data).resolve().name), "train_lang": args.train_lang, "steps": args.steps,
            "batch_size": args.batch_size, "lr": args.lr, "max_length": args.max_length,
            "n_first": args.n_first, "ilo_items": args.ilo_items, "loss_items": args.loss_items,
            "item_seed": args.item_seed, "k": 5, "t": 3, "metric": "cosine"}  # fmt: skip


def _check_plan(out: Path, settings: dict) -> None:
    plan = out / "plan.json"
    if plan.is_file():
        old = json.loads(plan.read_text())
        if old != settings:
            differ = sorted(k for k in settings.keys() | old.keys() if old.get(k) != settings.get(k))
            sys.exit(f"{out} holds runs of other settings (differ in {differ}); use another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = plan.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=1))
    os.replace(tmp, plan)


def _conditions(n_first: list[int]) -> dict[str, FreezeSpec | None]:
    return {"full": None, **{f"frozen_0-{n}": FreezeSpec.official(n) for n in n_first}}


def _publish(final: Path, tables: dict[str, pd.DataFrame], info: dict) -> None:
    """Write a run's tables and ``run.json`` into a staging folder, then rename it into place."""
    staging = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, table in tables.items():
        table.to_csv(staging / name, index=False)
    (staging / "run.json").write_text(json.dumps(info, indent=1, default=str))
    os.replace(staging, final)


def _evaluate(model, tok, name, ilo_corpus, loss_corpus, args) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    tic = time.perf_counter()
    ilo, loss = evaluate_condition(model, tok, name, ilo_corpus, loss_corpus, eval_batch_size=16,
                                   max_length=args.max_length, progress=args.progress)  # fmt: skip
    return ilo, loss, time.perf_counter() - tic


def run_all(args) -> Path:
    out = Path(args.out)
    settings = _settings(args)
    _check_plan(out, settings)
    runs = out / "runs"
    runs.mkdir(exist_ok=True)
    corpus = load_parallel(f"jsonl:{args.data}")
    train = corpus.where("split", "train")
    heldout = corpus.where("split", ["dev", "test"])
    assert not set(train.ids) & set(heldout.ids)
    order = torch.randperm(heldout.n_items, generator=torch.Generator().manual_seed(args.item_seed)).tolist()
    ilo_corpus = heldout.take(sorted(order[: args.ilo_items]))
    loss_corpus = heldout.take(sorted(order[: args.loss_items]))
    train_texts = list(train.texts[args.train_lang])
    print(f"machine: {describe()}")
    print(f"train: {args.train_lang}, {len(train_texts)} sentences; ILO on {ilo_corpus}; loss on {loss_corpus}")
    model, tok = load_model()
    common = {"machine": describe(), "ilo_ids": list(ilo_corpus.ids), "loss_ids": list(loss_corpus.ids)}
    if not (runs / BASE).is_dir():
        load = os.getloadavg()
        ilo, loss, eval_s = _evaluate(model, tok, BASE, ilo_corpus, loss_corpus, args)
        _publish(runs / BASE, {"ilo.csv": ilo, "loss.csv": loss},
                 {**common, "eval_s": eval_s, "loadavg_before": load, "loadavg_after": os.getloadavg()})  # fmt: skip
        print(f"base evaluated in {eval_s:.0f} s")
    conditions = _conditions(args.n_first)
    main_pair, extra = list(conditions)[:2], list(conditions)[2:]  # full + the first n_first for every seed first
    schedule = [(seed, name) for seed in args.seeds for name in main_pair]
    schedule += [(seed, name) for name in extra for seed in args.seeds]
    for seed, name in schedule:
        spec = conditions[name]
        final = runs / f"seed{seed}-{name}"
        if final.is_dir():
            continue
        load = os.getloadavg()
        tic = time.perf_counter()
        run = finetune(model, tok, train_texts, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                       freeze=spec, max_length=args.max_length, seed=seed, progress=args.progress)  # fmt: skip
        train_s = time.perf_counter() - tic
        ilo, loss, eval_s = _evaluate(run.model, tok, name, ilo_corpus, loss_corpus, args)
        history = run.history.assign(condition=name, seed=seed)
        info = {**common, "seed": seed, "condition": name, "train_s": train_s, "eval_s": eval_s,
                "n_trainable": run.n_trainable, "n_frozen": run.n_frozen,
                "frozen": "nothing (full fine-tune)" if spec is None else spec.describe(18),
                "loadavg_before": load, "loadavg_after": os.getloadavg()}  # fmt: skip
        _publish(final, {"ilo.csv": ilo.assign(seed=seed), "loss.csv": loss.assign(seed=seed),
                         "training.csv": history}, info)  # fmt: skip
        print(f"seed {seed} {name}: trained {train_s:.0f} s, evaluated {eval_s:.0f} s")
        del run
    return out


# -------------------------------------------------------------------------------- report
def _read_runs(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[dict]]:
    ilo, loss, training, info = [], [], [], []
    for folder in sorted((out / "runs").iterdir()):
        if folder.name.startswith("."):
            continue
        ilo.append(pd.read_csv(folder / "ilo.csv"))
        loss.append(pd.read_csv(folder / "loss.csv"))
        if (folder / "training.csv").is_file():
            training.append(pd.read_csv(folder / "training.csv"))
        info.append({"run": folder.name, **json.loads((folder / "run.json").read_text())})
    return (pd.concat(ilo, ignore_index=True), pd.concat(loss, ignore_index=True),
            pd.concat(training, ignore_index=True) if training else pd.DataFrame(), info)  # fmt: skip


def _paired(wide: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per-seed ``condition - full`` (``wide``: seeds x conditions), summarised over seeds.

    Only seeds with both runs count (a partial experiment has pairs for some seeds only); with no
    pair yet the table is empty.
    """
    full = wide["full"] if "full" in wide else pd.Series(np.nan, index=wide.index)
    rows = [{"condition": c, "seed": seed, value: wide.loc[seed, c] - full.loc[seed]}
            for c in wide.columns if c != "full" for seed in wide.index
            if pd.notna(wide.loc[seed, c]) and pd.notna(full.loc[seed])]  # fmt: skip
    if not rows:
        return pd.DataFrame(columns=["condition", *SUMMARY])
    return seed_intervals(pd.DataFrame(rows), ["condition"], value)


def summarise(out: Path, train_lang: str) -> dict[str, pd.DataFrame]:
    """Per-seed deltas against ``base`` and their means with 95% t intervals."""
    ilo, loss, training, info = _read_runs(out)
    base_ilo = ilo[ilo["condition"] == BASE].set_index(["layer", "language"])["ilo"]
    tuned = ilo[ilo["condition"] != BASE].copy()
    keys = list(zip(tuned["layer"], tuned["language"], strict=True))
    tuned["delta_ilo"] = tuned["ilo"].to_numpy() - base_ilo.loc[keys].to_numpy()
    per_seed_layer = (
        tuned.groupby(["condition", "seed", "layer"], sort=False)[["ilo", "delta_ilo"]].mean().reset_index()
    )
    delta_layer = seed_intervals(per_seed_layer, ["condition", "layer"], "delta_ilo")
    ilo_layer = seed_intervals(per_seed_layer, ["condition", "layer"], "ilo")
    early = per_seed_layer[per_seed_layer["layer"].isin(EARLY)].groupby(["condition", "seed"], sort=False)
    delta_early = seed_intervals(early["delta_ilo"].mean().reset_index(), ["condition"], "delta_ilo")
    base_loss = loss[loss["condition"] == BASE].set_index("language")["loss"]
    tuned_loss = loss[loss["condition"] != BASE].copy()
    tuned_loss["delta_loss"] = tuned_loss["loss"].to_numpy() - base_loss.loc[tuned_loss["language"]].to_numpy()
    delta_loss = seed_intervals(tuned_loss, ["condition", "language"], "delta_loss")
    others = tuned_loss[tuned_loss["language"] != train_lang].groupby(["condition", "seed"], sort=False)
    delta_loss_others = seed_intervals(others["delta_loss"].mean().reset_index(), ["condition"], "delta_loss")
    # the paired questions: frozen minus full, per seed (same data order)
    paired = _paired(others["delta_loss"].mean().unstack("condition"), "loss_minus_full")
    paired_ilo = _paired(early["delta_ilo"].mean().unstack("condition"), "ilo_minus_full")
    return {"ilo_all_runs.csv": ilo, "loss_all_runs.csv": loss, "training_all_runs.csv": training,
            "delta_ilo_by_layer.csv": delta_layer, "ilo_by_layer.csv": ilo_layer,
            "delta_ilo_early.csv": delta_early, "delta_loss_by_language.csv": delta_loss,
            "delta_loss_other_languages.csv": delta_loss_others, "frozen_minus_full_loss.csv": paired,
            "frozen_minus_full_early_ilo.csv": paired_ilo, "runs.csv": pd.DataFrame(info)}  # fmt: skip


def _figures(tables: dict[str, pd.DataFrame], base_by_layer: pd.Series, title: str, train_lang: str) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colours = {"full": "tab:red"}
    palette = iter(["tab:blue", "tab:green", "tab:purple", "tab:olive"])
    figures = {}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    left.plot(base_by_layer.index, base_by_layer.values, color="black", lw=2, label="base (not trained)")
    for condition, part in tables["ilo_by_layer.csv"].groupby("condition", sort=False):
        colour = colours.setdefault(condition, next(palette))
        left.plot(part["layer"], part["mean"], color=colour, lw=1.5, label=condition)
    left.set(xlabel="hidden-state index (0 = embeddings)", ylabel="mean ILO over 31 languages",
             title="ILO per layer (mean of seeds)")  # fmt: skip
    left.legend(fontsize=8, frameon=False)
    for condition, part in tables["delta_ilo_by_layer.csv"].groupby("condition", sort=False):
        colour = colours[condition]
        right.plot(part["layer"], part["mean"], color=colour, lw=1.5, label=condition)
        right.fill_between(part["layer"], part["ci_low"], part["ci_high"], color=colour, alpha=0.18)
    right.axhline(0, color="black", lw=0.8)
    right.axvspan(0.5, 9.5, color="grey", alpha=0.08, label="n_first=8 freezes blocks 0-8 (hidden states 1-9)")
    right.set(xlabel="hidden-state index", ylabel="ΔILO vs base", title="ΔILO per layer, mean and 95% CI over seeds")
    right.legend(fontsize=8, frameon=False)
    for panel in (left, right):
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.grid(alpha=0.25, lw=0.5)
    fig.suptitle(title)
    figures["freeze_ilo_by_layer.png"] = fig

    delta = tables["delta_loss_by_language.csv"]
    order = by_family(ILO_CODES)
    conditions = list(dict.fromkeys(delta["condition"]))
    fig, ax = plt.subplots(figsize=(11, 4.8), layout="constrained")
    width = 0.8 / len(conditions)
    for i, condition in enumerate(conditions):
        part = delta[delta["condition"] == condition].set_index("language").loc[order]
        x = np.arange(len(order)) + (i - (len(conditions) - 1) / 2) * width
        err = np.vstack([part["mean"] - part["ci_low"], part["ci_high"] - part["mean"]])
        ax.bar(x, part["mean"], width, yerr=err, color=colours[condition], label=condition, error_kw={"lw": 0.6})
    ax.axhline(0, color="black", lw=0.8)
    families = [language(code).family for code in order]
    alone = {f for f in families if families.count(f) == 1}  # one-language families: named in the tick label
    labels = [f"{c.split('_')[0]}{' (train)' if c == train_lang else ''}{f' ({f})' if f in alone else ''}"
              for c, f in zip(order, families, strict=True)]  # fmt: skip
    ax.set_xticks(range(len(order)), labels, rotation=90, fontsize=8)
    for i in range(1, len(order)):
        if families[i] != families[i - 1]:
            ax.axvline(i - 0.5, color="0.6", lw=0.6)
    starts = [i for i in range(len(order)) if i == 0 or families[i] != families[i - 1]] + [len(order)]
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        if families[a] in alone:
            continue
        ax.text((a + b - 1) / 2, 1.01, families[a].replace("IE ", "IE\n"), transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=7, color="0.3")  # fmt: skip
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylabel("Δ held-out loss vs base (nats/token)")
    ax.set_title(f"{title}\nheld-out loss change per language (by family), mean and 95% CI over seeds",
                 fontsize=10, pad=26)  # fmt: skip
    ax.legend(fontsize=8, frameon=False)
    figures["freeze_loss_by_language.png"] = fig
    return figures


SUMMARY = {"n_seeds": "seeds with a result", "mean": "mean over seeds", "sd": "standard deviation over seeds",
           "ci_low": "lower end of the 95% Student-t interval of the mean", "ci_high": "upper end"}  # fmt: skip
FILES = {
    "delta_ilo_by_layer.csv": ("condition, layer", "ILO change against base, mean over the 31 languages"),
    "ilo_by_layer.csv": ("condition, layer", "ILO, mean over the 31 languages"),
    "delta_ilo_early.csv": ("condition", "ILO change against base, mean over hidden states 1-9 and languages"),
    "delta_loss_by_language.csv": ("condition, language", "held-out loss change against base (nats/token)"),
    "delta_loss_other_languages.csv": ("condition", "held-out loss change, mean over the 30 other languages"),
    "frozen_minus_full_loss.csv": ("condition", "per seed: frozen minus full loss change, other languages"),
    "frozen_minus_full_early_ilo.csv": ("condition", "per seed: frozen minus full ILO change, hidden states 1-9"),
}


def _readme(plan: dict, train_lang: str, tables: dict) -> str:
    intro = (f"`benchmarks/freeze_flores.py --report`: gemma-3-270m fine-tuned on {train_lang} (FLORES train split, "
             f"{plan['steps']} steps x {plan['batch_size']} sentences, lr {plan['lr']}), evaluated on held-out items "
             f"(dev + test ids): ILO on {plan['ilo_items']} items x 31 languages, loss on {plan['loss_items']} items "
             "x 31 languages. Each table has one row per key, summarising the seeds.")  # fmt: skip
    files = {name: f"one row per ({keys}): {what}" for name, (keys, what) in FILES.items()}
    files["freeze_ilo_by_layer.png (docs/figures)"] = "mean ILO per layer per condition; the change with its 95% CI"
    files["freeze_loss_by_language.png (docs/figures)"] = "held-out loss change per language with 95% CIs"
    columns = {name: {**{k.strip(): "key" for k in keys.split(",")}, **SUMMARY} for name, (keys, _) in FILES.items()}
    return readme("Freezing experiment on FLORES-200, several seeds", intro, files, columns, manifest=False)


def report(out: Path, dest: Path, train_lang: str, figures_dir: Path | None = None) -> None:
    import matplotlib.pyplot as plt

    tables = summarise(out, train_lang)
    dest.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        if name.endswith("all_runs.csv") or name == "runs.csv":
            table.to_csv(out / name, index=False)  # the raw tables stay with the runs
        else:
            table.to_csv(dest / name, index=False)
    ilo = tables["ilo_all_runs.csv"]
    base = ilo[ilo["condition"] == BASE].groupby("layer")["ilo"].mean()
    plan = json.loads((out / "plan.json").read_text())
    title = (f"gemma-3-270m fine-tuned on {train_lang} (FLORES train, {plan['steps']} steps x {plan['batch_size']}), "
             f"k=5, t=3")  # fmt: skip
    figures_dir = figures_dir or dest
    figures_dir.mkdir(parents=True, exist_ok=True)
    for name, figure in _figures(tables, base, title, train_lang).items():
        figure.savefig(figures_dir / name, dpi=100)
        plt.close(figure)
    (dest / "README.md").write_text(_readme(plan, train_lang, tables), encoding="utf-8")
    for name in ("delta_ilo_early.csv", "delta_loss_other_languages.csv", "frozen_minus_full_loss.csv",
                 "frozen_minus_full_early_ilo.csv"):  # fmt: skip
        print(f"\n{name}\n{tables[name].round(4).to_string(index=False)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/flores31.jsonl")
    parser.add_argument("--out", required=True, help="run folder (resumable; keep it outside the repository)")
    parser.add_argument("--train-lang", default="ind_Latn")
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--n-first", default="8,4", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--ilo-items", type=int, default=40, help="held-out items x 31 languages for ILO")
    parser.add_argument("--loss-items", type=int, default=12, help="held-out items per language for the loss")
    parser.add_argument("--item-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--report", default=None, help="write the aggregated tables (and figures) here")
    parser.add_argument("--figures", default=None, help="write the figures here instead (e.g. docs/figures)")
    parser.add_argument("--report-only", action="store_true", help="aggregate the finished runs, train nothing")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if not args.report_only:
        run_all(args)
    if args.report:
        report(out, Path(args.report), args.train_lang, Path(args.figures) if args.figures else None)


if __name__ == "__main__":
    main()
