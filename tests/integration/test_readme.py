"""The README's notebook examples run as written, and the shapes their comments promise hold.

Every ```python block of README.md is executed in order in one namespace (as a
notebook would), with the embedded Gemma 3 270M and the tiny LLaVA. A line whose
comment states a shape -- ``expr  # torch.Size([19, 4, 640])``, ``expr  # [4, 640]``
or ``a, b = ...  # [19, 4, 2] each`` -- is followed by an assertion of that shape.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest
import torch

README = Path(__file__).resolve().parents[2] / "README.md"
SHAPE_COMMENT = re.compile(r"^(?P<code>\S.*?)\s+#\s*(?:torch\.Size\()?\[(?P<dims>\d+(?:,\s*\d+)*)\]\)?(?P<each> each)?")


def _shape(value) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, torch.Size) else tuple(value.shape)


def with_shape_checks(block: str) -> str:
    """The block with an ``assert`` after every line whose comment states a shape."""
    out = []
    for line in block.splitlines():
        out.append(line)
        match = SHAPE_COMMENT.match(line)
        if match is None:
            continue
        dims = tuple(int(d) for d in match["dims"].split(","))
        code = match["code"].strip()
        targets = [t.strip() for t in code.split("=", 1)[0].split(",")] if match["each"] else [code]
        out += [f"assert _shape({t}) == {dims}, ({t!r}, _shape({t}))" for t in targets]
    return "\n".join(out)


def test_shape_comment_parser():
    block = "x = torch.zeros(2, 3)\nx.shape   # torch.Size([2, 3]): rows\na, b = x, x[0]  # [2, 3] each"
    checked = with_shape_checks(block)
    assert checked.count("assert") == 3
    exec(compile(checked.replace("x[0]", "x"), "block", "exec"), {"torch": torch, "_shape": _shape})
    with pytest.raises(AssertionError):
        exec(compile(checked, "block", "exec"), {"torch": torch, "_shape": _shape})  # x[0] is [3]


def test_readme_examples_run(gemma, monkeypatch, tmp_path):  # gemma: the cached weights exist
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 5
    namespace = {"_shape": _shape}
    checks = 0
    for i, block in enumerate(blocks):
        code = with_shape_checks(block)
        checks += code.count("assert _shape")
        exec(compile(code, f"README.md python block {i}", "exec"), namespace)
    assert checks >= 3
