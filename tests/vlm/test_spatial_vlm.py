"""The toy spatial VLM: its scenes (checked against the boxes and the pixels), its word tokenizer,
deterministic training (bit-identical weights for the same seed), the cache, and the batched
first-token answers against interp's own generation functions."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from interp.models.tiny import word_tokenizer
from interp.vlm import (
    COLORS,
    HELD_OUT_OBJECTS,
    SPLITS,
    SpatialVLMConfig,
    adaptvis_generate,
    answer_scenes,
    position_question,
    scalingvis_generate,
    spatial_scene,
    spatial_scenes,
    spatial_vlm,
)

# A configuration small enough to train in a second or two (the recipe of the real variants, tiny sizes).
TINY = SpatialVLMConfig(name="tiny-test", d_model=32, n_blocks=2, n_heads=2, steps=3, batch_size=4,
                        scene_size=(64, 64))  # fmt: skip


def _overlap_1d(a0, a1, b0, b1) -> float:
    return min(a1, b1) - max(a0, b0)


def _relation_from_boxes(a, b) -> str | None:
    """Independent rule: which WhatsUp relation the two boxes are in (None if none clearly)."""
    if a[2] < b[0] and _overlap_1d(a[1], a[3], b[1], b[3]) > 0:
        return "left"
    if a[0] > b[2] and _overlap_1d(a[1], a[3], b[1], b[3]) > 0:
        return "right"
    if a[3] == b[1] and _overlap_1d(a[0], a[2], b[0], b[2]) > 0:
        return "on"
    if a[1] == b[3] and _overlap_1d(a[0], a[2], b[0], b[2]) > 0:
        return "under"
    return None


def _name_parts(name: str) -> tuple[str, str]:
    color, shape = name.split()
    return color, shape


@pytest.mark.parametrize("split", list(SPLITS))
def test_spatial_scenes_match_their_boxes_and_split(split):
    size = (150, 120)  # non-square: objects must lie in the centred 120 × 120 square the crop keeps
    scenes = spatial_scenes(40, split, seed=3, size=size)
    assert [s.relation for s in scenes[:8]] == ["left", "right", "on", "under"] * 2
    for s in scenes:
        assert s.split == split and s.image.size == size
        (name_a, box_a), (name_b, box_b) = s.boxes.items()
        assert _relation_from_boxes(box_a, box_b) == s.relation and s.answer == s.relation.capitalize()
        objects = {**s.boxes, **s.distractors}
        assert len(objects) == 2 + len(s.distractors) and len(s.distractors) <= 2
        for name, (x0, y0, x1, y1) in objects.items():
            assert 15 <= x0 < x1 <= 135 and 0 <= y0 < y1 <= 120, (name, (x0, y0, x1, y1))
            color, _ = _name_parts(name)
            assert s.image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == COLORS[color]  # drawn where the box says
        for name, box in s.distractors.items():  # distractors touch nothing
            for other_name, other in objects.items():
                if other_name != name:
                    assert _overlap_1d(box[0], box[2], other[0], other[2]) <= 0 or \
                        _overlap_1d(box[1], box[3], other[1], other[3]) <= 0  # fmt: skip
        (color_a, shape_a), (color_b, shape_b) = _name_parts(name_a), _name_parts(name_b)
        assert shape_b == "table" and color_b != color_a and shape_a in ("box", "ball", "triangle")
        assert (box_b[2] - box_b[0]) >= 2 * (box_b[3] - box_b[1])  # a wide slab, unlike the square objects
        assert ((color_a, shape_a) in HELD_OUT_OBJECTS) == (split == "held_out_objects")
        assert not set(map(_name_parts, s.distractors)) & set(HELD_OUT_OBJECTS)
        ux = (min(box_a[0], box_b[0]) + max(box_a[2], box_b[2])) / 2 - 15
        uy = (min(box_a[1], box_b[1]) + max(box_a[3], box_b[3])) / 2
        in_zone = ux >= 60 and uy >= 60
        assert in_zone == (split == "held_out_positions")
        # the text never reveals the answer: one template whatever the relation
        template = s.prompt.replace(name_a, "A", 1).replace(name_b, "B", 1)
        assert template == scenes[0].prompt.replace(scenes[0].names[0], "A", 1).replace(scenes[0].names[1], "B", 1)


def test_spatial_scene_is_a_pure_function_of_its_arguments():
    a, b = spatial_scene("test", 1, 7), spatial_scene("test", 1, 7)
    assert a.image.tobytes() == b.image.tobytes() and a.boxes == b.boxes and a.distractors == b.distractors
    other = spatial_scene("train", 1, 7)
    assert other.image.tobytes() != a.image.tobytes()
    assert spatial_scene("test", 1, 7, n_distractors=(0, 0)).distractors == {}
    with pytest.raises(ValueError, match="unknown split"):
        spatial_scene("validation")
    with pytest.raises(ValueError, match="relation must be one of"):
        spatial_scene("train", relation="above")
    with pytest.raises(ValueError, match="n_distractors"):
        spatial_scene("train", n_distractors=(2, 1))


def test_position_question_hand_cases():
    s = spatial_scene("test", 0, 0, size=(100, 100))
    s.boxes = {"red box": (0, 40, 20, 60), "blue ball": (45, 80, 55, 100)}  # centre (10, 50) and (50, 90)
    s.distractors = {"green box": (70, 0, 90, 30)}  # centre (80, 15): dx 30 < |dy| 35 -> top
    assert position_question(s) == (
        "<image>\nUSER: Where is the red box in the photo? Answer with left, right, top or bottom.\nASSISTANT:",
        "Left",
    )
    assert position_question(s, "blue ball")[1] == "Bottom"
    assert position_question(s, "green box")[1] == "Top"
    with pytest.raises(ValueError, match="no object"):
        position_question(s, "purple ball")


def test_word_tokenizer_splits_words_and_punctuation():
    tok = word_tokenizer(["USER", ":", "Where", "is", "the", "red", "box", "?", "Left", "red"])
    ids = tok("<image>\nUSER: Where is the red box? Left")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<bos>", "<image>", "USER", ":", "Where", "is", "the", "red", "box",
                                              "?", "Left"]  # fmt: skip
    assert ids[:2] == [1, 3] and ids[2] == 5  # specials 0-4, then the words in order, duplicates once
    assert len(tok) == 5 + 9
    assert tok.convert_ids_to_tokens(tok("the green box")["input_ids"]) == ["<bos>", "the", "<unk>", "box"]
    assert tok.decode(tok("red box", add_special_tokens=False)["input_ids"]) == "red box"
    with pytest.raises(ValueError, match="whitespace"):
        word_tokenizer(["two words"])


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_is_deterministic_bit_for_bit():
    """Acceptance: same seed -> bit-identical weights (the small recipe at tiny sizes); another seed differs."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    first, _ = spatial_vlm(TINY, cache=False, progress=False)
    second, _ = spatial_vlm(TINY, cache=False, progress=False)
    a, b = _state(first), _state(second)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    untrained, _ = spatial_vlm(TINY, cache=False, progress=False, steps=0)
    assert any(not torch.equal(a[k], v) for k, v in _state(untrained).items())  # training changed the weights
    other, _ = spatial_vlm(TINY, cache=False, progress=False, seed=1)
    assert any(not torch.equal(a[k], v) for k, v in _state(other).items())
    assert [row["step"] for row in first.training_log] == [0, 1, 2]
    assert [x["loss"] for x in first.training_log] == [y["loss"] for y in second.training_log]
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == deterministic


def test_spatial_vlm_caches_atomically_and_loads_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    model, processor = spatial_vlm(TINY, progress=False)
    folders = list((tmp_path / "spatial-vlm").iterdir())
    assert [f.name[: len("tiny-test-")] for f in folders] == ["tiny-test-"]
    assert {p.name for p in folders[0].iterdir()} >= {"model.safetensors", "config.json", "training.json"}
    import interp.vlm.eval.spatial_model as sm

    monkeypatch.setattr(sm, "_train", lambda *a, **k: pytest.fail("a cached model was trained again"))
    again, _ = spatial_vlm(TINY, progress=False)
    a, b = _state(model), _state(again)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again.training_log == model.training_log and again.spatial_config == TINY
    assert processor.tokenizer.convert_ids_to_tokens(processor.tokenizer("Left")["input_ids"]) == ["<bos>", "Left"]
    with pytest.raises(TypeError, match="unknown SpatialVLMConfig fields"):
        spatial_vlm(TINY, colour="red")
    with pytest.raises(ValueError, match="unknown variant"):
        spatial_vlm("huge")


def test_config_key_changes_with_what_changes_the_weights():
    from interp.vlm.eval.spatial_model import config_key

    assert config_key(TINY) == config_key(dataclasses.replace(TINY))
    assert config_key(TINY) != config_key(dataclasses.replace(TINY, seed=1))
    assert config_key(TINY) != config_key(dataclasses.replace(TINY, lr=1e-3))


@pytest.fixture(scope="module")
def untrained():
    from interp.vlm.eval.spatial_model import build

    return build(dataclasses.replace(TINY, init_std=0.5))  # peaky random attention: α visibly matters


def test_answer_scenes_equals_generation_at_every_alpha(untrained):
    model, processor = untrained
    scenes = spatial_scenes(6, "test", size=(64, 64))
    for alpha in (0.5, 1.0, 2.0):
        table = answer_scenes(model, processor, scenes, alpha, batch_size=4)
        assert len(table) == 6 and (table["alpha"] == alpha).all()
        for row, scene in zip(table.itertuples(), scenes, strict=True):
            gen = scalingvis_generate(model, processor, scene.image, scene.prompt, alpha, max_new_tokens=1)
            first = processor.tokenizer.decode(gen.tokens[:1].tolist(), skip_special_tokens=True).strip()
            assert row.prediction == first
            assert row.correct == (first.lower() == scene.relation)
    base = answer_scenes(model, processor, scenes)
    for row, scene in zip(base.itertuples(), scenes, strict=True):
        res = adaptvis_generate(model, processor, scene.image, scene.prompt, 0.5, 2.0, 0.5, max_new_tokens=1,
                                round_confidence=False)  # fmt: skip
        assert row.confidence == pytest.approx(res.confidence, abs=1e-6)
