"""Acceptance: every named site, on every block family and backend, with left and right padding,
equals an independent float64 reference written from the architecture's definition
(tests/sites_reference.py) to 1e-5 of the site's magnitude; per-token results carry the
tokenizer's ids and strings; the site vocabulary resolves and refuses as documented."""

from __future__ import annotations

import pytest
import torch
from sites_reference import MODULE_SITES, family, reference_sites
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

import interp
from interp.extraction import ActivationStore, resolve_sites, vocabulary
from interp.models import get_adapter, tiny_gpt2, tiny_gpt_neox, tiny_llama

BACKENDS = ["hf", "transformer_lens", "nnsight"]
TEXTS = ["Hi", "The capital of France is Paris.", "Ça va? 人人生而自由", "abc d"]
RTOL = 1e-5


def tiny_gemma3():
    """Gemma 3's block (sandwich norms, q/k norms, GQA) with a 3-token sliding window on every other layer."""
    config = Gemma3TextConfig(
        vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, sliding_window=3, layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=256, bos_token_id=257, eos_token_id=258, pad_token_id=256,
        attn_implementation="sdpa",
    )  # fmt: skip
    config.architectures = ["Gemma3ForCausalLM"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Gemma3ForCausalLM(config).eval()
    for p in model.parameters():  # Gemma initialises norm weights to 0 (scale 1 + w): make them count
        if p.ndim == 1:
            p.data.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    return model


MODELS = {
    "llama": lambda: tiny_llama(n_layers=2, d_model=64, seed=0),
    "gpt2": lambda: tiny_gpt2(n_layers=2),
    "gpt_neox": lambda: tiny_gpt_neox(n_layers=2),
    "gpt_neox_sequential": lambda: tiny_gpt_neox(n_layers=2, parallel_residual=False, seed=1),
    "gemma3": tiny_gemma3,
}


@pytest.fixture(scope="module", params=list(MODELS))
def tiny(request):
    model = MODELS[request.param]()
    return request.param, model


def all_sites(model) -> list:
    """The model's whole vocabulary, a module path and every hidden-state index."""
    adapter = get_adapter(model)
    path = MODULE_SITES[family(model)][0]
    return [*vocabulary(adapter), *(path.format(i=i) for i in range(adapter.n_blocks)),
            *range(adapter.n_hidden_states)]  # fmt: skip


def reference_name(site, n_hidden: int) -> str:
    return f"hidden.{site}" if isinstance(site, int) else site


def check_against_reference(acts, refs: list[dict], sites: list, tokenizer, texts) -> dict:
    """Per site: max |got - ref| / max |ref| over all texts (asserted <= RTOL); tokens checked too."""
    errors = {}
    for site in sites:
        name = reference_name(site, acts.n_hidden_states)
        ref = [r[name] for r in refs]
        scale = max(r.abs().max().item() for r in ref)
        err = 0.0
        for j, r in enumerate(ref):
            got = acts.states(j, site).double()
            if name.endswith("hook_pattern"):
                n = r.shape[0]
                assert not got[:, :, n:].any(), (site, j, "keys past the text must be 0")
                got = got[:, :, :n]
            assert got.shape == r.shape, (site, j, tuple(got.shape), tuple(r.shape))
            err = max(err, (got - r).abs().max().item())
        errors[site] = err / scale
        assert err <= RTOL * scale, (site, err / scale)
    for j, text in enumerate(texts):
        ids = tokenizer(text)["input_ids"]
        assert acts.tokens(j).tolist() == ids
        assert acts.str_tokens(j) == [tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids]
    return errors


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_site_equals_the_float64_reference(tiny, tok, backend, side):
    name, model = tiny
    refs = [reference_sites(model, tok(t)["input_ids"]) for t in TEXTS]
    sites = all_sites(model)
    missing = [s for s in sites if reference_name(s, None) not in refs[0] and s != "hook_pos_embed"]
    assert not missing, f"the reference must cover the whole vocabulary: {missing}"
    assert len(sites) >= 18 and any(str(s).endswith("hook_pattern") for s in sites)
    acts = interp.extract(
        model, tok, TEXTS, sites=sites, pooling="none", backend=backend, batch_size=4, padding_side=side,
        progress=False,
    )  # fmt: skip
    assert acts.sites == sites
    check_against_reference(acts, refs, sites, tok, TEXTS)


def test_pooled_sites_pool_the_reference(tok):
    """Pooling of non-residual sites (z, patterns, MLP outputs) is the mask-correct mean / last row."""
    model = tiny_llama(n_layers=2, d_model=64, seed=0)
    refs = [reference_sites(model, tok(t)["input_ids"]) for t in TEXTS]
    sites = ["blocks.1.attn.hook_z", "blocks.0.attn.hook_pattern", "blocks.1.hook_mlp_out", "hook_embed"]
    width = max(len(tok(t)["input_ids"]) for t in TEXTS)
    for pooling, take in (("mean", lambda r: r.mean(0)), ("last", lambda r: r[-1])):
        acts = interp.extract(model, tok, TEXTS, sites=sites, pooling=pooling, batch_size=3, progress=False)
        for site in sites:
            for j, ref in enumerate(refs):
                r = ref[site]
                if site.endswith("hook_pattern"):  # keys padded to the longest text
                    r = torch.nn.functional.pad(r, (0, width - r.shape[-1]))
                expected = take(r)
                assert (acts[site][j].double() - expected).abs().max() <= RTOL * r.abs().max(), (pooling, site, j)


@pytest.mark.gemma
@pytest.mark.parametrize("backend", BACKENDS)
def test_gemma_sites_equal_the_float64_reference(gemma, backend):
    model, tokenizer = gemma
    texts = ["The Eiffel Tower is in Paris.", "Hallo", "人人生而自由"]
    refs = [reference_sites(model, tokenizer(t)["input_ids"]) for t in texts]
    blocks = [0, 5, 17]
    sites = ["hook_embed", *[f"blocks.{i}.{k}" for i in blocks for k in (
        "hook_resid_pre", "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid", "hook_mlp_out",
        "hook_resid_post")], "model.layers.5.mlp.down_proj:input", "ln_final.hook_normalized", 0, 9, 18]  # fmt: skip
    for side in ("left", "right"):
        acts = interp.extract(
            model, tokenizer, texts, sites=sites, pooling="none", backend=backend, batch_size=3, padding_side=side,
            progress=False,
        )  # fmt: skip
        check_against_reference(acts, refs, sites, tokenizer, texts)


# -- results you can index ----------------------------------------------------------------------


def test_activations_are_indexed_by_site_name_index_and_equivalent_name(llama, tok):
    acts = interp.extract(llama, tok, TEXTS[:2], layers=[-1, 2], progress=False)  # the KeyError case
    assert acts.layers == [2, 4] and acts.sites == [2, 4]
    assert torch.equal(acts.layer(-1), acts.layer(4)) and torch.equal(acts[-1], acts.tensor[1])
    assert torch.equal(acts["blocks.1.hook_resid_post"], acts.layer(2))  # the same tensor, by its name
    assert torch.equal(acts["blocks.2.hook_resid_pre"], acts.layer(2))
    assert torch.equal(acts["ln_final.hook_normalized"], acts.layer(4))
    assert "blocks.3.hook_resid_post" not in acts  # before the final norm: not hidden state 4
    with pytest.raises(KeyError, match=r"hidden-state index 3 was not extracted; available sites: \[2, 4\]"):
        acts.layer(3)
    with pytest.raises(KeyError, match="blocks.0.hook_mlp_out"):
        acts["blocks.0.hook_mlp_out"]


def test_padded_view_and_mask(llama, tok):
    acts = interp.extract(llama, tok, TEXTS, sites=["blocks.0.hook_mlp_out", 3], pooling="none", progress=False)
    values, mask = acts.padded()
    lengths = [len(tok(t)["input_ids"]) for t in TEXTS]
    assert values.shape == (2, 4, max(lengths), 64) and mask.shape == (4, max(lengths))
    for j, n in enumerate(lengths):
        assert mask[j].tolist() == [True] * n + [False] * (max(lengths) - n)
        assert torch.equal(values[:, j, :n], acts.states(j)) and not values[:, j, n:].any()
    pattern_acts = interp.extract(llama, tok, TEXTS, sites="blocks.*.attn.hook_pattern", pooling="none",
                                  progress=False)  # fmt: skip
    assert pattern_acts.pattern(1, 1).shape == (4, lengths[1], lengths[1])
    with pytest.raises(ValueError, match="different shapes per row"):
        _ = interp.extract(llama, tok, TEXTS, sites=["blocks.0.attn.hook_z", 1], progress=False).tensor
    pooled = interp.extract(llama, tok, TEXTS, sites=[1], progress=False)
    with pytest.raises(ValueError, match="needs pooling='none'"):
        pooled.padded()


def test_names_filter_glob_list_callable(llama, tok):
    adapter = get_adapter(llama)
    by_glob = interp.extract(llama, tok, TEXTS[:1], names_filter="blocks.*.hook_mlp_out", progress=False)
    assert by_glob.sites == [f"blocks.{i}.hook_mlp_out" for i in range(4)]
    by_call = interp.extract(llama, tok, TEXTS[:1], names_filter=lambda n: n.endswith("hook_mlp_out"), progress=False)
    assert by_call.sites == by_glob.sites and torch.equal(by_call.tensor, by_glob.tensor)
    assert [s.key for s in resolve_sites(["hook_embed", 2, -1], adapter)] == [
        "hook_embed", 2, 4]  # fmt: skip
    with pytest.raises(TypeError, match="not both"):
        interp.extract(llama, tok, TEXTS[:1], sites=[1], names_filter=[2], progress=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"layers": "blocks.3.hook_resid_post"}, ValueError, r"is a site name: pass it as sites="),
        ({"sites": "blocks.9.hook_mlp_out"}, IndexError, r"block 9 does not exist; this model has blocks 0..3"),
        ({"sites": "blocks.0.hook_mlp_output"}, ValueError, r"unknown site .*docs/sites.md"),
        ({"sites": "model.layers.0.nope"}, ValueError, r"neither a site name .* nor a module path"),
        ({"sites": "model.layers.0.mlp:inputs"}, ValueError, r"may end in ':input' or ':output'"),
        ({"sites": "blocks.*.hook_nothing"}, ValueError, r"matches no site"),
        ({"sites": "hook_pos_embed"}, ValueError, r"no learned position embedding"),
        ({"sites": [7]}, IndexError, r"hidden-state indices 0..4"),
        ({"sites": [True]}, TypeError, r"a site is a name"),
    ],
)
def test_bad_sites_are_refused_before_anything_runs(llama, tok, tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        interp.extract(llama, tok, TEXTS, store=tmp_path / "s", progress=False, **kwargs)
    assert not (tmp_path / "s").exists()


def test_parallel_residual_has_no_resid_mid(tok):
    model = tiny_gpt_neox(n_layers=2)
    with pytest.raises(ValueError, match="parallel residual .* no state between them"):
        interp.extract(model, tok, TEXTS, sites="blocks.0.hook_resid_mid", progress=False)
    assert "blocks.0.hook_resid_mid" not in vocabulary(get_adapter(model))


# -- stores --------------------------------------------------------------------------------------


def test_store_roundtrip_of_mixed_sites_eager_and_lazy(llama, tok, tmp_path):
    sites = ["blocks.1.attn.hook_pattern", "blocks.0.attn.hook_z", 2, "model.layers.1.mlp.down_proj:input"]
    mem = interp.extract(llama, tok, TEXTS, sites=sites, pooling="none", batch_size=2, shard_size=3, progress=False)
    stored = interp.extract(llama, tok, TEXTS, sites=sites, pooling="none", batch_size=2, store=tmp_path / "s",
                            shard_size=3, progress=False)  # fmt: skip
    for acts in (stored, ActivationStore(tmp_path / "s").load(), ActivationStore(tmp_path / "s").load(lazy=True)):
        assert acts.sites == sites and acts.n_hidden_states == 5
        for site in sites:
            assert torch.equal(acts[site], mem[site]), site
        for j in range(len(TEXTS)):
            assert torch.equal(acts.tokens(j), mem.tokens(j)) and acts.str_tokens(j) == mem.str_tokens(j)
        assert torch.equal(acts.pattern(2, 1), mem.pattern(2, 1))
    one = ActivationStore(tmp_path / "s").load(sites=[2], lazy=True)
    assert one.sites == [2] and torch.equal(one.layer(-3), mem[2])


def test_lazy_store_is_memory_mapped(llama, tok, tmp_path):
    """A one-shard store opened lazily is not copied: its tensor views the file's pages."""
    interp.extract(llama, tok, TEXTS, store=tmp_path / "s", progress=False)
    lazy = ActivationStore(tmp_path / "s").load(lazy=True)
    whole = ActivationStore(tmp_path / "s").load()
    assert torch.equal(lazy[3], whole[3])
    from interp.extraction.shards import mmap_safetensors

    mapped = mmap_safetensors(tmp_path / "s" / "shard-00000.safetensors")
    assert torch.equal(mapped["hidden"], whole.tensor)
    lazy[3].add_(1.0)  # copy-on-write: the file is untouched
    assert torch.equal(ActivationStore(tmp_path / "s").load()[3], whole[3])
