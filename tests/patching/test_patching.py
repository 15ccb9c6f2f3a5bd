"""Acceptance: patching a site changes the logits exactly as the manual float64 forward with that
activation edited (tests/sites_reference.py: zero, add, mean, replace, functions, at positions and
heads, attention patterns included); writing a run's own activation back is bit-identical; the
model is bit-identical afterwards, also after an exception inside a patch function; the
patching sweep equals one patched run per (site, position)."""

from __future__ import annotations

import copy

import pytest
import torch
from sites_reference import reference_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import interp
from interp import patching
from interp.models import tiny_gpt2, tiny_gpt_neox, tiny_llama
from interp.models.attention import HOOKS_ATTR

TEXT = "The cat sat."
# a float64 model against the float64 manual forward: HF's RMSNorm computes in float32 internally, so they agree
# to ~1e-7 (measured 5e-8 / 0.5 on tiny Llama); every edit here moves the logits by more than 1e-3
TOL = 1e-6


def zeroed(value, positions=None, heads=None):
    """The manual edit: ``value [T, *feature]`` with the selection set to 0."""
    out = value.clone()
    rows = torch.arange(value.shape[0]) if positions is None else torch.tensor(positions)
    if heads is None:
        out[rows] = 0
    else:
        out[rows[:, None], torch.tensor(heads)[None, :]] = 0
    return out


class Edit:
    """A manual edit of one site in :func:`reference_forward`."""

    def __init__(self, site: str, fn):
        self.site, self.fn = site, fn

    def __call__(self, name, value):
        return self.fn(value) if name == self.site else value


def logits_of(model, ids, patches=None, **kwargs):
    if patches is None:
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0]
    return interp.run_with_patches(model, torch.tensor([ids]), patches, **kwargs)[0]


def assert_matches_manual(model64, ids, patches, edit, **kwargs):
    got = logits_of(model64, ids, patches, **kwargs)
    expected = reference_forward(model64, ids, edit)["logits"]
    plain = reference_forward(model64, ids)["logits"]
    assert (expected - plain).abs().max() > 1e-3, "the edit must change the logits for the test to mean anything"
    assert (got - expected).abs().max() <= TOL * expected.abs().max(), (got - expected).abs().max()


FAMILIES = {
    "llama": lambda: tiny_llama(n_layers=2, seed=3),
    "gpt2": lambda: tiny_gpt2(n_layers=2, seed=3),
    "gpt_neox": lambda: tiny_gpt_neox(n_layers=2, seed=3),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def model64(request):
    return FAMILIES[request.param]().double()


def test_zero_ablation_of_each_site_kind_equals_the_manual_forward(model64, tok):
    ids = tok(TEXT)["input_ids"]
    cases = [
        ("blocks.1.hook_mlp_out", {}, lambda v: zeroed(v)),
        ("blocks.0.hook_attn_out", {}, lambda v: zeroed(v)),
        ("blocks.0.hook_resid_post", {"positions": [2, -1]}, lambda v: zeroed(v, [2, len(ids) - 1])),
        ("blocks.1.attn.hook_z", {"positions": [3], "heads": [1, 2]}, lambda v: zeroed(v, [3], [1, 2])),
        ("blocks.0.attn.hook_pattern", {"heads": [0]}, lambda v: zeroed(v, None, [0])),
        ("hook_embed", {"positions": [1]}, lambda v: zeroed(v, [1])),
    ]
    for site, selection, manual in cases:
        assert_matches_manual(model64, ids, {site: "zero"}, Edit(site, manual), **selection)


def test_steering_mean_replace_and_functions_equal_the_manual_forward(tok):
    model64 = tiny_llama(n_layers=2, seed=3).double()
    ids = tok(TEXT)["input_ids"]
    T, d = len(ids), 64
    g = torch.Generator().manual_seed(0)
    vector = torch.randn(d, generator=g, dtype=torch.float64)
    value = torch.randn(T, d, generator=g, dtype=torch.float64)
    reference_acts = interp.extract(model64, tok, ["Dogs bark.", "Birds fly south."], sites=["blocks.1.hook_mlp_out"],
                                    pooling="none", dtype=torch.float64, progress=False)  # fmt: skip
    mean = reference_acts["blocks.1.hook_mlp_out"].mean(0)
    cases = [
        ({"blocks.0.hook_resid_post": patching.add(vector, scale=3.0)}, Edit("blocks.0.hook_resid_post",
                                                                             lambda v: v + 3.0 * vector)),
        ({"blocks.1.hook_mlp_out": patching.mean(reference_acts, positions=[0, 2])},
         Edit("blocks.1.hook_mlp_out", lambda v: torch.cat([mean[None], v[1:2], mean[None], v[3:]]))),
        ({"blocks.0.hook_resid_mid": value}, Edit("blocks.0.hook_resid_mid", lambda v: value)),
        ({"model.layers.1.mlp.down_proj:input": lambda a, site: a * 2}, Edit("model.layers.1.mlp.down_proj:input",
                                                                             lambda v: v * 2)),
        ({1: patching.replace(value, positions=[-1])},  # hidden state 1 = the output of block 0
         Edit("blocks.0.hook_resid_post", lambda v: torch.cat([v[:-1], value[-1:]]))),
    ]  # fmt: skip
    for patches, edit in cases:
        assert_matches_manual(model64, ids, patches, edit)


def test_pattern_edit_recomputes_the_heads_output(tok):
    """A function on the pattern (here: attend only to BOS in head 3) reaches the output as probs · V."""
    model64 = tiny_llama(n_layers=2, seed=3).double()
    ids = tok(TEXT)["input_ids"]

    def to_bos(pattern, site=None):  # [.., query, head, key] in the patch and in the reference
        out = pattern.clone()
        out[..., 3, :] = 0
        out[..., 3, 0] = 1
        return out

    assert_matches_manual(model64, ids, {"blocks.1.attn.hook_pattern": to_bos},
                          Edit("blocks.1.attn.hook_pattern", to_bos))  # fmt: skip


def test_float32_zero_ablation_within_float_rounding(llama, tok):
    ids = tok(TEXT)["input_ids"]
    got = logits_of(llama, ids, {"blocks.2.attn.hook_z": patching.zero(heads=[0])}).double()
    expected = reference_forward(llama, ids, Edit("blocks.2.attn.hook_z", lambda v: zeroed(v, None, [0])))["logits"]
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


class Recorder:
    """A patch function that keeps what it saw (and leaves it unchanged)."""

    def __init__(self):
        self.seen = {}

    def __call__(self, activation, site):
        self.seen[site] = activation.clone()


SITES = ["hook_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z",
         "blocks.1.hook_attn_out", "blocks.1.hook_resid_mid", "blocks.1.hook_mlp_out", "blocks.3.hook_resid_post",
         "ln_final.hook_normalized", "model.layers.2.mlp.down_proj", 2]  # fmt: skip


@pytest.mark.parametrize("site", SITES, ids=str)
def test_writing_back_a_runs_own_activation_is_bit_identical(llama, tok, site):
    batch = tok(["The cat sat on the mat.", "Dogs bark."], return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        plain = llama(**batch).logits
    record = Recorder()
    assert torch.equal(interp.run_with_patches(llama, batch, {site: record}), plain)  # observing changes nothing
    (seen,) = record.seen.values()
    for positions, heads in ((None, None), ([-1, 3], None), (None, [1]) if ".attn." in str(site) else (None, None)):
        patched = interp.run_with_patches(llama, batch, {site: patching.replace(seen, positions, heads)})
        assert torch.equal(patched, plain), (site, positions, heads)


def test_clean_states_from_extract_patch_into_the_same_text(llama, tok):
    """The recipe's input: per-token states from interp.extract patch back as a no-op (to float rounding:
    extraction runs the backbone alone)."""
    ids = torch.tensor([tok(TEXT)["input_ids"]])
    clean = interp.extract(llama, tok, [TEXT], sites=["blocks.1.hook_resid_post", "blocks.0.attn.hook_z"],
                           pooling="none", progress=False)  # fmt: skip
    plain = logits_of(llama, ids[0].tolist())
    for site in clean.sites:
        patched = interp.run_with_patches(llama, ids, {site: clean.states(0, site)})[0]
        assert (patched - plain).abs().max() <= 1e-5 * plain.abs().max()


# -- the model comes back ------------------------------------------------------------------------


def _state(model):
    modules = list(model.modules())
    return {
        "modules": [id(m) for m in modules],
        "dicts": [sorted(vars(m)) for m in modules],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules),
        "attn": model.config._attn_implementation,
        "probes": sum(HOOKS_ATTR in vars(m) for m in modules),
        "training": [m.training for m in modules],
        "params": [(p.data_ptr(), p.requires_grad) for p in model.parameters()],
    }


class Boom(RuntimeError):
    pass


def _explode(activation, site):
    raise Boom(site)


@pytest.mark.parametrize("site", ["blocks.1.hook_mlp_out", "blocks.1.attn.hook_pattern", "blocks.0.attn.hook_z"])
def test_model_bit_identical_after_an_exception_in_a_patch_function(tok, site):
    model = tiny_llama(n_layers=3, seed=5)
    model.model.layers[1].mlp.requires_grad_(False)
    ids = tok(["restore me", "and me too"], return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**ids).logits.clone()
    state = _state(model)
    with pytest.raises(Boom):
        interp.run_with_patches(model, ids, {"blocks.0.hook_resid_post": "zero", site: _explode})
    with pytest.raises(Boom), interp.patch(model, {site: "zero"}):
        raise Boom("inside the with block")
    assert _state(model) == state
    assert all("interp+sdpa" not in registry for registry in (ALL_ATTENTION_FUNCTIONS, ALL_MASK_ATTENTION_FUNCTIONS))
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, before)


def test_patch_inside_is_undone_and_nests_with_extraction(llama, tok):
    """An extraction inside a patch sees the patched model; both undo their changes."""
    state = _state(llama)
    plain = interp.extract(llama, tok, [TEXT], sites=["blocks.2.hook_resid_pre", "blocks.3.attn.hook_pattern"],
                           pooling="none", progress=False)  # fmt: skip
    with interp.patch(llama, {"blocks.1.attn.hook_pattern": "zero", "blocks.1.hook_mlp_out": "zero"}):
        inside = interp.extract(llama, tok, [TEXT], sites=plain.sites, pooling="none", progress=False)
        assert llama.config._attn_implementation == "interp+sdpa"
    assert _state(llama) == state
    assert not torch.allclose(inside["blocks.2.hook_resid_pre"], plain["blocks.2.hook_resid_pre"])
    again = interp.extract(llama, tok, [TEXT], sites=plain.sites, pooling="none", progress=False)
    assert torch.equal(again["blocks.2.hook_resid_pre"], plain["blocks.2.hook_resid_pre"])


@pytest.mark.parametrize(
    ("patches", "kwargs", "error", "message"),
    [
        ({"blocks.0.hook_mlp_out": "zero"}, {"heads": [0]}, ValueError, "heads= applies to attn.hook_z"),
        ({"blocks.0.attn.hook_z": "zero"}, {"heads": [9]}, ValueError, r"heads 0..3"),
        ({"blocks.0.hook_mlp_out": "zero"}, {"positions": "last"}, ValueError, "positions must be"),
        ({"blocks.0.hook_mlp_out": "zero"}, {"positions": [40]}, IndexError, "outside this input's"),
        ({"blocks.0.hook_mlp_out": torch.zeros(3, 64)}, {}, ValueError, "has 3 positions but the input has"),
        ({"blocks.0.hook_mlp_out": torch.zeros(7)}, {}, ValueError, "does not fit this activation"),
        ({"blocks.0.hook_mlp_out": lambda a, s: a[:, :1]}, {}, ValueError, "must return None or a tensor"),
        ({"blocks.0.hook_mlp_out": "half"}, {}, ValueError, "unknown patch"),
        ({"blocks.0.hook_mlp_out": 3}, {}, TypeError, "a patch is a tensor"),
        ({"blocks.9.hook_mlp_out": "zero"}, {}, IndexError, "block 9 does not exist"),
        ({}, {}, TypeError, "non-empty dict"),
    ],
)
def test_bad_patches_say_what_is_wrong(llama, tok, patches, kwargs, error, message):
    state = _state(llama)
    with pytest.raises(error, match=message):
        interp.run_with_patches(llama, tok([TEXT], return_tensors="pt"), patches, **kwargs)
    assert _state(llama) == state


# -- the activation-patching sweep ---------------------------------------------------------------


def test_sweep_equals_one_patched_run_per_site_and_position(tok):
    model = tiny_llama(n_layers=2, seed=7)
    clean, corrupted = "Paris is in France", "Tokyo is in Japan!"
    sites = ["blocks.*.hook_resid_pre", "blocks.1.attn.hook_z"]
    result = interp.patching_sweep(model, tok, clean, corrupted, answer="P", wrong="R", sites=sites, progress=False)
    table = result.table
    T = len(tok(clean)["input_ids"])
    assert len(table) == 3 * T and list(table.columns) == ["site", "block", "position", "token", "metric", "normalized"]
    good, bad = tok("P", add_special_tokens=False)["input_ids"][0], tok("R", add_special_tokens=False)["input_ids"][0]
    clean_ids, corrupted_ids = torch.tensor([tok(clean)["input_ids"]]), torch.tensor([tok(corrupted)["input_ids"]])
    with torch.no_grad():
        c_logits, x_logits = model(clean_ids).logits[0, -1], model(corrupted_ids).logits[0, -1]
    assert result.clean == pytest.approx(float(c_logits[good] - c_logits[bad]), abs=1e-5)
    assert result.corrupted == pytest.approx(float(x_logits[good] - x_logits[bad]), abs=1e-5)
    recorder = Recorder()
    for site in ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.attn.hook_z"):
        interp.run_with_patches(model, clean_ids, {site: recorder})
        for p in range(T):
            logits = interp.run_with_patches(model, corrupted_ids, {site: patching.replace(recorder.seen[site], [p])})
            expected = float(logits[0, -1, good] - logits[0, -1, bad])
            row = table[(table.site == site) & (table.position == p)].iloc[0]
            assert row.metric == pytest.approx(expected, abs=1e-4), (site, p)
            assert row.normalized == pytest.approx((expected - result.corrupted) / (result.clean - result.corrupted),
                                                   abs=1e-3)  # fmt: skip
            assert row.token == tok.decode(clean_ids[0, p : p + 1])
    # patching the whole residual stream before block 0 at every position restores the clean run
    first = table[table.site == "blocks.0.hook_resid_pre"]
    assert first.normalized.iloc[0] == pytest.approx(0.0, abs=1e-5)  # BOS is the same token in both
    fig = result.plot()
    assert fig.axes[0].get_xlabel() == "position (clean token)" and len(fig.axes) == 2  # heatmap + colourbar


def test_sweep_refuses_prompts_of_different_lengths_and_multi_token_answers(llama, tok):
    with pytest.raises(ValueError, match="same number of tokens, got 5 and 4"):
        interp.patching_sweep(llama, tok, "abcd", "abc", answer="x", progress=False)
    with pytest.raises(ValueError, match=r"the answer 'xy' is 2 tokens"):
        interp.patching_sweep(llama, tok, "abcd", "abce", answer="xy", progress=False)


@pytest.mark.gemma
def test_gemma_zero_ablation_equals_the_manual_forward(gemma):
    model, tokenizer = gemma
    ids = tokenizer("The Eiffel Tower is in the city of")["input_ids"]
    vocab = torch.arange(0, 262144, 997)
    for site, selection, manual in (
        ("blocks.5.hook_mlp_out", {}, lambda v: zeroed(v)),
        ("blocks.9.attn.hook_z", {"heads": [2], "positions": [-1]}, lambda v: zeroed(v, [len(ids) - 1], [2])),
    ):
        got = interp.run_with_patches(model, torch.tensor([ids]), {site: "zero"}, **selection)[0, :, vocab].double()
        expected = reference_forward(model, ids, Edit(site, manual), vocab=vocab)["logits"]
        plain = reference_forward(model, ids, vocab=vocab)["logits"]
        assert (expected - plain).abs().max() > 1e-2
        assert (got - expected).abs().max() <= 1e-4 * expected.abs().max(), (site, (got - expected).abs().max())


def test_patch_does_not_touch_a_deep_copy(llama, tok):
    twin = copy.deepcopy(llama)
    ids = tok([TEXT], return_tensors="pt")
    with interp.patch(llama, {"blocks.0.hook_mlp_out": "zero"}), torch.no_grad():
        assert torch.equal(twin(**ids).logits, twin(**ids).logits)
        assert not torch.equal(llama(**ids).logits, twin(**ids).logits)
