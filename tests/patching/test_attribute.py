"""Gradient × activation at named sites equals autograd through the float64 manual forward
(tests/sites_reference.py), also on a frozen model, and leaves no .grad on the parameters."""

from __future__ import annotations

import pytest
import torch
from sites_reference import reference_forward

from interp.models import tiny_llama
from interp.patching import attribute

SITES = ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.1.hook_resid_mid",
         "blocks.0.hook_mlp_out", "model.layers.1.mlp.down_proj:input"]  # fmt: skip
GOOD, BAD = 101, 33  # "e", "!"


class LastLogitDiff:
    def __call__(self, logits):  # [B, T, V] -> [B]
        return logits[:, -1, GOOD] - logits[:, -1, BAD]


class Keep:
    """A reference edit that keeps each requested site's value (part of the float64 graph)."""

    def __init__(self, names):
        self.names, self.kept = set(names), {}

    def __call__(self, name, value):
        if name in self.names:
            self.kept[name] = value
        return value


@pytest.mark.parametrize("frozen", [False, True])
def test_gradients_equal_the_reference_autograd(tok, frozen):
    model = tiny_llama(n_layers=2, seed=3).double()
    model.requires_grad_(not frozen)
    ids = tok("The cat sat.")["input_ids"]
    result = attribute(model, torch.tensor([ids]), SITES, LastLogitDiff())
    assert all(p.grad is None for p in model.parameters())
    reference = tiny_llama(n_layers=2, seed=3).double()  # the graph needs the weights to require grad
    keep = Keep(SITES)
    out = reference_forward(reference, ids, keep, grad=True)
    metric = out["logits"][-1, GOOD] - out["logits"][-1, BAD]
    grads = torch.autograd.grad(metric, [keep.kept[s] for s in SITES])
    assert result.metric.shape == (1,) and result.metric[0].item() == pytest.approx(metric.item(), rel=1e-6)
    for site, grad in zip(SITES, grads, strict=True):
        got, value = result.gradients[site][0], result.activations[site][0]
        assert got.shape == grad.shape and value.shape == keep.kept[site].shape, site
        assert (got - grad).abs().max() <= 1e-6 * grad.abs().max(), site
        assert (value - keep.kept[site].detach()).abs().max() <= 1e-6 * value.abs().max(), site
    assert result.grad_times_activation("blocks.1.attn.hook_z").shape == (1, len(ids))


def test_patterns_have_no_gradient_here(llama, tok):
    with pytest.raises(ValueError, match="attribute blocks.{i}.attn.hook_z"):
        attribute(llama, tok(["x"], return_tensors="pt"), ["blocks.0.attn.hook_pattern"], LastLogitDiff())
