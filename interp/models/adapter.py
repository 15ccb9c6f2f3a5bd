"""Where the parts of a transformer live, per architecture family.

Every analysis in ``interp`` needs the same handful of modules: the list of
decoder blocks (to hook hidden states, trace attention, freeze layers), the
token embedding, the final norm, the LM head, and the *backbone* -- the module
that maps ``input_ids`` to the final normed hidden state without the vocabulary
projection (the LM head dominates the cost of a small multilingual model, so
extraction calls the backbone, not the full model).

Rather than special-casing classes, a :class:`Layout` lists dotted attribute
paths; :func:`get_adapter` returns the first layout whose paths all resolve on
the model. Unknown architectures fail with an error that names every path it
tried, so users can see what would have to exist.

Example::

    adapter = get_adapter(model)
    adapter.n_blocks            # number of decoder blocks, L
    adapter.n_hidden_states     # L + 1 (index 0 = embedding output)
    adapter.blocks[3]           # decoder block 3 -> hidden-state index 4
    adapter.block_layout.mlp_out   # "mlp" (Llama) / "post_feedforward_layernorm" (Gemma 2/3)

Inside a decoder block, a :class:`BlockLayout` names where the parts of the
residual computation live (block-relative paths), so that named activation
sites (:mod:`interp.extraction.sites`) can be read and patched on every family:
the attention module, the input of its output projection (per-head outputs),
the module whose output is added to the residual stream after attention and
after the MLP (Gemma's extra post-norms included), and the module whose
*input* is the residual stream between the two (``None`` for GPT-NeoX's
parallel residual, where that state never exists).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from interp.models.interop import unwrap_model

__all__ = ["Layout", "BlockLayout", "ModelAdapter", "LAYOUTS", "BLOCK_LAYOUTS", "get_adapter", "resolve_path"]


@dataclass(frozen=True)
class Layout:
    """Dotted paths (relative to the model) of one architecture family.

    ``backbone`` is the module to call for hidden states without the LM head
    (``""`` = the model itself, for bare base models). ``lm_head`` may be
    ``None`` for models that have none.
    """

    family: str
    backbone: str
    blocks: str
    embed: str
    final_norm: str
    lm_head: str | None
    pos_embed: str | None = None  # a learned absolute position embedding (GPT-2), added to the token embedding


#: Known layouts, tried in order. Llama, Gemma (1-3), Qwen (2, 2.5, 3),
#: Mistral, Mixtral, Phi-3, OLMo and most recent decoders share the first one.
LAYOUTS: tuple[Layout, ...] = (
    Layout("llama", "model", "model.layers", "model.embed_tokens", "model.norm", "lm_head"),
    Layout(
        "llava",
        "model",
        "model.language_model.layers",
        "model.language_model.embed_tokens",
        "model.language_model.norm",
        "lm_head",
    ),
    Layout(
        "llava-legacy",
        "language_model.model",
        "language_model.model.layers",
        "language_model.model.embed_tokens",
        "language_model.model.norm",
        "language_model.lm_head",
    ),
    Layout("gpt2", "transformer", "transformer.h", "transformer.wte", "transformer.ln_f", "lm_head", "transformer.wpe"),
    Layout(
        "gpt-neox",
        "gpt_neox",
        "gpt_neox.layers",
        "gpt_neox.embed_in",
        "gpt_neox.final_layer_norm",
        "lm_head",
    ),
    # Bare base models (e.g. ``LlamaModel``, ``GPT2Model``) passed directly.
    Layout("llama-base", "", "layers", "embed_tokens", "norm", None),
    Layout("gpt2-base", "", "h", "wte", "ln_f", None, "wpe"),
)


@dataclass(frozen=True)
class BlockLayout:
    """Block-relative dotted paths of one decoder-block family (see the module docstring).

    Attributes:
        family: a name for messages and docs.
        attn: the self-attention module (its forward goes through transformers'
            ``AttentionInterface``; ``output[1]`` is where attention weights come out).
        attn_out_proj: the attention's output projection; its *input* is the
            concatenated per-head outputs ``z``.
        attn_out: the module whose output is the attention branch's contribution
            to the residual stream (the attention itself, or Gemma's post-attention norm).
        mlp: the MLP module.
        mlp_out: the module whose output is the MLP branch's contribution.
        resid_mid: the module whose input is the residual stream after the
            attention and before the MLP (None where the block has no such state).
        required: attributes block 0 must have for this layout to apply.
        forbidden: attributes it must not have (what tells a look-alike family apart).
    """

    family: str
    attn: str
    attn_out_proj: str
    attn_out: str
    mlp: str
    mlp_out: str
    resid_mid: str | None
    required: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    parallel_residual: bool = False

    def matches(self, block: nn.Module) -> bool:
        paths = (self.attn, self.attn_out_proj, self.attn_out, self.mlp, self.mlp_out, self.resid_mid, *self.required)
        if any(resolve_path(block, p) is None for p in paths if p is not None):
            return False
        if any(resolve_path(block, p) is not None for p in self.forbidden):
            return False
        return bool(getattr(block, "use_parallel_residual", False)) == self.parallel_residual


#: Known decoder-block layouts, tried in order on block 0.
BLOCK_LAYOUTS: tuple[BlockLayout, ...] = (
    # Gemma 2/3: sandwich norms -- the attention and MLP outputs are normed before the residual add
    BlockLayout(
        "gemma",
        attn="self_attn",
        attn_out_proj="self_attn.o_proj",
        attn_out="post_attention_layernorm",
        mlp="mlp",
        mlp_out="post_feedforward_layernorm",
        resid_mid="pre_feedforward_layernorm",
        required=("input_layernorm",),
    ),
    # Llama, Gemma 1, Qwen 2/2.5/3, Mistral, Phi-3 and LLaVA's text model: pre-norm blocks
    BlockLayout(
        "llama",
        attn="self_attn",
        attn_out_proj="self_attn.o_proj",
        attn_out="self_attn",
        mlp="mlp",
        mlp_out="mlp",
        resid_mid="post_attention_layernorm",
        required=("input_layernorm",),
        forbidden=("post_feedforward_layernorm", "pre_feedforward_layernorm"),
    ),
    BlockLayout("gpt2", "attn", "attn.c_proj", "attn", "mlp", "mlp", "ln_2", required=("ln_1",)),
    BlockLayout(
        "gpt-neox",
        "attention",
        "attention.dense",
        "attention",
        "mlp",
        "mlp",
        "post_attention_layernorm",
        required=("input_layernorm",),
    ),  # fmt: skip
    BlockLayout(
        "gpt-neox-parallel",
        "attention",
        "attention.dense",
        "attention",
        "mlp",
        "mlp",
        None,
        required=("input_layernorm", "post_attention_layernorm"),
        parallel_residual=True,
    ),  # fmt: skip
)


def resolve_path(root: nn.Module, path: str) -> nn.Module | None:
    """Return the submodule at dotted ``path`` (``""`` = root), or None."""
    module: object = root
    for part in path.split(".") if path else []:
        module = getattr(module, part, None)
        if module is None:
            return None
    return module if isinstance(module, nn.Module) else None


@dataclass(frozen=True)
class ModelAdapter:
    """Resolved handles on one model's parts (see module docstring)."""

    model: nn.Module
    layout: Layout
    backbone: nn.Module
    blocks: nn.ModuleList
    embed: nn.Module
    final_norm: nn.Module
    lm_head: nn.Module | None

    @property
    def block_layout(self) -> BlockLayout | None:
        """The :class:`BlockLayout` of the decoder blocks, or None for an unknown block family."""
        return next((b for b in BLOCK_LAYOUTS if b.matches(self.blocks[0])), None)

    @property
    def n_heads(self) -> int | None:
        """Attention heads per block (the text config's ``num_attention_heads``), or None if unknown."""
        config = getattr(self.model, "config", None)
        if config is not None and hasattr(config, "get_text_config"):
            config = config.get_text_config()
        n = getattr(config, "num_attention_heads", None)
        return n if isinstance(n, int) and n > 0 else None

    @property
    def family(self) -> str:
        return self.layout.family

    @property
    def n_blocks(self) -> int:
        """Number of decoder blocks ``L``."""
        return len(self.blocks)

    @property
    def n_hidden_states(self) -> int:
        """``L + 1``: hidden-state indices run 0 (embeddings) .. L (after final norm)."""
        return len(self.blocks) + 1

    def block_path(self, i: int) -> str:
        """Dotted path of decoder block ``i`` relative to the model."""
        return f"{self.layout.blocks}.{i}"

    def relative_to_backbone(self, path: str) -> str:
        """Strip the backbone prefix from a model-relative dotted path."""
        prefix = self.layout.backbone
        if not prefix:
            return path
        if path != prefix and not path.startswith(prefix + "."):
            raise ValueError(f"{path!r} is not inside the backbone {prefix!r}")
        return path[len(prefix) + 1 :]


def get_adapter(model: nn.Module) -> ModelAdapter:
    """Find where ``model``'s blocks, embedding, final norm and LM head live.

    ``model`` may also be an nnsight ``LanguageModel`` or a TransformerLens
    ``TransformerBridge``: the Hugging Face model inside is used
    (:func:`interp.models.interop.unwrap_model`).

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or a known wrapper (the message says what to pass).
        ValueError: no known layout matches; the message lists the attribute
            paths that were looked for.
    """
    model = unwrap_model(model)
    for layout in LAYOUTS:
        blocks = resolve_path(model, layout.blocks)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            continue
        backbone = resolve_path(model, layout.backbone)
        embed = resolve_path(model, layout.embed)
        norm = resolve_path(model, layout.final_norm)
        head = resolve_path(model, layout.lm_head) if layout.lm_head else None
        if backbone is None or embed is None or norm is None:
            continue
        if layout.lm_head and head is None:
            continue
        return ModelAdapter(model, layout, backbone, blocks, embed, norm, head)
    tried = "\n".join(
        f"  {lay.family}: blocks={lay.blocks!r}, embed={lay.embed!r}, "
        f"final_norm={lay.final_norm!r}, lm_head={lay.lm_head!r}"
        for lay in LAYOUTS
    )
    raise ValueError(
        f"interp does not know the architecture of {type(model).__name__}: none of these "
        f"attribute layouts matched:\n{tried}\n"
        "Pass a Hugging Face causal LM or VLM of a known family, or add a Layout to "
        "interp.models.adapter.LAYOUTS."
    )
