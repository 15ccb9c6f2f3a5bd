"""Results over several training seeds: the mean and a Student-t confidence interval.

A fine-tuning result from one seed says little: the data order and the random state of
training move ΔILO and Δloss by amounts comparable to the effects. :func:`seed_intervals`
summarises a tidy table with one row per seed (and whatever keys: condition, layer,
language...) into one row per key with the mean over seeds and its t interval::

    mean ± t_{(1+level)/2, n-1} · sd / sqrt(n)        (sd with n - 1 degrees of freedom)

so with 3 seeds the 95% half-width is 4.30 sd / sqrt(3). An interval that excludes 0 is
the plain reading of "the effect is there at this budget"; one that includes 0 is not
evidence of no effect either, only of no resolvable one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["seed_intervals", "t_interval"]


def t_interval(values, level: float = 0.95) -> tuple[float, float, float, float]:
    """``(mean, sd, low, high)`` of ``values`` (one per seed); the interval is NaN with fewer than 2 values."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan"), float("nan")
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, len(x) - 1)) * sd / np.sqrt(len(x))
    return mean, sd, mean - half, mean + half


def seed_intervals(table: pd.DataFrame, keys: list[str], value: str, level: float = 0.95) -> pd.DataFrame:
    """One row per ``keys`` group of ``table`` (one row per seed within a group).

    Returns ``keys..., n_seeds, mean, sd, ci_low, ci_high`` (``level`` Student-t interval
    of the mean over seeds), groups in first-appearance order.
    """
    missing = [name for name in [*keys, value] if name not in table.columns]
    if missing:
        raise KeyError(f"table has no column(s) {missing}; it has {list(table.columns)}")
    rows = []
    for group, part in table.groupby(keys, sort=False):
        group = group if isinstance(group, tuple) else (group,)
        mean, sd, low, high = t_interval(part[value].to_numpy(), level)
        rows.append({**dict(zip(keys, group, strict=True)), "n_seeds": int(part[value].notna().sum()),
                     "mean": mean, "sd": sd, "ci_low": low, "ci_high": high})  # fmt: skip
    return pd.DataFrame(rows, columns=[*keys, "n_seeds", "mean", "sd", "ci_low", "ci_high"])
