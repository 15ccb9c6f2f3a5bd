"""Training the toy spatial VLM: deterministic batches of synthetic conversations and the optimisation loop.

Data flow: ``(config, step)`` -> ``batch_size`` training scenes (:func:`~.scenes.spatial_scene`, split
``"train"``, indices ``step · batch_size + i``; no distractors before ``distractors_from · steps``, a
curriculum: the model first learns to find the two named objects) -> one conversation per scene -> the processor
(pixel values, ids with the image tokens spliced in) -> next-token cross-entropy on the answer words
and the ``<eos>`` after each -> AdamW.

Each conversation starts with the evaluated question, exactly as it is asked at test time, then asks
where each of the two objects is in the photo (COCO_QA_one_obj wording)::

    <image>\\nUSER: Where is the red box in relation to the blue ball? Answer with left, right, on or under.
    ASSISTANT: Left<eos>\\nUSER: Where is the red box in the photo? Answer with left, right, top or bottom.
    ASSISTANT: Top<eos>\\nUSER: Where is the blue ball in the photo? ... ASSISTANT: Right<eos>

The later turns teach the model to find one named object (a much easier signal to pick up from
scratch than the relation); they come *after* the relation, so the first answer can never be read
off earlier answers. Only the first turn is ever evaluated.

Determinism: the scenes are pure functions of their index, the weights are initialised from a
``torch.Generator`` seeded by ``config.seed``, and the loop runs on ``config.threads`` CPU threads with
``torch.use_deterministic_algorithms(True)`` (both restored afterwards): the same config gives
bit-identical weights on the same machine and library versions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from interp.vlm.eval.scenes import POSITIONS, RELATIONS, position_question, spatial_scene

__all__ = ["conversation", "training_batch", "train", "ANSWER_WORDS"]

#: the words the model answers with (each one token of the word tokenizer)
ANSWER_WORDS = tuple(dict.fromkeys(w.capitalize() for w in (*RELATIONS, *POSITIONS)))


def conversation(scene) -> str:
    """The training text of one scene: the relation turn, then where A and where B are (see module doc)."""
    text = f"{scene.prompt} {scene.answer}<eos>"
    for name in scene.names:
        prompt, answer = position_question(scene, name)
        text += "\n" + prompt.removeprefix("<image>\n") + f" {answer}<eos>"
    return text


def training_batch(config, processor, step: int) -> tuple[dict, torch.Tensor]:
    """Inputs and labels of training step ``step``.

    Returns:
        ``inputs`` (``input_ids [B, S]``, ``attention_mask [B, S]``, ``pixel_values [B, 3, H, W]``) and
        ``labels [B, S]``: the id to predict *at* each position (the next token where it is an answer
        word or ``<eos>``, else -100).
    """
    crowd = config.n_distractors if step >= config.distractors_from * config.steps else (0, 0)
    scenes = [
        spatial_scene("train", config.seed, step * config.batch_size + i, size=config.scene_size, n_distractors=crowd)
        for i in range(config.batch_size)
    ]
    texts = [conversation(s) for s in scenes]
    inputs = processor(images=[s.image for s in scenes], text=texts, return_tensors="pt", padding=True,
                       padding_side="left")  # fmt: skip
    tokenizer = processor.tokenizer
    supervised = torch.tensor(tokenizer.convert_tokens_to_ids([*ANSWER_WORDS, tokenizer.eos_token]))
    ids = inputs["input_ids"]
    nxt = ids[:, 1:]
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = torch.where(torch.isin(nxt, supervised), nxt, -100)
    return dict(inputs), labels


@contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Run on ``threads`` CPU threads with deterministic algorithms; both settings restored on exit."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.set_num_threads(old_threads)


def _lr_factor(step: int, warmup: int, steps: int, decay_from: float) -> float:
    """Linear warm-up, constant, then cosine decay to 0 over the last ``1 - decay_from`` of the steps."""
    if step < warmup:
        return (step + 1) / warmup
    start = int(decay_from * steps)
    if step < start:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - start) / max(1, steps - start)))


def train(model: nn.Module, processor, config, progress: bool = True) -> list[dict]:
    """Train ``model`` in place on ``config.steps`` batches; returns the log (step, loss, lr, seconds).

    The loss is the mean cross-entropy over every supervised position of the batch.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
    )
    log = []
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(config.steps), desc=f"training spatial VLM ({config.name})", disable=not progress)
    ema = None
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, config.warmup, config.steps, config.decay_from)
        inputs, labels = training_batch(config, processor, step)
        logits = model(**inputs).logits
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, config.clip)
        optimizer.step()
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        log.append({"step": step, "loss": value, "lr": optimizer.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - start})  # fmt: skip
        bar.set_postfix(loss=f"{ema:.3f}")
    model.eval()
    return log
