"""Layer freezing: architecture-agnostic freezing, single-language fine-tuning, and the
before/after ILO experiment of Wilie et al. (2025).

* :mod:`.spec` -- :func:`freeze` / :class:`FreezeSpec` (what to freeze, by decoder-block
  index: block ``i`` -> hidden-state index ``i+1``), :func:`official_selective_freeze`
  (the official recipe, blocks ``0..n_first`` inclusive + embeddings + final norm + LM head).
* :mod:`.finetune` -- :func:`finetune`, a seeded plain-torch loop (copy by default).
* :mod:`.lm_loss` -- :func:`language_loss`, per-language held-out loss / perplexity.
* :mod:`.experiment` -- :func:`run_experiment`: base vs full vs frozen fine-tunes, ΔILO per layer;
  :func:`evaluate_condition`, one condition's ILO and loss tables (for resumable multi-seed scripts).
* :mod:`.seeds` -- :func:`seed_intervals`: means over training seeds with Student-t intervals.
* :mod:`.plot` -- its figures.
"""

from interp.freeze.experiment import (
    BASE,
    FreezeExperimentResult,
    default_conditions,
    evaluate_condition,
    run_experiment,
    train_heldout_split,
)
from interp.freeze.finetune import FinetuneResult, finetune
from interp.freeze.lm_loss import language_loss
from interp.freeze.seeds import seed_intervals, t_interval
from interp.freeze.spec import (
    FreezeSpec,
    Freezing,
    TiedEmbeddingsWarning,
    block_to_hidden_state,
    freeze,
    frozen_path_layers,
    official_freeze_update,
    official_selective_freeze,
)

__all__ = [
    "BASE",
    "FinetuneResult",
    "FreezeExperimentResult",
    "FreezeSpec",
    "Freezing",
    "TiedEmbeddingsWarning",
    "block_to_hidden_state",
    "default_conditions",
    "evaluate_condition",
    "finetune",
    "freeze",
    "frozen_path_layers",
    "language_loss",
    "official_freeze_update",
    "official_selective_freeze",
    "run_experiment",
    "seed_intervals",
    "t_interval",
    "train_heldout_split",
]
