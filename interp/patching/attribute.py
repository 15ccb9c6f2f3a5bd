"""Gradient × activation at named sites: the first-order estimate of what patching each would do.

``attribute(model, inputs, sites, metric)`` runs one forward with the sites
recorded (the same hooks as :func:`interp.patch`, writing nothing), takes
``metric(logits)`` and returns, per site, the activation and ``d metric /
d activation`` (``torch.autograd.grad``: no ``.grad`` lands on the model's
parameters, frozen models included -- the embedding output is made the root of
the graph). ``(clean - corrupted) · grad`` summed over the feature axes is
attribution patching (Nanda 2023), a linear estimate of activation patching's
effect for every site and position from one forward and one backward pass.

Each kept activation is handed back to the model as the tensor it continues
with, so the gradient flows through it. ``hook_resid_mid`` exists only as the
sum ``resid_pre + attn_out`` inside the block, and its only way into the rest
of the model is through that sum: its gradient is the gradient at
``hook_attn_out``. Attention patterns are read beside the kernel, which
computes the output itself, so they have no gradient here (ask for
``attn.hook_z``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from interp.extraction.sites import resolve_sites
from interp.models.adapter import get_adapter
from interp.models.interop import unwrap_model
from interp.patching.hooks import patch
from interp.patching.ops import Apply

__all__ = ["Attribution", "attribute"]


@dataclass(frozen=True)
class Attribution:
    """Per site: ``activations[site]`` and ``gradients[site]``, both ``[B, T, *feature]``; ``metric`` ``[B]``."""

    activations: dict
    gradients: dict
    metric: torch.Tensor

    def grad_times_activation(self, site) -> torch.Tensor:
        """``activation · gradient`` summed over the feature axes: ``[B, T]`` (or ``[B, T, H]`` with ``per_head``)."""
        product = self.activations[site] * self.gradients[site]
        return product.flatten(2).sum(-1)


class _Keep:
    """A patch function that keeps the live activation and hands the same tensor back (the graph goes on
    through it); ``root``: the embedding output, made a fresh leaf every later activation depends on."""

    def __init__(self, root: bool = False):
        self.root = root
        self.value: torch.Tensor | None = None

    def __call__(self, activation: torch.Tensor, site: str) -> torch.Tensor:
        if self.root:
            activation = activation.detach().requires_grad_(True)
        self.value = activation
        return activation


def attribute(
    model: nn.Module,
    inputs,
    sites: str | Sequence,
    metric: Callable[[torch.Tensor], torch.Tensor],
    **forward_kwargs,
) -> Attribution:
    """Activations and gradients of ``metric(logits)`` at ``sites`` (see the module docstring).

    ``inputs`` as :func:`interp.run_with_patches` (a tokenizer's dict or ``input_ids``);
    ``metric`` maps the logits ``[B, T, vocab]`` to one value per row ``[B]`` (summed
    for the gradient, so rows do not mix).
    """
    model = unwrap_model(model)
    adapter = get_adapter(model)
    resolved = resolve_sites(sites, adapter)
    if any(site.is_pattern for site in resolved):
        raise ValueError("attention patterns have no gradient here (the kernel computes the output); "
                         "attribute blocks.{i}.attn.hook_z, the per-head outputs, instead")  # fmt: skip
    keep = {"hook_embed": _Keep(root=True)}
    through: dict[int | str, str] = {}  # site -> the site whose gradient it takes
    for site in resolved:
        if site.kind == "resid_mid":
            through[site.key] = f"blocks.{site.block}.hook_attn_out"
            keep.setdefault(through[site.key], _Keep())
        if site.key != "hook_embed":
            keep.setdefault(site.key, _Keep())
    kwargs = {"input_ids": inputs} if isinstance(inputs, torch.Tensor) else dict(inputs)
    with patch(model, {key: Apply(fn=keeper) for key, keeper in keep.items()}) as hf_model, torch.enable_grad():
        values = metric(hf_model(**kwargs, **forward_kwargs).logits)
        wanted = [through.get(site.key, site.key) for site in resolved]
        grads = torch.autograd.grad(values.sum(), [keep[key].value for key in wanted], allow_unused=True)
    activations, gradients = {}, {}
    for site, grad in zip(resolved, grads, strict=True):
        activations[site.key] = keep[site.key].value.detach()
        gradients[site.key] = torch.zeros_like(activations[site.key]) if grad is None else grad.detach()
    return Attribution(activations, gradients, values.detach())
