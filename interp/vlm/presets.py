"""The official AdaptVis / ScalingVis hyper-parameters of each WhatsUp / VSR dataset, and the datasets' names.

Mechanism (:func:`interp.vlm.adaptvis_generate`, :func:`interp.vlm.scalingvis_generate`) takes α and the
threshold as numbers; these are the values the paper's runs used, so an evaluation can start from them
without loading a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ADAPTVIS_PRESETS", "AdaptVisPreset", "DATASET_NAMES", "canonical_dataset_name", "preset"]

DATASET_NAMES = (
    "Controlled_Images_A",
    "Controlled_Images_B",
    "COCO_QA_one_obj",
    "COCO_QA_two_obj",
    "VG_QA_one_obj",
    "VG_QA_two_obj",
    "VSR",
)
_ALIASES = {"controlled_a": "Controlled_Images_A", "controlled_b": "Controlled_Images_B"}


@dataclass(frozen=True)
class AdaptVisPreset:
    """Official LLaVA-1.5 hyper-parameters of one dataset.

    ``alpha`` is the ScalingVis temperature; AdaptVis uses ``alpha_low`` when the
    first-token confidence is ``< threshold`` and ``alpha_high`` otherwise. ``None``
    where the source lists no value. Source: the later upstream ``run.sh`` of
    shiqichen17/AdaptVis (reference adaptvis.md §3); LLaVA-1.6 values were never released.
    That run.sh also has a second "Controlled_B: 0.5 / 1.2 / 0.64" line (a duplicate key,
    perhaps meant for VSR -- unconfirmed), which is not used here.
    """

    dataset: str
    alpha: float | None
    alpha_low: float | None
    alpha_high: float | None
    threshold: float | None


ADAPTVIS_PRESETS: dict[str, AdaptVisPreset] = {
    p.dataset: p
    for p in (
        AdaptVisPreset("Controlled_Images_A", 0.8, 0.5, 1.5, 0.4),
        AdaptVisPreset("Controlled_Images_B", 0.8, 0.5, 1.5, 0.35),
        AdaptVisPreset("COCO_QA_one_obj", 1.2, 0.5, 1.2, 0.3),
        AdaptVisPreset("COCO_QA_two_obj", 1.2, 0.5, 1.2, 0.3),
        AdaptVisPreset("VG_QA_one_obj", 2.0, 0.5, 2.0, 0.2),
        AdaptVisPreset("VG_QA_two_obj", 2.0, 0.5, 2.0, 0.2),
        AdaptVisPreset("VSR", 0.5, None, None, None),  # AdaptVis values for VSR are not listed
    )
}
"""Official per-dataset presets (LLaVA-1.5), keyed by dataset name; see :class:`AdaptVisPreset`."""


def canonical_dataset_name(name: str) -> str:
    """The official name of a dataset (``Controlled_A`` -> ``Controlled_Images_A``; others unchanged)."""
    return _ALIASES.get(name.lower(), name)


def preset(dataset: str) -> AdaptVisPreset:
    """The official :class:`AdaptVisPreset` of ``dataset`` (also accepts ``Controlled_A``/``Controlled_B``)."""
    key = canonical_dataset_name(dataset)
    if key not in ADAPTVIS_PRESETS:
        raise KeyError(f"no official preset for dataset {dataset!r}; known: {list(ADAPTVIS_PRESETS)}")
    return ADAPTVIS_PRESETS[key]
