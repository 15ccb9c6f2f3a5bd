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


def _attention(q, k, v, scaling, window=None):
    """``q [H, T, d]``, ``k/v [H_kv, T, d]`` -> (pattern [H, T, T], z [T, H, d])."""
    groups = q.shape[0] // k.shape[0]
    k, v = k.repeat_interleave(groups, 0), v.repeat_interleave(groups, 0)
    T = q.shape[1]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    visible = j <= i
    if window is not None:
        visible &= j > i - window
    logits = (q @ k.transpose(1, 2)) * scaling
    pattern = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1)
    return pattern, (pattern @ v).transpose(0, 1)


def _cos_sin(rotary, x: torch.Tensor, T: int, layer_type: str | None = None):
    positions = torch.arange(T)[None]
    args = (x.float(), positions) if layer_type is None else (x.float(), positions, layer_type)
    cos, sin = rotary(*args)
    return cos[0].double(), sin[0].double()


def _llama_block(block, x, rotary, config, i):
    """Llama / Gemma 3 block: every site from the block input ``x [T, d]``."""
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
    pattern, z = _attention(q, k, v, scaling, window)
    out = {"attn.hook_pattern": pattern.transpose(0, 1), "attn.hook_z": z}
    attn_out = _linear(z.reshape(T, H * d), attn.o_proj)
    if gemma:
        attn_out = _rms(attn_out, block.post_attention_layernorm)
    mid = x + attn_out
    mlp = copy.deepcopy(block.mlp).double()
    if gemma:
        normed = _rms(mid, block.pre_feedforward_layernorm)
        mlp_out = _rms(mlp(normed), block.post_feedforward_layernorm)
    else:
        normed = _rms(mid, block.post_attention_layernorm)
        mlp_out = mlp(normed)
    out["mlp.down_proj:input"] = mlp.act_fn(mlp.gate_proj(normed)) * mlp.up_proj(normed)
    return out | {"hook_attn_out": attn_out, "hook_resid_mid": mid, "hook_mlp_out": mlp_out,
                  "hook_resid_post": mid + mlp_out}  # fmt: skip


def _gpt2_block(block, x, config):
    attn, T = block.attn, x.shape[0]
    H = config.num_attention_heads
    d = x.shape[1] // H
    a = _norm(x, block.ln_1)
    q, k, v = (t.view(T, H, d).transpose(0, 1) for t in _linear(a, attn.c_attn).split(x.shape[1], dim=-1))
    pattern, z = _attention(q, k, v, d**-0.5)
    attn_out = _linear(z.reshape(T, H * d), attn.c_proj)
    mid = x + attn_out
    normed = _norm(mid, block.ln_2)
    hidden = _linear(normed, block.mlp.c_fc)
    mlp_out = _linear(copy.deepcopy(block.mlp.act).double()(hidden), block.mlp.c_proj)
    return {"attn.hook_pattern": pattern.transpose(0, 1), "attn.hook_z": z, "hook_attn_out": attn_out,
            "hook_resid_mid": mid, "hook_mlp_out": mlp_out, "hook_resid_post": mid + mlp_out,
            "mlp.c_fc": hidden}  # fmt: skip


def _neox_block(block, x, rotary, config):
    attn, T = block.attention, x.shape[0]
    H = config.num_attention_heads
    d = x.shape[1] // H
    a = _norm(x, block.input_layernorm)
    q, k, v = _linear(a, attn.query_key_value).view(T, H, 3 * d).transpose(0, 1).chunk(3, dim=-1)
    cos, sin = _cos_sin(rotary, x, T)
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    pattern, z = _attention(q, k, v, d**-0.5)
    attn_out = _linear(z.reshape(T, H * d), attn.dense)
    mlp = copy.deepcopy(block.mlp).double()
    out = {"attn.hook_pattern": pattern.transpose(0, 1), "attn.hook_z": z, "hook_attn_out": attn_out}
    if block.use_parallel_residual:
        normed = _norm(x, block.post_attention_layernorm)
        mlp_out = mlp(normed)
        post = x + attn_out + mlp_out
    else:
        mid = x + attn_out
        normed = _norm(mid, block.post_attention_layernorm)
        mlp_out = mlp(normed)
        post = mid + mlp_out
        out["hook_resid_mid"] = mid
    out["mlp.dense_h_to_4h"] = _linear(normed, mlp.dense_h_to_4h)
    return out | {"hook_mlp_out": mlp_out, "hook_resid_post": post}


#: module-path sites the reference knows, per family: (path template, key in the block dict)
MODULE_SITES = {
    "llama": ("model.layers.{i}.mlp.down_proj:input", "mlp.down_proj:input"),
    "gpt2": ("transformer.h.{i}.mlp.c_fc", "mlp.c_fc"),
    "gpt_neox": ("gpt_neox.layers.{i}.mlp.dense_h_to_4h", "mlp.dense_h_to_4h"),
}


def family(model) -> str:
    return {"gpt2": "gpt2", "gpt_neox": "gpt_neox"}.get(model.config.model_type, "llama")


@torch.no_grad()
def reference_sites(model, ids: list[int]) -> dict[str, torch.Tensor]:
    """Every site of one text, float64 ``[T, *feature]`` (see the module docstring)."""
    fam = family(model)
    input_ids = torch.tensor([ids])
    hidden = [h[0].double() for h in model(input_ids=input_ids, output_hidden_states=True).hidden_states]
    base = model.base_model
    L, T = len(hidden) - 1, len(ids)
    config = model.config.get_text_config()
    out = {f"hidden.{j}": h for j, h in enumerate(hidden)}
    if fam == "gpt2":
        out["hook_embed"] = base.wte.weight.double()[input_ids[0]]
        out["hook_pos_embed"] = base.wpe.weight.double()[:T]
        blocks, final = base.h, base.ln_f
    elif fam == "gpt_neox":
        out["hook_embed"] = base.embed_in.weight.double()[input_ids[0]]
        blocks, final = base.layers, base.final_layer_norm
    else:
        embed = base.embed_tokens
        scale = float(embed.embed_scale) if hasattr(embed, "embed_scale") else 1.0
        out["hook_embed"] = embed.weight.double()[input_ids[0]] * scale
        blocks, final = base.layers, base.norm
    path, key = MODULE_SITES[fam]
    for i, block in enumerate(blocks):
        x = hidden[i]
        if fam == "gpt2":
            sites = _gpt2_block(block, x, config)
        elif fam == "gpt_neox":
            sites = _neox_block(block, x, base.rotary_emb, config)
        else:
            sites = _llama_block(block, x, base.rotary_emb, config, i)
        out[f"blocks.{i}.hook_resid_pre"] = x
        for name, value in sites.items():
            out[path.format(i=i) if name == key else f"blocks.{i}.{name}"] = value
    out["ln_final.hook_normalized"] = _norm(out[f"blocks.{L - 1}.hook_resid_post"], final)
    return out
