"""interp.vlm: tracing, geometry, ScalingVis / AdaptVis against independent eager references.

The tiny LLaVA has the real LLaVA-1.5 geometry (336 px, patch 14 -> 24×24 = 576
image tokens) with tiny widths, and grouped-query attention (4 heads, 2 KV heads).
References are written here from the definitions: transformers' eager
``output_attentions``, and a test-only eager attention function that scales
exactly the specified logits.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import AttentionInterface

from interp.models import tiny_llama, tiny_llava, tiny_llava_processor
from interp.vlm import (
    ImageGeometry,
    adaptvis_generate,
    box_mask,
    image_token_spans,
    scale_image_attention,
    trace_image_attention,
)
from interp.vlm.attention import PROBE_ATTR

IMAGE_TOKEN = 259
PROMPT = "<image>\nUSER: Where is the mug in relation to the knife? Answer with left or right.\nASSISTANT:"
KW = dict(n_layers=3, n_heads=4, n_kv_heads=2, image_size=336, seed=1)


def sharp_llava(**kw):
    """The tiny LLaVA with q/k weights ×8: attention logits ~64× larger, so α errors show in the logits."""
    model = tiny_llava(**KW, **kw)
    with torch.no_grad():
        for block in model.model.language_model.layers:
            block.self_attn.q_proj.weight.mul_(8.0)
            block.self_attn.k_proj.weight.mul_(8.0)
    return model


@pytest.fixture(scope="module")
def vlm():
    return sharp_llava()


@pytest.fixture(scope="module")
def eager_vlm():
    return sharp_llava(attn_implementation="eager")


@pytest.fixture(scope="module")
def proc():
    return tiny_llava_processor(336)


def scene(size=(500, 300), box=(300, 60, 420, 200), seed=0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    noise = (torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy()
    image = Image.fromarray(noise)
    ImageDraw.Draw(image).rectangle(box, fill=(255, 255, 255))
    return image


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- tracing


def test_trace_equals_eager_output_attentions(vlm, eager_vlm, proc):
    images = [scene((500, 300)), scene((240, 400), (20, 30, 200, 90), seed=1)]
    prompts = [PROMPT, "<image>\nUSER: What is this?\nASSISTANT:"]
    layers = [0, 2]
    for query in ("last", 5, -3):
        tr = trace_image_attention(vlm, proc, images, prompts, blocks=layers, query=query, progress=False)
        assert tr.patches.shape == (2, 2, 4, 24, 24) and tr.blocks == layers
        for i, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
            inputs = proc(images=image, text=prompt, return_tensors="pt")
            with torch.no_grad():
                att = eager_vlm(**inputs, output_attentions=True).attentions
            ids = inputs["input_ids"][0]
            q = len(ids) - 1 if query == "last" else query % len(ids)
            assert tr.query_positions[i] == q
            img = (ids == IMAGE_TOKEN).nonzero().flatten()
            for j, layer in enumerate(layers):
                row = att[layer][0, :, q].double()  # [H, S]
                ref = row[:, img].reshape(4, 24, 24)  # row-major patch grid
                assert (tr.patches[i, j].double() - ref).abs().max() < 1e-5
                assert (tr.image_share[i, j].double() - row[:, img].sum(-1)).abs().max() < 1e-5


def test_trace_query_tokens_equals_eager_rows_of_every_token(vlm, eager_vlm, proc):
    from interp.vlm import trace_query_tokens

    image = scene((320, 400), (40, 60, 200, 260), seed=2)
    inputs = proc(images=image, text=PROMPT, return_tensors="pt")
    ids = inputs["input_ids"][0]
    img = (ids == IMAGE_TOKEN).nonzero().flatten()
    with torch.no_grad():
        att = eager_vlm(**inputs, output_attentions=True).attentions
    before = snapshot(vlm)
    for queries, rows in (("text", list(range(int(img[-1]) + 1, len(ids)))), ("all", [0, *range(int(img[-1]) + 1,
                          len(ids))]), ([-1, 3, -1, 600], [3, 600, len(ids) - 1])):  # fmt: skip
        tr = trace_query_tokens(vlm, proc, image, PROMPT, queries, blocks=[0, 2])
        assert tr.query_positions == rows and tr.blocks == [0, 2] and len(tr) == len(rows)
        assert tr.query_tokens == [proc.tokenizer.convert_ids_to_tokens(int(ids[r])) for r in rows]
        for i, r in enumerate(rows):
            for j, block in enumerate([0, 2]):
                ref = att[block][0, :, r].double()[:, img].reshape(4, 24, 24)
                assert (tr.patches[i, j].double() - ref).abs().max() < 1e-5
    last = trace_image_attention(vlm, proc, image, PROMPT, blocks=[0, 2], progress=False)
    assert last.query_tokens == [tr.query_tokens[-1]]  # ':' -- the single-query trace records it too
    assert torch.allclose(last.patches[0], tr.patches[-1], atol=1e-6)
    after = snapshot(vlm)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(PROBE_ATTR not in blk.self_attn.__dict__ for blk in vlm.model.language_model.layers)
    with pytest.raises(ValueError, match="query indices"):
        trace_query_tokens(vlm, proc, image, PROMPT, [10_000])
    with pytest.raises(ValueError, match='queries must be "text"'):
        trace_query_tokens(vlm, proc, image, PROMPT, "last")


def test_only_probed_rows_are_eager_and_everything_runs_sdpa(vlm, proc, monkeypatch):
    import transformers.integrations.sdpa_attention as sdpa_module
    import transformers.models.llama.modeling_llama as llama_module

    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def counting_sdpa(query, *args, **kwargs):
        calls.append(tuple(query.shape))
        return real(query, *args, **kwargs)

    def no_eager(*args, **kwargs):
        raise AssertionError("eager attention must not run")

    monkeypatch.setattr(sdpa_module.torch.nn.functional, "scaled_dot_product_attention", counting_sdpa)
    monkeypatch.setattr(llama_module, "eager_attention_forward", no_eager)
    image = scene()
    n_tokens = proc(images=image, text=PROMPT, return_tensors="pt")["input_ids"].shape[1]
    trace_image_attention(vlm, proc, image, PROMPT, blocks=[1], progress=False)
    text_calls = [s for s in calls if s[2] == n_tokens]  # the vision tower's calls have 577 rows
    assert len(text_calls) == 3  # every text block, the traced one included, ran SDPA over all rows
    assert vlm.config.text_config._attn_implementation == "sdpa"
    assert all(PROBE_ATTR not in blk.self_attn.__dict__ for blk in vlm.model.language_model.layers)


def test_model_restored_after_trace_and_exception(vlm, proc):
    before = snapshot(vlm)
    image = scene()
    trace_image_attention(vlm, proc, image, PROMPT, progress=False)
    with pytest.raises(RuntimeError, match="boom"), scale_image_attention(vlm, 2.0):
        raise RuntimeError("boom")
    after = snapshot(vlm)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert vlm.config.text_config._attn_implementation == "sdpa"
    assert not vlm._forward_pre_hooks
    assert all(PROBE_ATTR not in blk.self_attn.__dict__ for blk in vlm.model.language_model.layers)


# ---------------------------------------------------------------- ScalingVis


def reference_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention that multiplies logits [last prefill row, image keys] by α in the chosen layers/heads.

    Written from the AdaptVis definition: logits = q·kᵀ·scaling; in prefill
    (q_len == kv_len), row -1 × image columns × selected heads *= α; + mask; fp32 softmax.
    """
    spec = REFERENCE
    groups = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(groups, dim=1).double()
    v = value.repeat_interleave(groups, dim=1).double()
    logits = (query.double() @ k.transpose(2, 3)) * scaling
    if query.shape[2] == key.shape[2] and module.layer_idx in spec["layers"]:
        img = spec["image"][:, : key.shape[2]]
        for h in spec["heads"]:
            logits[:, h, -1][img] *= spec["alpha"]
    if attention_mask is not None:
        logits = logits + attention_mask[..., : key.shape[2]].double()
    probs = torch.softmax(logits, dim=-1)
    return (probs @ v).transpose(1, 2).to(query.dtype).contiguous(), probs


REFERENCE: dict = {}
AttentionInterface.register("test_reference_scaled", reference_attention)
AttentionMaskInterface.register("test_reference_scaled", ALL_MASK_ATTENTION_FUNCTIONS["eager"])


@pytest.fixture(scope="module")
def reference_vlm():
    model = sharp_llava()
    model.config.text_config._attn_implementation = "test_reference_scaled"  # the vision tower stays on SDPA
    return model


@pytest.mark.parametrize(("alpha", "layers", "heads"), [(0.5, "all", "all"), (2.0, [1], [0, 3]), (1.7, [0, 2], [2])])
def test_scaled_logits_equal_independent_reference(vlm, reference_vlm, proc, alpha, layers, heads):
    inputs = proc(images=scene(), text=PROMPT, return_tensors="pt")
    REFERENCE.update(
        alpha=alpha,
        layers=range(3) if layers == "all" else layers,
        heads=range(4) if heads == "all" else heads,
        image=inputs["input_ids"] == IMAGE_TOKEN,
    )
    with torch.no_grad():
        plain = vlm(**inputs).logits
        with scale_image_attention(vlm, alpha, blocks=layers, heads=heads):
            scaled = vlm(**inputs).logits
        ref = reference_vlm(**inputs).logits
        REFERENCE["alpha"] = 1.0
        ref_plain = reference_vlm(**inputs).logits
    assert (plain - ref_plain).abs().max() < 1e-5  # the reference is eager attention when α = 1
    assert (scaled - ref).abs().max() < 1e-5
    assert (scaled[:, -1] - plain[:, -1]).abs().max() > 1e-4  # the intervention did something...
    assert torch.equal(scaled[:, :-1], plain[:, :-1])  # ...to the last prompt row only


def test_alpha_one_is_a_bitwise_noop(vlm, proc):
    inputs = proc(images=scene(), text=PROMPT, return_tensors="pt")
    with torch.no_grad():
        plain = vlm(**inputs).logits
        kw = dict(do_sample=False, max_new_tokens=4, output_scores=True, return_dict_in_generate=True)
        gen = vlm.generate(**inputs, **kw)
        with scale_image_attention(vlm, 1.0):
            same = vlm(**inputs).logits
            gen1 = vlm.generate(**inputs, **kw)
    assert torch.equal(plain, same)
    assert torch.equal(gen.sequences, gen1.sequences)
    assert all(torch.equal(a, b) for a, b in zip(gen.scores, gen1.scores, strict=True))


def test_decode_steps_are_not_scaled(vlm, reference_vlm, proc):
    inputs = proc(images=scene(), text=PROMPT, return_tensors="pt")
    REFERENCE.update(alpha=0.3, layers=range(3), heads=range(4), image=inputs["input_ids"] == IMAGE_TOKEN)
    kw = dict(do_sample=False, max_new_tokens=5, output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        ref = reference_vlm.generate(**inputs, **kw)
        with scale_image_attention(vlm, 0.3):
            ours = vlm.generate(**inputs, **kw)
    assert torch.equal(ref.sequences, ours.sequences)
    for a, b in zip(ref.scores, ours.scores, strict=True):
        assert (a - b).abs().max() < 1e-5


# ---------------------------------------------------------------- AdaptVis


def first_token_confidence(model, inputs) -> float:
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1].double()
    return float(torch.softmax(logits, dim=-1).max())


def test_adaptvis_picks_alpha_by_rule_and_matches_generate(vlm, proc):
    image = scene()
    inputs = proc(images=image, text=PROMPT, return_tensors="pt")
    raw = first_token_confidence(vlm, inputs)
    conf = round(raw, 2)
    cases = [(conf, 1.5), (min(conf + 0.01, 1.0), 0.5), (max(conf - 0.01, 0.0), 1.5)]  # equality -> alpha_high
    for threshold, expected in cases:
        res = adaptvis_generate(vlm, proc, image, PROMPT, 0.5, 1.5, threshold, max_new_tokens=6)
        assert res.confidence == conf and res.alpha == expected
        with torch.no_grad(), scale_image_attention(vlm, expected):
            gen = vlm.generate(**inputs, do_sample=False, max_new_tokens=6)
        assert torch.equal(res.tokens, gen[0, inputs["input_ids"].shape[1] :])
    unrounded = adaptvis_generate(vlm, proc, image, PROMPT, 0.5, 1.5, 0.5, max_new_tokens=1, round_confidence=False)
    assert abs(unrounded.confidence - raw) < 1e-6


def test_adaptvis_with_alpha_one_equals_plain_greedy(vlm, proc):
    image = scene()
    inputs = proc(images=image, text=PROMPT, return_tensors="pt")
    res = adaptvis_generate(vlm, proc, image, PROMPT, 1.0, 1.0, 0.5, max_new_tokens=6)
    with torch.no_grad():
        gen = vlm.generate(**inputs, do_sample=False, max_new_tokens=6)
    assert torch.equal(res.tokens, gen[0, inputs["input_ids"].shape[1] :])


# ---------------------------------------------------------------- geometry


def test_box_mask_resize_center_crop_landscape_by_hand(proc):
    # 500×300 -> shortest edge 336: scale 1.12, resized 560×336; crop 336 wide at left = (560-336)//2 = 112.
    geo = ImageGeometry.from_processor(proc, (500, 300))
    assert geo.scale == (560 / 500, 336 / 300) and geo.offset == (112.0, 0.0) and geo.grid == (24, 24)
    # x: 105*1.12-112 = 5.6 .. 200*1.12-112 = 112 ; y: 50*1.12 = 56 .. 150*1.12 = 168
    m = box_mask((105, 50, 200, 150), (500, 300), proc)
    expected = torch.zeros(24, 24)
    expected[4:12, 0] = (14 - 5.6) / 14
    expected[4:12, 1:8] = 1.0
    assert torch.allclose(m, expected, atol=1e-6)
    # a box entirely in the cropped-away left margin (x < 100) covers nothing
    assert box_mask((0, 0, 99, 300), (500, 300), proc).sum() == 0


def test_box_mask_portrait_and_union_by_hand(proc):
    # 300×500 (portrait): resized 336×560, crop top = 112.
    geo = ImageGeometry.from_processor(proc, (300, 500))
    assert geo.offset == (0.0, 112.0)
    # y: 120*1.12-112 = 22.4 .. 170*1.12-112 = 78.4 ; x: 25*1.12 = 28 .. 50*1.12 = 56
    m = box_mask((25, 120, 50, 170), (300, 500), geo)
    rows = torch.zeros(24)
    rows[1], rows[2:5], rows[5] = (28 - 22.4) / 14, 1.0, (78.4 - 70) / 14
    expected = torch.zeros(24, 24)
    expected[:, 2:4] = rows[:, None]
    assert torch.allclose(m, expected, atol=1e-6)
    # union of two overlapping boxes counts the overlap once
    u = box_mask([(25, 120, 50, 170), (25, 120, 50, 170)], (300, 500), geo)
    assert torch.allclose(u, expected, atol=1e-6)
    # disjoint boxes add up; labelled boxes ({label: box}) are accepted
    both = box_mask({"a": (25, 120, 50, 170), "b": (200, 300, 225, 350)}, (300, 500), geo)
    assert torch.allclose(both, expected + box_mask((200, 300, 225, 350), (300, 500), geo), atol=1e-6)


def test_box_mask_agrees_with_processed_pixels(proc):
    # Draw a white box on black; the processor's own pixels must be bright exactly where the mask is 1.
    size, box = (640, 400), (300, 100, 500, 300)
    image = Image.new("RGB", size)
    ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 255, 255))
    pixels = proc.image_processor(image, return_tensors="pt")["pixel_values"][0, 0]  # [336, 336]
    brightness = pixels.reshape(24, 14, 24, 14).mean(dim=(1, 3))
    m = box_mask(box, size, proc)
    assert brightness[m == 1].min() > 1.5 and brightness[m == 0].max() < -1.0


def test_pad_geometry_by_hand():
    geo = ImageGeometry.pad((200, 100), side=336, patch=14)  # square 200, image at y offset 50 -> scale 1.68
    m = box_mask((0, 0, 200, 100), (200, 100), geo)
    assert m[:, 0].tolist() == [0.0] * 6 + [1.0] * 12 + [0.0] * 6  # rows 84..252 px = patches 6..17


def test_image_token_spans():
    ids = torch.tensor([[1, 9, 9, 2, 9, 3], [9, 9, 9, 1, 1, 1]])
    assert image_token_spans(ids, 9) == [[(1, 3), (4, 5)], [(0, 3)]]


# ---------------------------------------------------------------- errors


def test_bad_input_errors(vlm, proc):
    image = scene()
    with pytest.raises(ValueError, match="no <image> token"):
        trace_image_attention(vlm, proc, image, "USER: hi\nASSISTANT:", progress=False)
    with pytest.raises(ValueError, match="2 <image> tokens but one image"):
        trace_image_attention(vlm, proc, image, "<image><image> hi", progress=False)
    with pytest.raises(ValueError, match="2 images for 1 prompts"):
        trace_image_attention(vlm, proc, [image, image], [PROMPT], progress=False)
    with pytest.raises(ValueError, match="outside the 500×300 image"):
        box_mask((400, 10, 600, 50), (500, 300), proc)
    for alpha in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="alpha must be a finite number > 0"), scale_image_attention(vlm, alpha):
            pass
    with pytest.raises(ValueError, match="alpha_low must be"):
        adaptvis_generate(vlm, proc, image, PROMPT, 0.0, 1.5, 0.3)
    with pytest.raises(ValueError, match="no image_token_id"), scale_image_attention(tiny_llama(), 0.5):
        pass
    with pytest.raises(ValueError, match="blocks 0..2"):
        trace_image_attention(vlm, proc, image, PROMPT, blocks=[3], progress=False)
    with pytest.raises(ValueError, match="heads 0..3"), scale_image_attention(vlm, 0.5, heads=[4]):
        pass
    with pytest.raises(ValueError, match="ends with the image"):
        adaptvis_generate(vlm, proc, image, "hi <image>", 0.5, 1.5, 0.3)


def test_trace_under_alpha_is_post_intervention(vlm, reference_vlm, proc):
    image = scene()
    inputs = proc(images=image, text=PROMPT, return_tensors="pt")
    img = inputs["input_ids"] == IMAGE_TOKEN
    REFERENCE.update(alpha=2.0, layers=range(3), heads=range(4), image=img)
    tr = trace_image_attention(vlm, proc, image, PROMPT, alpha=2.0, progress=False)
    with torch.no_grad():
        att = reference_vlm(**inputs, output_attentions=True).attentions
    for layer in range(3):
        ref = att[layer][0, :, -1][:, img[0]].reshape(4, 24, 24)
        assert (tr.patches[0, layer].double() - ref).abs().max() < 1e-5
    with pytest.raises(ValueError, match="query='last'"):
        trace_image_attention(vlm, proc, image, PROMPT, query=3, alpha=2.0, progress=False)


def test_batched_trace_equals_one_at_a_time(vlm, proc):
    images = [scene((500, 300)), scene((240, 400), (20, 30, 200, 90), seed=1), scene((336, 336), seed=2)]
    prompts = [PROMPT, "<image>\nUSER: What is this?\nASSISTANT:", "<image> left or right?"]  # lengths differ
    for query in ("last", 5, -2):
        one = trace_image_attention(vlm, proc, images, prompts, query=query, progress=False)
        two = trace_image_attention(vlm, proc, images, prompts, query=query, batch_size=2, progress=False)
        assert one.query_positions == two.query_positions
        assert (one.patches - two.patches).abs().max() < 1e-6
        assert (one.image_share - two.image_share).abs().max() < 1e-6
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        trace_image_attention(vlm, proc, images, prompts, batch_size=0, progress=False)


def test_box_mask_pad_to_square_processor_by_hand_and_pixels():
    from transformers import LlavaImageProcessorPil

    ip = LlavaImageProcessorPil(do_pad=True, size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    # 500×300 -> padded 500×500 (image at y = 100) -> resized 336×336 (scale 0.672), no crop offset
    geo = ImageGeometry.from_processor(ip, (500, 300), patch=14)
    assert geo.mode == "pad" and geo.scale == (0.672, 0.672) and geo.offset == (0.0, -67.2)
    # y: (0 + 100) * 0.672 = 67.2 .. (300 + 100) * 0.672 = 268.8 -> rows 4 (0.2 covered) .. 19 (0.2 covered)
    m = box_mask((0, 0, 500, 300), (500, 300), geo)
    rows = torch.zeros(24)
    rows[4], rows[5:19], rows[19] = (70 - 67.2) / 14, 1.0, (268.8 - 266) / 14
    assert torch.allclose(m, rows[:, None].expand(24, 24), atol=1e-6)
    # the processor's own pixels: a white box is bright exactly where the mask is 1
    size, box = (640, 400), (300, 100, 500, 300)
    image = Image.new("RGB", size)
    ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 255, 255))
    brightness = ip(image, return_tensors="pt")["pixel_values"][0, 0].reshape(24, 14, 24, 14).mean(dim=(1, 3))
    m = box_mask(box, size, ImageGeometry.from_processor(ip, size, patch=14))
    assert brightness[m == 1].min() > 1.5 and brightness[m == 0].max() < 0.5


class _Attention(torch.nn.Module):
    """A bare attention module as transformers passes it to attention functions."""

    def __init__(self, implementation: str, groups: int):
        super().__init__()
        self.config = type("Config", (), {"_attn_implementation": implementation})()
        self.layer_idx, self.num_key_value_groups = 0, groups


def test_probe_rows_with_logit_softcap_equal_gemma2_eager():
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward as gemma2_eager

    from interp.models.attention import register_interposer
    from interp.vlm.attention import PREFIX, RowProbe, rows_attention

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 4, 7, 8, generator=g) * 4, torch.randn(1, 2, 7, 8, generator=g) * 4
    v = torch.randn(1, 2, 7, 8, generator=g)
    causal = torch.full((7, 7), float("-inf")).triu(1)[None, None]
    module = _Attention(PREFIX + "eager", groups=2)
    register_interposer("eager")
    probe = RowProbe(key_is_image=torch.zeros(1, 7, dtype=torch.bool), rows=[3, 6], record=True)
    setattr(module, PROBE_ATTR, [probe])
    out, _ = rows_attention(module, q, k, v, causal, scaling=8**-0.5, softcap=2.0)
    ref_out, ref_probs = gemma2_eager(module, q, k, v, causal, scaling=8**-0.5, softcap=2.0)
    assert (out - ref_out).abs().max() < 1e-6
    assert (probe.records[0] - ref_probs[:, :, [3, 6]]).abs().max() < 1e-6


def test_old_layers_spelling_still_works_with_a_deprecation_warning(vlm, proc):
    image = scene()
    new = trace_image_attention(vlm, proc, image, PROMPT, blocks=[0, 2], progress=False)
    with pytest.warns(DeprecationWarning, match=r"layers= is deprecated.*use blocks="):
        old = trace_image_attention(vlm, proc, image, PROMPT, layers=[0, 2], progress=False)
    assert old.blocks == [0, 2] and torch.equal(old.patches, new.patches)
    with pytest.warns(DeprecationWarning, match="use .blocks"):
        assert old.layers == [0, 2]
    with pytest.warns(DeprecationWarning, match=r"use \.block\(\)"):
        assert torch.equal(old.layer(2), new.block(2))
    with pytest.raises(TypeError, match="pass blocks= only"):
        trace_image_attention(vlm, proc, image, PROMPT, blocks=[1], layers=[0], progress=False)
    with pytest.warns(DeprecationWarning, match="layers= is deprecated"), scale_image_attention(vlm, 2.0, layers=[1]):
        pass
