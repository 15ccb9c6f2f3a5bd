"""Synthetic spatial scenes: coloured shapes drawn with PIL at exact boxes, with WhatsUp-style questions.

Real WhatsUp / VSR images cannot be downloaded here; these scenes give examples with exact
ground-truth boxes. Two generators:

* :func:`synthetic_scene` / :func:`synthetic_scenes` -- two objects in a fixed layout, for
  plumbing demos and tests (a random model answers them at chance).
* :func:`spatial_scene` / :func:`spatial_scenes` -- the distribution the toy spatial VLM
  (:mod:`interp.vlm.eval.spatial_model`) is trained and evaluated on: a small object named by
  colour and shape (``"red box"``) in one of the four WhatsUp Controlled-A relations to a coloured
  table (``"blue table"``), 0-2 distractor objects that may share its colour or its shape, varied
  sizes and positions, and controlled splits (:data:`SPLITS`): held-out colour/shape combinations
  and a held-out zone of the image.
  :func:`position_question` asks where one object is in the image (the COCO_QA_one_obj
  wording), the auxiliary question of the training mixture.

Data flow: ``(split, seed, index)`` -> a seeded ``random.Random`` -> object identities, sizes and
boxes (continuous pixel edges ``(x0, y0, x1, y1)``, ``x0 <= x < x1``) -> a PIL image and the prompt.
The question text is the same template for every relation, so the answer cannot be read off the
text: the relation is drawn uniformly and independently of the objects' names.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

__all__ = [
    "COLORS",
    "HELD_OUT_OBJECTS",
    "POSITIONS",
    "REFERENCE",
    "RELATIONS",
    "SHAPES",
    "SPLITS",
    "SceneSplit",
    "SyntheticScene",
    "position_prompt",
    "position_question",
    "relation_prompt",
    "spatial_scene",
    "spatial_scenes",
    "synthetic_scene",
    "synthetic_scenes",
]

RELATIONS = ("left", "right", "on", "under")
#: answers of :func:`position_question` (where one object is in the image)
POSITIONS = ("left", "right", "top", "bottom")
#: the palette of :func:`spatial_scene` (RGB)
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 40),
    "purple": (150, 60, 200),
}
SHAPES = ("box", "ball", "triangle")
#: colour/shape combinations never drawn in the ``"train"`` split (every colour and shape still is)
HELD_OUT_OBJECTS = (("green", "triangle"), ("purple", "ball"), ("yellow", "box"))
_BACKGROUND = (235, 235, 225)
_LEGACY_COLORS = ("blue", "green", "red", "yellow")  # synthetic_scene's palette, kept as it was
_LEGACY_SHAPES = ("box", "ball")

Box = tuple[int, int, int, int]


@dataclass
class SyntheticScene:
    """One scene: the image, the queried objects' boxes ``(x0, y0, x1, y1)`` and a WhatsUp-style prompt.

    Attributes:
        image: the PIL image.
        boxes: ``{name: box}`` of the two queried objects, the first one (A) first.
        prompt: ``"<image>\\nUSER: Where is the A in relation to the B? Answer with left, right, on or
            under.\\nASSISTANT:"``.
        answer: the gold answer, capitalised like the WhatsUp files (``"Left"``).
        relation: ``"left" | "right" | "on" | "under"``: A is ``relation`` B.
        distractors: ``{name: box}`` of the other objects (:func:`spatial_scene` only).
        split: the :data:`SPLITS` name the scene was drawn from (:func:`spatial_scene` only).
    """

    image: Image.Image
    boxes: dict[str, Box]
    prompt: str
    answer: str
    relation: str
    distractors: dict[str, Box] = field(default_factory=dict)
    split: str | None = None

    @property
    def names(self) -> tuple[str, str]:
        """``(A, B)``: the queried objects' names, in the order of the question."""
        a, b = self.boxes
        return a, b


def relation_prompt(name_a: str, name_b: str) -> str:
    """The WhatsUp Controlled-A question about two named objects."""
    return (
        f"<image>\nUSER: Where is the {name_a} in relation to the {name_b}? "
        "Answer with left, right, on or under.\nASSISTANT:"
    )


def position_prompt(name: str) -> str:
    """The COCO_QA_one_obj question about where one named object is in the photo."""
    return f"<image>\nUSER: Where is the {name} in the photo? Answer with left, right, top or bottom.\nASSISTANT:"


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: Box, color) -> None:
    # PIL's rectangle/ellipse include the x1, y1 pixel: draw up to x1 - 1 so the box is [x0, x1) × [y0, y1).
    x0, y0, x1, y1 = box[0], box[1], box[2] - 1, box[3] - 1
    if shape == "ball":
        draw.ellipse((x0, y0, x1, y1), fill=color)
    elif shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=color)
    else:
        draw.rectangle((x0, y0, x1, y1), fill=color)


def synthetic_scene(relation: str, size: tuple[int, int] = (480, 320), seed: int = 0) -> SyntheticScene:
    """A scene where object A is ``relation`` (left / right / on / under) object B.

    Two objects of one size near the centre (no distractors); the prompt follows the WhatsUp
    Controlled-A template (:func:`relation_prompt`).
    """
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    rng = random.Random(seed)
    width, height = size
    (ca, cb), (sa, sb) = rng.sample(_LEGACY_COLORS, 2), (rng.choice(_LEGACY_SHAPES), rng.choice(_LEGACY_SHAPES))
    s = min(width, height) // 4
    cx, cy = width // 2 + rng.randint(-s // 2, s // 2), height // 2 + rng.randint(-s // 4, s // 4)
    b = (cx - s // 2, cy - s // 2, cx + s // 2, cy + s // 2)
    offsets = {"left": (-s - s // 2, 0), "right": (s + s // 2, 0), "on": (0, -s), "under": (0, s)}
    dx, dy = offsets[relation]
    a = (b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy)
    image = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(image)
    _draw(draw, sb, b, COLORS[cb])
    _draw(draw, sa, a, COLORS[ca])
    name_a, name_b = f"{ca} {sa}", f"{cb} {sb}"
    return SyntheticScene(image, {name_a: a, name_b: b}, relation_prompt(name_a, name_b), relation.capitalize(),
                          relation)  # fmt: skip


def synthetic_scenes(n: int, size: tuple[int, int] = (480, 320), seed: int = 0) -> list[SyntheticScene]:
    """``n`` scenes cycling through the relations, each with its own seed."""
    return [synthetic_scene(RELATIONS[i % len(RELATIONS)], size, seed + i) for i in range(n)]


# ----------------------------------------------------------------------------- the spatial-VLM distribution


@dataclass(frozen=True)
class SceneSplit:
    """What one split of :func:`spatial_scene` draws.

    Attributes:
        name: the split's name.
        queried: which object A is: ``"seen"`` (a training colour/shape combination) or
            ``"held_out"`` (one of :data:`HELD_OUT_OBJECTS`).
        zone: where the pair's centre (the centre of the union of A's and the table's boxes) lies
            relative to the held-out zone (the bottom-right quarter of the visible square, ``u, v >=
            0.5`` in units of its side): ``"outside"`` or ``"inside"``.
    """

    name: str
    queried: str
    zone: str


#: The controlled splits. ``train`` and ``test`` are one distribution (different seeds);
#: ``held_out_objects`` asks about colour/shape combinations never drawn in training;
#: ``held_out_positions`` puts the queried pair where no training pair was centred.
SPLITS = {
    "train": SceneSplit("train", "seen", "outside"),
    "test": SceneSplit("test", "seen", "outside"),
    "held_out_objects": SceneSplit("held_out_objects", "held_out", "outside"),
    "held_out_positions": SceneSplit("held_out_positions", "seen", "inside"),
}
#: the reference object B of :func:`spatial_scene` (a wide slab), named ``"<colour> table"``
REFERENCE = "table"
_SEEN = tuple((c, s) for c in COLORS for s in SHAPES if (c, s) not in HELD_OUT_OBJECTS)
_SIZE = (0.15, 0.22)  # small objects' side, in units of the visible square's side
_TABLE_W, _TABLE_H = (0.3, 0.45), (0.1, 0.15)  # the table's width and height
_GAP = (0.03, 0.2)  # left/right: horizontal gap between A and the table
_MAX_TRIES = 10_000


def _visible_square(size: tuple[int, int]) -> tuple[int, int, int]:
    """``(x0, y0, side)``: the centred square a shortest-edge resize + center crop keeps."""
    width, height = size
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def _overlaps(a: Box, b: Box, margin: int) -> bool:
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1])


def _span(rng: random.Random, side: int, bounds: tuple[float, float]) -> int:
    return rng.randint(round(bounds[0] * side), round(bounds[1] * side))


def _place_pair(rng: random.Random, relation: str, side: int, zone: str) -> tuple[Box, Box]:
    """A's and the table's boxes in visible-square coordinates (origin at its top-left corner).

    left / right: A beside the table, a gap between them, A's centre within the table's height
    band (±30 % of it); on: A's bottom edge on the table's top edge; under: A's top edge on its
    bottom edge -- A lying horizontally within the table's span in both.
    """
    for _ in range(_MAX_TRIES):
        sa, bw, bh = _span(rng, side, _SIZE), _span(rng, side, _TABLE_W), _span(rng, side, _TABLE_H)
        bx, by = rng.randint(0, side - bw), rng.randint(0, side - bh)
        if relation in ("left", "right"):
            gap = _span(rng, side, _GAP)
            ay = round(by + bh / 2 + rng.uniform(-0.3, 0.3) * bh - sa / 2)
            ax = bx - gap - sa if relation == "left" else bx + bw + gap
        else:
            ax = round(rng.uniform(bx, bx + bw - sa))
            ay = by - sa if relation == "on" else by + bh
        a, b = (ax, ay, ax + sa, ay + sa), (bx, by, bx + bw, by + bh)
        if min(a) < 0 or max(a[2], a[3]) > side:
            continue
        cx = (min(a[0], b[0]) + max(a[2], b[2])) / 2 / side
        cy = (min(a[1], b[1]) + max(a[3], b[3])) / 2 / side
        if (cx >= 0.5 and cy >= 0.5) == (zone == "inside"):
            return a, b
    raise RuntimeError(f"could not place a {relation!r} pair in {_MAX_TRIES} tries")  # pragma: no cover


def spatial_scene(
    split: str = "train",
    seed: int = 0,
    index: int = 0,
    *,
    size: tuple[int, int] = (128, 128),
    n_distractors: tuple[int, int] = (0, 2),
    relation: str | None = None,
) -> SyntheticScene:
    """One scene of the toy spatial-VLM distribution (see the module docstring).

    Object A is a small coloured shape (``"red ball"``), object B a coloured table (``"blue
    table"``, a wide slab, never A's colour), as in WhatsUp Controlled-A where a small object is
    left of / right of / on / under a piece of furniture. A is named first; the question is the same
    template for every relation.

    Args:
        split: a :data:`SPLITS` name.
        seed, index: the scene is a pure function of ``(split, seed, index, size, n_distractors,
            relation)``; different splits never share a random stream.
        size: ``(width, height)`` in pixels. Objects lie in the centred square of side
            ``min(width, height)`` -- what a shortest-edge resize and center crop keep.
        n_distractors: ``(min, max)`` number of extra small objects, drawn uniformly: training
            colour/shape combinations other than A's (so they may share A's colour or its shape, or
            the table's colour), placed without touching any other object.
        relation: force the relation (default: drawn uniformly from :data:`RELATIONS`).

    Returns:
        A :class:`SyntheticScene` whose ``boxes`` are A's and the table's, ``distractors`` the others'.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    if relation is not None and relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    lo, hi = n_distractors
    if not 0 <= lo <= hi:
        raise ValueError(f"n_distractors must be (min, max) with 0 <= min <= max, got {n_distractors!r}")
    spec = SPLITS[split]
    rng = random.Random(f"interp.spatial_scene:{split}:{seed}:{index}")  # str seeds hash with SHA-512: stable
    relation = relation or rng.choice(RELATIONS)
    obj_a = rng.choice(_SEEN if spec.queried == "seen" else HELD_OUT_OBJECTS)
    table_color = rng.choice([c for c in COLORS if c != obj_a[0]])
    ox, oy, side = _visible_square(size)
    box_a, box_b = _place_pair(rng, relation, side, spec.zone)
    placed = [box_a, box_b]
    distractors: dict[str, tuple[tuple[str, str], Box]] = {}
    candidates = [o for o in _SEEN if o != obj_a]
    for _ in range(rng.randint(lo, hi)):
        obj = rng.choice([o for o in candidates if f"{o[0]} {o[1]}" not in distractors])
        for _ in range(100):
            s = _span(rng, side, _SIZE)
            x, y = rng.randint(0, side - s), rng.randint(0, side - s)
            box = (x, y, x + s, y + s)
            if not any(_overlaps(box, other, margin=max(2, side // 40)) for other in placed):
                placed.append(box)
                distractors[f"{obj[0]} {obj[1]}"] = (obj, box)
                break
    image = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(image)

    def shift(box: Box) -> Box:
        return box[0] + ox, box[1] + oy, box[2] + ox, box[3] + oy

    for (color, shape), box in distractors.values():
        _draw(draw, shape, shift(box), COLORS[color])
    _draw(draw, "box", shift(box_b), COLORS[table_color])
    _draw(draw, obj_a[1], shift(box_a), COLORS[obj_a[0]])
    name_a, name_b = f"{obj_a[0]} {obj_a[1]}", f"{table_color} {REFERENCE}"
    return SyntheticScene(
        image,
        {name_a: shift(box_a), name_b: shift(box_b)},
        relation_prompt(name_a, name_b),
        relation.capitalize(),
        relation,
        {name: shift(box) for name, (_, box) in distractors.items()},
        split,
    )


def spatial_scenes(
    n: int, split: str = "test", seed: int = 0, *, size: tuple[int, int] = (128, 128), **kwargs
) -> list[SyntheticScene]:
    """``n`` scenes of ``split`` (indices ``0..n-1``); the relations cycle, so each is ~n/4 of them."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [
        spatial_scene(split, seed, i, size=size, relation=RELATIONS[i % len(RELATIONS)], **kwargs) for i in range(n)
    ]


def position_question(scene: SyntheticScene, name: str | None = None) -> tuple[str, str]:
    """Where one object is in the image: ``(prompt, answer)`` in the COCO_QA_one_obj wording.

    The answer is the dominant direction of the box centre from the centre of the visible square:
    ``left``/``right`` if the horizontal offset is at least the vertical one, else ``top``/``bottom``.
    ``name`` defaults to object A.
    """
    name = scene.names[0] if name is None else name
    boxes = {**scene.boxes, **scene.distractors}
    if name not in boxes:
        raise ValueError(f"no object {name!r} in the scene; it has {list(boxes)}")
    x0, y0, x1, y1 = boxes[name]
    ox, oy, side = _visible_square(scene.image.size)
    dx, dy = (x0 + x1) / 2 - ox - side / 2, (y0 + y1) / 2 - oy - side / 2
    answer = ("left" if dx < 0 else "right") if abs(dx) >= abs(dy) else ("top" if dy < 0 else "bottom")
    return position_prompt(name), answer.capitalize()
