"""ILO: the Interlingual Local Overlap score (Wilie et al., SIGTYP 2025), with baselines.

Data flow: activations ``[L, N, D]`` + language labels -> exact kNN (:mod:`interp.neighbors`)
-> per-point neighbour-slot counts -> per-language integer sums -> bridge, reach, ILO
(:mod:`.measures`) and the null, translation share, retrieval and bootstrap CIs
(:mod:`.baselines`) -> tidy tables (:func:`score`, :class:`ILOResult`) -> figures (:mod:`.plot`).
Where the points live -- one process, or shards over ``torch.distributed`` ranks -- is the
points layout (:mod:`.points`, :mod:`.sharded`): it only decides how the sums are reduced.
"""

from interp.ilo.api import ILOResult, score

__all__ = ["ILOResult", "score"]
