"""Single-language fine-tuning with an optional freezing spec: a plain torch loop.

:func:`finetune` trains a causal LM on texts of one language with next-token
cross-entropy. The loop is deliberately small and explicit:

* **Copy, not in place** (default ``inplace=False``): the model is deep-copied
  and the copy is trained and returned, so the caller's model stays
  bit-identical. ``inplace=True`` trains the given model itself.
* **Freezing**: the spec is applied with :func:`interp.freeze.freeze` for the
  duration of training and undone afterwards (the returned model has its
  original ``requires_grad`` flags); the optimizer only ever sees trainable
  parameters, so frozen ones are bit-identical after training.
* **Data order**: each epoch is a permutation of the texts drawn from a
  ``torch.Generator`` seeded with ``seed``; one optimizer step consumes
  ``batch_size * grad_accum`` texts, cycling through epochs.
* **Gradient accumulation, token-weighted**: each micro-batch's summed
  next-token loss is divided by the number of target tokens of the *whole*
  step, so ``batch_size=8, grad_accum=1`` and ``batch_size=4, grad_accum=2``
  give the same gradient (up to float rounding).
* **Determinism**: the global RNG is forked and seeded inside the call (the
  caller's RNG state is untouched); on CPU, the same seed and thread count
  give bit-identical weights.
* **Mixed precision**: ``bf16="auto"`` autocasts the forward to bfloat16 on a
  CUDA device that supports it and stays float32 on CPU; ``bf16=True`` forces
  autocast (CPU included). Weights and optimizer state stay float32.
* AdamW (or plain SGD), linear warm-up then constant learning rate, gradient
  clipping, a tqdm progress bar showing the loss.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from interp._validation import check_int, check_texts
from interp.freeze.batching import lm_batch, summed_nll, tokenize_for_lm
from interp.freeze.spec import FreezeSpec, count_scalars, freeze
from interp.models.inputs import pad_id

__all__ = ["finetune", "FinetuneResult"]


@dataclass
class FinetuneResult:
    """Outcome of :func:`finetune`.

    Attributes:
        model: the trained model (a copy unless ``inplace=True``), in the
            caller's train/eval mode, with the original ``requires_grad`` flags.
        history: one row per optimizer step: ``step, loss`` (token-mean
            next-token loss of the step), ``lr``, ``n_tokens`` (targets).
        frozen: parameter names frozen during training.
        trainable: parameter names trained.
        n_trainable: trained scalars; ``n_frozen``: scalars that did not train.
        params: the settings used.
    """

    model: nn.Module
    history: pd.DataFrame
    frozen: list[str]
    trainable: list[str]
    n_trainable: int
    n_frozen: int
    params: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        last = self.history["loss"].iloc[-1] if len(self.history) else float("nan")
        return (
            f"FinetuneResult({len(self.history)} steps, final loss {last:.4f}, "
            f"{self.n_trainable:,} trainable / {self.n_frozen:,} frozen scalars)"
        )


def _positive_int(name: str, value) -> int:
    return check_int(name, value, low=1)


def _use_bf16(bf16, device: torch.device) -> bool:
    if bf16 == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    if isinstance(bf16, bool):
        return bf16
    raise ValueError(f"bf16 must be True, False or 'auto', got {bf16!r}")


def _schedule(order_gen: torch.Generator, n_texts: int, per_step: int, steps: int) -> list[list[int]]:
    """Text indices of every optimizer step: consecutive slices of seeded epoch permutations."""
    stream: list[int] = []
    while len(stream) < per_step * steps:
        stream += torch.randperm(n_texts, generator=order_gen).tolist()
    return [stream[s * per_step : (s + 1) * per_step] for s in range(steps)]


def finetune(
    model: nn.Module,
    tokenizer,
    texts: list[str],
    steps: int = 100,
    lr: float = 1e-4,
    batch_size: int = 8,
    *,
    freeze: FreezeSpec | dict | None = None,
    grad_accum: int = 1,
    max_length: int | None = 128,
    seed: int = 0,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    max_grad_norm: float | None = 1.0,
    bf16: bool | str = "auto",
    inplace: bool = False,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune a causal LM on texts of one language, optionally with frozen parts.

    Args:
        model: a causal LM that :func:`interp.models.get_adapter` knows.
        tokenizer: its tokenizer (special tokens are added, as in pre-training).
        texts: training texts, all in the fine-tuning language.
        steps: optimizer steps.
        lr: peak learning rate.
        batch_size: texts per micro-batch.
        freeze: a :class:`FreezeSpec` (or dict of its fields) of what stays
            frozen; ``None`` trains every parameter that requires grad.
        grad_accum: micro-batches per optimizer step (effective batch
            ``batch_size * grad_accum`` texts).
        max_length: truncate texts to this many tokens (``None``: no truncation).
        seed: seeds the data order and the global RNG (forked; restored after).
        optimizer: ``"adamw"`` or ``"sgd"``.
        weight_decay: decoupled weight decay (AdamW) / L2 (SGD).
        warmup_steps: linear learning-rate warm-up, then constant.
        max_grad_norm: clip the global gradient norm (``None``: no clipping).
        bf16: ``"auto"``, ``True`` or ``False`` (see module docstring).
        inplace: train ``model`` itself instead of a deep copy.
        progress: show a tqdm progress bar.

    Returns:
        :class:`FinetuneResult`.

    Raises:
        ValueError: empty texts, texts too short to have a next-token target,
            bad hyper-parameters, a spec that freezes everything or names a
            block out of range (IndexError).
        FloatingPointError: a step's loss is NaN or infinite; it is checked
            before that step's update, so an ``inplace`` model keeps the weights
            of the last finite step (flags and train/eval modes restored too).
    """
    texts = check_texts(texts, "texts (the training texts)")
    steps = _positive_int("steps", steps)
    batch_size = _positive_int("batch_size", batch_size)
    grad_accum = _positive_int("grad_accum", grad_accum)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
    if warmup_steps < 0 or weight_decay < 0:
        raise ValueError("warmup_steps and weight_decay must be >= 0")
    if max_grad_norm is not None and max_grad_norm <= 0:
        raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm!r}")
    spec = FreezeSpec.coerce(freeze)
    sequences = tokenize_for_lm(tokenizer, texts, max_length)
    usable = [s for s in sequences if len(s.input_ids) >= 2]
    if not usable:
        raise ValueError(
            "no training text has a next-token target: every text tokenises to fewer than 2 tokens; "
            "pass longer texts (or a larger max_length)"
        )
    if len(usable) < len(sequences):
        warnings.warn(f"{len(sequences) - len(usable)} training texts have fewer than 2 tokens and are skipped",
                      stacklevel=2)  # fmt: skip
    device = next(model.parameters()).device
    use_bf16 = _use_bf16(bf16, device)

    target = model if inplace else copy.deepcopy(model)
    modes = [m.training for m in target.modules()]
    pad = pad_id(tokenizer)
    rows = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        order_gen = torch.Generator().manual_seed(seed)
        plan = _schedule(order_gen, len(usable), batch_size * grad_accum, steps)
        with _freezing(target, spec):
            params = [p for p in target.parameters() if p.requires_grad]
            if optimizer == "adamw":
                opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
            else:
                opt = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
            target.train()
            try:
                for step, chosen in enumerate(tqdm(plan, desc="finetune", unit="step", disable=not progress), 1):
                    rate = lr * min(1.0, step / warmup_steps) if warmup_steps else lr
                    for group in opt.param_groups:
                        group["lr"] = rate
                    micro = [chosen[i : i + batch_size] for i in range(0, len(chosen), batch_size)]
                    n_step = sum(len(usable[i].input_ids) - 1 for i in chosen)
                    opt.zero_grad(set_to_none=True)
                    step_loss = 0.0
                    for part in micro:
                        ids, mask = lm_batch([usable[i] for i in part], pad, device)
                        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                            total, _ = summed_nll(target, ids, mask)
                        (total / n_step).backward()
                        step_loss += float(total.detach())
                    if not math.isfinite(step_loss):  # before the step: the weights keep their last finite state
                        raise FloatingPointError(
                            f"the training loss became {step_loss} at step {step}, so no update was applied "
                            "(the model holds the weights of the previous step); lower lr"
                        )
                    if max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                    opt.step()
                    rows.append({"step": step, "loss": step_loss / n_step, "lr": rate, "n_tokens": n_step})
            finally:
                opt.zero_grad(set_to_none=True)
                for module, mode in zip(target.modules(), modes, strict=True):
                    module.training = mode
            n_trainable, n_frozen = count_scalars(target)
            names_frozen = [n for n, p in target.named_parameters() if not p.requires_grad]
            names_trainable = [n for n, p in target.named_parameters() if p.requires_grad]
    return FinetuneResult(
        model=target,
        history=pd.DataFrame(rows, columns=["step", "loss", "lr", "n_tokens"]),
        frozen=names_frozen,
        trainable=names_trainable,
        n_trainable=n_trainable,
        n_frozen=n_frozen,
        params={"steps": steps, "lr": lr, "batch_size": batch_size, "grad_accum": grad_accum,
                "max_length": max_length, "seed": seed, "optimizer": optimizer, "weight_decay": weight_decay,
                "warmup_steps": warmup_steps, "max_grad_norm": max_grad_norm, "bf16": use_bf16,
                "inplace": inplace, "freeze": None if spec is None else spec.describe(),
                "n_texts": len(usable)},
    )  # fmt: skip


def _freezing(model: nn.Module, spec: FreezeSpec | None):
    """The freezing to train under: ``freeze(model, spec)``, or nothing (after checking something trains)."""
    if spec is not None:
        return freeze(model, spec=spec)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("no parameter of the model requires grad, so there is nothing to train")
    return contextlib.nullcontext()
