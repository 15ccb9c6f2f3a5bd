"""Shared fixtures. Everything runs offline: tiny random models built from configs,
and the embedded gemma-3-270m (loaded once per session, cached on disk)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Triton's interpreter for the CPU tests of the fused kernel: triton reads this when it is first
# imported, and torch/transformers import it early, so it is set before anything else
# (a GPU run of the CUDA tests sets TRITON_INTERPRET=0 explicitly).
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from interp.models import byte_tokenizer, load_model, tiny_llama  # noqa: E402

UDHR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "udhr30.jsonl")


def require_udhr() -> str:
    """Path of ../shared/data/udhr30.jsonl (test data beside the checkout; CI always has it)."""
    if not os.path.isfile(UDHR) and os.environ.get("CI") != "true":
        pytest.skip(f"test data {UDHR} is not beside this checkout")
    return UDHR


TEXTS = [
    "All human beings are born free and equal in dignity and rights.",
    "Tous les êtres humains naissent libres et égaux en dignité et en droits.",
    "人人生而自由，在尊严和权利上一律平等。",
    "Hi",
    "Все люди рождаются свободными и равными в своем достоинстве и правах.",
    "Alle Menschen sind frei und gleich an Würde und Rechten geboren.",
    "x",
    "Semua orang dilahirkan merdeka dan mempunyai martabat dan hak-hak yang sama.",
    "すべての人間は、生まれながらにして自由であり、かつ、尊厳と権利とについて平等である。",
]


@pytest.fixture(scope="session")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="session")
def llama():
    return tiny_llama(n_layers=4, d_model=64, seed=0)


@pytest.fixture(scope="session")
def gemma():
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return load_model("gemma-3-270m")
