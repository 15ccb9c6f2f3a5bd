"""Models: loading (incl. the offline default), tiny test models, the architecture
adapter, and the guard that restores a model after hook libraries touched it."""

from interp.models.adapter import LAYOUTS, Layout, ModelAdapter, get_adapter
from interp.models.guard import preserved
from interp.models.loading import DEFAULT_MODEL, cache_dir, load_model
from interp.models.tiny import byte_tokenizer, tiny_gpt2, tiny_gpt_neox, tiny_llama, tiny_llava, tiny_llava_processor

__all__ = [
    "DEFAULT_MODEL",
    "LAYOUTS",
    "Layout",
    "ModelAdapter",
    "byte_tokenizer",
    "cache_dir",
    "get_adapter",
    "load_model",
    "preserved",
    "tiny_gpt2",
    "tiny_gpt_neox",
    "tiny_llama",
    "tiny_llava",
    "tiny_llava_processor",
]
