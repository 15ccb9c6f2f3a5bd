"""Vision-language models: image-attention tracing, attention-to-object alignment, AdaptVis."""

from interp.vlm.adaptvis import AdaptVisResult, adaptvis_generate, choose_alpha, scalingvis_generate
from interp.vlm.geometry import ImageGeometry, box_mask, image_token_id, image_token_spans
from interp.vlm.intervene import scale_image_attention
from interp.vlm.trace import ImageAttention, trace_image_attention

__all__ = [
    "AdaptVisResult",
    "ImageAttention",
    "ImageGeometry",
    "adaptvis_generate",
    "box_mask",
    "choose_alpha",
    "image_token_id",
    "image_token_spans",
    "scale_image_attention",
    "scalingvis_generate",
    "trace_image_attention",
]
