"""Vision-language models: image-attention tracing, attention-to-object alignment, AdaptVis / ScalingVis.

Three layers, each importing only the one before it:

* **mechanism** (this folder): :mod:`.geometry` (image tokens <-> patches <-> pixels, box masks)
  -> :mod:`.attention` (row-wise probes beside the model's SDPA kernel) -> :mod:`.trace`
  (``trace_image_attention``) and :mod:`.intervene` / :mod:`.adaptvis` (α-scaling of
  image-attention logits; :mod:`.presets` holds the official α / threshold per dataset);
* **alignment** (:mod:`.alignment`): attention-to-box metrics of one map, then the tidy
  per-sample × block × head table and its aggregates;
* **eval** (:mod:`.eval`): WhatsUp / VSR loading and scoring, synthetic scenes with known boxes.

:mod:`.plot` draws traces and alignment curves.
"""

from interp._validation import renamed_attribute
from interp.vlm.adaptvis import AdaptVisResult, adaptvis_generate, choose_alpha, scalingvis_generate
from interp.vlm.alignment import (
    ALIGNMENT_METRICS,
    alignment_table,
    attention_mass,
    block_curves,
    correctness_auroc,
    cosine_overlap,
    layer_curves,
    patch_auroc,
    pointing_game,
)
from interp.vlm.eval import (
    VSR_OFFICIAL_RESIZE,
    VSR_PROMPT,
    SpatialDataset,
    SpatialSample,
    SpatialScores,
    SyntheticScene,
    load_spatial,
    load_vsr_judge,
    official_correct,
    official_split,
    official_yes_no,
    pair_set_accuracy,
    parse_options,
    robust_correct,
    robust_prediction,
    robust_yes_no,
    score_vsr,
    score_whatsup,
    synthetic_scene,
    synthetic_scenes,
    yes_no_metrics,
)
from interp.vlm.geometry import ImageGeometry, box_mask, image_token_id, image_token_spans
from interp.vlm.intervene import scale_image_attention
from interp.vlm.plot import plot_alignment_curves, plot_head_grid, plot_image_attention
from interp.vlm.presets import ADAPTVIS_PRESETS, DATASET_NAMES, AdaptVisPreset, preset
from interp.vlm.trace import ImageAttention, trace_image_attention

__all__ = [
    "ADAPTVIS_PRESETS",
    "DATASET_NAMES",
    "ALIGNMENT_METRICS",
    "VSR_OFFICIAL_RESIZE",
    "VSR_PROMPT",
    "AdaptVisPreset",
    "AdaptVisResult",
    "ImageAttention",
    "ImageGeometry",
    "SpatialDataset",
    "SpatialSample",
    "SpatialScores",
    "SyntheticScene",
    "adaptvis_generate",
    "alignment_table",
    "attention_mass",
    "box_mask",
    "choose_alpha",
    "correctness_auroc",
    "cosine_overlap",
    "image_token_id",
    "image_token_spans",
    "block_curves",
    "layer_curves",
    "load_spatial",
    "load_vsr_judge",
    "official_correct",
    "official_split",
    "official_yes_no",
    "pair_set_accuracy",
    "parse_options",
    "patch_auroc",
    "plot_alignment_curves",
    "plot_head_grid",
    "plot_image_attention",
    "pointing_game",
    "preset",
    "robust_correct",
    "robust_prediction",
    "robust_yes_no",
    "scale_image_attention",
    "scalingvis_generate",
    "score_vsr",
    "score_whatsup",
    "synthetic_scene",
    "synthetic_scenes",
    "trace_image_attention",
    "yes_no_metrics",
]


def __getattr__(name: str):  # old names, kept for one release
    return renamed_attribute(__name__, name, {"METRICS": "ALIGNMENT_METRICS"}, globals())
