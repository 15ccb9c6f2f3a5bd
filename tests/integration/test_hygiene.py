"""Acceptance: after an exception inside extraction, on any backend, the model has
no hooks left, its own submodules, forwards, attention implementation, flags
and weights -- and produces bit-identical logits."""

from __future__ import annotations

import pytest
import torch

import interp
import interp.extraction.collect as collect
from interp.models import tiny_llama


def _state(model):
    return {
        "modules": {name: id(m) for name, m in model.named_modules()},
        "forward_overrides": [name for name, m in model.named_modules() if "forward" in m.__dict__],
        "hooks": sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
        ),
        "attn": model.config._attn_implementation,
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "params": [p.data_ptr() for p in model.parameters()],
    }


class Boom(RuntimeError):
    pass


def _explode(*args, **kwargs):
    raise Boom("injected failure")


@pytest.mark.parametrize("where", ["pooling", "forward"])
@pytest.mark.parametrize("backend", ["hf", "transformer_lens", "nnsight"])
def test_model_restored_after_exception(tok, backend, where, monkeypatch):
    model = tiny_llama(n_layers=3, seed=1)
    model.model.layers[1].mlp.requires_grad_(False)  # non-default flags must survive too
    model.model.layers[2].train()
    ids = tok(["a test sentence", "another"], return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**ids).logits.clone()
    state = _state(model)
    if where == "pooling":
        monkeypatch.setattr(collect, "pool", _explode)
    else:  # raise inside the model's own forward, while every hook is installed
        target = model.model.layers[1].mlp
        monkeypatch.setattr(type(target), "forward", _explode)
    with pytest.raises(Boom):
        interp.extract(model, tok, ["hello", "world", "again"], backend=backend, batch_size=2, progress=False)
    monkeypatch.undo()
    assert _state(model) == state
    with torch.no_grad():
        after = model(**ids).logits
    assert torch.equal(before, after)


@pytest.mark.parametrize("backend", ["hf", "transformer_lens", "nnsight"])
def test_model_restored_after_success(tok, backend):
    model = tiny_llama(n_layers=2, seed=2)
    ids = tok(["restore me"], return_tensors="pt")
    with torch.no_grad():
        before = model(**ids).logits.clone()
    state = _state(model)
    interp.extract(model, tok, ["one", "two"], backend=backend, progress=False)
    assert _state(model) == state
    with torch.no_grad():
        assert torch.equal(before, model(**ids).logits)


def test_user_hooks_survive_and_still_fire(tok, llama):
    calls = []
    hooks = llama.model.layers[0]._forward_hooks
    handle = llama.model.layers[0].register_forward_hook(lambda m, a, o: calls.append(1))
    before = dict(hooks)  # transformers may keep its own output-capturing hook here too
    try:
        interp.extract(llama, tok, ["x", "y"], backend="hf", progress=False)
        assert len(calls) == 1  # one batch
        assert dict(hooks) == before
    finally:
        handle.remove()
