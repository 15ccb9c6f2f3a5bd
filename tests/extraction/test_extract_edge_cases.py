"""Adversarial review of ``interp.extract``: edge-case inputs, layer selection, padding and
batching, backends after errors, and the resumable store.

Every expected value comes from an independent reference written here: the Hugging Face model
run one text at a time, unpadded, with ``output_hidden_states=True``, pooled by hand in float64
from the definitions in docs/index.md (special = an id in ``tokenizer.all_special_ids``).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
)

import interp
from interp.extraction import ActivationStore, StoreError
from interp.extraction import api as extraction_api
from interp.models import get_adapter, tiny_llama

BACKENDS = ["hf", "transformer_lens", "nnsight"]
# "" is <bos> alone, "x" one byte: they sit in a batch with long texts, left- and right-padded
EDGE_TEXTS = ["", "x", "a considerably longer text than the rest of this batch", "mid length", "ab"]


def hf_states(
    model, tokenizer, text: str, max_length: int | None = None, backbone=None
) -> tuple[torch.Tensor, list[int]]:
    """``[L+1, T, D]`` float64 hidden states of one unpadded text, and its token ids."""
    ids = tokenizer(text)["input_ids"]
    if max_length is not None:
        ids = ids[:max_length]  # every tokenizer here puts its only added special token (BOS) first
    backbone = backbone or model.model  # HF's decoder stack without the LM head (gemma's is 262k x 640)
    with torch.no_grad():
        out = backbone(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return torch.stack(out.hidden_states)[:, 0].double(), ids


def hand_pool(states: torch.Tensor, ids: list[int], pooling: str, special_ids) -> torch.Tensor:
    if pooling == "mean":
        return states.mean(dim=1)
    if pooling == "last":
        return states[:, -1]
    if pooling == "mean_no_special":
        keep = [t for t, i in enumerate(ids) if i not in set(special_ids)]
        return states[:, keep].mean(dim=1)
    raise AssertionError(pooling)


def reference(model, tokenizer, texts, pooling: str, max_length: int | None = None, backbone=None) -> torch.Tensor:
    """``[L+1, n, D]`` float64 (pooled modes) from per-text HF runs."""
    rows = []
    for text in texts:
        states, ids = hf_states(model, tokenizer, text, max_length, backbone)
        rows.append(hand_pool(states, ids, pooling, tokenizer.all_special_ids))
    return torch.stack(rows, dim=1)


def within(got: torch.Tensor, expected: torch.Tensor, rel: float = 1e-6, atol: float = 1e-4) -> bool:
    """Per layer: |got - expected| <= atol + rel * max|layer| (gemma's residual reaches ~6e4)."""
    got, expected = got.double(), expected.double()
    scale = expected.abs().flatten(1).amax(dim=1).view(-1, *[1] * (expected.ndim - 1))
    return bool(((got - expected).abs() <= atol + rel * scale).all())


# -- layer selection -------------------------------------------------------------------------


def test_layer_selection_matches_hidden_state_numbering(llama, tok):
    full = reference(llama, tok, ["layers"], "mean")  # [5, 1, D]
    cases = [
        ("all", [0, 1, 2, 3, 4]),
        (-1, [4]),
        (0, [0]),
        ((-5, 2, 2, -3), [0, 2]),  # -5 = 0 and -3 = 2: de-duplicated, sorted
        (range(1, 3), [1, 2]),
        (np.int64(3), [3]),  # failed before the fix: "'numpy.int64' object is not iterable"
        (np.array([1, -1]), [1, 4]),  # failed before the fix: "must be ints, got np.int64(1)"
        (torch.tensor([2, 0]), [0, 2]),
    ]
    for layers, expected in cases:
        acts = interp.extract(llama, tok, ["layers"], layers=layers, progress=False)
        assert acts.layers == expected, layers
        assert within(acts.tensor, full[expected]), layers


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_subsets_on_every_backend(llama, tok, backend):
    """Embeddings only (the forward stops in block 0's pre-hook), the final norm only, an unsorted pair."""
    texts = ["subset", "", "q"]
    expected = reference(llama, tok, texts, "last")
    for layers, indices in (([0], [0]), ([-1], [4]), ([3, 1], [1, 3])):
        acts = interp.extract(
            llama, tok, texts, layers=layers, pooling="last", backend=backend, batch_size=3, padding_side="left",
            progress=False,
        )  # fmt: skip
        assert acts.layers == indices
        assert within(acts.tensor, expected[indices]), layers


@pytest.mark.parametrize("layers", [5, -6, [0, 99], np.int64(5)])
def test_layer_out_of_range(llama, tok, tmp_path, layers):
    with pytest.raises(IndexError, match=r"out of range.*0\.\.4"):
        interp.extract(llama, tok, ["x"], layers=layers, store=tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("layers", [True, [1, False], 2.0, ["1"], np.array([1.0])])
def test_layer_not_an_index(llama, tok, layers):
    with pytest.raises(TypeError, match="must be ints"):
        interp.extract(llama, tok, ["x"], layers=layers, progress=False)


# -- pooling, padding, batching ----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_texts_batch_and_padding_invariant(llama, tok, backend):
    """BOS-only and one-byte texts batched with long ones: batch 1 and 7, left and right padding."""
    expected = {pooling: reference(llama, tok, EDGE_TEXTS, pooling) for pooling in ("mean", "last")}
    for pooling, batch_size, side in [
        ("mean", 1, "right"),
        ("mean", 7, "left"),
        ("last", 7, "left"),
        ("last", 7, "right"),
    ]:
        acts = interp.extract(
            llama, tok, EDGE_TEXTS, pooling=pooling, backend=backend, batch_size=batch_size, padding_side=side,
            progress=False,
        )  # fmt: skip
        assert within(acts.tensor, expected[pooling]), (pooling, batch_size, side)


def test_mean_no_special_excludes_special_tokens_written_in_the_text(llama, tok):
    """``"a<bos>b"`` tokenises to [BOS, a, BOS, b]: the in-text BOS is a special token too.

    Failing input before the fix: the tokenizer's ``special_tokens_mask`` marks only the BOS it
    added, so the literal one was averaged in.
    """
    texts = ["a<bos>b", "plain", "<eos>x<pad>"]
    assert tok(texts[0])["input_ids"] == [257, 97, 257, 98]
    expected = reference(llama, tok, texts, "mean_no_special")
    for batch_size in (1, 3):
        acts = interp.extract(llama, tok, texts, pooling="mean_no_special", batch_size=batch_size, progress=False)
        assert within(acts.tensor, expected)


def test_mean_no_special_refuses_a_text_of_special_tokens_only(llama, tok):
    # [BOS, EOS]: nothing left to average (before the fix the EOS was averaged silently)
    with pytest.raises(ValueError, match="text 1 .* only special tokens"):
        interp.extract(llama, tok, ["fine", "<eos>"], pooling="mean_no_special", progress=False)


@pytest.mark.gemma
def test_gemma_edge_texts_and_in_text_specials(gemma):
    """Gemma's tokenizer pads on the left; ``"a<bos>b"`` and ``"<eos>x"`` hold in-text special ids.

    Tolerance: the residual reaches ~4e4 at index 6 (one float32 ulp ~4e-3), and the final norm
    (index 18) rescales that rounding by its weights: a batched pass differs from the batch-1
    reference by up to ~4e-6 of the layer's magnitude there (1e-7 elsewhere), hence rel=1e-5."""
    model, tokenizer = gemma
    texts = ["", "a<bos>b", "<eos>x", "A sentence about dignity and rights."]
    per_text = [hf_states(model, tokenizer, t) for t in texts]
    special = tokenizer.all_special_ids
    for pooling, side, layers in (("mean", "left", [0, 6, 18]), ("last", "right", [6])):
        expected = torch.stack([hand_pool(s, ids, pooling, special) for s, ids in per_text], dim=1)
        acts = interp.extract(
            model, tokenizer, texts, layers=[i - 19 for i in layers], pooling=pooling, batch_size=4,
            padding_side=side, progress=False,
        )  # fmt: skip
        assert acts.layers == layers
        assert within(acts.tensor, expected[layers], rel=1e-5), pooling
    expected = torch.stack([hand_pool(s, ids, "mean_no_special", special) for s, ids in per_text[1:]], dim=1)
    acts = interp.extract(model, tokenizer, texts[1:], layers=[6], pooling="mean_no_special", progress=False)
    assert within(acts.tensor, expected[[6]], rel=1e-5)


@pytest.mark.gemma
def test_gemma_float16_overflow_is_an_error(gemma):
    """Gemma's residual stream passes float16's 65504 (BOS alone reaches ~1e5 at index 12).

    Failing input before the fix: ``dtype=torch.float16`` returned inf without a word."""
    model, tokenizer = gemma
    states, ids = hf_states(model, tokenizer, "")
    assert states[12].abs().max() > torch.finfo(torch.float16).max  # the premise, from HF itself
    with pytest.raises(ValueError, match=r"index 12 reaches .*float16.*dtype=torch.bfloat16"):
        interp.extract(model, tokenizer, [""], layers=[12], dtype=torch.float16, progress=False)
    acts = interp.extract(model, tokenizer, [""], layers=[3, 12], dtype=torch.bfloat16, progress=False)
    assert acts.tensor.dtype == torch.bfloat16 and torch.isfinite(acts.tensor).all()
    expected = states[[3, 12]].mean(dim=1)  # [2, D]: mean over the one token
    assert torch.allclose(acts.tensor[:, 0].double(), expected, rtol=2**-8, atol=0)
    as_numpy = acts.numpy()  # NumPy has no bfloat16: widened exactly
    assert as_numpy.dtype == np.float32 and np.array_equal(as_numpy, acts.tensor.float().numpy())


def tiny_gemma3() -> Gemma3ForCausalLM:
    """A random Gemma 3 text model with a 3-token sliding window, alternating with full attention."""
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, sliding_window=3, layer_types=["sliding_attention", "full_attention"] * 2,
        max_position_embeddings=256, bos_token_id=257, eos_token_id=258, pad_token_id=256,
        attn_implementation="sdpa",
    )  # fmt: skip
    return Gemma3ForCausalLM(config).eval()


@pytest.mark.parametrize("backend", BACKENDS)
def test_sliding_window_model_padding_invariant(tok, backend):
    """Sliding-window layers see the same keys whatever the padding (positions come from the mask)."""
    model = tiny_gemma3()
    per_text = [hf_states(model, tok, t)[0] for t in EDGE_TEXTS]
    for side in ("left", "right"):
        acts = interp.extract(
            model, tok, EDGE_TEXTS, pooling="none", backend=backend, batch_size=5, padding_side=side, progress=False
        )
        for j, states in enumerate(per_text):
            assert within(acts.states(j), states), (side, j)


def test_text_with_a_lone_surrogate(llama, tok, tmp_path):
    """Failing input before the fix: "ok\\ud800" raised the tokenizer's "TextEncodeInput must be
    Union[...]" TypeError, which names neither the text nor the problem."""
    with pytest.raises(ValueError, match=r"text 1 .* not valid Unicode .*surrogate.* position 2"):
        interp.extract(llama, tok, ["fine", "ok\ud800"], store=tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def tiny_family(name: str):
    """Random GPT-2 (learned absolute positions) or GPT-NeoX (partial rotary) with a 64-token context."""
    torch.manual_seed(0)
    if name == "gpt2":
        config = GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=260, n_positions=64, bos_token_id=257)
        return GPT2LMHeadModel(config).eval()
    config = GPTNeoXConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=260,
        max_position_embeddings=64, bos_token_id=257, eos_token_id=258,
    )  # fmt: skip
    return GPTNeoXForCausalLM(config).eval()


@pytest.mark.parametrize("family", ["gpt2", "neox"])
def test_other_families_on_every_backend(tok, family):
    model = tiny_family(family)
    expected = reference(model, tok, EDGE_TEXTS, "mean", backbone=model.base_model)
    for backend in BACKENDS:
        acts = interp.extract(
            model, tok, EDGE_TEXTS, backend=backend, batch_size=5, padding_side="left", progress=False
        )
        assert within(acts.tensor, expected), backend
    # GPT-2 used to fail deep inside its position embedding ("index out of range in self")
    with pytest.raises(ValueError, match=r"text 0 .* has 101 tokens .* at most 64"):
        interp.extract(model, tok, ["a" * 100], progress=False)


# -- truncation and the model's context length --------------------------------------------------


def test_max_length_truncates_keeping_bos(llama, tok):
    texts = ["abcdefgh", "ab", "xyz"]
    for pooling in ("mean", "last"):
        acts = interp.extract(llama, tok, texts, pooling=pooling, max_length=3, batch_size=3, progress=False)
        assert within(acts.tensor, reference(llama, tok, texts, pooling, max_length=3))
    acts = interp.extract(llama, tok, texts, pooling="none", max_length=3, progress=False)
    assert acts.lengths.tolist() == [3, 3, 3]


@pytest.mark.parametrize(
    ("max_length", "error"), [(0, ValueError), (-1, ValueError), (True, TypeError), (2.5, TypeError)]
)
def test_bad_max_length(llama, tok, tmp_path, max_length, error):
    """Failing inputs before the fix: 0 meant *no* truncation, True meant 1, -1 an OverflowError."""
    with pytest.raises(error, match="max_length"):
        interp.extract(llama, tok, ["abcdef"], max_length=max_length, store=tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_text_longer_than_the_context_is_refused(tok, tmp_path):
    """tiny_llama has max_position_embeddings=2048; a 2100-byte text used to run silently past it."""
    model = tiny_llama(n_layers=2, d_model=32)
    assert model.config.max_position_embeddings == 2048
    texts = ["short", "a" * 2100]
    with pytest.raises(ValueError, match=r"text 1 .* has 2101 tokens .* at most 2048 .* max_length=2048"):
        interp.extract(model, tok, texts, store=tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()
    acts = interp.extract(model, tok, texts, max_length=2048, pooling="last", progress=False)
    expected = reference(model, tok, texts, "last", max_length=2048)
    assert within(acts.tensor, expected)


# -- backends leave the model as they found it --------------------------------------------------


class Injected(RuntimeError):
    pass


class RaiseOnCall:
    """A user's forward hook that raises on its ``n``-th call (a stand-in for an OOM mid-run)."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self, module, args, output):
        self.calls += 1
        if self.calls >= self.n:
            raise Injected(f"injected failure on call {self.calls}")


def model_state(model) -> dict:
    return {
        "values": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "storage": {k: v.data_ptr() for k, v in model.state_dict().items()},
        "modules": [
            (
                name,
                type(m),
                list(m._forward_hooks.values()),
                list(m._forward_pre_hooks.values()),
                "forward" in m.__dict__,
                m.training,
            )
            for name, m in model.named_modules()
        ],  # fmt: skip
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "config": model.config.to_dict(),
        "attn": model.config._attn_implementation,
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert before["values"].keys() == after["values"].keys()
    for key, value in before["values"].items():
        assert torch.equal(value, after["values"][key]), key
    for key in ("storage", "modules", "requires_grad", "config", "attn"):
        assert before[key] == after[key], key


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_restored_after_an_error_mid_extraction(tok, backend):
    model = tiny_llama(n_layers=3, d_model=32, seed=1)
    model.train()  # the user's mode must come back too
    model.lm_head.weight.requires_grad_(False)
    texts = ["abc", "de", "fghij", "k"]
    expected = reference(model.eval(), tok, texts, "mean")
    model.train()
    probe = torch.tensor([tok("probe")["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=probe).logits
    hook = RaiseOnCall(2)
    handle = get_adapter(model).blocks[1].register_forward_hook(hook)
    before = model_state(model)
    with pytest.raises(Injected):
        interp.extract(model, tok, texts, backend=backend, batch_size=1, progress=False)
    assert hook.calls == 2
    assert_same_state(before, model_state(model))
    handle.remove()
    with torch.no_grad():
        assert torch.equal(model(input_ids=probe).logits, logits)  # same computation, bit for bit
    acts = interp.extract(model, tok, texts, backend=backend, batch_size=3, progress=False)  # still usable
    assert within(acts.tensor, expected)
    assert model.training


def test_bare_base_model(tok, tmp_path):
    """A bare ``LlamaModel`` (no LM head): hf and nnsight extract it; TransformerLens cannot wrap it.
    Failing input before the fix: backend="transformer_lens" raised "'LlamaModel' object has no
    attribute 'model'" from inside the bridge."""
    full = tiny_llama(n_layers=2, d_model=32, seed=2)
    texts = ["bare", "", "model"]
    expected = reference(full, tok, texts, "mean")
    before = model_state(full)
    for backend in ("hf", "nnsight"):
        acts = interp.extract(
            full.model, tok, texts, backend=backend, batch_size=3, padding_side="left", progress=False
        )
        assert within(acts.tensor, expected), backend
    with pytest.raises(ValueError, match=r"transformer_lens.*LM head.*bare LlamaModel.*backend='hf'"):
        interp.extract(full.model, tok, texts, backend="transformer_lens", store=tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()
    assert_same_state(before, model_state(full))


# -- the resumable store -------------------------------------------------------------------------


def _shard_stats(store) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(store.glob("shard-*.safetensors"))}


def test_store_interrupted_by_an_exception_resumes_identically(llama, tok, tmp_path, monkeypatch):
    texts = [f"text number {i} " + "z" * (i % 5) for i in range(11)]
    ids = [f"id{i}" for i in range(11)]
    labels = ["en" if i % 2 else "fr" for i in range(11)]
    kwargs = dict(pooling="last", batch_size=2, shard_size=3, ids=ids, labels=labels, progress=False)
    clean = interp.extract(llama, tok, texts, **kwargs)
    store = tmp_path / "s"

    real_run_shard, seen = extraction_api.run_shard, []

    def failing_run_shard(runner, tokens, rows, *args):
        seen.append(rows)
        if len(seen) == 3:
            raise Injected("interrupted inside the third shard")
        return real_run_shard(runner, tokens, rows, *args)

    monkeypatch.setattr(extraction_api, "run_shard", failing_run_shard)
    with pytest.raises(Injected):
        interp.extract(llama, tok, texts, store=store, **kwargs)
    monkeypatch.setattr(extraction_api, "run_shard", real_run_shard)
    assert ActivationStore(store).progress() == (2, 4)
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore(store).load()
    assert not list(store.glob(".*tmp")), "nothing half-written"
    committed = _shard_stats(store)
    assert list(committed) == ["shard-00000.safetensors", "shard-00001.safetensors"]

    resumed = interp.extract(llama, tok, texts, store=store, **kwargs)
    assert {k: v for k, v in _shard_stats(store).items() if k in committed} == committed  # not rewritten
    assert torch.equal(resumed.tensor, clean.tensor)
    assert resumed.ids == ids and resumed.labels == labels and resumed.layers == clean.layers
    assert within(resumed.tensor, reference(llama, tok, texts, "last"))
    reloaded = ActivationStore(store).load(layers=[3])
    assert torch.equal(reloaded.tensor, clean.tensor[[3]]) and reloaded.ids == ids


def test_failed_first_shard_leaves_no_store_behind(llama, tok, tmp_path):
    """An error before any shard is committed (e.g. an OOM in the first batch) must not leave a
    store that refuses the corrected call. Failing input before the fix: the same call with a
    smaller batch_size was refused with "differs in: batch_size"."""
    texts = ["one", "two", "three"]
    store = tmp_path / "s"
    handle = get_adapter(llama).blocks[0].register_forward_hook(RaiseOnCall(1))
    try:
        with pytest.raises(Injected):
            interp.extract(llama, tok, texts, batch_size=3, store=store, progress=False)
    finally:
        handle.remove()
    assert not store.exists()
    acts = interp.extract(llama, tok, texts, batch_size=1, store=store, progress=False)
    assert within(acts.tensor, reference(llama, tok, texts, "mean"))


def test_failed_first_shard_keeps_a_directory_the_user_made(llama, tok, tmp_path):
    store = tmp_path / "mine"
    store.mkdir()
    handle = get_adapter(llama).blocks[0].register_forward_hook(RaiseOnCall(1))
    try:
        with pytest.raises(Injected):
            interp.extract(llama, tok, ["one"], store=store, progress=False)
    finally:
        handle.remove()
    assert store.is_dir() and not list(store.iterdir())


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"texts": ["one", "two", "four"]}, "texts"),
        ({"ids": ["a", "b", "c"]}, "ids"),  # before the fix both were reported as "texts"
        ({"labels": ["x", "y", "w"]}, "labels"),
        ({"max_length": 2}, "max_length"),
        ({"dtype": torch.float16}, "dtype"),
        ({"backend": "nnsight"}, "backend"),
        ({"shard_size": 2}, "shard_size"),
        ({"layers": [1, 2, 3]}, "layers"),
    ],
)
def test_store_refuses_mismatched_settings(llama, tok, tmp_path, change, key):
    base = {"texts": ["one", "two", "three"], "labels": ["x", "y", "z"], "layers": [1, 2], "shard_size": 1}
    store = tmp_path / "s"
    interp.extract(llama, tok, store=store, progress=False, **base)
    manifest = (store / "manifest.json").read_bytes()
    stats = _shard_stats(store)
    with pytest.raises(StoreError, match=rf"differs in: {key}\)"):  # only what changed is named
        interp.extract(llama, tok, store=store, progress=False, **{**base, **change})
    assert (store / "manifest.json").read_bytes() == manifest and _shard_stats(store) == stats


def test_store_from_an_earlier_version_still_resumes(llama, tok, tmp_path):
    """Stores written before this review (no "texts_only" in the manifest; cached ILO jobs live in
    ~/.cache/interp/activations) must resume, and a refusal still names what changed."""
    texts, labels = ["one", "two"], ["x", "y"]
    store = tmp_path / "s"
    first = interp.extract(llama, tok, texts, labels=labels, store=store, shard_size=1, progress=False)
    path = store / "manifest.json"
    manifest = json.loads(path.read_text())
    joint = json.dumps([texts, [0, 1], labels], ensure_ascii=False)  # the fingerprint earlier versions wrote
    assert manifest["fingerprint"]["texts"] == hashlib.sha256(joint.encode()).hexdigest()
    del manifest["texts_only"], manifest["committed"]["1"]
    path.write_text(json.dumps(manifest))
    again = interp.extract(llama, tok, texts, labels=labels, store=store, shard_size=1, progress=False)
    assert torch.equal(first.tensor, again.tensor)
    with pytest.raises(StoreError, match=r"differs in: labels\)"):
        interp.extract(llama, tok, texts, labels=["x", "z"], store=store, shard_size=1, progress=False)
    with pytest.raises(StoreError, match=r"differs in: texts\)"):
        interp.extract(llama, tok, ["one", "2"], labels=labels, store=store, shard_size=1, progress=False)


def test_store_corrupt_manifest_or_file_path(llama, tok, tmp_path):
    store = tmp_path / "s"
    interp.extract(llama, tok, ["a", "b"], store=store, progress=False)
    (store / "manifest.json").write_text('{"format": "interp.activ')  # e.g. edited by hand, truncated
    with pytest.raises(StoreError, match="not valid JSON"):
        interp.extract(llama, tok, ["a", "b"], store=store, progress=False)
    with pytest.raises(StoreError, match="not valid JSON"):
        ActivationStore(store).load()
    (store / "manifest.json").write_text("[1, 2]")
    with pytest.raises(StoreError, match="not an interp activation store"):
        ActivationStore(store).load()
    (tmp_path / "file.bin").write_bytes(b"mine")
    with pytest.raises(StoreError, match="is a file"):
        interp.extract(llama, tok, ["a"], store=tmp_path / "file.bin", progress=False)
    assert (tmp_path / "file.bin").read_bytes() == b"mine"


def test_store_refuses_other_weights(tok, tmp_path):
    store = tmp_path / "s"
    interp.extract(tiny_llama(n_layers=2, d_model=32, seed=0), tok, ["a"], store=store, progress=False)
    with pytest.raises(StoreError, match=r"differs in: weights\)"):
        interp.extract(tiny_llama(n_layers=2, d_model=32, seed=1), tok, ["a"], store=store, progress=False)


def test_store_missing_shard_recomputed(llama, tok, tmp_path):
    texts = ["p", "q", "r", "s", "t"]
    store = tmp_path / "s"
    first = interp.extract(llama, tok, texts, pooling="none", store=store, shard_size=2, progress=False)
    (store / "shard-00001.safetensors").unlink()
    with pytest.raises(StoreError, match="missing or corrupt"):
        ActivationStore(store).load()
    with pytest.warns(UserWarning, match="shard 1 is missing"):
        again = interp.extract(llama, tok, texts, pooling="none", store=store, shard_size=2, progress=False)
    assert torch.equal(first.tensor, again.tensor) and torch.equal(first.lengths, again.lengths)
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["complete"] and sorted(manifest["committed"]) == ["0", "1", "2"]


# -- ids / labels bookkeeping -------------------------------------------------------------------


def test_rows_follow_text_order_through_sorting_and_shards(llama, tok):
    """Texts of very different lengths are sorted into batches; rows must come back in input order."""
    texts = ["short", "a much much longer text here", "", "mid size", "q" * 40, "zz"]
    ids = [10, 3, 7, 1, 99, 0]
    expected = reference(llama, tok, texts, "mean")
    acts = interp.extract(
        llama, tok, texts, ids=ids, labels=tuple("abcdef"), batch_size=4, shard_size=4, progress=False
    )
    assert acts.ids == ids and acts.labels == list("abcdef")
    assert within(acts.tensor, expected)
    none = interp.extract(llama, tok, texts, pooling="none", batch_size=4, shard_size=4, progress=False)
    assert none.lengths.tolist() == [len(tok(t)["input_ids"]) for t in texts]
    for j, text in enumerate(texts):
        assert within(none.states(j), hf_states(llama, tok, text)[0])


def test_store_needs_json_metadata_before_writing(llama, tok, tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        interp.extract(llama, tok, ["a"], ids=[object()], store=tmp_path / "s", progress=False)
    assert not os.path.exists(tmp_path / "s")


# -- interp.data loaders ------------------------------------------------------------------------


def test_flores_lines_split_on_newline_only(tmp_path):
    """FLORES files hold one sentence per "\\n" line. Failing input before the fix: a sentence with
    U+2028 (or U+0085, \\x0c) was cut in two by str.splitlines(), shifting every later id."""
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "eng_Latn.dev").write_text("one\u2028still one\ntwo\x85x\nthree\r\n", encoding="utf-8")
    (tmp_path / "dev" / "fra_Latn.dev").write_text("un\ndeux\ntrois", encoding="utf-8")
    corpus = interp.data.load_parallel(f"flores200:{tmp_path}")
    assert corpus.ids == (0, 1, 2)
    assert corpus.texts["eng_Latn"] == ("one\u2028still one", "two\x85x", "three")
    assert corpus.texts["fra_Latn"] == ("un", "deux", "trois")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"lang": "en", "id": 1, "text": "a"', r"rows\.jsonl:2: not valid JSON"),
        ('["en", 1, "a"]', r"rows\.jsonl:2: expected an object"),
        ('{"lang": "en", "id": 2, "text": null}', r"rows\.jsonl:2: 'text' must be a string"),
    ],
)
def test_jsonl_bad_rows_name_the_line(tmp_path, line, message):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"lang": "en", "id": 0, "text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        interp.data.load_parallel(f"jsonl:{path}")
