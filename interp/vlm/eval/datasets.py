"""WhatsUp / VSR spatial-reasoning prompts, their images and the official split (presets: :mod:`.presets`).

The AdaptVis prompt files (``prompts/*.jsonl`` in shiqichen17/AdaptVis) hold one
``{"id", "question", "answer"}`` row per line; the question is the full prompt,
``"<image>\\nUSER: ... Answer with left, right, on or under.\\nASSISTANT:"``, and the
answer is ``["On"]`` (WhatsUp) or a plain relation string (``VSR_with_answer``).
:func:`load_spatial` pairs such a file with an images source and returns a
:class:`SpatialDataset` of :class:`SpatialSample` s; images are opened lazily.

Images sources (``images=``):

* a directory with one file per row named by its id: ``<id>.jpg`` / ``.jpeg`` / ``.png``;
* a list of paths, indexed by id (``images[id]``);
* the official annotation JSON of whatsup_vlms (row ``i`` of the prompt file is entry
  ``i``, as in the official code): Controlled_Images_A/B are dicts whose ``"image_path"``
  is relative to the directory the official code ran in (``data/controlled_images/...``;
  resolved against ``image_root``, default: the JSON's folder and its parent); COCO_QA
  rows are ``[image_id, true caption, false caption]`` with the image in
  ``<image_root>/val2017/<image_id:012d>.jpg``; VG_QA rows likewise with
  ``<image_root>/vg_images/<image_id>.jpg`` (``image_root`` defaults to the JSON's folder);
* ``None``: prompts only (``sample.image`` then raises).

Every image path is checked when the dataset is built, so a missing file fails at load
time with the offending ids, not halfway through an evaluation.

The VSR yes/no task the paper scores (VSR EM / "F1") is not the ``VSR_with_answer``
prompt file (which the official code never reads) but the ``cambridgeltl/vsr_zeroshot``
test split; :func:`load_vsr_judge` builds the official yes/no prompts from it.

:func:`official_split` reproduces the official 20 % validation / 80 % test split
bit for bit: ``random.seed(1)`` (the first thing ``seed_all(1)`` does), then one
``random.sample(range(N), int(0.2 * N))``, sorted (``main_aro.py``; verified against a
``sampled_idx_Controlled_Images_A.npy`` saved by a run of the official code).
"""

from __future__ import annotations

import json
import operator
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from interp._validation import check_int
from interp.data.jsonl import iter_jsonl_objects
from interp.vlm.presets import DATASET_NAMES, AdaptVisPreset, canonical_dataset_name, preset

__all__ = [
    "SpatialDataset",
    "SpatialSample",
    "VSR_OFFICIAL_RESIZE",
    "VSR_PROMPT",
    "load_spatial",
    "load_vsr_judge",
    "official_split",
    "parse_options",
]

_IMAGE_EXTS = (".jpg", ".jpeg", ".png")
IMAGE_TOKEN = "<image>"
#: Official VSR yes/no prompt (``get_judge_scores_vsr_batched``); ``{caption}`` is the VSR caption.
VSR_PROMPT = (
    "User: <image>\n Determine whether the description about the spatial relationship is correct or not. "
    "Answer with yes or no: {caption} Assistant:"
)
#: The official VSR loader stretches every image to this (width, height) before the processor.
VSR_OFFICIAL_RESIZE = (2300, 4096)


# ------------------------------------------------------------------------------------------ split
def official_split(n: int, seed: int = 1, fraction: float = 0.2) -> tuple[list[int], list[int]]:
    """``(validation, test)`` positions of the official split of an ``n``-row dataset.

    Exactly the official RNG calls: ``random.seed(seed)`` then
    ``sorted(random.sample(range(n), int(fraction * n)))`` for validation; test is the
    sorted rest. Uses a private :class:`random.Random`, so the global RNG is untouched.
    """
    n = check_int("n", n, low=0)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    val = sorted(random.Random(seed).sample(range(n), int(fraction * n)))
    taken = set(val)
    return val, [i for i in range(n) if i not in taken]


# ---------------------------------------------------------------------------------------- samples
_OPTIONS_RE = re.compile(r"Answer with ([^.?\n]+)")
_OPTION_SPLIT_RE = re.compile(r"\s*,\s*(?:or\s+)?|\s+or\s+")


def parse_options(question: str) -> tuple[str, ...]:
    """Answer options listed in ``"... Answer with left, right, on or under."``, lower-case.

    ``()`` for an open question (``"Answer with one word or phrase."``) or none listed.
    """
    m = _OPTIONS_RE.search(question)
    if m is None or m.group(1).strip().lower() == "one word or phrase":
        return ()
    return tuple(o.strip().lower() for o in _OPTION_SPLIT_RE.split(m.group(1).strip()) if o.strip())


@dataclass(frozen=True)
class SpatialSample:
    """One prompt: ``prompt`` holds the ``<image>`` placeholder; ``answer`` is the gold string.

    ``index`` is the row position in the file (what the official split indexes),
    ``id`` the file's own id. ``group`` (Controlled only) names the 4 images of one
    object pair, the unit of the official pair / set accuracy.
    """

    index: int
    id: int
    prompt: str
    answer: str
    options: tuple[str, ...]
    image_path: Path | None = None
    group: str | None = None
    label: int | None = None  # VSR yes/no judgement: 1 = the caption is true
    resize: tuple[int, int] | None = None

    @property
    def question(self) -> str:
        return self.prompt

    @property
    def image(self):
        """The image as an RGB ``PIL.Image`` (opened on each access)."""
        if self.image_path is None:
            raise ValueError(f"sample id {self.id} has no image: pass images=<dir | list | annotation json>")
        from PIL import Image

        with Image.open(self.image_path) as im:
            im = im.convert("RGB")
        return im.resize(self.resize) if self.resize else im


@dataclass(frozen=True)
class SpatialDataset:
    """Rows of one prompt file. ``ds[i]`` is a :class:`SpatialSample`; ``ds[[i, j]]`` a sub-dataset."""

    name: str
    samples: tuple[SpatialSample, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return replace(self, samples=self.samples[item])
        try:
            position = operator.index(item)
        except TypeError:  # a list / array of positions
            return replace(self, samples=tuple(self.samples[operator.index(i)] for i in item))
        return self.samples[position]

    @property
    def prompts(self) -> list[str]:
        return [s.prompt for s in self.samples]

    @property
    def answers(self) -> list[str]:
        return [s.answer for s in self.samples]

    @property
    def ids(self) -> list[int]:
        return [s.id for s in self.samples]

    @property
    def preset(self) -> AdaptVisPreset:
        return preset(self.name)

    def split(self, seed: int = 1, fraction: float = 0.2) -> tuple[SpatialDataset, SpatialDataset]:
        """``(validation, test)`` by :func:`official_split` over this dataset's rows."""
        val, test = official_split(len(self), seed, fraction)
        return self[val], self[test]

    def __repr__(self) -> str:
        return f"SpatialDataset({self.name!r}, {len(self)} samples, source={self.source!r})"


# ---------------------------------------------------------------------------------------- loaders
def _dataset_name(path: Path) -> str:
    stem = path.name.split(".")[0]
    name = re.split(r"_with_answer", stem)[0]
    return canonical_dataset_name(name)


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    rows = list(iter_jsonl_objects(path))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def _check_row(path: Path, lineno: int, row: dict, keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise ValueError(f"{path}:{lineno}: missing key(s) {missing}; rows need {list(keys)}")


def _by_id_dir(directory: Path, ids: list[int], key=str) -> list[Path]:
    found: dict[str, Path] = {}
    for p in directory.iterdir():
        if p.suffix.lower() in _IMAGE_EXTS:
            found.setdefault(p.stem, p)
    missing = [i for i in ids if key(i) not in found]
    if missing:
        raise FileNotFoundError(
            f"no image for {len(missing)} id(s) in {directory} (e.g. {missing[:5]}); "
            f"expected files named <id>{{{','.join(_IMAGE_EXTS)}}}"
        )
    return [found[key(i)] for i in ids]


def _controlled_group(image_path: str) -> str:
    # official key: (first '_' token, last '_' token without extension) of the file name
    parts = Path(image_path).stem.split("_")
    return f"{parts[0]}|{parts[-1]}"


def _question_group(question: str) -> str:
    return re.sub(r"[\s,]+", " ", question).strip().lower()


def _from_annotation(path: Path, name: str, n: int, image_root: Path | None) -> tuple[list[Path], list[str | None]]:
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list) or len(entries) != n:
        got = len(entries) if isinstance(entries, list) else type(entries).__name__
        raise ValueError(f"{path}: expected a list of {n} entries (one per prompt row), got {got}")
    if name.startswith("Controlled_Images"):
        bases = [image_root] if image_root else [path.parent, path.parent.parent]
        paths, groups, missing = [], [], []
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or "image_path" not in e:
                raise ValueError(f"{path}: entry {i} has no 'image_path' (expected the Controlled_Images format)")
            rel = Path(e["image_path"])
            cands = [rel] if rel.is_absolute() else [b / rel for b in bases] + [b / rel.name for b in bases]
            hit = next((c for c in cands if c.is_file()), None)
            if hit is None:
                missing.append((i, str(rel)))
            paths.append(hit)
            groups.append(_controlled_group(e["image_path"]))
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} image(s) of {path} not found (e.g. {missing[:3]}) under {[str(b) for b in bases]}; "
                "pass image_root=<the folder the image_path values are relative to>"
            )
        return paths, groups
    if name.startswith(("COCO_QA", "VG_QA")):
        root = image_root or path.parent
        if name.startswith("COCO_QA"):
            folder, key = root / "val2017", lambda i: str(i).zfill(12)
        else:
            folder, key = root / "vg_images", str
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist; pass image_root=<folder containing it>")
        bad = [i for i, e in enumerate(entries) if not isinstance(e, list) or not e]
        if bad:
            raise ValueError(f"{path}: entries {bad[:5]} are not [image_id, captions...] lists")
        return _by_id_dir(folder, [e[0] for e in entries], key=key), [None] * n
    raise ValueError(f"cannot read an annotation JSON for dataset {name!r}; pass dataset_name= one of {DATASET_NAMES}")


def load_spatial(
    prompts: str | Path,
    images: str | Path | Sequence[str | Path] | None = None,
    *,
    dataset_name: str | None = None,
    image_root: str | Path | None = None,
) -> SpatialDataset:
    """Load a WhatsUp / VSR prompt file and pair each row with its image.

    Args:
        prompts: ``*.jsonl`` with ``{"id", "question", "answer"}`` rows; the question must
            contain ``<image>``; ``answer`` is a string or a 1-element list.
        images: a directory of ``<id>.jpg|.jpeg|.png``, a list of paths indexed by id, the
            official annotation ``.json``, or ``None`` (see the module docstring).
        dataset_name: overrides the name read from the file name (``X_with_answer_*.jsonl`` -> ``X``).
        image_root: folder the annotation JSON's image paths are relative to.
    """
    path = Path(prompts)
    name = canonical_dataset_name(dataset_name) if dataset_name else _dataset_name(path)
    rows = _read_jsonl(path)
    samples = []
    for index, (lineno, row) in enumerate(rows):
        _check_row(path, lineno, row, ("id", "question", "answer"))
        question, answer = row["question"], row["answer"]
        if not isinstance(question, str) or IMAGE_TOKEN not in question:
            raise ValueError(f"{path}:{lineno}: question has no {IMAGE_TOKEN!r} placeholder: {str(question)[:80]!r}")
        if isinstance(answer, list):
            if len(answer) != 1 or not isinstance(answer[0], str):
                raise ValueError(f"{path}:{lineno}: answer must be a string or a 1-element list, got {answer!r}")
            answer = answer[0]
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"{path}:{lineno}: empty or non-string answer {answer!r}")
        if not isinstance(row["id"], int):
            raise ValueError(f"{path}:{lineno}: id must be an int, got {row['id']!r}")
        group = _question_group(question) if name.startswith("Controlled_Images") else None
        samples.append(SpatialSample(index, row["id"], question, answer, parse_options(question), None, group))
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{path}: duplicate ids {dup[:5]}")
    paths, groups = [None] * len(samples), [s.group for s in samples]
    if images is not None:
        if isinstance(images, str | Path) and Path(images).is_dir():
            paths = _by_id_dir(Path(images), ids)
        elif isinstance(images, str | Path) and str(images).endswith(".json"):
            if not Path(images).is_file():
                raise FileNotFoundError(f"annotation file {images} does not exist")
            paths, groups = _from_annotation(Path(images), name, len(samples), image_root and Path(image_root))
            groups = [g if g is not None else s.group for g, s in zip(groups, samples, strict=True)]
        elif isinstance(images, str | Path):
            raise FileNotFoundError(f"images={images!r} is neither a directory nor an annotation .json file")
        else:
            images = [Path(p) for p in images]
            short = [i for i in ids if i >= len(images)]
            if short:
                raise ValueError(f"images has {len(images)} paths but ids go up to {max(ids)}; index images by id")
            paths = [images[i] for i in ids]
            missing = [(i, str(p)) for i, p in zip(ids, paths, strict=True) if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"{len(missing)} image file(s) do not exist (e.g. {missing[:3]})")
    samples = [replace(s, image_path=p, group=g) for s, p, g in zip(samples, paths, groups, strict=True)]
    return SpatialDataset(name, tuple(samples), str(path))


def load_vsr_judge(
    path: str | Path, images: str | Path | None = None, *, official_resize: bool = False
) -> SpatialDataset:
    """VSR yes/no judgement set (``cambridgeltl/vsr_zeroshot`` jsonl: ``caption``, ``label``, ``image``).

    Prompts use the official template :data:`VSR_PROMPT`; ``answer`` is ``"Yes"``/``"No"`` and
    ``label`` 1/0. ``images`` is a directory holding the COCO files named as in ``image``
    (or the basename of ``image_link``). ``official_resize=True`` reproduces the official
    code's stretch of every image to 2300x4096 (a distortion; off by default).
    """
    path = Path(path)
    rows = _read_jsonl(path)
    samples, names = [], []
    for index, (lineno, row) in enumerate(rows):
        _check_row(path, lineno, row, ("caption", "label"))
        if row["label"] not in (0, 1):
            raise ValueError(f"{path}:{lineno}: label must be 0 or 1, got {row['label']!r}")
        image = row.get("image") or Path(str(row.get("image_link", ""))).name
        if not image:
            raise ValueError(f"{path}:{lineno}: row has neither 'image' nor 'image_link'")
        names.append(image)
        samples.append(
            SpatialSample(
                index,
                index,
                VSR_PROMPT.format(caption=row["caption"]),
                "Yes" if row["label"] else "No",
                ("yes", "no"),
                label=int(row["label"]),
                resize=VSR_OFFICIAL_RESIZE if official_resize else None,
            )
        )
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise FileNotFoundError(f"images folder {folder} does not exist")
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} VSR image(s) missing in {folder} (e.g. {missing[:3]})")
        samples = [replace(s, image_path=folder / n) for s, n in zip(samples, names, strict=True)]
    return SpatialDataset("VSR", tuple(samples), str(path))
