"""interp.freeze: freezing specs against the official recipe (rebuilt here from its
definition), exact restoration, fine-tuning against an independent SGD/HF-loss
reference, determinism, the per-language loss against per-text HF losses, and the
experiment end to end."""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import warnings

import pandas as pd
import pytest
import torch

import interp
from interp.data import load_parallel
from interp.freeze import (
    FreezeSpec,
    TiedEmbeddingsWarning,
    block_to_hidden_state,
    default_conditions,
    finetune,
    freeze,
    frozen_path_layers,
    language_loss,
    official_freeze_update,
    official_selective_freeze,
    run_experiment,
    train_heldout_split,
)
from interp.models import byte_tokenizer, tiny_llama, tiny_llava

TRAIN = [
    "Tous les êtres humains naissent libres et égaux en dignité et en droits.",
    "Ils sont doués de raison et de conscience.",
    "Toute personne a droit à la vie, à la liberté et à la sûreté de sa personne.",
    "Nul ne sera tenu en esclavage ni en servitude.",
    "Nul ne sera soumis à la torture.",
    "Chacun a le droit à la reconnaissance en tous lieux de sa personnalité juridique.",
]


@pytest.fixture(scope="module")
def llama12():
    return tiny_llama(n_layers=12, d_model=32, seed=3)


def _flags(model) -> dict[str, bool]:
    return {name: p.requires_grad for name, p in model.named_parameters()}


def _state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _official_selective_grad_freeze(model, n_first=8, embed=True, final=True):
    """The official recipe as described in ../shared/reference/ilo.md section 4 (Llama paths only)."""
    for i in range(n_first + 1):
        for p in model.model.layers[i].parameters():
            p.requires_grad = False
    if embed:
        for p in model.model.embed_tokens.parameters():
            p.requires_grad = False
    if final:
        for p in model.lm_head.parameters():
            p.requires_grad = False
        for p in model.model.norm.parameters():
            p.requires_grad = False


def _expected_trainable(names, n_first: int) -> set[str]:
    """Trainable names under the official recipe, from name patterns only."""
    frozen = re.compile(
        r"^model\.layers\.(" + "|".join(str(i) for i in range(n_first + 1)) + r")\.|^model\.embed_tokens\.|"
        r"^model\.norm\.|^lm_head\."
    )
    return {n for n in names if not frozen.match(n)}


# ------------------------------------------------------------------ the official recipe


def test_official_recipe_on_12_block_llama(llama12):
    model = llama12
    before = _flags(model)
    names = list(before)
    expected = _expected_trainable(names, 8)
    assert expected == {n for n in names if re.match(r"^model\.layers\.(9|10|11)\.", n)}
    with official_selective_freeze(model, n_first=8) as frozen:
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == expected
        assert set(frozen.trainable) == expected
        assert set(frozen.frozen) == set(names) - expected
        assert frozen.n_trainable == sum(p.numel() for n, p in model.named_parameters() if n in expected)
        per_block = len([n for n in names if n.startswith("model.layers.0.")])
        assert len(trainable) == 3 * per_block
    assert _flags(model) == before
    # and the literal official code (rebuilt from its definition) agrees flag by flag
    reference = copy.deepcopy(model)
    _official_selective_grad_freeze(reference, n_first=8)
    with official_selective_freeze(model, n_first=8):
        assert _flags(model) == _flags(reference)


def test_freeze_update_is_one_block_short(llama12):
    with official_freeze_update(llama12, n_first=8) as frozen:
        assert {n for n in frozen.trainable if n.startswith("model.layers.8.")}
        assert not any(n.startswith("model.layers.7.") for n in frozen.trainable)
        assert set(frozen.trainable) == _expected_trainable(_flags(llama12), 7)


@pytest.mark.gemma
def test_official_recipe_on_gemma(gemma):
    model, _ = gemma
    before = _flags(model)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied
    expected = {n for n in before if re.match(r"^model\.layers\.(9|1[0-7])\.", n)}
    assert expected == _expected_trainable(before, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TiedEmbeddingsWarning)  # both frozen: no surprise, no warning
        with official_selective_freeze(model, n_first=8) as frozen:
            assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
            assert len(expected) == 9 * 13  # 9 blocks x 13 tensors per Gemma 3 block
            assert not model.lm_head.weight.requires_grad
            assert frozen.n_trainable == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    assert _flags(model) == before
    with pytest.warns(TiedEmbeddingsWarning, match="also freezes the LM head"), freeze(model, embeddings=True):
        assert not model.lm_head.weight.requires_grad
    assert _flags(model) == before


@pytest.mark.gemma
def test_gemma_finetune_keeps_frozen_bits(gemma, tok):
    model, tokenizer = gemma
    before = _state(model)
    run = finetune(model, tokenizer, TRAIN[:1], steps=1, batch_size=1, lr=1e-3, max_length=8,
                   freeze=FreezeSpec.official(8), progress=False)  # fmt: skip
    after = dict(run.model.named_parameters())
    for name, value in before.items():
        if re.match(r"^model\.layers\.(9|1[0-7])\.", name):
            assert not torch.equal(after[name], value), name
        else:
            assert torch.equal(after[name], value), name
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the user's model untouched


# ------------------------------------------------------------------ freeze(): semantics and restoration


class Boom(RuntimeError):
    pass


def test_context_manager_restores_after_exception(llama12):
    model = llama12
    model.model.layers[10].mlp.requires_grad_(False)  # non-default flags must come back too
    try:
        before = _flags(model)
        with pytest.raises(Boom), freeze(model, blocks=[0, 1, -1], embeddings=True) as frozen:
            assert not model.model.layers[11].self_attn.q_proj.weight.requires_grad  # -1 = last block
            assert not model.model.embed_tokens.weight.requires_grad
            assert model.model.layers[2].mlp.up_proj.weight.requires_grad
            # frozen lists only what this call switched off (layers.10.mlp was already frozen)
            assert not any(n.startswith("model.layers.10.") for n in frozen.frozen)
            model.model.layers[10].mlp.requires_grad_(True)  # the body changes flags too
            raise Boom
        assert _flags(model) == before
        handle = freeze(model, blocks=range(3))  # plain call, then restore()
        assert not model.model.layers[2].mlp.up_proj.weight.requires_grad
        handle.restore()
        handle.restore()  # idempotent
        assert _flags(model) == before
    finally:
        model.model.layers[10].mlp.requires_grad_(True)


def test_overlapping_handles_restore_lifo_or_raise():
    """Two handles on one model: restoring the older first would leave block 0 frozen at the end (the newer
    handle saved it frozen); it must raise and change nothing. Reverse order restores every flag."""
    model = tiny_llama(n_layers=3, d_model=16, seed=2)
    original = _flags(model)
    older = freeze(model, blocks=[0])
    newer = freeze(model, blocks=[0, 1])
    both = _flags(model)
    assert {n for n, f in both.items() if not f} == {
        n for n in both if n.startswith(("model.layers.0.", "model.layers.1."))
    }
    with pytest.raises(RuntimeError, match="restore the newer one first"):
        older.restore()
    assert _flags(model) == both and older.active
    newer.restore()
    assert {n for n, f in _flags(model).items() if not f} == {n for n in both if n.startswith("model.layers.0.")}
    older.restore()
    assert _flags(model) == original
    # nested with-blocks are LIFO by construction, also when the body raises
    with pytest.raises(KeyError), freeze(model, blocks=[2]), freeze(model, blocks=[0]):
        raise KeyError("boom")
    assert _flags(model) == original
    # a handle of another model does not interfere
    other = tiny_llama(n_layers=3, d_model=16, seed=2)
    first, second = freeze(model, blocks=[1]), freeze(other, blocks=[1])
    first.restore()
    second.restore()
    assert _flags(model) == original == _flags(other)


def test_spec_helpers_hand_computed():
    assert block_to_hidden_state(0) == 1 and block_to_hidden_state(8) == 9
    official = FreezeSpec.official(8)
    assert official.blocks == tuple(range(9)) and official.embeddings and official.final_norm and official.lm_head
    assert official.describe() == "blocks 0-8, embeddings, final norm, LM head"
    assert FreezeSpec(blocks=[5, 0, 1, 3, 2]).describe() == "blocks 0-3,5"
    assert FreezeSpec(blocks=[-1, 0]).block_indices(12) == [0, 11]
    # Llama has no parameter outside embeddings, blocks, final norm, LM head: hidden states 0..9 depend
    # only on embeddings + blocks 0..8
    llama12 = tiny_llama(n_layers=12, d_model=16, seed=3)
    assert frozen_path_layers(llama12, official) == 10
    assert frozen_path_layers(llama12, FreezeSpec(blocks=range(3))) == 0  # embeddings train
    assert frozen_path_layers(llama12, {"blocks": [0, 2], "embeddings": True}) == 2
    assert frozen_path_layers(llama12, None) == 0
    llama4 = tiny_llama(n_layers=4, d_model=16, seed=3)
    assert frozen_path_layers(llama4, FreezeSpec(blocks=range(4), embeddings=True, final_norm=True, lm_head=True)) == 5
    assert frozen_path_layers(llama4, FreezeSpec(blocks=range(4), embeddings=True)) == 4
    llama4.model.layers[1].requires_grad_(False)  # already frozen by the user: counts as frozen
    assert frozen_path_layers(llama4, FreezeSpec(blocks=[0, 2], embeddings=True)) == 4
    # GPT-2: hidden state 0 = wte + wpe; embeddings=True leaves the position embedding trainable
    gpt2 = _gpt2()
    assert frozen_path_layers(gpt2, FreezeSpec(blocks=range(3), embeddings=True, final_norm=True)) == 0
    assert frozen_path_layers(gpt2, FreezeSpec(blocks=[0], embeddings=True, modules=("transformer.wpe",))) == 2
    assert FreezeSpec.coerce({"blocks": 2}) == FreezeSpec(blocks=(2,))
    assert default_conditions(18) == {"full": None, "frozen_0-8": FreezeSpec.official(8)}
    assert default_conditions(4) == {"full": None, "frozen_0-2": FreezeSpec.official(2)}
    assert default_conditions(1) == {"full": None}


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=64, n_positions=64))


def _neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    return GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=2,
                                            intermediate_size=64, vocab_size=64))  # fmt: skip


@pytest.mark.parametrize(
    ("build", "frozen_pattern", "tied"),
    [
        (_gpt2, r"^transformer\.(h\.1\.|wte\.|ln_f\.)", True),
        (_neox, r"^(gpt_neox\.(layers\.1\.|embed_in\.|final_layer_norm\.)|lm_head\.)", False),
        (
            lambda: tiny_llava(n_layers=3),
            r"^(model\.language_model\.(layers\.1\.|embed_tokens\.|norm\.)|lm_head\.)",
            False,
        ),
        (lambda: tiny_llama(n_layers=3).model, r"^(layers\.1\.|embed_tokens\.|norm\.)", False),
    ],
    ids=["gpt2", "gpt-neox", "llava", "bare-llama"],
)
def test_every_adapter_architecture(build, frozen_pattern, tied):
    model = build()
    before = _flags(model)
    has_head = interp.get_adapter(model).lm_head is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handle = freeze(model, blocks=1, embeddings=True, final_norm=True, lm_head=has_head)
    assert not [w for w in caught if issubclass(w.category, TiedEmbeddingsWarning)]
    expected_frozen = {n for n in before if re.match(frozen_pattern, n)}
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == expected_frozen
    handle.restore()
    assert _flags(model) == before
    if tied:
        with pytest.warns(TiedEmbeddingsWarning), freeze(model, lm_head=True):
            assert not model.transformer.wte.weight.requires_grad


def test_llava_extra_modules():
    model = tiny_llava(n_layers=2)
    with freeze(model, modules=["model.vision_tower", "model.multi_modal_projector"]) as frozen:
        assert set(frozen.frozen) == {n for n, _ in model.named_parameters() if ".vision_tower." in f".{n}"
                                      or "multi_modal_projector" in n}  # fmt: skip
        assert all(n.startswith(("model.language_model.", "lm_head.")) for n in frozen.trainable)


# ------------------------------------------------------------------ bad input


def test_bad_input_errors(llama12, tok):
    model = llama12
    before = _flags(model)
    with pytest.raises(IndexError, match=r"block index 12 is out of range.*12 decoder blocks.*hidden-state index i\+1"):
        freeze(model, blocks=[0, 12])
    with pytest.raises(IndexError, match="out of range"):
        official_selective_freeze(model, n_first=12)  # blocks 0..12 on a 12-block model
    with pytest.raises(ValueError, match="would leave no parameter .* trainable"):
        freeze(model, blocks=range(12), embeddings=True, final_norm=True, lm_head=True)
    with pytest.raises(ValueError, match="nothing to train"), freeze(model, blocks=range(12), embeddings=True,
                                                                    final_norm=True):  # fmt: skip
        model.lm_head.weight.requires_grad_(False)
        finetune(model, tok, TRAIN, steps=1, progress=False)
    assert _flags(model) == before  # failed calls change nothing
    with pytest.raises(ValueError, match="would leave no parameter"):
        finetune(model, tok, TRAIN, steps=1, freeze={"blocks": range(12), "embeddings": True, "final_norm": True,
                                                     "lm_head": True}, progress=False)  # fmt: skip
    with pytest.raises(TypeError, match="blocks must"):
        freeze(model, blocks="0-8")
    with pytest.raises(TypeError, match="blocks must contain ints"):
        freeze(model, blocks=[1.5])
    with pytest.raises(ValueError, match="not a submodule"):
        freeze(model, modules=["model.nope"])
    with pytest.raises(ValueError, match="has no LM head"):
        freeze(model.model, lm_head=True)
    with pytest.raises(ValueError, match="n_first must be an int >= 0"):
        official_selective_freeze(model, n_first=-1)
    with pytest.raises(TypeError, match="unknown freezing option"):
        FreezeSpec.coerce({"layers": [1]})
    with pytest.raises(TypeError, match="either spec= or"):
        freeze(model, blocks=[1], spec=FreezeSpec(blocks=(2,)))
    with pytest.raises(ValueError, match="is empty"):
        finetune(model, tok, [], steps=1, progress=False)
    with pytest.raises(TypeError, match="not a single string"):
        finetune(model, tok, "one text", steps=1, progress=False)
    with pytest.raises(ValueError, match="fewer than 2 tokens"):
        finetune(model, tok, ["", ""], steps=1, progress=False)  # byte tokenizer: "" -> <bos> only
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        finetune(model, tok, TRAIN, steps=0, progress=False)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        finetune(model, tok, TRAIN, steps=1, lr=-1.0, progress=False)
    with pytest.raises(ValueError, match="bf16 must be"):
        finetune(model, tok, TRAIN, steps=1, bf16="yes", progress=False)
    corpus = load_parallel("cldr", langs=["eng_Latn", "fra_Latn"]).head(6)
    with pytest.raises(ValueError, match="'base' is the untrained model"):
        run_experiment(model, tok, TRAIN, corpus, {"base": None}, progress=False)
    with pytest.raises(IndexError, match="out of range"):  # before any training
        run_experiment(model, tok, TRAIN, corpus, {"frozen": FreezeSpec.official(20)}, progress=False)
    with pytest.raises(ValueError, match="is empty"):
        run_experiment(model, tok, [], corpus, progress=False)
    with pytest.raises(KeyError, match="not in the corpus"):
        train_heldout_split(corpus, "deu_Latn")
    with pytest.raises(ValueError, match="n_train must be an int with 1 <= n_train"):
        train_heldout_split(corpus, "fra_Latn", 5)
    assert _flags(model) == before


# ------------------------------------------------------------------ fine-tuning


def test_finetune_frozen_bit_identical_trainable_changed(llama12, tok):
    model = llama12
    before = _state(model)
    flags = _flags(model)
    rng = torch.get_rng_state()
    run = finetune(model, tok, TRAIN, steps=3, batch_size=2, lr=1e-3, freeze=FreezeSpec.official(8), progress=False)
    expected = _expected_trainable(before, 8)
    assert set(run.trainable) == expected and set(run.frozen) == set(before) - expected
    for name, p in run.model.named_parameters():
        if name in expected:
            assert not torch.equal(p, before[name]), f"{name} should have trained"
        else:
            assert torch.equal(p, before[name]), f"{name} should be frozen"
    assert run.model is not model
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # deep copy trained
    assert _flags(run.model) == flags and _flags(model) == flags  # flags restored on the copy
    assert not run.model.training  # the caller's mode (eval) is kept
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG was forked
    assert list(run.history["step"]) == [1, 2, 3] and run.history["loss"].notna().all()
    assert run.n_trainable == sum(p.numel() for n, p in model.named_parameters() if n in expected)


def test_finetune_deterministic(tok):
    model = tiny_llama(n_layers=2, d_model=32, seed=1)
    kwargs = {"steps": 3, "batch_size": 2, "grad_accum": 2, "lr": 1e-3, "progress": False}
    a = finetune(model, tok, TRAIN, seed=7, **kwargs).model
    b = finetune(model, tok, TRAIN, seed=7, **kwargs).model
    c = finetune(model, tok, TRAIN, seed=8, **kwargs).model
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_finetune_nonfinite_loss_leaves_inplace_model_intact(tok):
    """An infinite embedding row makes step 1's loss NaN: the error comes before any update, so the
    model trained in place keeps every weight bit-identical, with flags and train/eval modes restored."""
    model = tiny_llama(n_layers=2, d_model=32, seed=1).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight[tok("T")["input_ids"][-1]] = float("inf")  # "T" starts TRAIN[0]
    before, flags = _state(model), _flags(model)
    with pytest.raises(FloatingPointError, match="step 1, so no update was applied"):
        finetune(model, tok, TRAIN[:1], steps=2, batch_size=1, lr=1e-2, inplace=True, progress=False)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())
    assert _flags(model) == flags and not model.training


def test_finetune_inplace(tok):
    model = tiny_llama(n_layers=2, d_model=32, seed=1)
    before = _state(model)
    run = finetune(model, tok, TRAIN, steps=1, batch_size=2, lr=1e-2, inplace=True, progress=False)
    assert run.model is model
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, before["model.layers.0.mlp.up_proj.weight"])


@pytest.mark.parametrize(("batch_size", "grad_accum"), [(4, 1), (2, 2), (1, 4)])
def test_one_sgd_step_matches_reference(tok, batch_size, grad_accum):
    """One SGD step on 4 texts of different lengths == w - lr * grad of HF's own token-mean loss
    over the whole batch: token-weighted gradient accumulation, frozen parts untouched."""
    model = tiny_llama(n_layers=3, d_model=32, seed=2)
    texts = TRAIN[:4]
    lr = 0.5
    run = finetune(model, tok, texts, steps=1, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                   optimizer="sgd", max_grad_norm=None, freeze={"blocks": [0]}, progress=False)  # fmt: skip

    reference = copy.deepcopy(model).train()
    batch = tok(texts, return_tensors="pt", padding=True, padding_side="right")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    loss.backward()
    assert math.isclose(run.history["loss"].iloc[0], float(loss.detach()), rel_tol=1e-5)
    trained = dict(run.model.named_parameters())
    moved = 0.0
    for name, p in reference.named_parameters():
        if name.startswith("model.layers.0."):
            assert torch.equal(trained[name], p), name
            continue
        expected = p.detach() - lr * p.grad
        torch.testing.assert_close(trained[name], expected, rtol=1e-5, atol=1e-6)
        moved = max(moved, float((expected - p.detach()).abs().max()))
    assert moved > 1e-3  # the step is not trivially small


# ------------------------------------------------------------------ per-language loss


def test_language_loss_matches_per_text_hf_loss(tok):
    model = tiny_llama(n_layers=2, d_model=32, seed=4)
    corpus = load_parallel("cldr", langs=["eng_Latn", "rus_Cyrl", "zho_Hans"]).head(5)
    table = language_loss(model, tok, corpus, batch_size=3, max_length=None, progress=False)
    assert list(table["language"]) == list(corpus.langs)
    for lang in corpus.langs:
        total, count = 0.0, 0
        for text in corpus.texts[lang]:
            ids = tok(text, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                mean = model(input_ids=ids, labels=ids).loss.double()
            total += float(mean) * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
        row = table.set_index("language").loc[lang]
        assert row["n_tokens"] == count and row["n_texts"] == 5
        assert math.isclose(row["loss"], total / count, rel_tol=1e-5)
        assert math.isclose(row["perplexity"], math.exp(total / count), rel_tol=1e-5)


# ------------------------------------------------------------------ the experiment


def test_train_heldout_split_is_item_disjoint():
    corpus = load_parallel("cldr", langs=["eng_Latn", "fra_Latn", "deu_Latn"]).head(20)
    train, held = train_heldout_split(corpus, "fra_Latn", 0.25, seed=3)
    assert len(train) == 5 and held.n_items == 15 and held.langs == corpus.langs
    train_ids = [i for i in corpus.ids if i not in held.ids]
    assert train == [corpus.texts["fra_Latn"][corpus.ids.index(i)] for i in train_ids]
    assert list(held.ids) == [i for i in corpus.ids if i in set(held.ids)]  # order kept


def test_experiment_end_to_end(tok, tmp_path):
    model = tiny_llama(n_layers=12, d_model=32, seed=5)
    before = _state(model)
    flags = _flags(model)
    corpus = load_parallel("cldr", langs=["eng_Latn", "fra_Latn", "rus_Cyrl"]).head(24)
    train, held = train_heldout_split(corpus, "fra_Latn", 0.5)
    result = run_experiment(model, tok, train, held, train_language="fra_Latn", steps=3, batch_size=4, lr=1e-3,
                            progress=False)  # fmt: skip
    names = ["base", "full", "frozen_0-8"]
    assert list(result.conditions["condition"]) == names
    assert len(result.ilo) == 3 * 13 * 3 and len(result.ilo_by_layer) == 3 * 13 and len(result.loss) == 3 * 3
    # the base condition is the ILO of the untouched model
    texts, langs, ids = held.flat()
    acts = interp.extract(model, tok, texts, labels=langs, ids=[str(i) for i in ids], progress=False)
    direct = interp.ilo.score(acts).table
    base = result.ilo[result.ilo["condition"] == "base"].reset_index(drop=True)
    assert (base["ilo"].to_numpy() == direct["ilo"].to_numpy()).all()
    assert (base["delta_ilo"] == 0).all()
    # hidden states 0..9 depend only on frozen parameters: exactly unchanged; 10..12 are not marked
    frozen = result.ilo_by_layer[result.ilo_by_layer["condition"] == "frozen_0-8"].set_index("layer")
    assert list(frozen.index[frozen["frozen_path"]]) == list(range(10))
    frozen_rows = result.ilo[(result.ilo["condition"] == "frozen_0-8") & (result.ilo["layer"] <= 9)]
    assert (frozen_rows["delta_ilo"] == 0).all()
    assert not result.ilo_by_layer.loc[result.ilo_by_layer["condition"] == "full", "frozen_path"].any()
    loss = result.loss.set_index(["condition", "language"])
    assert (loss.loc["base", "delta_loss"] == 0).all()
    assert loss["is_train_language"].sum() == 3
    assert math.isclose(loss.loc[("full", "fra_Latn"), "delta_loss"],
                        loss.loc[("full", "fra_Latn"), "loss"] - loss.loc[("base", "fra_Latn"), "loss"])  # fmt: skip
    assert loss.loc[("full", "fra_Latn"), "loss"] != loss.loc[("frozen_0-8", "fra_Latn"), "loss"]
    assert list(result.training.groupby("condition").size()) == [3, 3]
    # the base model is untouched
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()) and _flags(model) == flags
    files = result.save(tmp_path)
    for name in files:
        assert (tmp_path / name).stat().st_size > 0
    assert {"delta_ilo.png", "loss_change.png", "ilo_by_condition.png", "ilo.csv", "loss.csv"} <= set(files)


def _byte_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    from interp.models.tiny import BYTE_VOCAB_SIZE

    torch.manual_seed(1)
    return GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=32, n_head=2, vocab_size=BYTE_VOCAB_SIZE, n_positions=256))


def _hidden_states(model, tok, texts):
    """Per text, the HF hidden states ``[L+1, T, D]`` in eval mode."""
    mode = model.training
    model.eval()
    with torch.no_grad():
        out = [torch.stack(model(**tok(t, return_tensors="pt"), output_hidden_states=True).hidden_states)
               for t in texts]  # fmt: skip
    model.train(mode)
    return out


def test_experiment_gpt2_frozen_path_is_observed_identity(tok):
    """GPT-2 adds a learned position embedding to hidden state 0: freezing the token embeddings alone
    does not keep any state fixed. ``frozen_path`` must agree with which hidden states actually stay
    bit-identical after fine-tuning (observed on a separate, identically seeded fine-tune)."""
    model = _byte_gpt2()
    corpus = load_parallel("cldr", langs=["eng_Latn", "fra_Latn"]).head(6)
    train, held = train_heldout_split(corpus, "fra_Latn", 0.5)
    specs = {"emb": FreezeSpec(blocks=range(2), embeddings=True, final_norm=True, lm_head=True),
             "emb+wpe": FreezeSpec(blocks=range(2), embeddings=True, final_norm=True, lm_head=True,
                                   modules=("transformer.wpe",))}  # fmt: skip
    result = run_experiment(model, tok, train, held, specs, steps=2, batch_size=2, lr=1e-2, k=3, t=2, progress=False)
    texts = held.flat()[0]
    base_states = _hidden_states(model, tok, texts)
    table = result.ilo_by_layer.set_index(["condition", "layer"])["frozen_path"]
    marked = {}
    for name, spec in specs.items():
        trained = finetune(model, tok, train, steps=2, batch_size=2, lr=1e-2, freeze=spec, progress=False).model
        states = _hidden_states(trained, tok, texts)
        identical = [all(torch.equal(a[h], b[h]) for a, b in zip(base_states, states, strict=True)) for h in range(5)]
        marked[name] = [bool(table[name, h]) for h in range(5)]
        assert marked[name] == identical, name
    assert marked == {"emb": [False] * 5, "emb+wpe": [True, True, True, False, False]}


def test_cli_freeze_experiment(tmp_path):
    from interp.cli.freeze import add_parser as add_freeze_parser

    model_dir = tmp_path / "tiny"
    tiny_llama(n_layers=4, d_model=32, seed=6).save_pretrained(model_dir)
    byte_tokenizer().save_pretrained(model_dir)
    parser = argparse.ArgumentParser(prog="interp")
    add_freeze_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    args = parser.parse_args(["freeze-experiment", "--model", str(model_dir), "--train", "eval:fra_Latn",
                              "--eval", "cldr", "--langs", "eng_Latn,fra_Latn,deu_Latn", "--max-items", "16",
                              "--n-first", "1", "--steps", "2", "--batch-size", "2", "--out", str(out),
                              "--quiet"])  # fmt: skip
    assert args.func(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["outputs"]) == {"ilo.csv", "ilo_by_layer.csv", "loss.csv", "training.csv", "conditions.csv",
                                        "ilo_by_condition.png", "delta_ilo.png", "loss_change.png",
                                        "README.md"}  # fmt: skip
    readme = (out / "README.md").read_text()
    for name in manifest["outputs"]:
        assert f"`{name}`" in readme or name == "README.md"
    for column in ("delta_ilo", "frozen_path", "ppl_ratio", "is_train_language"):
        assert f"`{column}`" in readme
    assert [c["condition"] for c in manifest["conditions"]] == ["base", "full", "frozen_0-1"]
    assert manifest["corpus"]["n_train_texts"] == 8 and manifest["corpus"]["n_eval_items"] == 8
    assert manifest["summary"]["base"]["mean_delta_ilo"] == 0.0
    for name in manifest["outputs"]:
        assert (out / name).stat().st_size > 0


def _cli_args(*extra):
    from interp.cli.freeze import add_parser as add_freeze_parser

    parser = argparse.ArgumentParser(prog="interp")
    add_freeze_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["freeze-experiment", "--train", "eval:fra_Latn", *extra])


def test_cli_train_items_count_or_fraction(capsys):
    count = _cli_args("--train-items", "5").train_items
    assert count == 5 and isinstance(count, int)
    fraction = _cli_args("--train-items", "0.25").train_items
    assert fraction == 0.25 and isinstance(fraction, float)
    corpus = load_parallel("cldr", langs=["eng_Latn", "fra_Latn"]).head(20)
    train, held = train_heldout_split(corpus, "fra_Latn", count)  # the integer-count path: 5 items
    assert len(train) == 5 and held.n_items == 15
    for bad in ("abc", "1.5", "0.0"):
        with pytest.raises(SystemExit):
            _cli_args("--train-items", bad)
        assert "--train-items" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("n_first", "recipe", "message"),
    [("x", "official", "'x' is not an integer"), ("4,", "official", "'' is not an integer"),
     ("-1", "official", "n_first >= 0"), ("0", "update", "n_first >= 1"), ("2,0", "update", "n_first >= 1")],
)  # fmt: skip
def test_cli_n_first_errors(n_first, recipe, message):
    args = _cli_args("--n-first", n_first, "--recipe", recipe, "--model", "/nonexistent")
    with pytest.raises(SystemExit, match=re.escape(message)):
        args.func(args)  # rejected before the corpus or the model is loaded


def test_cli_n_first_conditions():
    from interp.cli.freeze import conditions_from_args as _conditions

    names = _conditions(_cli_args("--n-first", "1", "--recipe", "update"))
    assert names == {"full": None, "frozen_0-0": FreezeSpec(blocks=(0,), embeddings=True, final_norm=True,
                                                           lm_head=True)}  # fmt: skip
    assert list(_conditions(_cli_args("--n-first", "0,3"))) == ["full", "frozen_0-0", "frozen_0-3"]
    assert _conditions(_cli_args("--n-first", "none")) == {"full": None}


# ------------------------------------------------------------------ several seeds (issue 16)


def test_seed_intervals_by_hand():
    from interp.freeze import seed_intervals, t_interval

    table = pd.DataFrame({"condition": ["full"] * 3 + ["frozen"] * 3, "seed": [0, 1, 2] * 2,
                          "delta": [1.0, 2.0, 6.0, 0.5, 0.5, 0.5]})  # fmt: skip
    out = seed_intervals(table, ["condition"], "delta").set_index("condition")
    # full: mean 3, sd sqrt(((−2)² + (−1)² + 3²) / 2) = sqrt(7); t(0.975, 2) = 4.302652729911275
    half = 4.302652729911275 * 7**0.5 / 3**0.5
    assert out.loc["full", ["n_seeds", "mean", "sd"]].tolist() == pytest.approx([3, 3.0, 7**0.5])
    assert out.loc["full", ["ci_low", "ci_high"]].tolist() == pytest.approx([3 - half, 3 + half])
    assert out.loc["frozen", ["mean", "sd", "ci_low", "ci_high"]].tolist() == pytest.approx([0.5, 0, 0.5, 0.5])
    assert list(out.index) == ["full", "frozen"]  # first-appearance order
    mean, sd, low, high = t_interval([2.0])
    assert mean == 2.0 and all(math.isnan(v) for v in (sd, low, high))  # one seed: no interval
    with pytest.raises(KeyError, match="no column"):
        seed_intervals(table, ["layer"], "delta")


def test_evaluate_condition_matches_its_parts(tok):
    from interp.freeze import evaluate_condition

    model = tiny_llama(n_layers=3, d_model=32, seed=2)
    corpus = load_parallel("cldr", langs=["eng_Latn", "fra_Latn", "deu_Latn"]).head(8)
    heldout = corpus.head(4)
    ilo, loss = evaluate_condition(model, tok, "x", corpus, heldout, k=3, t=2, eval_batch_size=3, progress=False)
    texts, langs, ids = corpus.flat()
    acts = interp.extract(model, tok, texts, labels=langs, ids=[str(i) for i in ids], progress=False)
    direct = interp.ilo.score(acts, k=3, t=2).table
    assert (ilo["condition"] == "x").all() and ilo.drop(columns="condition").equals(
        direct[["layer", "language", "bridge", "reach", "reach_raw", "ilo"]]
    )
    expected = language_loss(model, tok, heldout, batch_size=3, progress=False)
    assert loss.drop(columns="condition").equals(expected)
