"""Attention-to-object alignment: how much of the traced attention lands on the queried objects.

Data flow: :mod:`.metrics` scores one attention map against a coverage mask (mass in box,
patch AUROC, pointing game, cosine) -> :mod:`.tables` runs them over a dataset into one tidy
table and aggregates it per decoder block (curves with CIs, correct-vs-incorrect AUROC).
"""

from interp.vlm.alignment.metrics import (
    ALIGNMENT_METRICS,
    attention_mass,
    cosine_overlap,
    patch_auroc,
    pointing_game,
)
from interp.vlm.alignment.tables import alignment_table, block_curves, correctness_auroc, layer_curves

__all__ = [
    "ALIGNMENT_METRICS",
    "alignment_table",
    "attention_mass",
    "block_curves",
    "correctness_auroc",
    "cosine_overlap",
    "layer_curves",
    "patch_auroc",
    "pointing_game",
]
