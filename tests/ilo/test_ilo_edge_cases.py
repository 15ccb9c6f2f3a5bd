"""Adversarial review of ``interp.ilo`` against an independent pure-Python reference.

Everything below is written from the definitions in the reference (ilo.md §1,
§6) and docs/ilo.md, with Python floats (float64) and loops/sets:

* distance: cosine ``1 - x·y / (|x| |y|)`` (a zero vector is at distance 1)
  or euclidean ``|x - y|``; the engine's documented order is (distance
  rounded to float32, index), so ties go to the lower index;
* neighbours of i: the k closest points j != i (exclusion by index), or in
  compat mode the k + 1 closest points *including* i with the first one
  dropped by position (the official code's step);
* NL(i) = set(languages of i's neighbours) - {language of i};
  bridge = share of a language's points with |NL(i)| >= t; reach_raw = number
  of other languages filling >= min_count of the language's neighbour slots
  (min_count = 1: the union of the NL(i)); reach = reach_raw / (n - 1);
  ILO = statistics.harmonic_mean, 0 if either is 0;
* the null, bootstrap and retrieval baselines from docs/ilo.md.

Cases: ties (integer grids under the euclidean metric), exact duplicates
across languages, unequal language sizes, a language with two points, t
larger than the number of other languages, the largest allowed k.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import warnings

import numpy as np
import pytest
import torch
from ilo_reference import ref_distance, ref_neighbours, ref_quantile, ref_scores

import interp
from interp.extraction.activations import Activations


def as_lists(x: torch.Tensor) -> list[list[list[float]]]:
    return [[[float(v) for v in row] for row in layer] for layer in x.double()]


def check_table(result, x, labels, k, t, metric="cosine", compat=False, min_count=1, ids=None):
    """Compare bridge/reach/ILO, co-occurrence, neighbours and translation share with the reference."""
    data = as_lists(x)
    languages = list(dict.fromkeys(labels))
    assert result.languages == languages
    assert len(result.table) == len(data) * len(languages)
    for position, layer in enumerate(result.layers):
        neighbours = ref_neighbours(data[position], k, metric, compat)
        assert result.indices[position].tolist() == neighbours, layer
        ref = ref_scores(neighbours, labels, t, min_count)
        rows = result.table[result.table.layer == layer].set_index("language")
        for lang in languages:
            bridge, reach_raw, reach, ilo = ref[lang]
            row = rows.loc[lang]
            assert (row.bridge, row.reach_raw, row.reach) == (bridge, reach_raw, reach), (layer, lang)
            assert row.ilo == pytest.approx(ilo, abs=1e-12), (layer, lang)
        for a, la in enumerate(languages):  # co-occurrence: slots of la's points filled by lb
            for b, lb in enumerate(languages):
                expected = sum(1 for i, lab in enumerate(labels) if lab == la for j in neighbours[i] if labels[j] == lb)
                assert int(result.cooccurrence[position, a, b]) == expected
        if ids is not None:
            for lang in languages:
                members = [i for i, lab in enumerate(labels) if lab == lang]
                share = [sum(ids[j] == ids[i] and labels[j] != lang for j in neighbours[i]) / k for i in members]
                assert rows.loc[lang].translation_share == pytest.approx(sum(share) / len(share), abs=1e-12)


def unequal_case(seed=0, sizes=(7, 2, 13, 4, 9), n_layers=2, d=6):
    g = torch.Generator().manual_seed(seed)
    labels = [f"L{a}" for a, n in enumerate(sizes) for _ in range(n)]
    rng = random.Random(seed)
    ids = [rng.randrange(8) for _ in labels]
    return torch.randn(n_layers, len(labels), d, generator=g), labels, ids


# ----------------------------------------------------------------------------------------------------------------
# core definitions


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize(("k", "t"), [(1, 1), (3, 2), (5, 3), (6, 6)])
def test_unequal_languages_against_reference(metric, compat, k, t):
    x, labels, ids = unequal_case()
    result = interp.ilo.score(x, labels, k=k, t=t, metric=metric, compat=compat, ids=ids)
    check_table(result, x, labels, k, t, metric, compat, ids=ids)


def test_t_above_number_of_other_languages_gives_zero_bridge():
    x, labels, _ = unequal_case(1)  # 5 languages: at most 4 other languages among any neighbour list
    result = interp.ilo.score(x, labels, k=6, t=5)
    check_table(result, x, labels, 6, 5)
    assert (result.table.bridge == 0).all() and (result.table.ilo == 0).all() and (result.table.reach > 0).all()


@pytest.mark.parametrize("compat", [False, True])
def test_largest_allowed_k(compat):
    x, labels, _ = unequal_case(2)
    k = len(labels) - 2  # the documented maximum (k < N - 1)
    result = interp.ilo.score(x, labels, k=k, t=4, compat=compat)
    check_table(result, x, labels, k, 4, compat=compat)


@pytest.mark.parametrize("compat", [False, True])
def test_ties_go_to_the_lower_index(compat):
    # points on a line at integer positions (exact euclidean distances): every interior point has two
    # neighbours at distance 1, and repeated positions give exact duplicates across languages
    positions = [0, 1, 2, 3, 4, 2, 2, 5, 6, 1, 0, 3, 7, 7]
    labels = ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "b"]
    x = torch.tensor([[[float(p), 0.0] for p in positions]])
    for k, t in ((1, 1), (2, 1), (3, 2), (4, 2)):
        result = interp.ilo.score(x, labels, k=k, t=t, metric="euclidean", compat=compat)
        check_table(result, x, labels, k, t, "euclidean", compat)


def test_compat_duplicates_keep_self_like_the_official_code():
    # point 6 (lang "c") duplicates point 1 (lang "a"): in the official step the later copy finds the
    # earlier one first, so the first column dropped is the duplicate, not itself
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 12, 5, generator=g)
    x[0, 6] = x[0, 1]
    labels = ["a", "a", "a", "a", "b", "b", "c", "c", "b", "c", "a", "b"]
    compat = interp.ilo.score(x, labels, k=3, t=1, compat=True)
    plain = interp.ilo.score(x, labels, k=3, t=1)
    check_table(compat, x, labels, 3, 1, compat=True)
    check_table(plain, x, labels, 3, 1)
    assert 6 in compat.indices[0, 6].tolist() and 1 not in compat.indices[0, 6].tolist()
    assert 1 in plain.indices[0, 6].tolist()


def test_language_with_two_points_and_min_count():
    x, labels, _ = unequal_case(4, sizes=(2, 11, 9, 12))
    for min_count in (1, 2, 3, 7):
        result = interp.ilo.score(x, labels, k=4, t=2, min_count=min_count)
        check_table(result, x, labels, 4, 2, min_count=min_count)


def test_all_points_identical():
    # every distance is 0: neighbours are the lowest other indices; compat drops point 0 from every list
    labels = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    x = torch.ones(1, 9, 4)
    for compat in (False, True):
        result = interp.ilo.score(x, labels, k=3, t=2, compat=compat)
        check_table(result, x, labels, 3, 2, compat=compat)


def test_tensor_layers_numbered_from_zero_and_activations_layers_kept():
    x, labels, ids = unequal_case(5, n_layers=3)
    assert interp.ilo.score(x, labels).layers == [0, 1, 2]
    acts = Activations(tensor=x, layers=[0, 4, 8], ids=ids, labels=labels)
    result = interp.ilo.score(acts)
    assert sorted(set(result.table.layer)) == [0, 4, 8] and list(result.by_layer.index) == [0, 4, 8]
    check_table(result, x, labels, 5, 3, ids=ids)
    # by_layer is the mean / median / min over languages of the table
    for layer, row in result.by_layer.iterrows():
        values = result.table[result.table.layer == layer].ilo.tolist()
        assert row.ilo_mean == pytest.approx(statistics.mean(values), abs=1e-12)
        assert row.ilo_median == pytest.approx(statistics.median(values), abs=1e-12)
        assert row.ilo_min == min(values)


# ----------------------------------------------------------------------------------------------------------------
# baselines


@pytest.mark.parametrize("compat", [False, True])
def test_permutation_null_against_reference(compat):
    x, labels, _ = unequal_case(6, sizes=(6, 3, 8, 5))
    x[:, 7] = x[:, 0]  # a duplicate across languages (matters in compat mode)
    k, t, n_perm, seed = 4, 2, 7, 11
    result = interp.ilo.score(x, labels, k=k, t=t, null=n_perm, seed=seed, min_count=2, compat=compat)
    languages = list(dict.fromkeys(labels))
    codes = [languages.index(lab) for lab in labels]
    # the permutations: the documented seeded generator, one randperm of the N points per permutation;
    # the label of point i becomes the label of point perm[i] (language sizes are kept)
    generator = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(len(labels), generator=generator).tolist() for _ in range(n_perm)]
    data = as_lists(x)
    for position in range(2):
        neighbours = ref_neighbours(data[position], k, "cosine", compat)
        observed = ref_scores(neighbours, labels, t, 2)
        null = {lang: [] for lang in languages}
        for perm in perms:
            shuffled = [languages[codes[perm[i]]] for i in range(len(labels))]
            assert sorted(shuffled) == sorted(labels)
            for lang, value in ref_scores(neighbours, shuffled, t, 2, languages).items():
                null[lang].append(value[3])
        rows = result.table[result.table.layer == position].set_index("language")
        for lang in languages:
            mean, std = statistics.mean(null[lang]), statistics.stdev(null[lang])
            assert rows.loc[lang].null_mean == pytest.approx(mean, abs=1e-12)
            assert rows.loc[lang].null_std == pytest.approx(std, abs=1e-12)
            assert rows.loc[lang].ilo_minus_null == pytest.approx(observed[lang][3] - mean, abs=1e-12)
            if std > 0:
                assert rows.loc[lang].z == pytest.approx((observed[lang][3] - mean) / std, rel=1e-9)
    again = interp.ilo.score(x, labels, k=k, t=t, null=n_perm, seed=seed, min_count=2, compat=compat)
    assert again.table.equals(result.table)  # seeded: reproducible


def bootstrap_reference(neighbours, labels, ids, t, n_boot, seed, min_count=1):
    """{language: (ci_low, ci_high)}; resamples where a language has no point leave its ILO undefined."""
    languages = list(dict.fromkeys(labels))
    items = list(dict.fromkeys(ids))
    item_of = [items.index(i) for i in ids]
    # the draws: the documented seeded generator, n_items items drawn with replacement per resample
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, len(items), (n_boot, len(items)), generator=generator).tolist()
    values = {lang: [] for lang in languages}
    for draw in draws:
        times = [draw.count(i) for i in range(len(items))]
        weights = [times[item_of[p]] for p in range(len(labels))]
        for lang, value in ref_scores(neighbours, labels, t, min_count, languages, weights).items():
            if value is not None:
                values[lang].append(value[3])
    return {lang: (ref_quantile(v, 0.025), ref_quantile(v, 0.975)) if v else (math.nan, math.nan)
            for lang, v in values.items()}  # fmt: skip


@pytest.mark.parametrize("min_count", [1, 3])
def test_bootstrap_against_reference_parallel(min_count):
    g = torch.Generator().manual_seed(7)
    n_items, labels = 10, [lang for lang in "abcd" for _ in range(10)]
    ids = list(range(n_items)) * 4
    x = torch.randn(1, 40, 6, generator=g)
    result = interp.ilo.score(x, labels, k=4, t=2, ids=ids, bootstrap=60, seed=3, min_count=min_count)
    neighbours = ref_neighbours(as_lists(x)[0], 4, "cosine", False)
    expected = bootstrap_reference(neighbours, labels, ids, 2, 60, 3, min_count)
    rows = result.table.set_index("language")
    for lang, (low, high) in expected.items():
        assert rows.loc[lang].ilo_ci_low == pytest.approx(low, abs=1e-12)
        assert rows.loc[lang].ilo_ci_high == pytest.approx(high, abs=1e-12)


@pytest.mark.parametrize("compat", [False, True])
def test_bootstrap_against_reference_unequal_languages_repeated_ids(compat):
    # random ids: items repeat within a language and some items miss some languages
    x, labels, ids = unequal_case(12)
    result = interp.ilo.score(x, labels, k=3, t=2, ids=ids, bootstrap=50, seed=5, compat=compat, min_count=2)
    for position, points in enumerate(as_lists(x)):
        neighbours = ref_neighbours(points, 3, "cosine", compat)
        expected = bootstrap_reference(neighbours, labels, ids, 2, 50, 5, min_count=2)
        rows = result.table[result.table.layer == position].set_index("language")
        for lang, (low, high) in expected.items():
            assert rows.loc[lang].ilo_ci_low == pytest.approx(low, abs=1e-12, nan_ok=True), lang
            assert rows.loc[lang].ilo_ci_high == pytest.approx(high, abs=1e-12, nan_ok=True), lang


def test_bootstrap_language_absent_from_a_resample_is_not_scored_zero():
    # language "c" has points for items 0 and 1 only; ~12% of the resamples draw neither, where c's ILO
    # is undefined -- counting it as 0 dragged c's CI down to 0 although c's ILO is 1 in every resample
    # that contains it (it used to give ilo_ci_low == 0.0)
    g = torch.Generator().manual_seed(0)
    labels = ["a"] * 20 + ["b"] * 20 + ["c"] * 2 + ["d"] * 20
    ids = list(range(20)) * 2 + [0, 1] + list(range(20))
    x = torch.randn(1, 62, 8, generator=g)
    x[0, 40:42] = x[0, [0, 1]] + 1e-3 * x[0, 20:22]  # c's points sit next to a's translations
    result = interp.ilo.score(x, labels, k=5, t=1, ids=ids, bootstrap=200)
    neighbours = ref_neighbours(as_lists(x)[0], 5, "cosine", False)
    expected = bootstrap_reference(neighbours, labels, ids, 1, 200, 0)
    rows = result.table.set_index("language")
    for lang, (low, high) in expected.items():
        assert rows.loc[lang].ilo_ci_low == pytest.approx(low, abs=1e-12), lang
        assert rows.loc[lang].ilo_ci_high == pytest.approx(high, abs=1e-12), lang
    assert rows.loc["c"].ilo_ci_low > 0.5


def test_retrieval_against_reference():
    x, labels, ids = unequal_case(8, sizes=(6, 5, 7))
    result = interp.ilo.score(x, labels, ids=ids, k=3, t=1, retrieval=True, metric="euclidean")
    languages = list(dict.fromkeys(labels))
    for position, points in enumerate(as_lists(x)):
        for a, la in enumerate(languages):
            for b, lb in enumerate(languages):
                got = float(result.retrieval[position, a, b])
                if a == b:
                    assert math.isnan(got)
                    continue
                targets = [j for j, lab in enumerate(labels) if lab == lb]
                hits = []
                for i, lab in enumerate(labels):
                    if lab == la:
                        best = min(targets, key=lambda j: (ref_distance(points[i], points[j], "euclidean"), j))
                        hits.append(ids[best] == ids[i])
                assert got == pytest.approx(sum(hits) / len(hits), abs=1e-12), (position, la, lb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_activations_score_like_cpu():
    # the kNN runs where the activations are; the labels live on the CPU (indexing them with CUDA neighbour
    # indices used to raise)
    x, labels, ids = unequal_case(13)
    cpu = interp.ilo.score(x, labels, ids=ids, null=3, bootstrap=5, retrieval=True)
    gpu = interp.ilo.score(x.cuda(), labels, ids=ids, null=3, bootstrap=5, retrieval=True)
    assert gpu.table.equals(cpu.table) and torch.equal(gpu.indices, cpu.indices)


# ----------------------------------------------------------------------------------------------------------------
# input checks


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"null": -1}, "null must be"),
        ({"null": 1}, "null must be"),
        ({"null": 2.5}, "null must be"),
        ({"bootstrap": -2, "ids": list(range(5)) * 2}, "bootstrap must be"),
        ({"min_count": 1.5}, "min_count must be"),
        ({"min_count": True}, "min_count must be"),
        ({"seed": "x"}, "seed must be"),
    ],
)
def test_bad_baseline_arguments_are_clear_errors(kwargs, message):
    x = torch.randn(2, 10, 4)
    with pytest.raises(ValueError, match=message):
        interp.ilo.score(x, ["a"] * 5 + ["b"] * 5, k=3, t=1, **kwargs)


def test_numpy_integers_are_accepted_for_k_t_null():
    x, labels, _ = unequal_case(9)
    result = interp.ilo.score(x, labels, k=np.int64(3), t=np.int32(2), null=np.int64(3), min_count=np.int64(1))
    check_table(result, x, labels, 3, 2)


def test_ids_that_pair_nothing_warn():
    # Activations made without ids carry 0..N-1: no point has a translation, so translation_share
    # would be 0 by construction -- the user is told instead of shown a column of zeros as a finding
    x, labels, _ = unequal_case(10)
    acts = Activations(tensor=x, layers=[0, 1], ids=list(range(len(labels))), labels=labels)
    with pytest.warns(UserWarning, match="every item id is distinct"):
        interp.ilo.score(acts)
    with pytest.raises(ValueError, match="every item id is distinct"):
        interp.ilo.score(acts, retrieval=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interp.ilo.score(acts, ids=[i % 5 for i in range(len(labels))])  # real pairings: no warning


# ----------------------------------------------------------------------------------------------------------------
# the CLI job


@pytest.fixture
def job_env(monkeypatch, tmp_path):
    """A tiny Llama in place of the named model, a 3-language jsonl corpus, a private cache."""
    from interp.models import byte_tokenizer, tiny_llama

    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    model, tok = tiny_llama(n_layers=2, d_model=32, seed=1), byte_tokenizer()
    monkeypatch.setattr(interp.models.loading, "load_model", lambda *args, **kwargs: (model, tok))
    words = ["sun", "moon", "star", "river", "stone", "tree", "cloud", "fire", "snow", "wind"]
    rows = [{"lang": lang, "id": f"w{i}", "text": f"{lang[:3]} {w} {i}"}
            for lang in ("eng_Latn", "fra_Latn", "deu_Latn") for i, w in enumerate(words)]  # fmt: skip
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return model, tok, f"jsonl:{path}", tmp_path


def test_job_outputs_match_reference_and_layer_numbering(job_env):
    import pandas as pd

    from interp.cli.ilo import run_ilo_job
    from interp.data import load_parallel

    model, tok, data, tmp = job_env
    out = tmp / "out"
    manifest = run_ilo_job(data=data, out=out, k=3, t=2, null=3, progress=False)
    table = pd.read_csv(out / "ilo_table.csv")
    by_layer = pd.read_csv(out / "ilo_by_layer.csv")
    written = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert written["arguments"]["k"] == 3 and written["summary"] == manifest["summary"]
    assert written["layers_scored"] == [0, 1, 2]  # hidden-state indices: 0 = embeddings, 2 = after the final norm
    assert sorted(set(table.layer)) == [0, 1, 2] and list(by_layer.layer) == [0, 1, 2]
    assert set(table.language) == {"eng_Latn", "fra_Latn", "deu_Latn"}
    # independent activations: HF hidden states, mean over all tokens (BOS included), per text
    texts, labels, ids = load_parallel(data).flat()
    pooled = []
    with torch.no_grad():
        for text in texts:
            encoded = tok(text, return_tensors="pt")
            hidden = model(**encoded, output_hidden_states=True).hidden_states
            pooled.append([h[0].double().mean(0) for h in hidden])
    for layer in range(3):
        points = [[float(v) for v in p[layer]] for p in pooled]
        ref = ref_scores(ref_neighbours(points, 3, "cosine", False), list(labels), 2)
        rows = table[table.layer == layer].set_index("language")
        for lang, (bridge, reach_raw, _reach, ilo) in ref.items():
            assert (rows.loc[lang].bridge, rows.loc[lang].reach_raw) == (bridge, reach_raw), (layer, lang)
            assert rows.loc[lang].ilo == pytest.approx(ilo, abs=1e-12)
        assert by_layer.set_index("layer").loc[layer].ilo_mean == pytest.approx(statistics.mean(rows.ilo), abs=1e-12)
    assert written["summary"]["best_layer"] == int(by_layer.set_index("layer").ilo_mean.idxmax())


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_job_failure_leaves_no_half_written_outputs(job_env, monkeypatch, failure):
    import interp.ilo.plot
    from interp.cli.ilo import run_ilo_job

    _, _, data, tmp = job_env
    out = tmp / "out"
    run_ilo_job(data=data, out=out, k=3, t=2, null=0, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) >= {"ilo_table.csv", "ilo_by_layer.csv", "manifest.json"}

    def broken(*args, **kwargs):
        raise failure("figure failed")

    monkeypatch.setattr(interp.ilo.plot, "plot_cooccurrence", broken)
    with pytest.raises(failure):
        run_ilo_job(data=data, out=out, k=4, t=1, null=0, progress=False)  # a different run fails while writing
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous run's outputs, complete
    fresh = tmp / "fresh"
    with pytest.raises(failure):
        run_ilo_job(data=data, out=fresh, k=4, t=1, null=0, progress=False)
    assert not fresh.exists() or not any(fresh.iterdir())
