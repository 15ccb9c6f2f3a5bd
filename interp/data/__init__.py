"""Parallel data: the 31 ILO languages and parallel-corpus loaders."""

from interp.data.corpus import AlignmentError, ParallelCorpus, load_parallel
from interp.data.languages import ILO_CODES, ILO_LANGUAGES, Language, by_family, family_groups, language

__all__ = [
    "AlignmentError",
    "ILO_CODES",
    "ILO_LANGUAGES",
    "Language",
    "ParallelCorpus",
    "by_family",
    "family_groups",
    "language",
    "load_parallel",
]
