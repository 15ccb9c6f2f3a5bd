"""ILO: the Interlingual Local Overlap score (Wilie et al., SIGTYP 2025), with baselines.

:func:`score` is the entry point (``interp.ilo.score``); :mod:`.measures` holds
the vectorised definitions, :mod:`.baselines` the null, translation-aware
views and bootstrap CIs.
"""

from interp.ilo.api import ILOResult, score

__all__ = ["ILOResult", "score"]
