"""Tiny random models and a byte tokenizer, for tests and examples (no download).

* :func:`byte_tokenizer` -- a fast tokenizer over UTF-8 bytes (ids 0-255 are the
  bytes, then ``<pad>``, ``<bos>``, ``<eos>``, ``<image>``), which prepends
  ``<bos>`` like Llama/Gemma tokenizers. It covers every script, so the tiny
  models can be run on the 31-language data.
* :func:`word_tokenizer` -- a fast tokenizer with one id per word of a closed
  vocabulary (punctuation split off, unknown words -> ``<unk>``), for toy models
  whose prompts should be a few tokens long and readable token by token.
* :func:`tiny_llama` -- a ``LlamaForCausalLM`` with a few blocks.
* :func:`tiny_gpt2`, :func:`tiny_gpt_neox` -- the other block families of the
  adapter (learned positions and a fused qkv; partial rotary and a parallel
  or sequential residual).
* :func:`tiny_llava` -- a ``LlavaForConditionalGeneration``: CLIP vision tower +
  Llama text model, with ``<image>`` as its image token.
* :func:`tiny_llava_processor` -- the matching ``LlavaProcessor`` (byte tokenizer +
  llava-hf's CLIP pre-processing: shortest edge resize, center crop).

All are deterministic for a given ``seed``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "byte_tokenizer", "word_tokenizer", "tiny_llama", "tiny_gpt2", "tiny_gpt_neox", "tiny_llava",
    "tiny_llava_processor", "BYTE_VOCAB_SIZE",
]  # fmt: skip

_SPECIALS = ("<pad>", "<bos>", "<eos>", "<image>")
#: Vocabulary size of :func:`byte_tokenizer`: 256 bytes + 4 special tokens.
BYTE_VOCAB_SIZE = 256 + len(_SPECIALS)


def byte_tokenizer():
    """A ``PreTrainedTokenizerFast`` over UTF-8 bytes that prepends ``<bos>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_chars = sorted(alphabet, key=lambda ch: _byte_of(ch))
    vocab = {ch: i for i, ch in enumerate(byte_chars)}
    for j, special in enumerate(_SPECIALS):
        vocab[special] = 256 + j
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        additional_special_tokens=["<image>"],
    )
    tokenizer.add_bos_token = True
    return tokenizer


def word_tokenizer(words):
    """A ``PreTrainedTokenizerFast`` with one id per word that prepends ``<bos>``.

    Ids: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<image>`` 3, ``<unk>`` 4, then ``words`` in the
    given order (duplicates and the special strings are skipped). Text is split at whitespace and
    every punctuation character is its own token (``"USER:"`` -> ``USER``, ``:``), so punctuation
    used in prompts must be in ``words``; anything else becomes ``<unk>``. Decoding joins tokens
    with spaces.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if isinstance(words, str):
        raise TypeError("words must be a list of strings (one per token), not a single string")
    specials = (*_SPECIALS[:4], "<unk>")
    vocab = {token: i for i, token in enumerate(specials)}
    for word in words:
        if not isinstance(word, str) or not word or any(ch.isspace() for ch in word):
            raise ValueError(f"each word must be a non-empty string without whitespace, got {word!r}")
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<image>"],
    )
    tokenizer.add_bos_token = True
    return tokenizer


def _byte_of(ch: str) -> int:
    """Inverse of GPT-2's byte-to-unicode map (used to order the byte alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    if ord(ch) in printable:
        return ord(ch)
    missing = [b for b in range(256) if b not in printable]
    return missing[ord(ch) - 256]


def _llama_config(vocab_size: int, d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, tokenizer=None,
                  init_std: float = 0.02):  # fmt: skip
    """A small Llama config whose special ids match ``tokenizer`` (default: :func:`byte_tokenizer`'s)."""
    from transformers import LlamaConfig

    ids = (257, 258, 256) if tokenizer is None else (tokenizer.bos_token_id, tokenizer.eos_token_id,
                                                      tokenizer.pad_token_id)  # fmt: skip
    return LlamaConfig(
        vocab_size=vocab_size if tokenizer is None else len(tokenizer),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=2048,
        bos_token_id=ids[0],
        eos_token_id=ids[1],
        pad_token_id=ids[2],
        initializer_range=init_std,
    )


def tiny_llama(
    n_layers: int = 4,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    vocab_size: int = BYTE_VOCAB_SIZE,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> nn.Module:
    """A randomly initialised ``LlamaForCausalLM`` (eval mode, float32)."""
    from transformers import LlamaForCausalLM

    config = _llama_config(vocab_size, d_model, n_layers, n_heads, n_kv_heads)
    config.tie_word_embeddings = False
    config._attn_implementation = attn_implementation
    config.architectures = ["LlamaForCausalLM"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def _seeded(build, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def tiny_gpt2(n_layers: int = 2, d_model: int = 64, n_heads: int = 4, seed: int = 0) -> nn.Module:
    """A randomly initialised ``GPT2LMHeadModel`` (learned absolute positions, 256-token context)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=BYTE_VOCAB_SIZE, n_positions=256, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
        bos_token_id=257, eos_token_id=258, pad_token_id=256,
    )  # fmt: skip
    config.architectures = ["GPT2LMHeadModel"]
    return _seeded(lambda: GPT2LMHeadModel(config), seed)


def tiny_gpt_neox(
    n_layers: int = 2, d_model: int = 64, n_heads: int = 4, seed: int = 0, parallel_residual: bool = True
) -> nn.Module:
    """A randomly initialised ``GPTNeoXForCausalLM`` (partial rotary; Pythia's parallel residual by default)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=BYTE_VOCAB_SIZE, hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=n_heads,
        intermediate_size=2 * d_model, max_position_embeddings=256, use_parallel_residual=parallel_residual,
        bos_token_id=257, eos_token_id=258, pad_token_id=256,
    )  # fmt: skip
    config.architectures = ["GPTNeoXForCausalLM"]
    return _seeded(lambda: GPTNeoXForCausalLM(config), seed)


def tiny_llava(
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    image_size: int = 56,
    patch_size: int = 14,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    n_kv_heads: int | None = None,
    *,
    tokenizer=None,
    vision_layers: int = 2,
    init_std: float = 0.02,
) -> nn.Module:
    """A randomly initialised LLaVA: CLIP vision tower + Llama text model.

    The patch grid is ``(image_size // patch_size)²`` image tokens per image
    (4×4 = 16 by default); the image token id is ``<image>`` of
    :func:`byte_tokenizer`, or of ``tokenizer`` (e.g. a :func:`word_tokenizer`,
    which also sets the vocabulary size and the special ids). Use
    ``attn_implementation="eager"`` where attention weights from
    ``output_attentions`` are needed; ``n_kv_heads < n_heads`` gives grouped-query
    attention. ``image_size=336`` is the LLaVA-1.5 geometry (24×24 = 576 image
    tokens). ``vision_layers`` is the vision tower's depth (LLaVA reads its
    second-to-last hidden state, so ``vision_layers - 1`` blocks shape the image
    tokens); ``init_std`` the weights' initial standard deviation (both towers).
    """
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    text = _llama_config(BYTE_VOCAB_SIZE, d_model, n_layers, n_heads, n_kv_heads or n_heads, tokenizer, init_std)
    vision = CLIPVisionConfig(
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=vision_layers,
        num_attention_heads=n_heads,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=d_model,
        initializer_range=init_std,
    )
    image_token = 256 + _SPECIALS.index("<image>") if tokenizer is None else tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token,
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        attn_implementation=attn_implementation,
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    return model.eval()


def tiny_llava_processor(image_size: int = 56, patch_size: int = 14, tokenizer=None):
    """A ``LlavaProcessor`` for :func:`tiny_llava` with the same ``image_size`` / ``patch_size``.

    Pre-processing is llava-hf's: resize the shortest edge to ``image_size``
    (bicubic), center-crop ``image_size × image_size``, CLIP mean/std. Each
    ``<image>`` in a prompt expands to ``(image_size // patch_size)²`` tokens --
    576 for ``image_size=336``, the LLaVA-1.5 geometry. ``tokenizer``: default
    :func:`byte_tokenizer`.
    """
    import warnings

    from transformers import LlavaProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # transformers >= 5 names the PIL implementation; older ones only have the slow class
            from transformers import CLIPImageProcessorPil as ImageProcessor
        except ImportError:  # pragma: no cover
            from transformers import CLIPImageProcessor as ImageProcessor
    image_processor = ImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=byte_tokenizer() if tokenizer is None else tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
    )
