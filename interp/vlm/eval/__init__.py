"""Spatial-reasoning benchmarks for VLMs: the WhatsUp / VSR prompts, their scoring, synthetic scenes.

Data flow: :mod:`.datasets` loads the AdaptVis prompt files (and their images) into a
:class:`SpatialDataset` with the official validation/test split -> a model generates answers ->
:mod:`.scoring` scores them with the official rule and a robust one, side by side;
:mod:`.scenes` draws synthetic two-object scenes with exact boxes where real images are absent.
"""

from interp.vlm.eval.datasets import (
    VSR_OFFICIAL_RESIZE,
    VSR_PROMPT,
    SpatialDataset,
    SpatialSample,
    load_spatial,
    load_vsr_judge,
    official_split,
    parse_options,
)
from interp.vlm.eval.scenes import SyntheticScene, synthetic_scene, synthetic_scenes
from interp.vlm.eval.scoring import (
    SpatialScores,
    official_correct,
    official_yes_no,
    pair_set_accuracy,
    robust_correct,
    robust_prediction,
    robust_yes_no,
    score_vsr,
    score_whatsup,
    yes_no_metrics,
)

__all__ = [
    "VSR_OFFICIAL_RESIZE",
    "VSR_PROMPT",
    "SpatialDataset",
    "SpatialSample",
    "SpatialScores",
    "SyntheticScene",
    "load_spatial",
    "load_vsr_judge",
    "official_correct",
    "official_split",
    "official_yes_no",
    "pair_set_accuracy",
    "parse_options",
    "robust_correct",
    "robust_prediction",
    "robust_yes_no",
    "score_vsr",
    "score_whatsup",
    "synthetic_scene",
    "synthetic_scenes",
    "yes_no_metrics",
]
