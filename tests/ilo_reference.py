"""The one float64 reference of ILO for the tests: neighbours and scores from the definitions, with Python sets.

Written from Wilie et al. (2025) and docs/ilo.md, independently of ``interp.ilo``: distances in
Python floats (rounded to float32, the engine's documented sort key; ties to the lower index),
bridge / reach / ILO per language by loops over points and sets of languages.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

__all__ = ["ref_distance", "ref_neighbours", "ref_scores", "ref_quantile"]


def ref_distance(u: list[float], v: list[float], metric: str) -> float:
    """Distance in Python floats, rounded to float32 as the engine's documented sort key."""
    if metric == "cosine":
        nu, nv = math.sqrt(sum(a * a for a in u)), math.sqrt(sum(b * b for b in v))
        d = 1.0 if nu == 0 or nv == 0 else 1.0 - sum(a * b for a, b in zip(u, v, strict=True)) / (nu * nv)
    else:
        d = math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v, strict=True)))
    return float(np.float32(d))


def ref_neighbours(points: list[list[float]], k: int, metric: str, compat: bool) -> list[list[int]]:
    out = []
    for i, u in enumerate(points):
        order = sorted(range(len(points)), key=lambda j: (ref_distance(u, points[j], metric), j))
        out.append(order[1 : k + 1] if compat else [j for j in order if j != i][:k])
    return out


def ref_scores(neighbours, labels, t, min_count=1, languages=None, weights=None) -> dict:
    """{language: (bridge, reach_raw, reach, ilo)}; ``weights`` per point (bootstrap); None if undefined."""
    languages = languages or list(dict.fromkeys(labels))
    weights = weights or [1] * len(labels)
    out = {}
    for lang in languages:
        points = [i for i, lab in enumerate(labels) if lab == lang and weights[i] > 0]
        total = sum(weights[i] for i in points)
        if total == 0:
            out[lang] = None
            continue
        foreign = {i: {labels[j] for j in neighbours[i]} - {lang} for i in points}
        bridge = sum(weights[i] for i in points if len(foreign[i]) >= t) / total
        slots = {}
        for i in points:
            for j in neighbours[i]:
                slots[labels[j]] = slots.get(labels[j], 0) + weights[i]
        reach_raw = sum(1 for m, c in slots.items() if m != lang and c >= min_count)
        reach = reach_raw / (len(languages) - 1)
        ilo = statistics.harmonic_mean([bridge, reach]) if bridge and reach else 0.0
        out[lang] = (bridge, reach_raw, reach, ilo)
    return out


def ref_quantile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's / torch's default)."""
    values = sorted(values)
    pos = q * (len(values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)
