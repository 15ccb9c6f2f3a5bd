"""AdaptVis: choose the attention temperature α from the model's own confidence.

Official rule (Chen et al., ICML 2025): generate once unscaled, read the
confidence ``conf`` = max softmax probability of the **first generated token**,
rounded to 2 decimals; then generate again with ``α = alpha_low`` if
``conf < threshold`` else ``alpha_high`` (equality goes to ``alpha_high``).

The official code runs two full generations. Only the last prompt row is scaled
(:mod:`interp.vlm.intervene`), so every key/value before it is identical in both
passes; :func:`adaptvis_generate` therefore

1. prefills ``prompt[:-1]`` once (image included) into a KV cache,
2. runs the last prompt token unscaled -> logits of the first token -> ``conf``,
3. drops that token from the cache and runs it again with α (skipped if α = 1),
4. decodes greedily from there (decode steps are never scaled).

The overhead over one greedy generation is one extra single-token step. The
result has the same tokens as ``model.generate`` under
``scale_image_attention(model, α)`` from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from interp._validation import renamed
from interp.models.inputs import cache_kwarg
from interp.vlm.checks import check_alpha
from interp.vlm.geometry import image_token_id
from interp.vlm.intervene import scale_image_attention
from interp.vlm.trace import prepare_inputs

__all__ = ["AdaptVisResult", "adaptvis_generate", "scalingvis_generate", "choose_alpha"]


@dataclass
class AdaptVisResult:
    """One AdaptVis / ScalingVis generation.

    Attributes:
        answer: decoded new tokens (special tokens skipped).
        tokens: ``[n_new]`` generated token ids (eos included when reached).
        confidence: max first-token probability of the unscaled pass (rounded
            to 2 decimals unless ``round_confidence=False``; NaN for ScalingVis).
        alpha: the α used.
    """

    answer: str
    tokens: torch.Tensor
    confidence: float
    alpha: float


def choose_alpha(confidence: float, alpha_low: float, alpha_high: float, threshold: float) -> float:
    """The official rule: ``alpha_low`` if ``confidence < threshold`` else ``alpha_high``."""
    return alpha_low if confidence < threshold else alpha_high


def _eos_ids(model: nn.Module, processor) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(getattr(processor, "tokenizer", processor), "eos_token_id", None)
    return set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])


def _step(model: nn.Module, token: torch.Tensor, cache, attention_mask: torch.Tensor) -> torch.Tensor:
    """Run ``token [1, 1]`` on top of ``cache``; return the next-token logits ``[V]``."""
    out = model(input_ids=token, attention_mask=attention_mask, use_cache=True, **{cache_kwarg(model): cache})
    return out.logits[0, -1]


def _decode(model, processor, first_logits, cache, attention_mask, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding from the logits of the first new token; ``[n_new]`` ids."""
    eos = _eos_ids(model, processor)
    tokens = []
    logits = first_logits
    for _ in range(max_new_tokens):
        token = int(logits.argmax())
        tokens.append(token)
        if token in eos or len(tokens) == max_new_tokens:
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(1, 1)], dim=1)
        logits = _step(model, torch.tensor([[token]], device=attention_mask.device), cache, attention_mask)
    return torch.tensor(tokens, dtype=torch.long)


def _check_prompt_end(inputs: dict, model: nn.Module) -> None:
    if inputs["input_ids"][0, -1] == image_token_id(model):
        raise ValueError("the prompt ends with the image; add text after <image> (e.g. '\\nASSISTANT:')")


def _answer(processor, tokens: torch.Tensor) -> str:
    tokenizer = getattr(processor, "tokenizer", processor)
    return tokenizer.decode(tokens.tolist(), skip_special_tokens=True)


def adaptvis_generate(
    model: nn.Module,
    processor,
    image,
    prompt: str,
    alpha_low: float,
    alpha_high: float,
    threshold: float,
    max_new_tokens: int = 100,
    *,
    round_confidence: bool = True,
    blocks="all",
    heads="all",
    layers=None,
) -> AdaptVisResult:
    """Greedy AdaptVis generation for one (image, prompt) pair, reusing the prompt's KV cache.

    Args:
        model, processor: a LLaVA-style VLM and its processor.
        image: a PIL image or a path; ``prompt`` has one ``<image>``.
        alpha_low: α when the model is unsure (``conf < threshold``), usually < 1.
        alpha_high: α otherwise, usually > 1.
        threshold: confidence threshold in [0, 1].
        max_new_tokens: generation length limit (the official runs use 100).
        round_confidence: round ``conf`` to 2 decimals before comparing (official).
        blocks, heads: where α applies: decoder-block and head indices (official: all);
            ``layers=`` is the deprecated old name of ``blocks``.
    """
    from transformers import DynamicCache

    blocks = renamed("blocks", blocks, "layers", layers, "all", "adaptvis_generate")
    alpha_low, alpha_high = check_alpha(alpha_low, "alpha_low"), check_alpha(alpha_high, "alpha_high")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is compared with a probability and must be in [0, 1], got {threshold!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
    inputs, _, _ = prepare_inputs(model, processor, image, prompt)
    _check_prompt_end(inputs, model)
    ids, mask = inputs["input_ids"], inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
    n = ids.shape[1]
    cache = DynamicCache(config=model.config.get_text_config())
    with torch.no_grad():
        prefix = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        prefix[cache_kwarg(model)] = cache
        model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=True, logits_to_keep=1, **prefix)
        logits = _step(model, ids[:, -1:], cache, mask)
        probs = torch.softmax(logits.float(), dim=-1)
        conf = float(probs.max())
        conf = round(conf, 2) if round_confidence else conf
        alpha = choose_alpha(conf, alpha_low, alpha_high, threshold)
        if alpha != 1.0:
            cache.crop(-1)  # forget the unscaled last prompt token, run it again scaled
            with scale_image_attention(model, alpha, blocks=blocks, heads=heads, rows=[n - 1]) as probe:
                probe.key_is_image = ids == image_token_id(model)
                logits = _step(model, ids[:, -1:], cache, mask)
        tokens = _decode(model, processor, logits, cache, mask, max_new_tokens)
    return AdaptVisResult(_answer(processor, tokens), tokens, conf, alpha)


def scalingvis_generate(
    model: nn.Module,
    processor,
    image,
    prompt: str,
    alpha: float,
    max_new_tokens: int = 100,
    *,
    blocks="all",
    heads="all",
    layers=None,
) -> AdaptVisResult:
    """Greedy ScalingVis generation: one fixed α on the last prompt token (prefill only).

    ``blocks``, ``heads``: as :func:`adaptvis_generate` (``layers=``: deprecated name of ``blocks``).
    """
    from transformers import DynamicCache

    blocks = renamed("blocks", blocks, "layers", layers, "all", "scalingvis_generate")
    alpha = check_alpha(alpha)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
    inputs, _, _ = prepare_inputs(model, processor, image, prompt)
    _check_prompt_end(inputs, model)
    mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
    cache = DynamicCache(config=model.config.get_text_config())
    with torch.no_grad():
        with scale_image_attention(model, alpha, blocks=blocks, heads=heads):
            out = model(**inputs, use_cache=True, logits_to_keep=1, **{cache_kwarg(model): cache})
            logits = out.logits[0, -1]
        tokens = _decode(model, processor, logits, cache, mask, max_new_tokens)
    return AdaptVisResult(_answer(processor, tokens), tokens, float("nan"), alpha)
