"""The layer-freezing experiment: ILO per layer and per-language loss, before and
after single-language fine-tuning, with and without frozen early layers.

The ILO paper's second finding (Wilie et al. 2025): fine-tuning on one language
disrupts interlingual alignment in the *early* layers, and freezing them keeps
the alignment and helps cross-lingual generalisation. :func:`run_experiment`
measures exactly that for any model the adapter knows:

1. ``base``: the model as given (never modified).
2. each fine-tuned condition (``{name: FreezeSpec or None}``; ``None`` = full
   fine-tune): a **deep copy** of the model is trained with
   :func:`interp.freeze.finetune` on the training texts (same seed, data order
   and hyper-parameters for every condition), evaluated, and dropped.
3. evaluation of every condition on the same parallel corpus:
   ILO per hidden-state index and language (:func:`interp.extract` +
   :func:`interp.ilo.score`), and the per-language next-token loss and
   perplexity on held-out parallel texts (:func:`interp.freeze.language_loss`).

Results are tidy DataFrames with a ``condition`` column; ``delta_*`` columns
are the condition minus ``base``. ``frozen_path`` marks hidden-state indices
that depend on frozen parameters only (:func:`interp.freeze.frozen_path_layers`, derived
from the parameters themselves: everything outside blocks ``h..`` must be frozen, e.g.
also GPT-2's position embedding): their ΔILO is exactly 0 by construction, a built-in
sanity check.

To keep the held-out loss honest, :func:`train_heldout_split` splits a parallel
corpus by *item*: the training texts are one language's texts of some items,
and evaluation uses the other items in every language (no training sentence,
nor any translation of one, is evaluated).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from interp._validation import check_int, check_texts
from interp.data.corpus import ParallelCorpus
from interp.extraction.api import extract
from interp.freeze.finetune import finetune
from interp.freeze.lm_loss import language_loss
from interp.freeze.spec import FreezeSpec, frozen_path_layers
from interp.ilo.api import score
from interp.models.adapter import get_adapter

__all__ = [
    "RESULT_COLUMNS",
    "RESULT_FILES",
    "run_experiment",
    "evaluate_condition",
    "FreezeExperimentResult",
    "default_conditions",
    "train_heldout_split",
    "BASE",
]

#: Name of the untrained condition.
BASE = "base"

#: What each file of :meth:`FreezeExperimentResult.save` holds, and what each column means (its README).
RESULT_FILES = {
    "ilo.csv": "ILO per condition, hidden-state index and language",
    "ilo_by_layer.csv": "ILO per condition and hidden-state index, means over languages",
    "loss.csv": "held-out next-token loss per condition and language",
    "training.csv": "one row per optimizer step of each fine-tuned condition",
    "conditions.csv": "what each condition froze",
    "ilo_by_condition.png": "mean ILO per layer, one line per condition",
    "delta_ilo.png": "ILO change per layer against base, per fine-tuned condition",
    "loss_change.png": "held-out loss change per language",
}
RESULT_COLUMNS = {
    "ilo.csv": {
        "condition": "base (not trained), full (every parameter trained) or a frozen condition",
        "layer": "hidden-state index (0 = embeddings, i = output of decoder block i-1)",
        "language": "evaluation language",
        "bridge": "ILO's bridge", "reach": "ILO's reach", "reach_raw": "languages reached", "ilo": "ILO",
        "delta_ilo": "ilo minus base's ilo (same layer and language)",
        "frozen_path": "True where the hidden state depends on frozen parameters only (delta_ilo is 0 by construction)",
    },
    "loss.csv": {
        "condition": "as in ilo.csv", "language": "held-out language",
        "loss": "token-weighted mean next-token loss (nats/token) on the held-out texts",
        "perplexity": "exp(loss)", "n_tokens": "next-token targets", "n_texts": "held-out texts",
        "delta_loss": "loss minus base's loss", "ppl_ratio": "perplexity / base's perplexity",
        "is_train_language": "True for the fine-tuning language",
    },
    "training.csv": {
        "condition": "fine-tuned condition", "step": "optimizer step", "loss": "token-mean training loss of the step",
        "lr": "learning rate", "n_tokens": "target tokens in the step",
    },
}  # fmt: skip


def default_conditions(n_blocks: int, n_first: int = 8) -> dict[str, FreezeSpec | None]:
    """``{"full": None, "frozen_0-<n>": official recipe}``.

    ``n`` is ``n_first`` (official default 8), lowered to ``n_blocks - 2`` for
    small models so at least one block stays trainable.
    """
    conditions: dict[str, FreezeSpec | None] = {"full": None}
    n = min(n_first, n_blocks - 2)
    if n >= 0:
        conditions[f"frozen_0-{n}"] = FreezeSpec.official(n)
    return conditions


def train_heldout_split(
    corpus: ParallelCorpus, language: str, n_train: int | float = 0.5, seed: int = 0
) -> tuple[list[str], ParallelCorpus]:
    """Split a parallel corpus by item into training texts of one language and a held-out corpus.

    Args:
        corpus: the parallel corpus.
        language: the fine-tuning language.
        n_train: number of items (int) or fraction of items (float in (0, 1)) for training.
        seed: seed of the item permutation.

    Returns:
        ``(train_texts, heldout)``: ``language``'s texts of the training items, and
        the remaining items in every language (corpus order kept).
    """
    if language not in corpus.texts:
        raise KeyError(f"the fine-tuning language {language!r} is not in the corpus; it has {list(corpus.langs)}")
    n_items = corpus.n_items
    if isinstance(n_train, float):
        if not 0 < n_train < 1:
            raise ValueError(f"a fractional n_train must be in (0, 1), got {n_train}")
        n_train = round(n_train * n_items)
    n_train = check_int("n_train", n_train, 1, n_items - 2,
                        f" (at least 1 training item and 2 held-out items of the {n_items})")  # fmt: skip
    order = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed)).tolist()
    train = sorted(order[:n_train])
    held = sorted(order[n_train:])
    train_texts = [corpus.texts[language][i] for i in train]
    heldout = ParallelCorpus(
        corpus.langs,
        tuple(corpus.ids[i] for i in held),
        {lang: tuple(corpus.texts[lang][i] for i in held) for lang in corpus.langs},
        corpus.source,
    )
    return train_texts, heldout


@dataclass
class FreezeExperimentResult:
    """Tables of :func:`run_experiment` (``delta_*`` = condition minus ``base``).

    Attributes:
        ilo: ``condition, layer, language, bridge, reach, reach_raw, ilo,
            delta_ilo, frozen_path`` -- one row per condition × hidden-state
            index × language.
        ilo_by_layer: ``condition, layer, ilo_mean, bridge_mean, reach_mean,
            delta_ilo_mean, frozen_path`` -- means over languages.
        loss: ``condition, language, loss, perplexity, n_tokens, n_texts,
            delta_loss, ppl_ratio, is_train_language``.
        training: ``condition, step, loss, lr, n_tokens`` per optimizer step.
        conditions: ``condition, frozen, frozen_blocks, frozen_path_layers,
            n_trainable, n_frozen`` -- what each condition froze.
        params: the settings used.
    """

    ilo: pd.DataFrame
    ilo_by_layer: pd.DataFrame
    loss: pd.DataFrame
    training: pd.DataFrame
    conditions: pd.DataFrame
    params: dict = field(default_factory=dict)

    def plot_ilo(self, **kwargs):
        """Mean ILO per layer, one line per condition (:func:`interp.freeze.plot.plot_ilo_by_condition`)."""
        from interp.freeze.plot import plot_ilo_by_condition

        return plot_ilo_by_condition(self, **kwargs)

    def plot_delta_ilo(self, **kwargs):
        """ΔILO per layer per fine-tuned condition (:func:`interp.freeze.plot.plot_delta_ilo`)."""
        from interp.freeze.plot import plot_delta_ilo

        return plot_delta_ilo(self, **kwargs)

    def plot_loss_change(self, **kwargs):
        """Per-language loss change (:func:`interp.freeze.plot.plot_loss_change`)."""
        from interp.freeze.plot import plot_loss_change

        return plot_loss_change(self, **kwargs)

    def save(self, out: str | Path, dpi: int = 120) -> list[str]:
        """Write the five tables as CSV and the three figures as PNG into ``out``; return the file names."""
        import matplotlib.pyplot as plt

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tables = {"ilo.csv": self.ilo, "ilo_by_layer.csv": self.ilo_by_layer, "loss.csv": self.loss,
                  "training.csv": self.training, "conditions.csv": self.conditions}  # fmt: skip
        for name, table in tables.items():
            table.to_csv(out / name, index=False)
        figures = {"ilo_by_condition.png": self.plot_ilo(), "delta_ilo.png": self.plot_delta_ilo(),
                   "loss_change.png": self.plot_loss_change()}  # fmt: skip
        for name, figure in figures.items():
            figure.savefig(out / name, dpi=dpi)
            plt.close(figure)
        return [*tables, *figures]

    def __repr__(self) -> str:
        names = list(self.conditions["condition"])
        return (
            f"FreezeExperimentResult(conditions={names}, {self.ilo['layer'].nunique()} layers × "
            f"{self.ilo['language'].nunique()} languages)"
        )


def _check_conditions(conditions, n_blocks: int) -> dict[str, FreezeSpec | None]:
    if conditions is None:
        return default_conditions(n_blocks)
    if not isinstance(conditions, Mapping) or not conditions:
        raise TypeError("conditions must be a non-empty dict {name: FreezeSpec | dict | None (full fine-tune)}")
    out = {}
    for name, spec in conditions.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"condition names must be non-empty strings, got {name!r}")
        if name == BASE:
            raise ValueError(f"{BASE!r} is the untrained model and is always included; rename that condition")
        spec = FreezeSpec.coerce(spec)
        if spec is not None:
            spec.block_indices(n_blocks)  # fail now, before any training
        out[name] = spec
    return out


def evaluate_condition(
    model: nn.Module,
    tokenizer,
    name: str,
    eval_corpus: ParallelCorpus,
    heldout: ParallelCorpus | Mapping | None = None,
    *,
    k: int = 5,
    t: int = 3,
    metric: str = "cosine",
    layers="all",
    pooling: str = "mean",
    backend: str = "hf",
    eval_batch_size: int = 16,
    max_length: int | None = 128,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One condition's evaluation: ``(ilo, loss)`` tables, each with a leading ``condition`` column.

    ``ilo``: ``condition, layer, language, bridge, reach, reach_raw, ilo`` of ``eval_corpus``
    (:func:`interp.extract` + :func:`interp.ilo.score`); ``loss``: ``condition, language, loss,
    perplexity, n_tokens, n_texts`` on ``heldout`` (default ``eval_corpus``;
    :func:`interp.freeze.language_loss`). :func:`run_experiment` calls it for every condition;
    a resumable multi-seed script calls it once per (seed, condition) and ``base`` once.
    """
    texts, langs, ids = eval_corpus.flat()
    acts = extract(model, tokenizer, texts, layers=layers, pooling=pooling, backend=backend,
                   batch_size=eval_batch_size, labels=langs, ids=[str(i) for i in ids],
                   progress=progress)  # fmt: skip
    scores = score(acts, k=k, t=t, metric=metric)
    ilo = scores.table[["layer", "language", "bridge", "reach", "reach_raw", "ilo"]].copy()
    ilo.insert(0, "condition", name)
    loss = language_loss(model, tokenizer, eval_corpus if heldout is None else heldout,
                         batch_size=eval_batch_size, max_length=max_length, progress=progress)  # fmt: skip
    loss.insert(0, "condition", name)
    return ilo, loss


def run_experiment(
    model: nn.Module,
    tokenizer,
    train_texts: list[str],
    eval_corpus: ParallelCorpus,
    conditions: Mapping[str, FreezeSpec | dict | None] | None = None,
    *,
    heldout: ParallelCorpus | Mapping | None = None,
    train_language: str | None = None,
    steps: int = 100,
    lr: float = 1e-4,
    batch_size: int = 8,
    grad_accum: int = 1,
    max_length: int | None = 128,
    seed: int = 0,
    bf16: bool | str = "auto",
    k: int = 5,
    t: int = 3,
    metric: str = "cosine",
    layers="all",
    pooling: str = "mean",
    backend: str = "hf",
    eval_batch_size: int = 16,
    finetune_kwargs: Mapping | None = None,
    progress: bool = True,
) -> FreezeExperimentResult:
    """Run the before/after freezing experiment (see module docstring).

    Args:
        model: the base model (left unchanged: each condition trains a deep copy).
        tokenizer: its tokenizer.
        train_texts: fine-tuning texts, all in one language.
        eval_corpus: parallel corpus for ILO (needs >= 2 languages, >= 2 items).
        conditions: ``{name: FreezeSpec | dict | None}``; ``None`` = full
            fine-tune. Default: :func:`default_conditions` (full + official recipe).
        heldout: parallel texts for the per-language loss (default: ``eval_corpus``).
        train_language: the fine-tuning language's code, to flag it in the loss table.
        steps, lr, batch_size, grad_accum, max_length, seed, bf16: passed to
            :func:`interp.freeze.finetune` (the same for every condition).
        k, t, metric: ILO parameters (official: 5, 3, cosine).
        layers, pooling, backend: extraction settings (hidden-state indices; official:
            all, mean; backend ``"hf"``, ``"transformer_lens"`` or ``"nnsight"``).
        eval_batch_size: batch size of extraction and loss evaluation.
        finetune_kwargs: further :func:`~interp.freeze.finetune` arguments
            (``optimizer``, ``weight_decay``, ``warmup_steps``, ``max_grad_norm``).
        progress: show progress bars.

    Returns:
        :class:`FreezeExperimentResult`.
    """
    train_texts = check_texts(train_texts, "train_texts (the fine-tuning texts)")
    if not isinstance(eval_corpus, ParallelCorpus):
        raise TypeError(f"eval_corpus must be an interp.data.ParallelCorpus, got {type(eval_corpus).__name__}")
    heldout = eval_corpus if heldout is None else heldout
    adapter = get_adapter(model)
    specs = _check_conditions(conditions, adapter.n_blocks)
    if train_language is not None and train_language not in eval_corpus.texts:
        warnings.warn(f"train_language {train_language!r} is not among the evaluation languages", stacklevel=2)
    held_texts = set(heldout.flat()[0]) if isinstance(heldout, ParallelCorpus) else {
        x for v in heldout.values() for x in v}  # fmt: skip
    overlap = len(set(train_texts) & held_texts)
    if overlap:
        warnings.warn(
            f"{overlap} training texts also appear in the held-out texts, so their loss is not held out; "
            "split the corpus with interp.freeze.train_heldout_split",
            stacklevel=2,
        )
    extra = dict(finetune_kwargs or {})
    clash = {"freeze", "inplace", "progress"} & extra.keys()
    if clash:
        raise TypeError(f"finetune_kwargs may not set {sorted(clash)}")
    opts = {"k": k, "t": t, "metric": metric, "layers": layers, "pooling": pooling, "backend": backend,
            "eval_batch_size": eval_batch_size, "max_length": max_length, "progress": progress}  # fmt: skip

    ilo_parts, loss_parts, history, described = [], [], [], []
    ilo, loss = evaluate_condition(model, tokenizer, BASE, eval_corpus, heldout, **opts)
    ilo_parts.append(ilo)
    loss_parts.append(loss)
    n_params = sum(p.numel() for p in model.parameters())
    described.append({"condition": BASE, "frozen": "(not trained)", "frozen_blocks": "", "frozen_path_layers": 0,
                      "n_trainable": 0, "n_frozen": n_params})  # fmt: skip
    for name, spec in specs.items():
        run = finetune(model, tokenizer, train_texts, steps=steps, lr=lr, batch_size=batch_size, freeze=spec,
                       grad_accum=grad_accum, max_length=max_length, seed=seed, bf16=bf16, inplace=False,
                       progress=progress, **extra)  # fmt: skip
        ilo, loss = evaluate_condition(run.model, tokenizer, name, eval_corpus, heldout, **opts)
        ilo_parts.append(ilo)
        loss_parts.append(loss)
        hist = run.history.copy()
        hist.insert(0, "condition", name)
        history.append(hist)
        blocks = spec.block_indices(adapter.n_blocks) if spec else []
        described.append({"condition": name, "frozen": "nothing (full fine-tune)" if spec is None else
                          spec.describe(adapter.n_blocks), "frozen_blocks": ",".join(map(str, blocks)),
                          "frozen_path_layers": frozen_path_layers(model, spec),
                          "n_trainable": run.n_trainable, "n_frozen": run.n_frozen})  # fmt: skip
        del run

    conditions_table = pd.DataFrame(described)
    prefix = dict(zip(conditions_table["condition"], conditions_table["frozen_path_layers"], strict=True))
    ilo = pd.concat(ilo_parts, ignore_index=True)
    base = ilo[ilo["condition"] == BASE].set_index(["layer", "language"])["ilo"]
    keys = list(zip(ilo["layer"], ilo["language"], strict=True))
    ilo["delta_ilo"] = ilo["ilo"].to_numpy() - base.loc[keys].to_numpy()
    ilo["frozen_path"] = [layer < prefix[c] for c, layer in zip(ilo["condition"], ilo["layer"], strict=True)]
    by_layer = (
        ilo.groupby(["condition", "layer"], sort=False)
        .agg(
            ilo_mean=("ilo", "mean"),
            bridge_mean=("bridge", "mean"),
            reach_mean=("reach", "mean"),
            delta_ilo_mean=("delta_ilo", "mean"),
            frozen_path=("frozen_path", "all"),
        )
        .reset_index()
    )
    loss = pd.concat(loss_parts, ignore_index=True)
    base_loss = loss[loss["condition"] == BASE].set_index("language")
    loss["delta_loss"] = loss["loss"].to_numpy() - base_loss.loc[loss["language"], "loss"].to_numpy()
    loss["ppl_ratio"] = loss["perplexity"].to_numpy() / base_loss.loc[loss["language"], "perplexity"].to_numpy()
    loss["is_train_language"] = np.asarray(loss["language"] == train_language, dtype=bool)
    training = pd.concat(history, ignore_index=True) if history else pd.DataFrame()
    params = {"steps": steps, "lr": lr, "batch_size": batch_size, "grad_accum": grad_accum, "max_length": max_length,
              "seed": seed, "bf16": bf16, "k": k, "t": t, "metric": metric, "layers": layers, "pooling": pooling,
              "backend": backend, "train_language": train_language, "n_train_texts": len(train_texts),
              "n_blocks": adapter.n_blocks, "eval_languages": list(eval_corpus.langs),
              "n_eval_items": eval_corpus.n_items, "finetune_kwargs": extra}  # fmt: skip
    return FreezeExperimentResult(ilo, by_layer, loss, training, conditions_table, params)
