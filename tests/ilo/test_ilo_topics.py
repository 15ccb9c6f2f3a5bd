"""The topic baseline, chance levels, ILO as a share of the null, FLORES item metadata, the family order.

References are pure Python written from the definitions (docs/ilo.md): neighbour lists from
``tests/ilo_reference.ref_neighbours`` (float64 distances, ties to the lower index), shares
by loops over points.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from ilo_reference import ref_neighbours

import interp
from interp.data import ILO_CODES, by_family, family_groups, load_parallel
from interp.ilo.baselines import chance_share, other_language_share


def ref_share(neighbours, langs, groups) -> dict:
    """{language: mean over its points of |{j in kNN(i): group j = group i, lang j != lang i}| / k}."""
    out = {}
    for lang in dict.fromkeys(langs):
        points = [i for i, a in enumerate(langs) if a == lang]
        shares = [sum(groups[j] == groups[i] and langs[j] != lang for j in neighbours[i]) / len(neighbours[i])
                  for i in points]  # fmt: skip
        out[lang] = sum(shares) / len(shares)
    return out


def ref_chance(langs, groups) -> dict:
    """{language: mean over its points of |{j != i: group j = group i, lang j != lang i}| / (N - 1)}."""
    n = len(langs)
    out = {}
    for lang in dict.fromkeys(langs):
        points = [i for i, a in enumerate(langs) if a == lang]
        out[lang] = sum(sum(groups[j] == groups[i] and langs[j] != lang for j in range(n) if j != i) / (n - 1)
                        for i in points) / len(points)  # fmt: skip
    return out


def _parallel_data(n_langs=4, n_items=9, seed=0):
    """Parallel points: item vectors + language offsets + noise; 3 topics over the items."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randn(n_items, 12, generator=g)
    offsets = torch.randn(n_langs, 12, generator=g) * 0.8
    x = torch.stack([items + offsets[a] + 0.3 * torch.randn(n_items, 12, generator=g) for a in range(n_langs)])
    x = torch.stack([x.reshape(-1, 12), 2 * x.reshape(-1, 12) + 0.5 * torch.randn(n_langs * n_items, 12, generator=g)])
    langs = [f"l{a}" for a in range(n_langs) for _ in range(n_items)]
    ids = [f"i{j}" for _ in range(n_langs) for j in range(n_items)]
    topic_of = {f"i{j}": ["sports", "health", "travel"][j % 3] for j in range(n_items)}
    return x, langs, ids, [topic_of[i] for i in ids]


def test_topic_and_translation_shares_match_pure_python():
    x, langs, ids, topics = _parallel_data()
    result = interp.ilo.score(x, langs, k=4, t=2, ids=ids, topics=topics, null=4)
    for layer in (0, 1):
        points = [[float(v) for v in row] for row in x[layer]]
        neighbours = ref_neighbours(points, 4, "cosine", False)
        rows = result.table[result.table.layer == layer].set_index("language")
        for column, groups in (("topic_share", topics), ("translation_share", ids)):
            expected = ref_share(neighbours, langs, groups)
            chance = ref_chance(langs, groups)
            for lang in expected:
                assert rows.loc[lang, column] == pytest.approx(expected[lang], abs=1e-12), (layer, column, lang)
                assert rows.loc[lang, f"{column}_chance"] == pytest.approx(chance[lang], abs=1e-12)
        assert (rows["ilo_share_of_null"] == rows["ilo"] / rows["null_mean"]).all()
    # the by-layer means carry the new columns too
    assert {"topic_share", "topic_share_chance", "ilo_share_of_null"} <= set(result.by_layer.columns)


def test_shares_by_hand():
    """4 points, 2 languages, 2 topics; k=1 neighbours given, so every number is counted by hand."""
    indices = torch.tensor([[[2], [3], [1], [0]]])  # [L=1, N=4, k=1]
    codes = torch.tensor([0, 0, 1, 1])  # a a b b
    topics = torch.tensor([0, 1, 0, 0])  # x y x x
    share = other_language_share(indices, codes, topics, 2)
    # a: point 0 -> 2 (b, x = x): 1; point 1 -> 3 (b, x != y): 0 -> 0.5
    # b: point 2 -> 1 (a, y != x): 0; point 3 -> 0 (a, x = x): 1 -> 0.5
    assert share.tolist() == [[0.5, 0.5]]
    # chance, N - 1 = 3: point 0 (a, x): others of b with x: 2 -> 2/3; point 1 (a, y): 0
    # point 2 (b, x): a with x: 1 -> 1/3; point 3: 1/3
    assert chance_share(codes, topics, 2).tolist() == pytest.approx([1 / 3, 1 / 3])
    # translations of n items in L languages: (L - 1) / (N - 1)
    items = torch.tensor([0, 1, 0, 1])
    assert chance_share(codes, items, 2).tolist() == pytest.approx([1 / 3, 1 / 3])


def test_topics_are_checked():
    x, langs, ids, topics = _parallel_data()
    with pytest.raises(ValueError, match="topics has 3 entries but there are 36 points"):
        interp.ilo.score(x, langs, k=3, t=1, topics=topics[:3])
    plain = interp.ilo.score(x, langs, k=3, t=1)
    assert "topic_share" not in plain.table and "ilo_share_of_null" not in plain.table


# ------------------------------------------------------------------ FLORES item metadata (JSONL)


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return f"jsonl:{path}"


def test_jsonl_item_fields_and_split_filter(tmp_path):
    rows = [{"lang": lang, "id": f"f{j}", "split": "train" if j < 3 else "dev", "topic": f"t{j % 2}",
             "note": f"{lang}-{j}", "text": f"{lang} {j}"}
            for lang in ("eng_Latn", "fra_Latn") for j in range(5)]  # fmt: skip
    source = _write(tmp_path / "c.jsonl", rows)
    corpus = load_parallel(source)
    assert corpus.n_items == 5 and sorted(corpus.meta) == ["split", "topic"]  # "note" differs by language
    assert corpus.meta["topic"] == ("t0", "t1", "t0", "t1", "t0")
    assert corpus.flat_meta("topic") == ["t0", "t1", "t0", "t1", "t0"] * 2
    dev = load_parallel(source, split="dev")
    assert (
        dev.ids == ("f3", "f4")
        and dev.meta["split"] == ("dev", "dev")
        and dev.texts["fra_Latn"] == ("fra_Latn 3", "fra_Latn 4")
    )
    assert load_parallel(source, split="train,dev").n_items == 5
    assert corpus.where("split", ["dev"]).ids == dev.ids and corpus.take([4, 0]).ids == ("f4", "f0")
    assert corpus.take([4, 0]).meta["topic"] == ("t0", "t0") and corpus.subset(["fra_Latn"]).meta == corpus.meta
    with pytest.raises(ValueError, match=r"no item has split \['test'\]; the splits are \['dev', 'train'\]"):
        load_parallel(source, split="test")
    with pytest.raises(KeyError, match="no item field 'genre'"):
        corpus.flat_meta("genre")
    bare = _write(tmp_path / "bare.jsonl", [{k: v for k, v in r.items() if k in ("lang", "id", "text")} for r in rows])
    assert load_parallel(bare).meta == {}
    with pytest.raises(ValueError, match="rows have no 'split' field"):
        load_parallel(bare, split="dev")


def test_inconsistent_topic_is_not_item_metadata(tmp_path):
    rows = [{"lang": "a", "id": 1, "topic": "x", "text": "a1"}, {"lang": "b", "id": 1, "topic": "y", "text": "b1"},
            {"lang": "a", "id": 2, "topic": "x", "text": "a2"},
            {"lang": "b", "id": 2, "topic": "x", "text": "b2"}]  # fmt: skip
    assert load_parallel(_write(tmp_path / "c.jsonl", rows)).meta == {}


# ------------------------------------------------------------------ the family order


def test_family_order_by_hand():
    codes = ["eng_Latn", "rus_Cyrl", "xyz_Latn", "ces_Latn", "dan_Latn", "ukr_Cyrl", "ind_Latn"]
    # Austronesian < IE Germanic < IE Slavic; within Slavic Cyrl before Latn; within a script by name
    assert by_family(codes) == ["ind_Latn", "dan_Latn", "eng_Latn", "rus_Cyrl", "ukr_Cyrl", "ces_Latn", "xyz_Latn"]
    groups = family_groups(codes, min_size=2)
    assert groups == [("IE Germanic", ["dan_Latn", "eng_Latn"]), ("IE Slavic", ["rus_Cyrl", "ukr_Cyrl", "ces_Latn"]),
                      ("other", ["ind_Latn", "xyz_Latn"])]  # fmt: skip
    everything = family_groups(ILO_CODES, min_size=2)
    assert sum(len(m) for _, m in everything) == 31 and [f for f, _ in everything][-1] == "other"
    shuffled = list(ILO_CODES)
    random.Random(0).shuffle(shuffled)
    assert by_family(shuffled) == by_family(ILO_CODES)
