"""WhatsUp / VSR evaluation: loaders, official split, presets, official vs robust scoring.

Oracles: hand-computed cases; the AdaptVis reference tables (adaptvis.md §3-4) typed in by
hand; a validation-index file written by a run of the official code; scikit-learn's F1.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from interp.vlm.eval.datasets import (
    VSR_PROMPT,
    load_spatial,
    load_vsr_judge,
    official_split,
    parse_options,
)
from interp.vlm.eval.scoring import (
    official_correct,
    official_yes_no,
    pair_set_accuracy,
    robust_correct,
    robust_prediction,
    robust_yes_no,
    score_vsr,
    score_whatsup,
    yes_no_metrics,
)
from interp.vlm.presets import ADAPTVIS_PRESETS, preset

PROMPTS = Path(__file__).resolve().parents[3] / "shared" / "data" / "whatsup_prompts"
FILES = {
    "Controlled_Images_A": "Controlled_Images_A_with_answer_four_options.jsonl",
    "Controlled_Images_B": "Controlled_Images_B_with_answer_four_options.jsonl",
    "COCO_QA_one_obj": "COCO_QA_one_obj_with_answer_four_options.jsonl",
    "COCO_QA_two_obj": "COCO_QA_two_obj_with_answer_four_options.jsonl",
    "VG_QA_one_obj": "VG_QA_one_obj_with_answer_six_options.jsonl",
    "VG_QA_two_obj": "VG_QA_two_obj_with_answer_six_options.jsonl",
    "VSR": "VSR_with_answer.jsonl",
}
A_OPTIONS = ("left", "right", "on", "under")


def prompt_file(name: str) -> Path:
    path = PROMPTS / FILES[name]
    if not path.is_file() and os.environ.get("CI") != "true":
        pytest.skip(f"test data {path} is not beside this checkout")
    return path


# ------------------------------------------------------------------------------ official rule
@pytest.mark.parametrize(
    ("generation", "gold", "expected"),
    [
        ("The mug is in relation to the table.", "On", True),  # known false positive: "relati-on"
        ("The beer bottle is on the armchair.", "On", True),
        ("The bowl is in front of the cup.", "On", False),  # the on/front exception
        ("ON the table", "On", True),  # case-insensitive
        ("left", "Left", True),
        ("Left or right?", "Right", True),  # names two options: right for both
        ("The cup is under the table", "Left", False),
        ("Front", "Front", True),
        ("It is one of them", "On", True),  # "one" contains "on"
    ],
)
def test_official_rule_hand_cases(generation, gold, expected):
    assert official_correct(generation, gold) is expected


def test_official_false_positive_and_robust_rule_disagree():
    gen = "The wineglass is to the left in relation to the table."
    assert official_correct(gen, "On")  # substring "on" inside "relation"
    assert not robust_correct(gen, "On", A_OPTIONS)
    assert robust_prediction(gen, A_OPTIONS) == "left"
    assert robust_correct(gen, "Left", A_OPTIONS)


# -------------------------------------------------------------------------------- robust rule
@pytest.mark.parametrize(
    ("generation", "options", "expected"),
    [
        ("On.", A_OPTIONS, "on"),
        ("The bottle is on the left of the table.", A_OPTIONS, "left"),  # "on the left" is not "on"
        ("on the table, left of the vase", A_OPTIONS, "on"),  # earliest option wins
        ("The ball is under the chair, not on it.", A_OPTIONS, "under"),
        ("underneath the chair", A_OPTIONS, None),  # whole words only
        ("The mug is in front of the knife", ("left", "right", "front", "behind"), "front"),
        ("BEHIND", ("left", "right", "front", "behind"), "behind"),
        ("I cannot tell.", A_OPTIONS, None),
        ("top-left corner", ("left", "right", "top", "bottom"), "top"),
    ],
)
def test_robust_prediction_hand_cases(generation, options, expected):
    assert robust_prediction(generation, options) == expected


def test_robust_rule_open_question_and_gold_outside_options():
    # open question (VSR_with_answer): whole-phrase match of the gold
    assert robust_correct("It is in  front of the cat.", "in front of")
    assert not robust_correct("It is in the front.", "in front of")
    assert not robust_correct("it is inside", "in")
    assert official_correct("it is inside", "in")  # substring again
    # a gold missing from the listed options still counts when named
    assert robust_correct("Above.", "Above", ("left", "right", "front", "behind", "top", "bottom"))


def test_score_whatsup_tidy_summary_hand_computed():
    answers = ["On", "Left", "Under", "Right"]
    gens = ["In relation to the table", "left", "It is underneath", "Right, on the right side"]
    opts = [A_OPTIONS] * 4
    scores = score_whatsup(gens, answers, opts)
    # official: T (relati-on), T, T (under-neath), T ; robust: F (unparsed), T, F (unparsed), T
    assert scores.samples.official.tolist() == [True, True, True, True]
    assert scores.samples.robust.tolist() == [False, True, False, True]
    pred = scores.samples.robust_prediction
    assert pred[1] == "left" and pred.isna()[2] and pred[3] == "right"
    d = scores.to_dict()
    assert d["official"]["accuracy"] == 1.0
    assert d["robust"]["accuracy"] == 0.5
    assert d["robust"]["unparsed"] == 0.5
    assert set(scores.summary.columns) == {"rule", "metric", "value", "n"}
    with pytest.raises(ValueError, match="3 generations for 4"):
        score_whatsup(gens[:3], answers, opts)
    with pytest.raises(TypeError, match="list of strings"):
        score_whatsup("left", ["Left"])


# ------------------------------------------------------------------------------------- VSR
def test_vsr_official_yes_no_substrings():
    assert official_yes_no("Yes, it is.", 1)
    assert not official_yes_no("yes", 1)  # case-sensitive
    assert official_yes_no("Not really", 0)  # "No" inside "Not"
    assert official_yes_no("Yes and No", 1) and official_yes_no("Yes and No", 0)  # no precedence
    assert robust_yes_no("Not really") is None
    assert robust_yes_no("YES, no doubt") == 1
    assert robust_yes_no("no.") == 0


def test_vsr_metrics_hand_computed_confusion():
    labels = [1, 1, 1, 0, 0, 0]
    gens = ["Yes", "No", "yes", "No", "Not sure", "Yes"]
    scores = score_vsr(gens, labels)
    off, rob = scores.to_dict()["official"], scores.to_dict()["robust"]
    # official: TP=1 (Yes), FN=2 (No, lower-case yes), TN=2 (No, "Not"), FP=1 (Yes)
    assert (off["tp"], off["fn"], off["tn"], off["fp"]) == (1, 2, 2, 1)
    assert off["em"] == pytest.approx(3 / 6)
    assert off["tpr"] == pytest.approx(1 / 3) and off["tnr"] == pytest.approx(2 / 3)
    assert off["paper_f1"] == pytest.approx(4 / 9)  # 2 (1/3)(2/3) / (1/3 + 2/3)
    assert off["precision"] == pytest.approx(1 / 2)
    assert off["f1"] == pytest.approx(2 / 5)  # 2TP / (2TP + FP + FN)
    # robust: predictions 1, 0, 1, 0, None, 1 -> TP=2, FN=1, TN=1, FP=2 (unparsed negative = FP)
    assert (rob["tp"], rob["fn"], rob["tn"], rob["fp"]) == (2, 1, 1, 2)
    assert rob["em"] == pytest.approx(0.5)
    assert rob["paper_f1"] == pytest.approx(4 / 9)
    assert rob["f1"] == pytest.approx(4 / 7)
    assert rob["unparsed"] == pytest.approx(1 / 6)
    # standard F1 against scikit-learn (an unparsed answer is the wrong class)
    pred = [p if p is not None else 1 - y for p, y in zip(map(robust_yes_no, gens), labels, strict=True)]
    assert rob["f1"] == pytest.approx(f1_score(labels, pred))


def test_yes_no_metrics_degenerate():
    m = yes_no_metrics(tp=0, tn=3, fp=0, fn=0)
    assert m["em"] == 1.0 and math.isnan(m["tpr"]) and math.isnan(m["precision"])
    with pytest.raises(ValueError, match="0 .false caption. or 1"):
        score_vsr(["Yes"], [2])


# ------------------------------------------------------------------------------------ split
# Validation positions saved by a run of the official code (output/sampled_idx_Controlled_Images_A.npy
# in the fork haewon22/AdaptVis_modified): seed_all(1) then random.sample, 20 % of 412 rows.
OFFICIAL_VAL_A = [
    1,
    4,
    11,
    13,
    14,
    15,
    17,
    32,
    48,
    51,
    52,
    60,
    61,
    68,
    95,
    97,
    107,
    110,
    112,
    113,
    117,
    118,
    119,
    124,
    130,
    136,
    145,
    148,
    151,
    155,
    162,
    170,
    176,
    194,
    195,
    199,
    201,
    206,
    213,
    216,
    221,
    224,
    228,
    230,
    235,
    241,
    245,
    249,
    253,
    255,
    256,
    258,
    259,
    270,
    277,
    283,
    284,
    291,
    300,
    301,
    302,
    311,
    322,
    328,
    332,
    333,
    343,
    346,
    351,
    356,
    364,
    369,
    370,
    371,
    380,
    389,
    390,
    391,
    392,
    403,
    408,
    410,
]
# adaptvis.md §3 (val/test); VSR_with_answer is not in the reference: int(0.2 * 629) = 125
SPLIT_SIZES = {
    "Controlled_Images_A": (82, 330),
    "Controlled_Images_B": (81, 327),
    "COCO_QA_one_obj": (449, 1798),
    "COCO_QA_two_obj": (88, 352),
    "VG_QA_one_obj": (232, 928),
    "VG_QA_two_obj": (58, 233),
    "VSR": (125, 504),
}


def test_official_split_matches_saved_official_indices():
    val, test = official_split(412)
    assert len(OFFICIAL_VAL_A) == 82
    assert val == OFFICIAL_VAL_A
    assert test == sorted(set(range(412)) - set(OFFICIAL_VAL_A))


@pytest.mark.parametrize("name", list(FILES))
def test_split_sizes_every_file_and_determinism(name):
    ds = load_spatial(prompt_file(name))
    assert ds.name == name  # detected from the file name
    val, test = ds.split()
    assert (len(val), len(test)) == SPLIT_SIZES[name]
    assert sorted(val.ids + test.ids) == sorted(ds.ids) and not set(val.ids) & set(test.ids)
    state = random.getstate()
    again, _ = ds.split()
    assert again.ids == val.ids
    assert random.getstate() == state  # the global RNG is not touched
    assert official_split(len(ds), seed=2)[0] != official_split(len(ds), seed=1)[0]


def test_every_whatsup_gold_is_a_listed_option_but_one():
    outside = []
    for name in FILES:
        if name == "VSR":
            continue
        for s in load_spatial(prompt_file(name)):
            assert len(s.options) in (2, 4, 6)
            if s.answer.lower() not in s.options:
                outside.append((name, s.id, s.answer))
    assert outside == [("VG_QA_two_obj", 56, "Above")]


# ---------------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("<image>\nUSER: Where? Answer with left, right, on or under.\nASSISTANT:", A_OPTIONS),
        (
            "<image>\nUSER: Where? Answer with left, right, above, or below.\nASSISTANT:",
            ("left", "right", "above", "below"),
        ),
        (
            "<image>\nUSER: Where? \nAnswer with left, right, front, behind, top or bottom.\nASSISTANT:",
            ("left", "right", "front", "behind", "top", "bottom"),
        ),
        ("<image>\nUSER: Where? Answer with behind or front.\nASSISTANT:", ("behind", "front")),
        ("<image>\nUSER: Where? Answer with one word or phrase.\nASSISTANT:", ()),
    ],
)
def test_parse_options(question, expected):
    assert parse_options(question) == expected


# ------------------------------------------------------------------------------ pair / set
def test_pair_set_accuracy_hand_computed():
    groups = ["mug|table"] * 4 + ["cup|chair"] * 4
    answers = ["Left", "Right", "On", "Under"] * 2
    correct = [True, True, True, True, False, True, True, True]
    r = pair_set_accuracy(correct, groups, answers)
    assert (r["pair_accuracy"], r["set_accuracy"], r["n_pairs"], r["n_sets"]) == (3 / 4, 1 / 2, 4, 2)
    # drop cup|chair "Under": 3 complete pairs (2 right), 1 complete set (right)
    r = pair_set_accuracy(correct[:7], groups[:7], answers[:7])
    assert (r["pair_accuracy"], r["set_accuracy"]) == (2 / 3, 1.0)
    r = pair_set_accuracy(correct[:7], groups[:7], answers[:7], official_denominator=True)
    assert r["pair_accuracy"] == pytest.approx(2 / 3.5) and r["set_accuracy"] == pytest.approx(1 / 1.75)
    with pytest.raises(ValueError, match="twice"):
        pair_set_accuracy([True, True], ["g", "g"], ["Left", "left"])


@pytest.mark.parametrize(("name", "n_sets"), [("Controlled_Images_A", 103), ("Controlled_Images_B", 102)])
def test_controlled_groups_from_questions(name, n_sets):
    ds = load_spatial(prompt_file(name))
    d = score_whatsup(ds.answers, ds).summary.set_index(["rule", "metric"])
    assert d.loc[("official", "set_accuracy"), "n"] == n_sets  # 103 (A) / 102 (B) object pairs x 4 images
    assert d.loc[("robust", "pair_accuracy"), "n"] == 2 * n_sets
    assert d.loc[("robust", "set_accuracy"), "value"] == 1.0


# ---------------------------------------------------------------------------------- presets
def test_presets_match_reference_table():
    # adaptvis.md §3 (later upstream run.sh, LLaVA-1.5): alpha, alpha_low, alpha_high, threshold
    table = {
        "Controlled_Images_A": (0.8, 0.5, 1.5, 0.4),
        "Controlled_Images_B": (0.8, 0.5, 1.5, 0.35),
        "COCO_QA_one_obj": (1.2, 0.5, 1.2, 0.3),
        "COCO_QA_two_obj": (1.2, 0.5, 1.2, 0.3),
        "VG_QA_one_obj": (2.0, 0.5, 2.0, 0.2),
        "VG_QA_two_obj": (2.0, 0.5, 2.0, 0.2),
        "VSR": (0.5, None, None, None),
    }
    assert set(ADAPTVIS_PRESETS) == set(table)
    for name, values in table.items():
        p = preset(name)
        assert (p.alpha, p.alpha_low, p.alpha_high, p.threshold) == values
    assert preset("Controlled_A") is preset("Controlled_Images_A")
    with pytest.raises(FrozenInstanceError):
        preset("VSR").alpha = 1.0
    with pytest.raises(KeyError, match="no official preset"):
        preset("GQA")
    assert load_spatial(prompt_file("Controlled_Images_B")).preset.threshold == 0.35


# ---------------------------------------------------------------------------------- loaders
def _write(path: Path, rows) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def _png(path: Path, size=(30, 20)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 10, 10)).save(path)
    return path


Q = "<image>\nUSER: Where is the mug in relation to the knife? Answer with left, right, on or under.\nASSISTANT:"


def test_loader_directory_and_lazy_images(tmp_path):
    f = _write(
        tmp_path / "Controlled_Images_A_with_answer_four_options.jsonl",
        [{"id": 0, "question": Q, "answer": ["Left"]}, {"id": 1, "question": Q, "answer": ["Right"]}],
    )
    _png(tmp_path / "img" / "0.png", (30, 20))
    _png(tmp_path / "img" / "1.jpg", (10, 12))
    ds = load_spatial(f, tmp_path / "img")
    s = ds[1]
    assert (s.id, s.answer, s.options, s.image_path.name) == (1, "Right", A_OPTIONS, "1.jpg")
    assert s.image.size == (10, 12) and s.image.mode == "RGB"
    assert len(ds[[1]]) == 1 and ds[[1]][0].id == 1
    assert [t.id for t in ds[np.array([1, 0])]] == [1, 0] and ds[np.int64(0)].id == 0
    listed = load_spatial(f, [tmp_path / "img" / "0.png", tmp_path / "img" / "1.jpg"])
    assert listed[0].image.size == (30, 20)
    with pytest.raises(ValueError, match="no image"):
        _ = load_spatial(f)[0].image


def test_loader_errors(tmp_path):
    good = {"id": 0, "question": Q, "answer": ["Left"]}
    f = _write(tmp_path / "x.jsonl", [good, "{not json"])
    with pytest.raises(ValueError, match=r"x.jsonl:2: not valid JSON"):
        load_spatial(f)
    f = _write(tmp_path / "x.jsonl", [good, {"id": 1, "question": "Where is it?", "answer": ["Left"]}])
    with pytest.raises(ValueError, match=r"x.jsonl:2: question has no '<image>'"):
        load_spatial(f)
    f = _write(tmp_path / "x.jsonl", [{"id": 0, "question": Q}])
    with pytest.raises(ValueError, match=r"x.jsonl:1: missing key.*answer"):
        load_spatial(f)
    f = _write(tmp_path / "x.jsonl", [{"id": 0, "question": Q, "answer": ["Left", "Right"]}])
    with pytest.raises(ValueError, match="1-element list"):
        load_spatial(f)
    f = _write(tmp_path / "x.jsonl", [good, {"id": 0, "question": Q, "answer": "Right"}])
    with pytest.raises(ValueError, match="duplicate ids"):
        load_spatial(f)
    f = _write(tmp_path / "x.jsonl", [good, {"id": 7, "question": Q, "answer": "Right"}])
    _png(tmp_path / "img" / "0.png")
    with pytest.raises(FileNotFoundError, match=r"no image for 1 id\(s\).*\[7\]"):
        load_spatial(f, tmp_path / "img")
    with pytest.raises(ValueError, match="ids go up to 7"):
        load_spatial(f, [tmp_path / "img" / "0.png"])
    with pytest.raises(FileNotFoundError, match="neither a directory nor an annotation"):
        load_spatial(f, tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_spatial(tmp_path / "missing.jsonl")


def test_loader_official_annotation_json(tmp_path):
    # Controlled: dicts with image_path relative to the folder the official code ran in
    repo = tmp_path / "repo"
    rels = ["data/controlled_images/mug_left_of_knife.jpeg", "data/controlled_images/mug_right_of_knife.jpeg"]
    for rel in rels:
        _png(repo / rel)
    ann = repo / "data" / "controlled_images_dataset.json"
    ann.write_text(json.dumps([{"image_path": r, "caption_options": ["a", "b"]} for r in rels]))
    f = _write(
        tmp_path / "Controlled_Images_A_with_answer_four_options.jsonl",
        [{"id": 0, "question": Q, "answer": ["Left"]}, {"id": 1, "question": Q, "answer": ["Right"]}],
    )
    ds = load_spatial(f, ann)
    assert [s.image_path for s in ds] == [repo / r for r in rels]
    assert ds[0].group == ds[1].group == "mug|knife"  # official key: first and last '_' tokens
    r = score_whatsup(["left", "left"], ds).to_dict()["robust"]
    assert (r["accuracy"], r["pair_accuracy"]) == (0.5, 0.0)
    ann.write_text(json.dumps([{"image_path": rels[0]}]))
    with pytest.raises(ValueError, match="expected a list of 2 entries"):
        load_spatial(f, ann)
    # COCO_QA: [image_id, true caption, false caption], images in val2017/<id:012d>.jpg
    coco = tmp_path / "coco"
    _png(coco / "val2017" / "000000000139.jpg")
    (coco / "coco_qa_one_obj.json").write_text(json.dumps([[139, "a dog on the left", "a dog on the right"]]))
    g = _write(
        tmp_path / "COCO_QA_one_obj_with_answer_four_options.jsonl", [{"id": 0, "question": Q, "answer": ["Left"]}]
    )
    assert load_spatial(g, coco / "coco_qa_one_obj.json")[0].image_path.name == "000000000139.jpg"
    (coco / "coco_qa_one_obj.json").write_text(json.dumps([[140, "x", "y"]]))
    with pytest.raises(FileNotFoundError, match=r"\[140\]"):
        load_spatial(g, coco / "coco_qa_one_obj.json")


def test_load_vsr_judge(tmp_path):
    rows = [
        {"image": "000000000001.jpg", "caption": "The cat is on the bed.", "label": 1, "relation": "on"},
        {
            "image_link": "http://images.cocodataset.org/train2017/000000000002.jpg",
            "caption": "The car is in the box.",
            "label": 0,
        },
    ]
    f = _write(tmp_path / "test.jsonl", rows)
    _png(tmp_path / "coco" / "000000000001.jpg")
    _png(tmp_path / "coco" / "000000000002.jpg")
    ds = load_vsr_judge(f, tmp_path / "coco", official_resize=True)
    assert ds[0].prompt == VSR_PROMPT.format(caption="The cat is on the bed.")
    assert ds[0].prompt.startswith("User: <image>\n Determine") and ds[0].prompt.endswith("bed. Assistant:")
    assert [(s.answer, s.label) for s in ds] == [("Yes", 1), ("No", 0)]
    assert ds[1].image.size == (2300, 4096)  # the official stretch
    assert score_vsr(["Yes", "No"], ds).to_dict()["official"]["em"] == 1.0
    with pytest.raises(ValueError, match="no yes/no labels"):
        score_vsr(
            ["Yes"],
            load_spatial(_write(tmp_path / "VSR_with_answer.jsonl", [{"id": 3, "question": Q, "answer": "on"}])),
        )
    f = _write(tmp_path / "bad.jsonl", [{"image": "a.jpg", "caption": "c", "label": "yes"}])
    with pytest.raises(ValueError, match="bad.jsonl:1: label must be 0 or 1"):
        load_vsr_judge(f)


def test_official_pair_accuracy_uses_the_official_denominator_on_subsets(tmp_path):
    # 3 rows: a complete left/right pair of (mug, knife) + one row of (cup, plate). All answered right.
    q2 = Q.replace("mug", "cup").replace("knife", "plate")
    f = _write(
        tmp_path / "Controlled_Images_A_with_answer_four_options.jsonl",
        [
            {"id": 0, "question": Q, "answer": ["Left"]},
            {"id": 1, "question": Q, "answer": ["Right"]},
            {"id": 2, "question": q2, "answer": ["Left"]},
        ],
    )
    scores = score_whatsup(["left", "right", "left"], load_spatial(f)).to_dict()
    assert scores["official"]["pair_accuracy"] == pytest.approx(1 / 1.5)  # official: 1 correct pair / (N / 2)
    assert scores["robust"]["pair_accuracy"] == 1.0  # 1 correct pair / 1 complete pair
