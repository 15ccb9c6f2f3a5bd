"""Acceptance (issue 16): ``interp ilo`` on a 31-language x 10-item slice of FLORES-200.

The job's tables must equal :func:`interp.ilo.score` on the very activations it cached, and its
``topic_share`` column must equal a pure-Python count over neighbour lists computed in float64
from those activations (``tests/ilo_reference.py``). The model is a tiny random Llama in place
of ``load_model`` (the job's plumbing is what is tested; ILO itself is tested against references
in tests/ilo). The slice is built from ``../shared/data/flores31.jsonl`` (beside the checkout).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from ilo_reference import ref_neighbours

sys.path.insert(0, str(Path(__file__).parent))
import ilo_worker  # noqa: E402

import interp  # noqa: E402
from interp.cli.ilo import run_ilo_job  # noqa: E402
from interp.data import ILO_CODES, by_family, load_parallel  # noqa: E402
from interp.models import loading  # noqa: E402

FLORES = Path(__file__).resolve().parents[3] / "shared" / "data" / "flores31.jsonl"
N_ITEMS = 10


@pytest.fixture
def flores_slice(tmp_path, monkeypatch):
    if not FLORES.is_file() and os.environ.get("CI") != "true":
        pytest.skip(f"test data {FLORES} is not beside this checkout")
    rows = [json.loads(line) for line in FLORES.read_text(encoding="utf-8").splitlines() if line.strip()]
    keep = sorted({row["id"] for row in rows if row["split"] == "dev"})[:N_ITEMS]
    path = tmp_path / "flores_slice.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows if r["id"] in keep), encoding="utf-8")
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    model, tok = ilo_worker.model()
    monkeypatch.setattr(loading, "load_model", lambda *args, **kwargs: (model, tok))
    return f"jsonl:{path}"


def test_flores_slice_tables_match_score_and_a_pure_python_topic_share(flores_slice, tmp_path):
    out = tmp_path / "out"
    manifest = run_ilo_job(data=flores_slice, out=out, k=5, t=3, null=4, progress=False)
    corpus = load_parallel(flores_slice)
    assert corpus.n_langs == 31 and corpus.n_items == N_ITEMS and set(corpus.langs) == set(ILO_CODES)
    table = pd.read_csv(out / "ilo_table.csv")
    by_layer = pd.read_csv(out / "ilo_by_layer.csv", index_col="layer")

    # the same activations, scored directly
    acts = interp.ActivationStore(manifest["activation_cache"]).load()
    texts, langs, ids = corpus.flat()
    assert acts.labels == langs and acts.ids == [str(i) for i in ids] and acts.tensor.shape[1] == 31 * N_ITEMS
    direct = interp.ilo.score(acts, k=5, t=3, null=4, topics=corpus.flat_meta("topic"))
    expected = direct.table.copy()
    expected.insert(2, "family", [interp.data.language(code).family for code in expected["language"]])
    expected.insert(3, "script", [interp.data.language(code).script for code in expected["language"]])
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-12, atol=1e-15)
    pd.testing.assert_frame_equal(by_layer, direct.by_layer, check_exact=False, rtol=1e-12, atol=1e-15)

    # the topic share, from the definition: float64 neighbours, then counting in Python
    topics = corpus.flat_meta("topic")
    for layer in (0, 2):
        points = [[float(v) for v in row] for row in acts.layer(layer)]
        neighbours = ref_neighbours(points, 5, "cosine", False)
        rows = table[table.layer == layer].set_index("language")
        for lang in corpus.langs:
            mine = [i for i, a in enumerate(langs) if a == lang]
            share = sum(sum(topics[j] == topics[i] and langs[j] != lang for j in neighbours[i]) / 5 for i in mine)
            assert rows.loc[lang, "topic_share"] == pytest.approx(share / len(mine), abs=1e-12), (layer, lang)
            others = sum(sum(topics[j] == topics[i] and langs[j] != lang for j in range(len(langs))) for i in mine)
            assert rows.loc[lang, "topic_share_chance"] == pytest.approx(others / (len(langs) - 1) / len(mine))

    # the outputs a reader gets: the README names every file and column, figures are PNGs
    readme = (out / "README.md").read_text(encoding="utf-8")
    for name in manifest["outputs"]:
        assert f"`{name}`" in readme or name == "README.md"
    for column in table.columns:
        assert f"`{column}`" in readme, column
    for figure in ("ilo_layers.png", "ilo_heatmap.png", "cooccurrence.png", "shares.png", "topic_share.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cooccurrence = pd.read_csv(out / "cooccurrence.csv")
    assert len(cooccurrence) == 3 * 31 * 31
    assert cooccurrence.groupby(["layer", "language"])["slots"].sum().eq(5 * N_ITEMS).all()  # k slots per point
    assert by_family(table.language.unique()) == by_family(ILO_CODES)
