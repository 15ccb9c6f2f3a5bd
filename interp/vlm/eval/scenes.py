"""Synthetic spatial scenes: two objects drawn with PIL at known boxes, WhatsUp-style.

Real WhatsUp / VSR images cannot be downloaded here; these scenes give examples
with exact ground-truth boxes for the notebook, the docs and the tests (a tiny
random model answers them at chance -- the point is the plumbing, not accuracy).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

__all__ = ["SyntheticScene", "synthetic_scene", "synthetic_scenes", "RELATIONS"]

RELATIONS = ("left", "right", "on", "under")
_COLORS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 70), "yellow": (230, 200, 40)}
_SHAPES = ("box", "ball")


@dataclass
class SyntheticScene:
    """One scene: the image, the two objects' boxes ``(x0, y0, x1, y1)`` and a WhatsUp-style prompt."""

    image: Image.Image
    boxes: dict[str, tuple[int, int, int, int]]
    prompt: str
    answer: str
    relation: str


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color) -> None:
    # PIL's rectangle/ellipse include the x1, y1 pixel: draw up to x1 - 1 so the box is [x0, x1) × [y0, y1).
    inclusive = (box[0], box[1], box[2] - 1, box[3] - 1)
    if shape == "ball":
        draw.ellipse(inclusive, fill=color)
    else:
        draw.rectangle(inclusive, fill=color)


def synthetic_scene(relation: str, size: tuple[int, int] = (480, 320), seed: int = 0) -> SyntheticScene:
    """A scene where object A is ``relation`` (left / right / on / under) object B.

    The prompt follows the WhatsUp Controlled-A template (``<image>\\nUSER: Where is
    the A in relation to the B? Answer with left, right, on or under.\\nASSISTANT:``).
    """
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    rng = random.Random(seed)
    width, height = size
    (ca, cb), (sa, sb) = rng.sample(sorted(_COLORS), 2), (rng.choice(_SHAPES), rng.choice(_SHAPES))
    s = min(width, height) // 4
    cx, cy = width // 2 + rng.randint(-s // 2, s // 2), height // 2 + rng.randint(-s // 4, s // 4)
    b = (cx - s // 2, cy - s // 2, cx + s // 2, cy + s // 2)
    offsets = {"left": (-s - s // 2, 0), "right": (s + s // 2, 0), "on": (0, -s), "under": (0, s)}
    dx, dy = offsets[relation]
    a = (b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy)
    image = Image.new("RGB", size, (235, 235, 225))
    draw = ImageDraw.Draw(image)
    _draw(draw, sb, b, _COLORS[cb])
    _draw(draw, sa, a, _COLORS[ca])
    name_a, name_b = f"{ca} {sa}", f"{cb} {sb}"
    prompt = (
        f"<image>\nUSER: Where is the {name_a} in relation to the {name_b}? "
        "Answer with left, right, on or under.\nASSISTANT:"
    )
    return SyntheticScene(image, {name_a: a, name_b: b}, prompt, relation.capitalize(), relation)


def synthetic_scenes(n: int, size: tuple[int, int] = (480, 320), seed: int = 0) -> list[SyntheticScene]:
    """``n`` scenes cycling through the relations, each with its own seed."""
    return [synthetic_scene(RELATIONS[i % len(RELATIONS)], size, seed + i) for i in range(n)]
