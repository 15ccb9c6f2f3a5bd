"""Spatial-reasoning benchmarks for VLMs: the WhatsUp / VSR prompts, their scoring, synthetic scenes,
and a toy VLM trained on them.

Data flow: :mod:`.datasets` loads the AdaptVis prompt files (and their images) into a
:class:`SpatialDataset` with the official validation/test split -> a model generates answers ->
:mod:`.scoring` scores them with the official rule and a robust one, side by side;
:mod:`.scenes` draws synthetic scenes with exact boxes where real images are absent (controlled
splits: held-out colour/shape combinations and positions); :mod:`.spatial_model` trains a small
LLaVA on them from scratch (:mod:`.spatial_training`) and caches it; :mod:`.answers` reads many
first-token answers at once, at any ScalingVis α.
"""

from interp.vlm.eval.answers import answer_scenes
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
from interp.vlm.eval.scenes import (
    COLORS,
    HELD_OUT_OBJECTS,
    POSITIONS,
    SHAPES,
    SPLITS,
    SceneSplit,
    SyntheticScene,
    position_prompt,
    position_question,
    relation_prompt,
    spatial_scene,
    spatial_scenes,
    synthetic_scene,
    synthetic_scenes,
)
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
from interp.vlm.eval.spatial_model import VARIANTS as SPATIAL_VARIANTS
from interp.vlm.eval.spatial_model import SpatialVLMConfig, spatial_vlm

__all__ = [
    "COLORS",
    "HELD_OUT_OBJECTS",
    "POSITIONS",
    "SHAPES",
    "SPATIAL_VARIANTS",
    "SPLITS",
    "SceneSplit",
    "SpatialVLMConfig",
    "answer_scenes",
    "position_prompt",
    "position_question",
    "relation_prompt",
    "spatial_scene",
    "spatial_scenes",
    "spatial_vlm",
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
