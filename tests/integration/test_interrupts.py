"""Ctrl-C in a notebook: a real SIGINT in the middle of a call leaves the user's model clean.

Each case arms a trigger -- a forward pre-hook on one decoder block that, on its
N-th call, sends SIGINT to this process, so Python's default handler raises
KeyboardInterrupt at the next bytecode, wherever the call is then (inside a
backend's hooks, a TransformerLens bridge, an nnsight trace, an attention probe,
an AdaptVis KV-cache step, a training step). After the interrupt has propagated
and the trigger is removed, the model must be as before, to the bit:

* every parameter and buffer: the same tensor object, values (``torch.equal``),
  dtype, device, ``requires_grad`` and ``.grad``;
* every module: the same children, ``training`` flag, attribute dict (no
  ``forward`` override, no probe attribute) and hook registries;
* every config (text and vision sub-configs included): the same attributes,
  ``_attn_implementation`` in particular;
* process-wide: transformers' ``AttentionInterface`` / ``AttentionMaskInterface``
  registries, torch's global module hooks and the ``forward`` of the model's
  module classes;
* the logits of a fixed input.
"""

from __future__ import annotations

import copy
import os
import signal

import pytest
import torch
import torch.nn.modules.module as torch_module
from PIL import Image, ImageDraw
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

import interp
import interp.vlm as vlm
from interp.freeze import finetune
from interp.models import tiny_llama, tiny_llava, tiny_llava_processor
from interp.vlm.attention import PROBE_ATTR

TEXTS = [
    "All human beings are born free and equal in dignity and rights.",
    "Tous les êtres humains naissent libres et égaux en dignité et en droits.",
    "Alle Menschen sind frei und gleich an Würde und Rechten geboren.",
    "Semua orang dilahirkan merdeka dan mempunyai martabat dan hak-hak yang sama.",
    "Все люди рождаются свободными и равными в своем достоинстве и правах.",
    "人人生而自由，在尊严和权利上一律平等。",
]
PROMPT = "<image>\nUSER: Where is the mug in relation to the knife? Answer with left or right.\nASSISTANT:"


@pytest.fixture(autouse=True)
def default_sigint():
    """Python's own SIGINT handler (raise KeyboardInterrupt), whatever pytest or a plugin installed."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def proc():
    return tiny_llava_processor(56)


@pytest.fixture(scope="module", autouse=True)
def heavy_imports():
    """Import the hook libraries first: their import-time patches are not a call's side effects."""
    import nnsight  # noqa: F401
    import transformer_lens.model_bridge  # noqa: F401


def scene(seed=0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    image = Image.fromarray((torch.rand(80, 120, 3, generator=g) * 255).to(torch.uint8).numpy())
    ImageDraw.Draw(image).rectangle((60, 10, 100, 60), fill=(255, 255, 255))
    return image


# ---------------------------------------------------------------- the trigger


class Trigger:
    """A forward pre-hook on ``module`` that sends a real SIGINT on its ``at``-th call.

    At that moment it records :func:`live` of ``model`` and of the module it is
    called on (``seen``), which shows where the interrupt landed. The hook is a
    plain function, so deep copies of the model (``finetune`` trains one) share it
    and its counter.
    """

    def __init__(self, model: torch.nn.Module, module: torch.nn.Module, at: int):
        self.calls = 0
        self.fired_at = None
        self.seen = None

        def hook(mod, args):
            self.calls += 1
            if self.calls == at:
                self.fired_at, self.seen = self.calls, live(model, mod)
                os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt at the next bytecode

        self.handle = module.register_forward_pre_hook(hook)


def live(model: torch.nn.Module, mod: torch.nn.Module) -> dict:
    """What the call under test has changed at this moment (the trigger's own hook included)."""
    modules = list(model.modules())
    return {
        "n_modules": len(modules),
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules),
        "forward_overrides": sum("forward" in vars(m) for m in modules),
        "probes": sum(PROBE_ATTR in vars(m) for m in modules),
        "attn": model.config.get_text_config()._attn_implementation,
        "in_model": any(mod is m for m in modules),
        "training": mod.training,
        "frozen": sorted(n for n, p in mod.named_parameters() if not p.requires_grad),
    }


def interrupted(model: torch.nn.Module, module: torch.nn.Module, at: int, call) -> dict:
    """Run ``call()`` with a trigger on ``module``: it must end in KeyboardInterrupt on call ``at``.

    Returns what the trigger saw when it fired; the trigger is removed again.
    """
    trigger = Trigger(model, module, at)
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
    finally:
        trigger.handle.remove()
    assert trigger.fired_at == at, f"the trigger fired at {trigger.fired_at}, after {trigger.calls} calls"
    assert trigger.calls == at, f"the call went on after the interrupt ({trigger.calls} calls, fired at {at})"
    return trigger.seen


# ---------------------------------------------------------------- the snapshot


def _config_state(config, seen=None) -> dict:
    """Every attribute of a config, sub-configs recursed into (by identity and content)."""
    seen = set() if seen is None else seen
    seen.add(id(config))
    state = {}
    for key, value in vars(config).items():
        if type(value).__name__.endswith("Config") and hasattr(value, "__dict__"):
            state[key] = ("config", id(value), None if id(value) in seen else _config_state(value, seen))
        else:
            state[key] = copy.deepcopy(value)
    return state


def _module_state(module: torch.nn.Module) -> dict:
    """A module's attribute dict: dicts / sets by key and value identity, other values as they are."""
    state = {}
    for key, value in vars(module).items():
        if isinstance(value, dict):
            state[key] = ("dict", [(k, id(v)) for k, v in value.items()])
        elif isinstance(value, (set, frozenset)):
            state[key] = ("set", set(value))
        elif isinstance(value, (bool, int, float, str, type(None))):
            state[key] = ("value", value)
        else:
            state[key] = ("object", id(value))
    return state


def snapshot(model: torch.nn.Module, logits_input: dict) -> dict:
    modules = list(model.named_modules(remove_duplicate=False))
    configs = {name: _config_state(m.config) for name, m in modules if hasattr(m, "config")}
    with torch.no_grad():
        logits = model(**logits_input).logits.clone()
    return {
        "modules": [(name, id(m), type(m)) for name, m in modules],
        "module_state": {name: _module_state(m) for name, m in modules},
        "training": [(name, m.training) for name, m in modules],
        "tensors": {
            (kind, name): (id(t), t.detach().clone(), t.dtype, t.device, t.requires_grad, t.grad)
            for kind, named in (
                ("param", model.named_parameters(remove_duplicate=False)),
                ("buffer", model.named_buffers(remove_duplicate=False)),
            )
            for name, t in named
        },
        "configs": configs,
        "attn_implementation": {
            name: [
                getattr(c, "_attn_implementation", None)
                for c in (m.config, getattr(m.config, "text_config", None), getattr(m.config, "vision_config", None))
                if c is not None
            ]
            for name, m in modules
            if hasattr(m, "config")
        },
        "class_forward": {t: t.__dict__.get("forward") for t in {type(m) for _, m in modules}},
        "registries": {
            "AttentionInterface": dict(AttentionInterface._global_mapping),
            "AttentionMaskInterface": dict(AttentionMaskInterface._global_mapping),
            "ALL_ATTENTION_FUNCTIONS": dict(ALL_ATTENTION_FUNCTIONS._local_mapping),
            "ALL_MASK_ATTENTION_FUNCTIONS": dict(ALL_MASK_ATTENTION_FUNCTIONS._local_mapping),
        },
        "torch_global_hooks": {
            name: dict(value) if isinstance(value, dict) else value
            for name, value in vars(torch_module).items()
            if name.startswith("_global_")
        },
        "logits": logits,
    }


def assert_clean(before: dict, after: dict) -> None:
    assert after["modules"] == before["modules"], "the module tree changed (a child was swapped)"
    for name, state in before["module_state"].items():
        now = after["module_state"][name]
        assert now.keys() == state.keys(), f"module {name!r}: attributes {sorted(now.keys() ^ state.keys())} differ"
        for key, value in state.items():
            assert now[key] == value, f"module {name!r}: {key} changed"
    assert after["training"] == before["training"], "train/eval modes changed"
    assert after["tensors"].keys() == before["tensors"].keys()
    for key, (ident, value, dtype, device, requires_grad, grad) in before["tensors"].items():
        ident2, value2, dtype2, device2, requires_grad2, grad2 = after["tensors"][key]
        assert (ident2, dtype2, device2, requires_grad2) == (ident, dtype, device, requires_grad), key
        assert torch.equal(value2, value), f"{key} changed value"
        assert grad2 is grad, f"{key}: .grad changed"
    assert after["attn_implementation"] == before["attn_implementation"]
    assert after["configs"] == before["configs"], "a config attribute changed"
    assert after["class_forward"] == before["class_forward"], "a module class's forward was replaced"
    for name, registry in before["registries"].items():
        now = after["registries"][name]
        assert now.keys() == registry.keys(), f"{name}: entries {sorted(now.keys() ^ registry.keys())} left"
        assert all(now[k] is v for k, v in registry.items()), f"{name}: an entry was replaced"
    for name, hooks in before["torch_global_hooks"].items():
        assert after["torch_global_hooks"][name] == hooks, f"torch.nn.modules.module.{name} changed"
    assert torch.equal(after["logits"], before["logits"]), "the logits of a fixed input changed"


def check(model, logits_input, block, at, call) -> dict:
    """Interrupt ``call()`` at call ``at`` of ``block``; the model must be clean. Returns what the trigger saw."""
    before = snapshot(model, logits_input)
    seen = interrupted(model, block, at, call)
    assert_clean(before, snapshot(model, logits_input))
    return seen


# ---------------------------------------------------------------- the cases


@pytest.mark.parametrize("backend", ["hf", "transformer_lens", "nnsight"])
def test_extract(tok, backend):
    """Six texts, two per forward pass: the interrupt lands in block 1 of the second pass, while the
    backend has the model rigged (hooks / a TransformerLens bridge on eager attention / nnsight's forwards)."""
    model = tiny_llama(n_layers=3, d_model=32, seed=0)
    ids = {"input_ids": tok(TEXTS[0], return_tensors="pt")["input_ids"]}
    idle = live(model, model.model.layers[1])
    seen = check(model, ids, model.model.layers[1], 2, lambda: interp.extract(
        model, tok, TEXTS, backend=backend, batch_size=2, progress=False))  # fmt: skip
    if backend == "hf":
        assert seen["hooks"] > idle["hooks"] + 1  # the backend's hooks, besides the trigger
    elif backend == "transformer_lens":
        assert seen["n_modules"] > idle["n_modules"] and seen["attn"] == "eager"
    else:
        assert seen["forward_overrides"] > 0


@pytest.fixture
def llava(proc):
    model = tiny_llava(n_layers=3, n_heads=4, n_kv_heads=2, image_size=56, seed=1)
    inputs = proc(images=scene(), text=PROMPT, return_tensors="pt")
    return model, dict(inputs)


def test_trace_image_attention(llava, proc):
    """Two pairs, one per forward: the interrupt lands in block 1 of the second, with the probes attached."""
    model, inputs = llava
    images, prompts = [scene(0), scene(1)], [PROMPT, "<image>\nUSER: What is this?\nASSISTANT:"]
    seen = check(model, inputs, model.model.language_model.layers[1], 2, lambda: vlm.trace_image_attention(
        model, proc, images, prompts, progress=False))  # fmt: skip
    assert seen["attn"] == "interp+sdpa" and seen["probes"] == 3


# block 1's calls in adaptvis_generate: 1 the prefill of prompt[:-1], 2 the unscaled last prompt token,
# 3 the same token again under α, 4... greedy decoding
@pytest.mark.parametrize(("at", "attn"), [(3, "interp+sdpa"), (5, "sdpa")], ids=["scaled-last-token", "decoding"])
def test_adaptvis_generate(llava, proc, at, attn):
    model, inputs = llava
    seen = check(model, inputs, model.model.language_model.layers[1], at, lambda: vlm.adaptvis_generate(
        model, proc, scene(), PROMPT, 0.5, 1.5, 0.4, max_new_tokens=8))  # fmt: skip
    assert seen["attn"] == attn


# block 1's calls in scalingvis_generate: 1 the scaled prefill, 2... greedy decoding
@pytest.mark.parametrize(("at", "attn"), [(1, "interp+sdpa"), (3, "sdpa")], ids=["scaled-prefill", "decoding"])
def test_scalingvis_generate(llava, proc, at, attn):
    model, inputs = llava
    seen = check(model, inputs, model.model.language_model.layers[1], at, lambda: vlm.scalingvis_generate(
        model, proc, scene(), PROMPT, 0.5, max_new_tokens=8))  # fmt: skip
    assert seen["attn"] == attn


SPEC = {"blocks": [1], "embeddings": True}
FINETUNE = dict(steps=3, batch_size=2, lr=1e-2, freeze=SPEC, progress=False)


def test_finetune(tok):
    """The copy under training is interrupted in the forward of step 2; the caller's model is untouched,
    and so is the global RNG (finetune seeds a fork of it)."""
    model = tiny_llama(n_layers=3, d_model=32, seed=0)
    ids = {"input_ids": tok(TEXTS[0], return_tensors="pt")["input_ids"]}
    rng = torch.get_rng_state()
    seen = check(model, ids, model.model.layers[1], 2, lambda: finetune(model, tok, TEXTS, **FINETUNE))
    assert torch.equal(torch.get_rng_state(), rng)
    assert not seen["in_model"] and seen["training"] and seen["frozen"]  # in the frozen block of the copy


def test_finetune_inplace(tok):
    """``inplace=True``, interrupted in the forward of step 2: the model holds exactly step 1's weights
    (an uninterrupted 1-step run's), and its flags, modes, hooks, config and grads are as before."""
    model = tiny_llama(n_layers=3, d_model=32, seed=0)
    model.model.layers[2].mlp.train()  # a mixed train/eval state to restore
    reference = copy.deepcopy(model)
    finetune(reference, tok, TEXTS, **{**FINETUNE, "steps": 1}, inplace=True)
    ids = {"input_ids": tok(TEXTS[0], return_tensors="pt")["input_ids"]}
    before, expected = snapshot(model, ids), snapshot(reference, ids)
    seen = interrupted(model, model.model.layers[1], 2, lambda: finetune(model, tok, TEXTS, **FINETUNE, inplace=True))
    assert seen["in_model"] and seen["training"] and seen["frozen"]
    assert not torch.equal(expected["logits"], before["logits"])  # step 1 did change the model
    for key, (ident, _, *rest) in before["tensors"].items():
        before["tensors"][key] = (ident, expected["tensors"][key][1], *rest)  # step 1's values, as they were
    before["logits"] = expected["logits"]
    assert_clean(before, snapshot(model, ids))


def test_overlapping_probes_share_one_registration(llava, proc):
    """``"interp+sdpa"`` stays registered while any probing context is open (here ScalingVis on one model
    around a trace of another) and leaves both registries with the last one."""
    model, inputs = llava
    other = tiny_llava(n_layers=3, n_heads=4, n_kv_heads=2, image_size=56, seed=2)
    registries = (ALL_ATTENTION_FUNCTIONS, ALL_MASK_ATTENTION_FUNCTIONS)
    assert all("interp+sdpa" not in r for r in registries)
    with torch.no_grad():
        plain = model(**inputs).logits
    with torch.no_grad(), vlm.scale_image_attention(model, 0.5):
        scaled = model(**inputs).logits
        assert not torch.equal(scaled, plain)
        vlm.trace_image_attention(other, proc, scene(), PROMPT, progress=False)
        assert torch.equal(model(**inputs).logits, scaled)  # still runs interp+sdpa
        assert all("interp+sdpa" in r for r in registries)
    assert all("interp+sdpa" not in r for r in registries)


SITES = ["blocks.1.attn.hook_pattern", "blocks.2.hook_resid_mid", "blocks.0.attn.hook_z", 2]


@pytest.mark.parametrize("backend", ["hf", "nnsight"])
def test_extract_named_sites(tok, backend):
    """Attention patterns switch the model to interp's attention hooks: Ctrl-C in the second pass undoes them."""
    model = tiny_llama(n_layers=3, d_model=32, seed=0)
    ids = {"input_ids": tok(TEXTS[0], return_tensors="pt")["input_ids"]}
    seen = check(model, ids, model.model.layers[1], 2, lambda: interp.extract(
        model, tok, TEXTS, sites=SITES, pooling="none", backend=backend, batch_size=2, progress=False))  # fmt: skip
    assert seen["attn"] == "interp+sdpa" and seen["probes"] == 1


def test_patch_and_sweep(tok):
    """Ctrl-C inside a patched forward (a pattern patch, resid_mid written through attention) and a sweep."""
    model = tiny_llama(n_layers=3, d_model=32, seed=0)
    ids = {"input_ids": tok(TEXTS[0], return_tensors="pt")["input_ids"]}
    patches = {"blocks.1.attn.hook_pattern": "zero", "blocks.1.hook_resid_mid": "zero", "blocks.2.hook_mlp_out": "zero"}
    seen = check(model, ids, model.model.layers[2], 1, lambda: interp.run_with_patches(model, ids, patches))
    assert seen["attn"] == "interp+sdpa" and seen["probes"] == 1 and seen["hooks"] >= 4
    # the sweep: block 2's third call is the second patched run
    check(model, ids, model.model.layers[2], 3, lambda: interp.patching_sweep(
        model, tok, "abcdef", "abcxyz", answer="a", sites="blocks.*.hook_resid_pre", progress=False))  # fmt: skip


def test_extract_generate(tok):
    """Ctrl-C while generating (the fourth call of block 1 is the third decoding step), patterns on."""
    model = tiny_llama(n_layers=3, d_model=32, seed=0)
    ids = {"input_ids": tok(TEXTS[0], return_tensors="pt")["input_ids"]}
    seen = check(model, ids, model.model.layers[1], 4, lambda: interp.extract_generate(
        model, tok, TEXTS[:2], sites=SITES, max_new_tokens=6, progress=False))  # fmt: skip
    assert seen["attn"] == "interp+sdpa"
