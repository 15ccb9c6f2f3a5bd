"""The command line and import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import interp
from interp.cli import main


def test_import_has_no_side_effects():
    code = "import sys, interp; print(sorted(m for m in ('nnsight', 'transformer_lens') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.gemma
def test_cli_extract_and_resume(gemma, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"id": "a1", "lang": "eng", "text": "Hello."}, {"id": "a1", "lang": "fra", "text": "Bonjour."}]
    corpus.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    args = ["extract", "--input", str(corpus), "--out", str(tmp_path / "acts"), "--layers", "0,9,18"]
    assert main(args) == 0
    assert "Activations(3×2×640" in capsys.readouterr().out
    stored = interp.ActivationStore(tmp_path / "acts").load()
    assert stored.labels == ["eng", "fra"] and stored.ids == ["a1", "a1"] and stored.layers == [0, 9, 18]
    model, tok = gemma
    direct = interp.extract(model, tok, ["Hello.", "Bonjour."], layers=[0, 9, 18], progress=False)
    assert torch.allclose(stored.tensor, direct.tensor, rtol=1e-5, atol=1e-4)
    assert main(args) == 0  # a complete store: resumes with nothing to do


@pytest.mark.gemma
def test_cli_demo(gemma, capsys):
    assert main(["demo"]) == 0
    assert "shape: (19, 5, 640)" in capsys.readouterr().out


def test_cli_rejects_rows_without_text(tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"id": 1}\n', encoding="utf-8")
    with pytest.raises(SystemExit, match="no 'text' field"):
        main(["extract", "--input", str(corpus), "--out", str(tmp_path / "o")])
