"""ILO against an independent float64 reimplementation of the official semantics.

The reference below is written from the definition (ilo.md §1): float64
cosine distances, neighbours = the k closest other points ordered by
(float32 distance, index) -- the engine's documented tie rule --, then per
language Python sets: bridge = share of points whose neighbours span >= t
other languages, reach = distinct other languages over the language's
neighbour lists / (n - 1), ILO = statistics.harmonic_mean (0 if either is 0).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import require_udhr
from ilo_reference import ref_scores

import interp
from interp.data import AlignmentError, load_parallel


def reference_ilo(x: torch.Tensor, langs: list[str], k: int, t: int, compat: bool = False, layers=None) -> dict:
    """{(layer, language): (bridge, reach_raw, reach, ilo)}: float64 neighbours (torch), scores by sets."""
    out = {}
    for position, layer in enumerate(layers or range(x.shape[0])):
        v = x[position].double()
        norms = v.norm(dim=1, keepdim=True)
        unit = torch.where(norms > 0, v / norms.clamp_min(1e-300), 0.0)
        dist = (1.0 - unit @ unit.T).float()
        if not compat:
            dist.fill_diagonal_(float("inf"))
        order = torch.argsort(dist, dim=1, stable=True)
        neighbours = order[:, 1 : k + 1] if compat else order[:, :k]
        for lang, scores in ref_scores(neighbours.tolist(), langs, t).items():
            out[(layer, lang)] = scores
    return out


def assert_matches(result, x, langs, k=5, t=3, compat=False):
    ref = reference_ilo(x, langs, k, t, compat, result.layers)
    assert len(result.table) == len(ref)
    for row in result.table.itertuples():
        bridge, reach_raw, reach, ilo = ref[(row.layer, row.language)]
        assert row.bridge == bridge and row.reach_raw == reach_raw and row.reach == reach, row
        assert row.ilo == pytest.approx(ilo, abs=1e-12), row


def _langs(n_langs, per):
    return [f"lang{i}" for i in range(n_langs) for _ in range(per)]


def test_random_data():
    g = torch.Generator().manual_seed(0)
    x, langs = torch.randn(3, 6 * 30, 12, generator=g), _langs(6, 30)
    result = interp.ilo.score(x, langs)
    assert_matches(result, x, langs)
    assert list(result.table.columns[:6]) == ["layer", "language", "bridge", "reach", "reach_raw", "ilo"]
    for k, t in ((1, 1), (10, 4)):
        assert_matches(interp.ilo.score(x, langs, k=k, t=t), x, langs, k, t)


def test_language_separated_clusters_score_zero():
    g = torch.Generator().manual_seed(1)
    centres = 20 * torch.randn(5, 16, generator=g)
    x = (centres.repeat_interleave(25, 0) + torch.randn(125, 16, generator=g))[None]
    langs = _langs(5, 25)
    result = interp.ilo.score(x, langs)
    assert_matches(result, x, langs)
    assert (result.table.ilo == 0).all() and (result.table.reach_raw == 0).all()


def test_perfectly_mixed_translations_score_one():
    g = torch.Generator().manual_seed(2)
    items = 10 * torch.randn(40, 16, generator=g)  # 40 items, each a tight cluster of its 8 translations
    x = (items.repeat(8, 1) + 1e-3 * torch.randn(320, 16, generator=g))[None]
    langs = _langs(8, 40)
    ids = list(range(40)) * 8
    result = interp.ilo.score(x, langs, ids=ids)
    assert_matches(result, x, langs)
    assert (result.table.ilo == 1).all()
    assert (result.table.translation_share == 1).all()


def test_compat_agrees_without_duplicates_and_differs_as_documented_with_them():
    g = torch.Generator().manual_seed(3)
    x, langs = torch.randn(2, 4 * 20, 8, generator=g), _langs(4, 20)
    a, b = interp.ilo.score(x, langs), interp.ilo.score(x, langs, compat=True)
    assert a.table.equals(b.table)
    # point 45 (lang2) duplicates point 5 (lang0): sorted by (distance, index), point 45's first
    # neighbour is 5 (lower index, distance 0), so compat drops 5 and keeps 45 itself in its list
    x[:, 45] = x[:, 5]
    a, b = interp.ilo.score(x, langs), interp.ilo.score(x, langs, compat=True)
    assert_matches(a, x, langs)
    assert_matches(b, x, langs, compat=True)
    assert 5 in a.indices[0, 45].tolist() and 45 not in a.indices[0, 45].tolist()
    assert 45 in b.indices[0, 45].tolist() and 5 not in b.indices[0, 45].tolist()
    assert 45 in b.indices[0, 5].tolist() and 5 not in b.indices[0, 5].tolist()  # lower index: self first
    assert not torch.equal(a.indices, b.indices)


def test_compat_later_duplicate_keeps_itself_and_loses_its_duplicate_by_hand():
    # Six points on a line (euclidean distances are exact), k = 2, t = 2; point 1 (lang b) is an exact
    # copy of point 0 (lang a). Worked out by hand, ordering by (distance, index):
    #   point 1, self excluded:        0 (d 0), 2 (d 1)                  -> [0, 2]
    #   point 1, k + 1 including self: 0 (d 0), 1 (d 0), 2 (d 1) -> drop the first column -> [1, 2]
    # so the later copy keeps itself and loses its duplicate 0; its k-th neighbour 2 is kept. The earlier
    # copy 0 is unaffected ([0, 1, 2] -> [1, 2]), as are the points without duplicates.
    positions, labels = [0.0, 0.0, 1.0, 5.0, 5.5, 7.0], ["a", "b", "c", "a", "b", "c"]
    x = torch.tensor([[[p, 0.0] for p in positions]])
    plain = interp.ilo.score(x, labels, k=2, t=2, metric="euclidean")
    compat = interp.ilo.score(x, labels, k=2, t=2, metric="euclidean", compat=True)
    assert plain.indices[0].tolist() == [[1, 2], [0, 2], [0, 1], [4, 5], [3, 5], [4, 3]]
    assert compat.indices[0].tolist() == [[1, 2], [1, 2], [0, 1], [4, 5], [3, 5], [4, 3]]
    # ILO: the lost neighbour 0 is from another language (a); in its place point 1 counts itself, a
    # same-language slot, so NL(1) = {c} instead of {a, c} and point 1 no longer bridges (t = 2).
    # b: bridge 1/2 (point 4 still bridges), reach 2/2 (a is still reached through point 4's list),
    # ILO = harmonic mean(1/2, 1) = 2/3; a and c are unchanged (every point bridges: ILO 1).
    assert plain.table.ilo.tolist() == [1.0, 1.0, 1.0]
    assert compat.table.bridge.tolist() == [1.0, 0.5, 1.0]
    assert compat.table.reach_raw.tolist() == [2, 2, 2]
    assert compat.table.ilo.tolist() == pytest.approx([1.0, 2 / 3, 1.0], abs=1e-15)


def test_null_and_bootstrap():
    g = torch.Generator().manual_seed(4)
    x, langs = torch.randn(2, 5 * 30, 10, generator=g), _langs(5, 30)
    ids = list(range(30)) * 5
    result = interp.ilo.score(x, langs, ids=ids, null=30, bootstrap=40)
    # random data: labels carry no information, so the observed ILO sits inside the null
    assert (result.table.z.abs() < 4).all()
    assert (result.table.ilo_ci_low <= result.table.ilo + 1e-12).all()
    assert (result.table.ilo <= result.table.ilo_ci_high + 1e-12).all()
    separated = torch.cat([x[:, :30] + 50, x[:, 30:]], dim=1)  # language 0 far away
    z = interp.ilo.score(separated, langs, null=30).table.query("language == 'lang0'").z
    assert (z < -5).all()


def test_cooccurrence_and_min_count():
    g = torch.Generator().manual_seed(5)
    x, langs = torch.randn(1, 4 * 25, 6, generator=g), _langs(4, 25)
    result = interp.ilo.score(x, langs, k=4, t=2)
    c = result.cooccurrence[0]
    assert c.sum() == 100 * 4 and (c.sum(1) == 25 * 4).all()
    strict = interp.ilo.score(x, langs, k=4, t=2, min_count=5).table
    expected = ((c >= 5) & ~torch.eye(4, dtype=torch.bool)).sum(1)
    assert strict.reach_raw.tolist() == expected.tolist()


def test_retrieval_accuracy():
    g = torch.Generator().manual_seed(6)
    items = 10 * torch.randn(20, 8, generator=g)
    x = torch.cat([items + 0.01 * torch.randn(20, 8, generator=g) for _ in range(3)])[None]
    result = interp.ilo.score(x, _langs(3, 20), ids=list(range(20)) * 3, retrieval=True)
    acc = result.retrieval[0]
    assert torch.isnan(acc.diagonal()).all()
    off = acc[~torch.eye(3, dtype=torch.bool)]
    assert (off == 1).all()


@pytest.mark.gemma
def test_real_udhr_with_gemma(gemma):
    model, tok = gemma
    corpus = load_parallel(f"jsonl:{require_udhr()}")
    corpus = corpus.head(8)  # all 30 languages; the first 8 articles, 64 tokens each (CI time)
    texts, langs, ids = corpus.flat()
    acts = interp.extract(model, tok, texts, layers=[0, 3, 6, 9], labels=langs, ids=ids, batch_size=8,
                          max_length=64, progress=False)  # fmt: skip
    result = interp.ilo.score(acts, null=20)
    assert_matches(result, acts.tensor, langs)
    assert set(result.table.language) == set(corpus.langs) and len(corpus.langs) == 30
    assert result.table.ilo.between(0, 1).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"langs": ["a"] * 9 + ["b"]}, ValueError, r"fewer than 2 points: \['b'\]"),
        ({"langs": ["a"] * 5}, ValueError, "5 labels but there are 10 points"),
        ({"langs": ["a"] * 10}, ValueError, "at least 2"),
        ({"k": 9}, ValueError, r"k must be an int with 1 <= k < N - 1 = 9"),
        ({"t": 6}, ValueError, r"t must be an int with 1 <= t <= k = 5"),
        ({"ids": [1, 2]}, ValueError, "ids has 2 entries"),
        ({"bootstrap": 10}, ValueError, "need item ids"),
    ],
)
def test_bad_input(kwargs, error, message):
    x = torch.randn(2, 10, 4)
    args = {"langs": ["a"] * 5 + ["b"] * 5, **kwargs}
    with pytest.raises(error, match=message):
        interp.ilo.score(x, **args)


def test_nan_activations():
    x = torch.randn(3, 10, 4)
    x[2, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf .*layer 2"):
        interp.ilo.score(x, ["a"] * 5 + ["b"] * 5)


def test_misaligned_corpus(tmp_path):
    rows = [{"lang": lang, "id": i, "text": f"{lang} {i}"} for lang in ("eng", "fra") for i in range(4)]
    rows = [r for r in rows if not (r["lang"] == "fra" and r["id"] == 2)]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(AlignmentError, match=r"(?s)3 common of 4.*fra: 1 missing \(e\.g\. \[2\]\).*intersect"):
        load_parallel(f"jsonl:{path}")
    with pytest.warns(UserWarning, match="kept the 3 items"):
        corpus = load_parallel(f"jsonl:{path}", align="intersect")
    assert corpus.ids == (0, 1, 3) and corpus.texts["fra"] == ("fra 0", "fra 1", "fra 3")


def test_flores_layout(tmp_path):
    (tmp_path / "dev").mkdir()
    for code in ("eng_Latn", "fra_Latn"):
        (tmp_path / "dev" / f"{code}.dev").write_text("\n".join(f"{code} {i}" for i in range(5)), encoding="utf-8")
    corpus = load_parallel(f"flores200:{tmp_path}")
    assert corpus.langs == ("eng_Latn", "fra_Latn")  # the ILO order
    assert corpus.n_items == 5 and corpus.texts["eng_Latn"][3] == "eng_Latn 3"
    (tmp_path / "dev" / "fra_Latn.dev").write_text("only\ntwo", encoding="utf-8")
    with pytest.raises(AlignmentError):
        load_parallel(f"flores200:{tmp_path}")


def test_cldr_corpus_is_real_and_parallel():
    corpus = load_parallel("cldr")
    assert corpus.n_langs == 28 and "eng_Latn" in corpus.langs and "bjn_Latn" not in corpus.langs
    january = corpus.ids.index("month:1")
    assert corpus.texts["eng_Latn"][january] == "January"
    assert corpus.texts["deu_Latn"][january] == "Januar" and corpus.texts["gle_Latn"][january] == "Eanáir"
    monday = corpus.ids.index("day:0")
    assert [corpus.texts[code][monday] for code in ("hin_Deva", "swh_Latn", "jpn_Jpan")] == [
        "सोमवार",
        "Jumatatu",
        "月曜日",
    ]
    france = corpus.ids.index("territory:FR")
    assert corpus.texts["fra_Latn"][france] == "France" and corpus.texts["jpn_Jpan"][france] == "フランス"
    with pytest.raises(KeyError, match="CLDR has no locale for \\['ban_Latn'\\]"):
        load_parallel("cldr", langs=["eng_Latn", "ban_Latn"])
    assert load_parallel("cldr", langs=["eng_Latn", "fra_Latn"]).n_items > 500


def test_ilo_languages():
    from interp.data import ILO_CODES, ILO_LANGUAGES

    assert len(ILO_CODES) == 31 and ILO_CODES[0] == "swe_Latn" and ILO_CODES[-1] == "min_Latn"
    assert len({lang.script for lang in ILO_LANGUAGES}) == 11
    assert sum(lang.cldr is None for lang in ILO_LANGUAGES) == 3
    assert np.unique([lang.family for lang in ILO_LANGUAGES]).size >= 10


def test_plots_return_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from interp.ilo.plot import plot_cooccurrence, plot_ilo_heatmap, plot_ilo_layers

    g = torch.Generator().manual_seed(7)
    result = interp.ilo.score(torch.randn(4, 4 * 20, 8, generator=g), _langs(4, 20), null=5)
    for figure in (plot_ilo_layers(result), plot_ilo_heatmap(result), plot_cooccurrence(result, layer=2)):
        path = tmp_path / "f.png"
        figure.savefig(path)
        assert path.stat().st_size > 5000
    with pytest.raises(KeyError, match="layer 9 was not scored"):
        plot_cooccurrence(result, layer=9)


@pytest.mark.gemma
def test_ilo_job_writes_outputs_and_reuses_cache(gemma, tmp_path, monkeypatch):
    from interp.cli import main
    from interp.models.loading import DEFAULT_MODEL, cache_dir

    # reuse the model the `gemma` fixture converted -- under whatever cache this environment uses
    # ($INTERP_CACHE included) -- instead of re-converting the GGUF under the new cache root
    converted = cache_dir() / DEFAULT_MODEL
    assert converted.is_dir(), converted
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / DEFAULT_MODEL).symlink_to(converted)
    args = ["ilo", "--langs", "eng_Latn,fra_Latn,deu_Latn,spa_Latn", "--layers", "0,6,12", "--null", "5",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 0
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["outputs"]) == {"ilo_table.csv", "ilo_by_layer.csv", "cooccurrence.csv", "ilo_layers.png",
                                        "ilo_heatmap.png", "cooccurrence.png", "shares.png", "translation_share.png",
                                        "README.md"}  # fmt: skip
    import pandas as pd

    table = pd.read_csv(out / "ilo_table.csv")
    assert len(table) == 3 * 4 and set(table.layer) == {0, 6, 12}
    store = manifest["activation_cache"]
    assert store.startswith(str(cache_dir())) and (tmp_path / "cache" / "activations").exists()
    first = os.stat(os.path.join(store, "shard-00000.safetensors")).st_mtime_ns
    assert main(args) == 0  # the re-run reuses the cached activations
    assert os.stat(os.path.join(store, "shard-00000.safetensors")).st_mtime_ns == first


def test_old_backend_keyword_is_a_deprecated_knn_backend():
    x = torch.randn(3, 40, 8, generator=torch.Generator().manual_seed(3))
    langs = ["a", "b", "c", "d"] * 10
    new = interp.ilo.score(x, langs, k=3, t=1, knn_backend="torch")
    with pytest.warns(DeprecationWarning, match=r"backend= is deprecated.*use knn_backend="):
        old = interp.ilo.score(x, langs, k=3, t=1, backend="torch")
    assert old.table.equals(new.table)
    with pytest.raises(TypeError, match="pass knn_backend= only"):
        interp.ilo.score(x, langs, k=3, t=1, knn_backend="torch", backend="torch")
