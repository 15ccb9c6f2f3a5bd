"""Input checks shared by the VLM entry points."""

from __future__ import annotations

import math

__all__ = ["check_alpha"]


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """α must be a finite positive number; returns it as a float."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(
            f"{name} must be a finite number > 0 (α > 1 sharpens image attention, α < 1 smooths it), got {alpha!r}"
        )
    return float(alpha)
