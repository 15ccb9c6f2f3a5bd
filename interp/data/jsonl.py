"""JSON Lines input: one object per line, errors that name the file and line.

The one reader behind every ``.jsonl`` loader (parallel corpora, WhatsUp/VSR
prompt files): blank lines are skipped; anything that is not a JSON object
raises ``ValueError("<path>:<line>: ...")`` so a user can open the file at
the bad line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

__all__ = ["iter_jsonl_objects"]


def iter_jsonl_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of ``path`` (1-based line numbers)."""
    path = Path(path).expanduser()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg}); each line must be one object") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected an object (one per line), got {type(row).__name__}")
            yield number, row
