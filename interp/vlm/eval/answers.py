"""First-token answers of a VLM to many (image, question) pairs, batched, optionally under ScalingVis.

For questions answered with one word (the WhatsUp options), the greedy answer's first token decides
the answer and its probability is AdaptVis' confidence; one batched forward pass per chunk gives
both, at any α, much faster than generating per sample -- and equal to what
:func:`~interp.vlm.scalingvis_generate` / :func:`~interp.vlm.adaptvis_generate` produce
(``tests/vlm/test_spatial_vlm.py``).

Data flow: scenes (``image``, ``prompt``, ``answer``) -> left-padded batches through the processor ->
one forward under :func:`~interp.vlm.scale_image_attention` (α on the last prompt row's image keys,
prefill) -> softmax of the last position -> argmax token, its probability, the gold answer's
probability -> scored with the robust rule (:func:`~interp.vlm.eval.scoring.robust_correct`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from interp.vlm.checks import check_alpha
from interp.vlm.eval.scoring import robust_correct
from interp.vlm.intervene import scale_image_attention
from interp.vlm.trace import prepare_batch

__all__ = ["answer_scenes", "WHATSUP_A_OPTIONS"]

WHATSUP_A_OPTIONS = ("left", "right", "on", "under")


def answer_scenes(
    model: nn.Module,
    processor,
    scenes: Sequence,
    alpha: float = 1.0,
    *,
    options: Sequence[str] = WHATSUP_A_OPTIONS,
    batch_size: int = 64,
    progress: bool = False,
) -> pd.DataFrame:
    """Greedy first-token answers, with confidence, of every scene's prompt.

    Args:
        model, processor: a LLaVA-style VLM and its processor.
        scenes: objects with ``image``, ``prompt`` and ``answer`` (e.g.
            :func:`~interp.vlm.spatial_scenes`); ``relation`` and ``split`` are copied if present.
        alpha: ScalingVis temperature on the last prompt row's image-key logits (1: unscaled).
        options: the answer options, for the robust rule.
        batch_size: prompts per forward pass (left-padded).

    Returns:
        DataFrame, one row per scene: ``index, split, relation, answer`` (gold), ``prediction`` (the
        first generated token, decoded), ``correct`` (robust rule), ``confidence`` (its probability,
        unrounded; AdaptVis rounds it to 2 decimals), ``p_answer`` (probability of the gold answer's
        first token), ``alpha``.
    """
    alpha = check_alpha(alpha)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    tokenizer = getattr(processor, "tokenizer", processor)
    rows = []
    chunks = [scenes[i : i + batch_size] for i in range(0, len(scenes), batch_size)]
    for c, chunk in enumerate(tqdm(chunks, desc=f"answers α={alpha:g}", disable=not progress)):
        inputs, _, _ = prepare_batch(model, processor, [s.image for s in chunk], [s.prompt for s in chunk])
        scaling = scale_image_attention(model, alpha) if alpha != 1.0 else nullcontext()
        with torch.no_grad(), scaling:
            logits = model(**inputs, logits_to_keep=1).logits[:, -1]
        probs = torch.softmax(logits.float(), dim=-1)
        conf, top = probs.max(-1)
        for j, scene in enumerate(chunk):
            gold_ids = tokenizer(" " + scene.answer, add_special_tokens=False)["input_ids"]
            prediction = tokenizer.decode([int(top[j])], skip_special_tokens=True).strip()
            rows.append({
                "index": c * batch_size + j,
                "split": getattr(scene, "split", None),
                "relation": getattr(scene, "relation", None),
                "answer": scene.answer,
                "prediction": prediction,
                "correct": robust_correct(prediction, scene.answer, options),
                "confidence": float(conf[j]),
                "p_answer": float(probs[j, gold_ids[0]]) if gold_ids else float("nan"),
                "alpha": alpha,
            })  # fmt: skip
    return pd.DataFrame(rows)
