"""Pooling on hand-computed cases, including NaN in padded positions."""

from __future__ import annotations

import pytest
import torch

from interp.extraction.pooling import pool

NAN = float("nan")
# two texts, T=4, D=2. Text 0: 3 real tokens (right-padded); text 1: 2 real tokens (left-padded).
HIDDEN = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0], [5.0, 9.0], [NAN, NAN]],
        [[NAN, NAN], [NAN, 7.0], [2.0, 0.0], [4.0, 6.0]],
    ]
)
MASK = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]])
SPECIAL = torch.tensor([[1, 0, 0, 0], [0, 0, 1, 0]])  # BOS positions


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("mean", [[3.0, 5.0], [3.0, 3.0]]),
        ("mean_no_special", [[4.0, 6.5], [4.0, 6.0]]),
        ("last", [[5.0, 9.0], [4.0, 6.0]]),
    ],
)
def test_pooled_modes(mode, expected):
    out = pool(HIDDEN, MASK, SPECIAL, mode)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor(expected))


def test_none_keeps_real_tokens_in_order():
    rows = pool(HIDDEN, MASK, SPECIAL, "none")
    assert torch.equal(rows[0], torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]]))
    assert torch.equal(rows[1], torch.tensor([[2.0, 0.0], [4.0, 6.0]]))


def test_bf16_input_pooled_in_float32():
    hidden = torch.full((1, 3, 1), 1.0 + 2**-7, dtype=torch.bfloat16)
    out = pool(hidden, torch.ones(1, 3), torch.zeros(1, 3), "mean")
    assert out.dtype == torch.float32 and out.item() == 1.0 + 2**-7


def test_unknown_mode():
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool(HIDDEN, MASK, SPECIAL, "max")
