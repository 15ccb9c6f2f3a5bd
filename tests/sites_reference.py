"""Independent float64 reference for every named site, written from the architectures' definitions.

For one text (batch 1, no padding) the residual stream entering each block is
taken from Hugging Face's own ``output_hidden_states`` (the oracle for hidden
states); every other site of block ``i`` is recomputed in float64 from that
input with the block's weights, following the architecture's definition:
norms (RMSNorm, Gemma's ``1 + w``, LayerNorm) written here, q/k/v projections,
the model's RoPE (its own ``rotary_emb`` cos/sin, rotated here, partial for
GPT-NeoX), causal and sliding-window masks, softmax, GQA, the output projection,
Gemma's sandwich norms, the MLP applied to its own normed input, GPT-NeoX's
parallel residual. No interp code is used.

``reference_sites(model, ids)`` -> ``{site name: float64 [T, *feature]}`` with
the vocabulary of ``docs/sites.md`` plus ``"hidden.{j}"`` for hidden states.

``reference_forward(model, ids, edit)`` chains the same float64 block
definitions from the embeddings to the logits, passing every site value
through ``edit(name, value)`` before it is used downstream -- the manual
forward that patching is checked against.
"""

from __future__ import annotations

import copy

import torch
from torch.nn import functional as F


def _rms(x: torch.Tensor, norm) -> torch.Tensor:
    weight = norm.weight.double()
    scale = (1.0 + weight) if type(norm).__name__.startswith("Gemma") else weight
    eps = getattr(norm, "eps", None) or norm.variance_epsilon
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * scale


def _norm(x: torch.Tensor, norm) -> torch.Tensor:
    if isinstance(norm, torch.nn.LayerNorm):
        return F.layer_norm(x, norm.normalized_shape, norm.weight.double(), norm.bias.double(), norm.eps)
    return _rms(x, norm)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on the first ``cos.shape[-1]`` dims of ``x [H, T, d]`` (the rest passes through)."""
    r = cos.shape[-1]
    rot, rest = x[..., :r], x[..., r:]
    half = torch.cat((-rot[..., r // 2 :], rot[..., : r // 2]), dim=-1)
    return torch.cat((rot * cos + half * sin, rest), dim=-1)


def _linear(x: torch.Tensor, layer) -> torch.Tensor:
    """nn.Linear or GPT-2's Conv1D (weight [in, out]) in float64."""
    weight, bias = layer.weight.double(), None if layer.bias is None else layer.bias.double()
    if type(layer).__name__ == "Conv1D":
        return x @ weight + bias
    return F.linear(x, weight, bias)


def _attention(q, k, v, scaling, window=None, edit=None):
    """``q [H, T, d]``, ``k/v [H_kv, T, d]`` -> (pattern [H, T, T], z [T, H, d]).

    ``edit`` gets the pattern as ``[T, H, T]`` (queries first, the site's layout) and may change it.
    """
    groups = q.shape[0] // k.shape[0]
    k, v = k.repeat_interleave(groups, 0), v.repeat_interleave(groups, 0)
    T = q.shape[1]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    visible = j <= i
    if window is not None:
        visible &= j > i - window
    logits = (q @ k.transpose(1, 2)) * scaling
    pattern = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1)
    if edit is not None:
        pattern = edit(pattern.transpose(0, 1)).transpose(0, 1)
    return pattern, (pattern @ v).transpose(0, 1)


def _cos_sin(rotary, x: torch.Tensor, T: int, layer_type: str | None = None):
    positions = torch.arange(T)[None]
    args = (x.float(), positions) if layer_type is None else (x.float(), positions, layer_type)
    cos, sin = rotary(*args)
    return cos[0].double(), sin[0].double()


def _same(name, value):
    return value


def _llama_block(block, x, rotary, config, i, edit=_same):
    """Llama / Gemma 3 block: every site from the block input ``x [T, d]`` (each through ``edit``)."""
    attn, T = block.self_attn, x.shape[0]
    H, Hkv = config.num_attention_heads, config.num_key_value_heads
    d = attn.head_dim
    a = _rms(x, block.input_layernorm)
    q = _linear(a, attn.q_proj).view(T, H, d).transpose(0, 1)
    k = _linear(a, attn.k_proj).view(T, Hkv, d).transpose(0, 1)
    v = _linear(a, attn.v_proj).view(T, Hkv, d).transpose(0, 1)
    gemma = hasattr(block, "pre_feedforward_layernorm")
    layer_type = config.layer_types[i] if gemma else None
    if gemma:
        q, k = _rms(q, attn.q_norm), _rms(k, attn.k_norm)
    cos, sin = _cos_sin(rotary, x, T, layer_type)
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    scaling = config.query_pre_attn_scalar**-0.5 if gemma else d**-0.5
    window = config.sliding_window if layer_type == "sliding_attention" else None
    out = {}
    pattern, z = _attention(q, k, v, scaling, window, edit=lambda p: edit("attn.hook_pattern", p))
    out["attn.hook_pattern"] = pattern.transpose(0, 1)
    out["attn.hook_z"] = z = edit("attn.hook_z", z)
    attn_out = _linear(z.reshape(T, H * d), attn.o_proj)
    if gemma:
        attn_out = _rms(attn_out, block.post_attention_layernorm)
    out["hook_attn_out"] = attn_out = edit("hook_attn_out", attn_out)
    out["hook_resid_mid"] = mid = edit("hook_resid_mid", x + attn_out)
    mlp = copy.deepcopy(block.mlp).double()
    normed = _rms(mid, block.pre_feedforward_layernorm if gemma else block.post_attention_layernorm)
    inner = edit("mlp.down_proj:input", mlp.act_fn(mlp.gate_proj(normed)) * mlp.up_proj(normed))
    out["mlp.down_proj:input"] = inner
    mlp_out = mlp.down_proj(inner)
    if gemma:
        mlp_out = _rms(mlp_out, block.post_feedforward_layernorm)
    out["hook_mlp_out"] = mlp_out = edit("hook_mlp_out", mlp_out)
    out["hook_resid_post"] = edit("hook_resid_post", mid + mlp_out)
    return out


def _gpt2_block(block, x, config, edit=_same):
    attn, T = block.attn, x.shape[0]
    H = config.num_attention_heads
    d = x.shape[1] // H
    a = _norm(x, block.ln_1)
    q, k, v = (t.view(T, H, d).transpose(0, 1) for t in _linear(a, attn.c_attn).split(x.shape[1], dim=-1))
    out = {}
    pattern, z = _attention(q, k, v, d**-0.5, edit=lambda p: edit("attn.hook_pattern", p))
    out["attn.hook_pattern"] = pattern.transpose(0, 1)
    out["attn.hook_z"] = z = edit("attn.hook_z", z)
    out["hook_attn_out"] = attn_out = edit("hook_attn_out", _linear(z.reshape(T, H * d), attn.c_proj))
    out["hook_resid_mid"] = mid = edit("hook_resid_mid", x + attn_out)
    out["mlp.c_fc"] = hidden = edit("mlp.c_fc", _linear(_norm(mid, block.ln_2), block.mlp.c_fc))
    mlp_out = _linear(copy.deepcopy(block.mlp.act).double()(hidden), block.mlp.c_proj)
    out["hook_mlp_out"] = mlp_out = edit("hook_mlp_out", mlp_out)
    out["hook_resid_post"] = edit("hook_resid_post", mid + mlp_out)
    return out


def _neox_block(block, x, rotary, config, edit=_same):
    attn, T = block.attention, x.shape[0]
    H = config.num_attention_heads
    d = x.shape[1] // H
    a = _norm(x, block.input_layernorm)
    q, k, v = _linear(a, attn.query_key_value).view(T, H, 3 * d).transpose(0, 1).chunk(3, dim=-1)
    cos, sin = _cos_sin(rotary, x, T)
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    out = {}
    pattern, z = _attention(q, k, v, d**-0.5, edit=lambda p: edit("attn.hook_pattern", p))
    out["attn.hook_pattern"] = pattern.transpose(0, 1)
    out["attn.hook_z"] = z = edit("attn.hook_z", z)
    out["hook_attn_out"] = attn_out = edit("hook_attn_out", _linear(z.reshape(T, H * d), attn.dense))
    mlp = copy.deepcopy(block.mlp).double()
    if block.use_parallel_residual:
        normed = _norm(x, block.post_attention_layernorm)
    else:
        out["hook_resid_mid"] = mid = edit("hook_resid_mid", x + attn_out)
        normed = _norm(mid, block.post_attention_layernorm)
    out["mlp.dense_h_to_4h"] = hidden = edit("mlp.dense_h_to_4h", _linear(normed, mlp.dense_h_to_4h))
    out["hook_mlp_out"] = mlp_out = edit("hook_mlp_out", mlp.dense_4h_to_h(mlp.act(hidden)))
    post = x + attn_out + mlp_out if block.use_parallel_residual else mid + mlp_out
    out["hook_resid_post"] = edit("hook_resid_post", post)
    return out


#: module-path sites the reference knows, per family: (path template, key in the block dict)
MODULE_SITES = {
    "llama": ("model.layers.{i}.mlp.down_proj:input", "mlp.down_proj:input"),
    "gpt2": ("transformer.h.{i}.mlp.c_fc", "mlp.c_fc"),
    "gpt_neox": ("gpt_neox.layers.{i}.mlp.dense_h_to_4h", "mlp.dense_h_to_4h"),
}


def family(model) -> str:
    return {"gpt2": "gpt2", "gpt_neox": "gpt_neox"}.get(model.config.model_type, "llama")


def _parts(model):
    """``(family, decoder blocks, final norm)`` of a model."""
    base = model.base_model
    fam = family(model)
    if fam == "gpt2":
        return fam, base.h, base.ln_f
    if fam == "gpt_neox":
        return fam, base.layers, base.final_layer_norm
    return fam, base.layers, base.norm


def _embeddings(model, ids: list[int]) -> dict[str, torch.Tensor]:
    base, fam, index = model.base_model, family(model), torch.tensor(ids)
    if fam == "gpt2":
        return {"hook_embed": base.wte.weight.double()[index], "hook_pos_embed": base.wpe.weight.double()[: len(ids)]}
    if fam == "gpt_neox":
        return {"hook_embed": base.embed_in.weight.double()[index]}
    embed = base.embed_tokens
    scale = float(embed.embed_scale) if hasattr(embed, "embed_scale") else 1.0
    return {"hook_embed": embed.weight.double()[index] * scale}


def _block(model, i: int, x: torch.Tensor, edit=_same) -> dict[str, torch.Tensor]:
    fam, blocks, _ = _parts(model)
    config, base = model.config.get_text_config(), model.base_model
    if fam == "gpt2":
        return _gpt2_block(blocks[i], x, config, edit)
    if fam == "gpt_neox":
        return _neox_block(blocks[i], x, base.rotary_emb, config, edit)
    return _llama_block(blocks[i], x, base.rotary_emb, config, i, edit)


@torch.no_grad()
def reference_sites(model, ids: list[int]) -> dict[str, torch.Tensor]:
    """Every site of one text, float64 ``[T, *feature]`` (see the module docstring)."""
    fam, blocks, final = _parts(model)
    hidden = [h[0].double() for h in model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states]
    out = {f"hidden.{j}": h for j, h in enumerate(hidden)} | _embeddings(model, ids)
    path, key = MODULE_SITES[fam]
    for i in range(len(blocks)):
        out[f"blocks.{i}.hook_resid_pre"] = hidden[i]
        for name, value in _block(model, i, hidden[i]).items():
            out[path.format(i=i) if name == key else f"blocks.{i}.{name}"] = value
    out["ln_final.hook_normalized"] = _norm(out[f"blocks.{len(blocks) - 1}.hook_resid_post"], final)
    return out


class _BlockEdit:
    """``edit(name, value)`` of one block, from a whole-model edit that takes full site names."""

    def __init__(self, edit, prefix: str, module_site: tuple[str, str]):
        self.edit, self.prefix, self.module_site = edit, prefix, module_site

    def __call__(self, name: str, value: torch.Tensor) -> torch.Tensor:
        path, key = self.module_site
        return self.edit(path if name == key else f"{self.prefix}.{name}", value)


def reference_forward(
    model, ids: list[int], edit=_same, vocab: torch.Tensor | None = None, grad: bool = False
) -> dict[str, torch.Tensor]:
    """The float64 forward from the embeddings, every site through ``edit(full site name, value)``.

    Returns the sites (as :func:`reference_sites` names them) and ``"logits"`` ``[T, n]``
    (``vocab``: only those rows of the LM head). ``grad=True`` keeps the autograd graph.
    """
    with torch.set_grad_enabled(grad):
        return _forward(model, ids, edit, vocab)


def _forward(model, ids, edit, vocab) -> dict[str, torch.Tensor]:
    fam, blocks, final = _parts(model)
    embeddings = _embeddings(model, ids)
    out = {name: edit(name, value) for name, value in embeddings.items()}
    x = sum(out.values())
    path = MODULE_SITES[fam][0]
    for i in range(len(blocks)):
        out[f"blocks.{i}.hook_resid_pre"] = x = edit(f"blocks.{i}.hook_resid_pre", x)
        block_edit = _BlockEdit(edit, f"blocks.{i}", (path.format(i=i), MODULE_SITES[fam][1]))
        for name, value in _block(model, i, x, block_edit).items():
            out[path.format(i=i) if name == MODULE_SITES[fam][1] else f"blocks.{i}.{name}"] = value
        x = out[f"blocks.{i}.hook_resid_post"]
    out["ln_final.hook_normalized"] = normed = edit("ln_final.hook_normalized", _norm(x, final))
    head = model.get_output_embeddings().weight.double()
    logits = normed @ (head if vocab is None else head[vocab]).T
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    out["logits"] = logits if cap is None else torch.tanh(logits / cap) * cap
    return out
