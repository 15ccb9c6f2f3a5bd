"""Acceptance: an nnsight LanguageModel and a TransformerLens TransformerBridge give the same tensors as
the plain model; anything else is refused with what to pass. extract_generate records the sites of
generated tokens, equal to the float64 reference on the generated sequence."""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch
from sites_reference import reference_sites

import interp
from interp.models import get_adapter, tiny_llama
from interp.models.attention import HOOKS_ATTR

TEXTS = ["Hi", "The capital of France is Paris.", "人人生而自由"]
SITES = ["hook_embed", "blocks.1.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.1.hook_resid_mid",
         "blocks.1.hook_mlp_out", "model.layers.0.mlp.down_proj", 1, 3, "ln_final.hook_normalized"]  # fmt: skip


def boot_bridge(model, tok):
    from transformer_lens.model_bridge import TransformerBridge

    directory = tempfile.mkdtemp()
    model.config.save_pretrained(directory)
    tokenizer = copy.deepcopy(tok)
    tokenizer.init_kwargs.update(name_or_path=directory, add_bos_token=True)
    return TransformerBridge.boot_transformers(directory, hf_model=model, tokenizer=tokenizer)


def test_nnsight_language_model_gives_the_plain_models_tensors(tok):
    from nnsight import LanguageModel

    model = tiny_llama(n_layers=3, seed=4)
    plain = {b: interp.extract(model, tok, TEXTS, sites=SITES, pooling="none", backend=b, progress=False)
             for b in ("hf", "nnsight")}  # fmt: skip
    wrapped = LanguageModel(model, tokenizer=tok)
    assert get_adapter(wrapped).model is model
    for backend in ("hf", "nnsight", "transformer_lens"):
        acts = interp.extract(wrapped, tok, TEXTS, sites=SITES, pooling="none", backend=backend, progress=False)
        for site in SITES:
            expected = plain.get(backend, plain["hf"])[site]
            if backend in plain:
                assert torch.equal(acts[site], expected), (backend, site)
            else:
                assert (acts[site] - expected).abs().max() <= 1e-5 * expected.abs().max(), (backend, site)


def test_transformer_bridge_gives_the_plain_models_tensors(tok):
    model = tiny_llama(n_layers=3, seed=4)
    plain = interp.extract(model, tok, TEXTS, sites=SITES, pooling="none", progress=False)
    bridge = boot_bridge(tiny_llama(n_layers=3, seed=4), tok)
    acts = interp.extract(bridge, tok, TEXTS, sites=SITES, pooling="none", progress=False)
    assert acts.meta["backend"] == "transformer_lens"
    for site in SITES:
        assert (acts[site] - plain[site]).abs().max() <= 1e-5 * plain[site].abs().max(), site
    with pytest.raises(ValueError, match="read through its own hook points .* not backend='nnsight'"):
        interp.extract(bridge, tok, TEXTS, backend="nnsight", progress=False)


class HookedTransformer:  # stands in for TransformerLens 3.x's class, which TL 4 removed
    pass


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"weights": 1}, r"expected a torch.nn.Module .* nnsight LanguageModel/NNsight .* TransformerBridge .*dict"),
        (HookedTransformer(), r"got HookedTransformer\. A TransformerLens HookedTransformer is not a Hugging Face"),
    ],
)
def test_other_objects_are_refused_with_what_to_pass(tok, obj, message):
    with pytest.raises(TypeError, match=message):
        interp.extract(obj, tok, TEXTS, progress=False)
    with pytest.raises(TypeError, match=message):
        interp.patch(obj, {1: "zero"}).__enter__()


# -- extraction during generation ----------------------------------------------------------------


def _state(model):
    modules = list(model.modules())
    return {
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules),
        "attn": model.config._attn_implementation,
        "probes": sum(HOOKS_ATTR in vars(m) for m in modules),
        "dicts": [sorted(vars(m)) for m in modules],
    }


def test_generated_tokens_states_equal_the_reference_on_the_generated_sequence(tok):
    model = tiny_llama(n_layers=2, seed=0)
    state = _state(model)
    prompts = ["Hello", "The capital of France is"]  # different lengths: a left-padded batch
    sites = ["blocks.1.hook_mlp_out", "blocks.0.attn.hook_pattern", "blocks.1.attn.hook_z", 2]
    gen = interp.extract_generate(model, tok, prompts, sites=sites, max_new_tokens=5, progress=False)
    assert _state(model) == state
    for j, prompt in enumerate(prompts):
        prompt_ids = tok(prompt)["input_ids"]
        ids = gen.acts.tokens(j).tolist()
        assert ids[: len(prompt_ids)] == prompt_ids and len(ids) == len(prompt_ids) + 5
        with torch.no_grad():  # greedy: each new token is the argmax after the sequence so far
            logits = model(torch.tensor([ids])).logits[0]
        assert ids[len(prompt_ids) :] == logits[len(prompt_ids) - 1 : -1].argmax(-1).tolist()
        assert gen.new_tokens(j).tolist() == ids[len(prompt_ids) :]
        assert gen.completions[j] == tok.decode(ids[len(prompt_ids) :], skip_special_tokens=True)
        ref = reference_sites(model, ids)
        for site in sites:
            expected = ref[f"hidden.{site}" if isinstance(site, int) else site]
            got = gen.acts.states(j, site).double()
            if str(site).endswith("pattern"):
                got = got[:, :, : len(ids)]
            assert (got - expected).abs().max() <= 1e-5 * expected.abs().max(), (j, site)
            assert torch.equal(gen.generated(j, site), gen.acts.states(j, site)[len(prompt_ids) :])


def test_generation_stops_at_eos_and_restores_the_model_after_an_error(tok, monkeypatch):
    model = tiny_llama(n_layers=2, seed=0)
    first = interp.extract_generate(model, tok, ["Hello"], sites=[1], max_new_tokens=5, progress=False)
    stop = first.new_tokens(0)[2].item()  # make the third generated token the end of sequence
    cut = interp.extract_generate(model, tok, ["Hello", "Hi"], sites=[1], max_new_tokens=5, eos_token_id=stop,
                                  progress=False)  # fmt: skip
    assert cut.new_tokens(0).tolist() == first.new_tokens(0)[:3].tolist()
    expected = first.generated(0, 1)[:3]  # batch of 1 vs a padded batch of 2: equal to float rounding
    assert (cut.generated(0, 1) - expected).abs().max() <= 1e-5 * expected.abs().max()
    state = _state(model)

    def boom(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(type(model.model.layers[1].mlp), "forward", boom)
    with pytest.raises(RuntimeError, match="injected"):
        interp.extract_generate(model, tok, ["Hello"], sites="blocks.*.attn.hook_pattern", progress=False)
    monkeypatch.undo()
    assert _state(model) == state
