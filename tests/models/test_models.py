"""Model adapter, guard, tiny models and the embedded default."""

from __future__ import annotations

import pytest
import torch
from reference import reference_states

import interp
from interp.models import DEFAULT_MODEL, cache_dir, get_adapter, preserved, tiny_llava


def test_adapter_llama(llama):
    a = get_adapter(llama)
    assert a.family == "llama" and a.n_blocks == 4 and a.n_hidden_states == 5
    assert a.blocks is llama.model.layers and a.final_norm is llama.model.norm
    assert a.embed is llama.model.embed_tokens and a.lm_head is llama.lm_head and a.backbone is llama.model
    assert get_adapter(llama.model).family == "llama-base"


def test_adapter_llava():
    model = tiny_llava()
    a = get_adapter(model)
    assert a.family == "llava" and a.blocks is model.model.language_model.layers
    assert a.final_norm is model.model.language_model.norm and a.lm_head is model.lm_head
    assert a.relative_to_backbone(a.layout.blocks) == "language_model.layers"


def test_adapter_gpt2_and_neox():
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=300, bos_token_id=0, eos_token_id=0))
    a = get_adapter(gpt2)
    assert a.family == "gpt2" and a.blocks is gpt2.transformer.h and a.final_norm is gpt2.transformer.ln_f
    neox = GPTNeoXForCausalLM(
        GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=300)
    )
    assert get_adapter(neox).family == "gpt-neox"


def test_gpt2_extraction_matches_hidden_states(tok):
    """GPT-2 blocks return tuples and add position embeddings before block 0."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=300, bos_token_id=257, eos_token_id=258)
    model = GPT2LMHeadModel(config).eval()
    texts = ["absolute positions", "a"]
    ref = torch.stack(reference_states(model, tok, texts, "mean"), dim=1)
    for backend in ("hf", "nnsight"):
        acts = interp.extract(model, tok, texts, backend=backend, batch_size=2, padding_side="left", progress=False)
        assert (acts.tensor.double() - ref).abs().max() < 1e-4, backend


def test_llava_text_extraction_matches_hidden_states(tok):
    model = tiny_llava()
    texts = ["a photo of a cat", "dog"]
    ref = torch.stack(reference_states(model, tok, texts, "mean"), dim=1)
    for backend in ("hf", "nnsight"):
        acts = interp.extract(model, tok, texts, backend=backend, batch_size=2, progress=False)
        assert acts.tensor.shape == (3, 2, 64)
        assert (acts.tensor.double() - ref).abs().max() < 1e-4, backend


def test_tiny_llava_runs_an_image(tok):
    model = tiny_llava()
    n_image = model.config.image_seq_length
    assert n_image == 16
    ids = torch.tensor([[257] + [model.config.image_token_id] * n_image + list(b"what is it")])
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
    assert out.logits.shape == (1, ids.shape[1], 260)


def test_tiny_models_are_seeded():
    from interp.models import tiny_llama

    a, b, c = tiny_llama(seed=3), tiny_llama(seed=3), tiny_llama(seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_guard_restores_swapped_children_and_config(llama):
    original = llama.model.layers[0]
    with pytest.raises(KeyError), preserved(llama):
        llama.model.layers[0] = torch.nn.Identity()
        llama.config._attn_implementation = "eager"
        llama.lm_head.weight.requires_grad_(False)
        llama.forward = lambda *a, **k: None
        raise KeyError("boom")
    assert llama.model.layers[0] is original
    assert llama.config._attn_implementation == "sdpa"
    assert llama.lm_head.weight.requires_grad and "forward" not in llama.__dict__


@pytest.mark.gemma
def test_embedded_default_offline(gemma):
    model, tokenizer = gemma
    assert (cache_dir() / DEFAULT_MODEL / "model.safetensors").is_file()
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.name_or_path == DEFAULT_MODEL
    a = get_adapter(model)
    assert (a.n_blocks, model.config.hidden_size) == (18, 640)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    ids = tokenizer("Hello world")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == 2
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer("Paris is the capital of")["input_ids"]])).logits[0, -1]
    assert tokenizer.decode(logits.argmax()).strip() == "France"  # a real trained model, not noise
