"""Acceptance: bad input gets a clear error, and nothing is written half-way."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import interp
from interp.models import get_adapter


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"texts": []}, ValueError, "texts is empty"),
        ({"texts": "just one string"}, TypeError, "not a single string"),
        ({"texts": ["ok", 3, None]}, TypeError, "2 are not"),
        ({"layers": [0, 5]}, IndexError, "out of range.*0..4"),
        ({"layers": -6}, IndexError, "out of range"),
        ({"layers": []}, ValueError, "layers is empty"),
        ({"layers": "some"}, ValueError, "'all'"),
        ({"layers": [1.5]}, TypeError, "must be ints"),
        ({"pooling": "max"}, ValueError, "unknown pooling 'max'.*'mean'"),
        ({"backend": "pyvene"}, ValueError, "unknown backend 'pyvene'.*'nnsight'"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"padding_side": "middle"}, ValueError, "padding_side"),
        ({"ids": [1, 2, 3]}, ValueError, "ids has 3 entries but there are 2 texts"),
        ({"dtype": torch.int64}, TypeError, "floating"),
    ],
)
def test_bad_input(llama, tok, tmp_path, kwargs, error, message):
    args = {"texts": ["hello", "world"], **kwargs}
    store = tmp_path / "store"
    with pytest.raises(error, match=message):
        interp.extract(llama, tok, progress=False, store=store, **args)
    assert not store.exists(), "nothing may be written for bad input"


def test_unknown_architecture(tok, tmp_path):
    class Mystery(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.ModuleList([nn.Linear(4, 4)])

    expected = r"(?s)does not know the architecture of Mystery.*model\.layers.*transformer\.h"
    with pytest.raises(ValueError, match=expected):
        get_adapter(Mystery())
    with pytest.raises(ValueError, match="does not know the architecture"):
        interp.extract(Mystery(), tok, ["x"], store=tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_text_with_no_tokens(llama, tok):
    class NoSpecials:
        """A tokenizer that adds no BOS, so an empty string has no tokens."""

        pad_token_id = 0
        padding_side = "right"

        def __call__(self, text, **kwargs):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            return {"input_ids": ids, "special_tokens_mask": [0] * len(ids)}

    with pytest.raises(ValueError, match="text 1 .* zero tokens"):
        interp.extract(llama, NoSpecials(), ["fine", ""], progress=False)


def test_mean_no_special_needs_a_real_token(llama, tok):
    # "" is just <bos>: averaging over no non-special token is undefined
    with pytest.raises(ValueError, match="text 1 .* only special tokens"):
        interp.extract(llama, tok, ["fine", ""], pooling="mean_no_special", progress=False)
