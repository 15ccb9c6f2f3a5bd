"""Alignment metrics (interp.vlm.alignment) against independent float64 references written here
from the definitions (explicit loops over patches and patch pairs), hand-computed small grids,
scikit-learn's roc_auc_score and scipy's t quantiles."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from interp.vlm.alignment import (
    ALIGNMENT_METRICS,
    alignment_table,
    attention_mass,
    block_curves,
    correctness_auroc,
    cosine_overlap,
    patch_auroc,
    pointing_game,
)

# ----------------------------------------------------------------------------- references (loops, float64)


def ref_mass(a: np.ndarray, m: np.ndarray, normalize: bool = True) -> float:
    a, m = a.ravel().tolist(), m.ravel().tolist()
    if not any(x > 0 for x in m):
        return math.nan
    inside = sum(x * y for x, y in zip(a, m, strict=True))
    if not normalize:
        return inside
    total = sum(a)
    return inside / total if total > 0 else math.nan


def ref_auroc_pairs(scores, labels) -> float:
    """P(pos > neg) + 0.5 P(pos == neg) by explicit pairwise comparison."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return math.nan
    wins = 0.0
    for p in pos:
        for q in neg:
            wins += 1.0 if p > q else 0.5 if p == q else 0.0
    return wins / (len(pos) * len(neg))


def ref_auroc(a: np.ndarray, m: np.ndarray, threshold: float = 0.5) -> float:
    return ref_auroc_pairs(a.ravel().tolist(), [x >= threshold for x in m.ravel().tolist()])


def ref_pointing(a: np.ndarray, m: np.ndarray) -> float:
    a, m = a.ravel().tolist(), m.ravel().tolist()
    if not any(x > 0 for x in m):
        return math.nan
    best = 0
    for i, x in enumerate(a):
        if x > a[best]:  # strict: the first maximum (lowest row-major index) wins ties
            best = i
    return 1.0 if m[best] > 0 else 0.0


def ref_cosine(a: np.ndarray, m: np.ndarray) -> float:
    a, m = a.ravel().tolist(), m.ravel().tolist()
    if not any(x > 0 for x in m):
        return math.nan
    dot = sum(x * y for x, y in zip(a, m, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nm = math.sqrt(sum(y * y for y in m))
    return dot / (na * nm) if na > 0 else math.nan


def ref_chance_mass(m: np.ndarray, n_keys) -> float:
    """Uniform attention over the n patches: mass in box = Σ m / n (NaN for an empty mask)."""
    m = m.ravel().tolist()
    return sum(m) / len(m) if any(x > 0 for x in m) else math.nan


def ref_chance_pointing(m, n_keys) -> float:
    """A uniformly random argmax patch lands on a covered patch with probability #covered / n."""
    m = m.ravel().tolist()
    return sum(1 for x in m if x > 0) / len(m) if any(x > 0 for x in m) else math.nan


def ref_chance_auroc(m, n_keys, threshold=0.5) -> float:
    m = m.ravel().tolist()
    inside = sum(1 for x in m if x >= threshold)
    return 0.5 if any(x > 0 for x in m) and 0 < inside < len(m) else math.nan


def ref_chance_cosine(m, n_keys) -> float:
    """cos(uniform map, m) = Σ m / (√n ‖m‖)."""
    m = m.ravel().tolist()
    if not any(x > 0 for x in m):
        return math.nan
    return sum(m) / (math.sqrt(len(m)) * math.sqrt(sum(x * x for x in m)))


def ref_chance_mass_total(m, n_keys) -> float:
    m = m.ravel().tolist()
    return sum(m) / n_keys if n_keys and any(x > 0 for x in m) else math.nan


def ref_chance_image_share(m, n_keys) -> float:
    return m.size / n_keys if n_keys else math.nan


CHANCE_REFS = {
    "mass": ref_chance_mass,
    "mass_total": ref_chance_mass_total,
    "image_share": ref_chance_image_share,
    "auroc": ref_chance_auroc,
    "pointing": ref_chance_pointing,
    "cosine": ref_chance_cosine,
}


def _close(x, y):
    return (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-12 * max(1.0, abs(y))


def _random_attn(gen, shape, levels=None):
    """Post-softmax-like rows: image patches get part of the mass. With ``levels`` values are
    quantised so that ties (within and across box / background) are frequent."""
    x = torch.rand(*shape, generator=gen, dtype=torch.float64)
    if levels:
        x = torch.floor(x * levels) / levels
    return x / x.flatten(-2).sum(-1)[..., None, None].clamp_min(1e-9) * 0.3


def _random_mask(gen, grid):
    m = torch.rand(*grid, generator=gen, dtype=torch.float64)
    m = torch.where(m < 0.4, torch.zeros_like(m), m)  # background, fully and partially covered patches
    m[0, 0] = 1.0
    m[-1, -1] = 0.0
    return m


# ----------------------------------------------------------------------------- hand-computed cases


def test_hand_computed_2x2():
    a = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    m = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    assert attention_mass(a, m).item() == pytest.approx(0.3)  # (0.1·1 + 0.4·0.5) / 1.0
    a_text = a * 0.5  # half the row on text tokens: the image-normalised share is unchanged
    assert attention_mass(a_text, m).item() == pytest.approx(0.3)
    assert attention_mass(a_text, m, normalize=False).item() == pytest.approx(0.15)
    # binary mask at 0.5 = {(0,0), (1,1)}: pos {0.1, 0.4} vs neg {0.2, 0.3} -> wins 0+0+1+1 of 4
    assert patch_auroc(a, m).item() == pytest.approx(0.5)
    assert patch_auroc(a, m, threshold=0.75).item() == pytest.approx(0.0)  # pos {0.1} below all of {.2,.3,.4}
    assert pointing_game(a, m).item() == 1.0  # argmax 0.4 at (1,1), coverage 0.5 > 0
    assert cosine_overlap(a, m).item() == pytest.approx(0.3 / math.sqrt(0.3 * 1.25))


def test_hand_computed_3x3_auroc_ties():
    m = torch.tensor([[1.0, 0, 0], [0, 0.6, 0], [0, 0, 0]])
    a = torch.tensor([[0.2, 0.1, 0.1], [0.1, 0.2, 0.0], [0.0, 0.0, 0.3]])
    # each inside 0.2 beats the three 0.1 and three 0.0, loses to 0.3: 6/7
    assert patch_auroc(a, m).item() == pytest.approx(6 / 7)
    a[2, 2] = 0.2  # now a tie with the outside patch: 6.5/7 each
    assert patch_auroc(a, m).item() == pytest.approx(13 / 14)
    a = torch.full((3, 3), 1 / 9)
    assert patch_auroc(a, m).item() == pytest.approx(0.5)  # all tied


def test_pointing_ties_go_to_lowest_flat_index():
    a = torch.full((2, 2), 0.25)
    assert pointing_game(a, torch.tensor([[1.0, 0], [0, 0]])).item() == 1.0
    assert pointing_game(a, torch.tensor([[0.0, 1], [1, 1]])).item() == 0.0
    a = torch.tensor([[0.0, 0.4, 0.0], [0.0, 0.0, 0.0], [0.0, 0.4, 0.2]])  # tie at flat 1 and 7
    assert pointing_game(a, torch.tensor([[0.0, 0, 0], [0, 0, 0], [0, 1, 0]])).item() == 0.0
    assert pointing_game(a, torch.tensor([[0.0, 0.1, 0], [0, 0, 0], [0, 0, 0]])).item() == 1.0  # coverage > 0


def test_cosine_is_scale_invariant_sum_normalised_reading():
    gen = torch.Generator().manual_seed(3)
    a, m = _random_attn(gen, (4, 5)), _random_mask(gen, (4, 5))
    sum_normalised = (a / a.sum()).ravel() @ (m / m.sum()).ravel()
    expected = sum_normalised / ((a / a.sum()).norm() * (m / m.sum()).norm())
    assert cosine_overlap(a, m).item() == pytest.approx(expected.item(), abs=1e-12)


# ----------------------------------------------------------------------------- vs references, vectorised


@pytest.mark.parametrize("levels", [None, 4])
def test_metrics_match_loop_references_all_heads(levels):
    gen = torch.Generator().manual_seed(0 if levels is None else levels)
    a = _random_attn(gen, (3, 4, 3, 5), levels)
    m = _random_mask(gen, (3, 5))
    got = {
        "mass": attention_mass(a, m),
        "mass_total": attention_mass(a, m, normalize=False),
        "auroc": patch_auroc(a, m),
        "auroc_03": patch_auroc(a.float(), m.float(), threshold=0.3),
        "pointing": pointing_game(a, m),
        "cosine": cosine_overlap(a, m),
    }
    assert all(v.shape == (3, 4) and v.dtype == torch.float64 for v in got.values())
    an, mn = a.numpy(), m.numpy()
    for layer in range(3):
        for head in range(4):
            x = an[layer, head]
            assert _close(got["mass"][layer, head].item(), ref_mass(x, mn))
            assert _close(got["mass_total"][layer, head].item(), ref_mass(x, mn, normalize=False))
            assert _close(got["auroc"][layer, head].item(), ref_auroc(x, mn))
            xf = a.float()[layer, head].double().numpy()  # the float32 input, evaluated exactly
            assert _close(got["auroc_03"][layer, head].item(), ref_auroc(xf, m.float().double().numpy(), 0.3))
            assert got["pointing"][layer, head].item() == ref_pointing(x, mn)
            assert _close(got["cosine"][layer, head].item(), ref_cosine(x, mn))


def test_auroc_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(7)
    a = _random_attn(gen, (2, 3, 24, 24), levels=50)  # LLaVA grid, many ties
    m = torch.zeros(24, 24, dtype=torch.float64)
    m[3:11, 5:17] = 1.0
    m[2, 5:17] = 0.5
    got = patch_auroc(a, m)
    labels = (m >= 0.5).ravel().numpy()
    for layer in range(2):
        for head in range(3):
            ref = metrics.roc_auc_score(labels, a[layer, head].ravel().numpy())
            assert got[layer, head].item() == pytest.approx(ref, abs=1e-12)


def test_per_sample_masks_broadcast():
    gen = torch.Generator().manual_seed(11)
    a = _random_attn(gen, (3, 2, 4, 4), levels=3)
    m = torch.stack([_random_mask(gen, (4, 4)) for _ in range(3)])[:, None]  # [3, 1, 4, 4]
    got = patch_auroc(a, m)
    for i in range(3):
        for h in range(2):
            assert _close(got[i, h].item(), ref_auroc(a[i, h].numpy(), m[i, 0].numpy()))


# ----------------------------------------------------------------------------- undefined cases and errors


def test_empty_and_full_masks_give_nan_where_undefined():
    a = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    empty = torch.zeros(2, 2)
    for f in (attention_mass, patch_auroc, pointing_game, cosine_overlap):
        assert math.isnan(f(a, empty).item())
    full = torch.ones(2, 2)
    assert math.isnan(patch_auroc(a, full).item())  # no outside patch
    assert attention_mass(a, full).item() == pytest.approx(1.0)
    small = torch.tensor([[0.3, 0.0], [0.0, 0.0]])  # covered, but under the 0.5 threshold
    assert math.isnan(patch_auroc(a, small).item())
    assert patch_auroc(a, small, threshold=0.3).item() == pytest.approx(0.0)
    assert pointing_game(a, small).item() == 0.0
    zero_map = torch.zeros(2, 2)
    assert math.isnan(attention_mass(zero_map, small).item())
    assert math.isnan(cosine_overlap(zero_map, small).item())


def test_bad_input_errors():
    a = torch.full((2, 3, 4, 4), 1 / 16)
    with pytest.raises(ValueError, match=r"attn grid \(4, 4\).*mask grid \(3, 4\)"):
        attention_mass(a, torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]|in \[0, 1\]"):
        patch_auroc(a, torch.full((4, 4), 1.5))
    with pytest.raises(ValueError, match="NaN"):
        pointing_game(a, torch.full((4, 4), math.nan))
    bad = a.clone()
    bad[1, 2, 0, 3] = math.nan
    with pytest.raises(ValueError, match=r"NaN or Inf .*\[1, 2, 0, 3\]"):
        cosine_overlap(bad, torch.ones(4, 4))
    with pytest.raises(ValueError, match="post-softmax"):
        attention_mass(a - 0.5, torch.ones(4, 4))
    with pytest.raises(ValueError, match="threshold"):
        patch_auroc(a, torch.ones(4, 4), threshold=0)
    with pytest.raises(TypeError, match="floating point"):
        attention_mass(torch.ones(4, 4, dtype=torch.int64), torch.ones(4, 4))
    masks = torch.ones(2, 4, 4)
    with pytest.raises(ValueError, match="2 attention samples but 3 masks"):
        alignment_table(torch.stack([a, a]), torch.ones(3, 4, 4))
    with pytest.raises(ValueError, match=r"mask of sample 1 has shape \(4, 5\) but the attention grid is \(4, 4\)"):
        alignment_table([a, a], [torch.ones(4, 4), torch.ones(4, 5)])
    with pytest.raises(ValueError, match=r"attention of sample 'b' contains NaN"):
        alignment_table([a, bad], masks, sample_ids=["a", "b"])
    with pytest.raises(ValueError, match="blocks has 3 entries"):
        alignment_table([a, a], masks, blocks=[0, 1, 2])
    with pytest.raises(ValueError, match="unknown metrics"):
        alignment_table([a, a], masks, metrics=["iou"])
    with pytest.raises(ValueError, match=r"\[n_samples, n_blocks, n_heads, grid_h, grid_w\]"):
        alignment_table(torch.ones(4, 4), torch.ones(4, 4))
    with pytest.raises(ValueError, match="correct has 1 entries"):
        alignment_table([a, a], masks, correct=[True])
    with pytest.raises(ValueError, match="empty"):
        alignment_table([a, a], torch.zeros(2, 4, 4), on_empty="raise")
    with pytest.raises(ValueError, match="sample_ids must be unique"):
        alignment_table([a, a], masks, sample_ids=["x", "x"])
    with pytest.raises(ValueError, match="correct="):
        block_curves(alignment_table([a, a], masks))


# ----------------------------------------------------------------------------- dataset table


def _dataset(n=6, layers=3, heads=2, grid=(3, 4), seed=5):
    gen = torch.Generator().manual_seed(seed)
    attn = [_random_attn(gen, (layers, heads, *grid), levels=5) for _ in range(n)]
    masks = [_random_mask(gen, grid) for _ in range(n)]
    return attn, masks


def test_alignment_table_matches_references_and_head_mean():
    attn, masks = _dataset()
    correct = [True, False, True, True, False, False]
    table = alignment_table(attn, masks, correct=correct, sample_ids=list("abcdef"), blocks=[10, 11, 12])
    chance_cols = [f"{m}_chance" for m in ALIGNMENT_METRICS]
    assert list(table.columns) == ["sample", "block", "head", "correct", *ALIGNMENT_METRICS, *chance_cols]
    assert len(table) == 6 * 3 * 3
    refs = {
        "mass": ref_mass,
        "mass_total": lambda x, m: ref_mass(x, m, normalize=False),
        "image_share": lambda x, m: float(sum(x.ravel().tolist())),
        "auroc": ref_auroc,
        "pointing": ref_pointing,
        "cosine": ref_cosine,
    }
    for row in table.itertuples(index=False):
        i = "abcdef".index(row.sample)
        a = attn[i][row.block - 10].numpy()
        x = a.mean(0) if row.head == "mean" else a[row.head]  # head mean: maps averaged first
        assert row.correct == correct[i]
        for name, ref in refs.items():
            assert _close(getattr(row, name), ref(x, masks[i].numpy())), (name, row)
        for name, ref in CHANCE_REFS.items():  # raw tensors: no n_keys, so the whole-row levels are NaN
            assert _close(getattr(row, f"{name}_chance"), ref(masks[i].numpy(), None)), (name, row)
    stacked = alignment_table(
        torch.stack(attn), torch.stack(masks), correct=correct, sample_ids=list("abcdef"), blocks=[10, 11, 12]
    )
    pd.testing.assert_frame_equal(table, stacked)
    half = alignment_table(torch.stack(attn).to(torch.bfloat16), masks)  # converted to float64 per sample
    rounded = alignment_table([x.to(torch.bfloat16).double() for x in attn], masks)
    pd.testing.assert_frame_equal(half, rounded)
    only_mean = alignment_table(attn, masks, heads="mean", metrics=["auroc"])
    assert list(only_mean["head"].unique()) == ["mean"] and list(only_mean.columns) == [
        "sample",
        "block",
        "head",
        "auroc",
        "auroc_chance",
    ]
    only_heads = alignment_table(attn, masks, heads="each")
    assert sorted(only_heads["head"].unique()) == [0, 1]


def test_alignment_table_warns_on_empty_masks():
    attn, masks = _dataset(n=3)
    masks[1] = torch.zeros_like(masks[1])
    with pytest.warns(UserWarning, match=r"1 sample\(s\) have an empty object mask.*\[1\]"):
        table = alignment_table(attn, masks)
    empty = table[table["sample"] == 1]
    assert empty[["mass", "auroc", "pointing", "cosine"]].isna().all().all()
    assert empty["image_share"].notna().all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alignment_table(attn[:1], masks[:1])


# ----------------------------------------------------------------------------- aggregation


def _table(values: dict, correct: list[bool], head="mean"):
    """A hand-built alignment table: values[layer] = per-sample metric values."""
    rows = []
    for layer, vals in values.items():
        for s, v in enumerate(vals):
            rows.append({"sample": s, "block": layer, "head": head, "correct": correct[s], "mass": v})
    return pd.DataFrame(rows)


def test_block_curves_t_interval_vs_scipy():
    stats = pytest.importorskip("scipy.stats")
    correct = [True, True, True, False, False, True, False]
    values = {0: [0.1, 0.4, 0.35, 0.2, math.nan, 0.5, 0.05], 1: [0.3, 0.3, 0.9, 0.1, 0.2, 0.6, 0.3]}
    curves = block_curves(_table(values, correct))
    assert list(curves.columns) == [
        "metric", "block", "head", "group", "n", "mean", "std", "ci_low", "ci_high", "chance"
    ]  # fmt: skip
    assert curves["chance"].isna().all()  # a hand-built table without a mass_chance column
    assert len(curves) == 4
    for row in curves.itertuples(index=False):
        want = row.group == "correct"
        x = np.array([v for v, c in zip(values[row.block], correct, strict=True) if c == want and not math.isnan(v)])
        assert row.n == len(x)
        assert row.mean == pytest.approx(x.mean(), abs=1e-12)
        low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
        assert (row.ci_low, row.ci_high) == pytest.approx((low, high), abs=1e-12)
    pooled = block_curves(_table(values, correct), split=None, ci=0.9)
    assert list(pooled["group"]) == ["all", "all"] and list(pooled["n"]) == [6, 7]
    x = np.array(values[1])
    low, high = stats.t.interval(0.9, 6, loc=x.mean(), scale=stats.sem(x))
    assert (pooled["ci_low"].iloc[1], pooled["ci_high"].iloc[1]) == pytest.approx((low, high), abs=1e-12)


def test_block_curves_hand_computed_and_degenerate():
    # values 1, 2, 3: mean 2, s = 1, t_{0.975, 2} = 4.302652729911275 -> half width 4.3027 / sqrt(3)
    curves = block_curves(_table({0: [1.0, 2.0, 3.0, 7.0]}, [True, True, True, False]))
    correct = curves[curves["group"] == "correct"].iloc[0]
    half = 4.302652729911275 / math.sqrt(3)
    assert (correct["ci_low"], correct["ci_high"]) == pytest.approx((2 - half, 2 + half), abs=1e-9)
    single = curves[curves["group"] == "incorrect"].iloc[0]
    assert single["n"] == 1 and single["mean"] == 7.0 and math.isnan(single["ci_low"]) and math.isnan(single["std"])


def test_block_curves_bootstrap_vs_explicit_resampling():
    correct = [True, False, True, True, False, True, True, False] * 2
    values = {3: [round(math.sin(7.1 * i) ** 2, 6) for i in range(16)]}  # distinct values: few tied means
    values[3][5] = math.nan
    curves = block_curves(_table(values, correct), method="bootstrap", n_boot=500, seed=4, ci=0.9)
    for row in curves.itertuples(index=False):
        want = row.group == "correct"
        x = [v for v, c in zip(values[3], correct, strict=True) if c == want and not math.isnan(v)]
        rng = np.random.default_rng(4)  # documented: fresh generator per cell, integers(0, n, (n_boot, n))
        draws = rng.integers(0, len(x), size=(500, len(x)))
        means = sorted(sum(x[j] for j in draw) / len(x) for draw in draws)

        def quantile(q, means=means):  # numpy's default "linear" rule, written out
            pos = q * (len(means) - 1)
            lo = math.floor(pos)
            return means[lo] + (pos - lo) * (means[min(lo + 1, len(means) - 1)] - means[lo])

        assert (row.ci_low, row.ci_high) == pytest.approx((quantile(0.05), quantile(0.95)), abs=1e-12)
    again = block_curves(_table(values, correct), method="bootstrap", n_boot=500, seed=4, ci=0.9)
    pd.testing.assert_frame_equal(curves, again)


def test_block_curves_heads_and_other_split_column():
    attn, masks = _dataset(n=5)
    table = alignment_table(attn, masks, correct=[True, False, True, False, True])
    table["relation"] = np.where(table["sample"] % 2 == 0, "left", "on")
    curves = block_curves(table, ["mass", "cosine"], head="all", split="relation")
    assert len(curves) == 2 * 3 * 3 * 2  # metrics × layers × (2 heads + mean) × groups
    assert set(curves["group"]) == {"left", "on"}
    row = curves[(curves.metric == "cosine") & (curves.block == 2) & (curves["head"] == 1) & (curves.group == "on")]
    x = table[(table.block == 2) & (table["head"] == 1) & (table.relation == "on")]["cosine"]
    assert row["mean"].item() == pytest.approx(x.mean()) and row["n"].item() == 2
    cell = table[(table.block == 2) & (table["head"] == 1) & (table.relation == "on")]
    assert row["chance"].item() == pytest.approx(cell["cosine_chance"].mean())
    with pytest.raises(ValueError, match="head 7 not in the table"):
        block_curves(table, head=7)
    with pytest.raises(ValueError, match="lacks columns"):
        block_curves(table.drop(columns="correct"))


def test_correctness_auroc_vs_pairwise_and_sklearn():
    correct = [True, False, True, True, False, False, True]
    values = {
        0: [0.3, 0.1, 0.3, 0.2, 0.3, 0.0, 0.9],  # ties across classes
        1: [0.5, 0.6, math.nan, 0.1, 0.2, 0.3, 0.4],  # a NaN sample is dropped for this layer
        2: [0.1] * 7,
    }
    out = correctness_auroc(_table(values, correct))
    assert list(out.columns) == ["metric", "block", "head", "auroc", "n_correct", "n_incorrect", "chance"]
    assert (out["chance"] == 0.5).all()
    for row in out.itertuples(index=False):
        keep = [(v, c) for v, c in zip(values[row.block], correct, strict=True) if not math.isnan(v)]
        ref = ref_auroc_pairs([v for v, _ in keep], [c for _, c in keep])
        assert row.auroc == pytest.approx(ref, abs=1e-12)
        assert (row.n_correct, row.n_incorrect) == (sum(c for _, c in keep), sum(not c for _, c in keep))
    assert out.loc[out.block == 2, "auroc"].item() == 0.5
    metrics = pytest.importorskip("sklearn.metrics")
    assert out.loc[out.block == 0, "auroc"].item() == pytest.approx(metrics.roc_auc_score(correct, values[0]))
    one_class = correctness_auroc(_table({0: [0.1, 0.2]}, [True, True]))
    assert math.isnan(one_class["auroc"].item()) and one_class["n_incorrect"].item() == 0


def test_correctness_auroc_all_heads_from_alignment_table():
    attn, masks = _dataset(n=8, seed=9)
    correct = [True, False, True, False, True, True, False, False]
    table = alignment_table(attn, masks, correct=correct)
    out = correctness_auroc(table, "auroc", head="all")
    assert len(out) == 3 * 3
    for row in out.itertuples(index=False):
        cell = table[(table.block == row.block) & (table["head"] == row.head)].sort_values("sample")
        ref = ref_auroc_pairs(cell["auroc"].tolist(), cell["correct"].tolist())
        assert _close(row.auroc, ref)
    with pytest.raises(ValueError, match="lacks columns"):
        correctness_auroc(alignment_table(attn, masks))


# ----------------------------------------------------------------------------- chance levels


def test_chance_level_hand_cases():
    from interp.vlm.alignment import chance_level

    m = torch.tensor([[1.0, 0.5], [0.0, 0.0]])  # 4 patches, coverage 1.5 in all, 2 covered, 2 with m >= 0.5
    assert chance_level("mass", m) == 1.5 / 4
    assert chance_level("pointing", m) == 2 / 4
    assert chance_level("auroc", m) == 0.5
    assert chance_level("cosine", m) == pytest.approx(1.5 / (2 * math.sqrt(1.25)), abs=1e-15)
    assert chance_level("mass_total", m, n_keys=10) == pytest.approx(0.15, abs=1e-15)
    assert chance_level("image_share", m, n_keys=10) == 0.4
    assert math.isnan(chance_level("mass_total", m)) and math.isnan(chance_level("image_share", m))
    assert math.isnan(chance_level("auroc", torch.ones(2, 2)))  # no outside patch: AUROC undefined
    assert math.isnan(chance_level("auroc", torch.full((2, 2), 0.2)))  # nothing reaches the threshold
    assert math.isnan(chance_level("mass", torch.zeros(2, 2)))
    with pytest.raises(ValueError, match="unknown metric"):
        chance_level("nope", m)
    with pytest.raises(ValueError, match="n_keys"):
        chance_level("mass", m, n_keys=3)  # fewer keys than image patches
    with pytest.raises(ValueError, match="outside"):
        chance_level("mass", m * 2)


def test_chance_is_the_metric_under_attention_that_ignores_the_box():
    """Uniform maps score exactly the chance level; one-hot maps at every patch average to it
    (pointing); a map and its rank reversal average to it (AUROC)."""
    gen = torch.Generator().manual_seed(3)
    masks = [_random_mask(gen, (3, 4)) for _ in range(4)]
    n_keys = [20, 31, 12, 40]
    uniform = [torch.full((1, 1, 3, 4), 1.0 / k, dtype=torch.float64) for k in n_keys]  # the whole row uniform
    table = alignment_table(uniform, masks, heads="each", n_keys=n_keys)
    for name in ("mass", "mass_total", "image_share", "cosine"):
        ok = table[name].notna()
        assert np.allclose(table.loc[ok, name], table.loc[ok, f"{name}_chance"], rtol=1e-12, atol=0), name
    for m in masks:
        if not bool((m > 0).any()):
            continue
        one_hot = torch.eye(12, dtype=torch.float64).reshape(12, 1, 3, 4)  # 12 "blocks": argmax at each patch
        pointing = alignment_table([one_hot], [m], heads="each", metrics=["pointing"])
        assert pointing["pointing"].mean() == pytest.approx(pointing["pointing_chance"].iloc[0], abs=1e-12)
        scores = torch.randperm(12, generator=gen).double().reshape(1, 1, 3, 4)
        pair = alignment_table([torch.cat([scores, 11 - scores])], [m], heads="each", metrics=["auroc"])
        if pair["auroc"].notna().all():
            assert pair["auroc"].mean() == pytest.approx(pair["auroc_chance"].iloc[0], abs=1e-12)


def _hand_coverage(box, image_size, side, patch):
    """Pure Python: each patch's covered fraction after llava-hf's shortest-edge resize + center crop."""
    width, height = image_size
    if width <= height:  # transformers truncates the long edge
        new_w, new_h = side, int(side * height / width)
    else:
        new_w, new_h = int(side * width / height), side
    sx, sy = new_w / width, new_h / height
    ox, oy = (new_w - side) // 2, (new_h - side) // 2
    x0, y0, x1, y1 = box[0] * sx - ox, box[1] * sy - oy, box[2] * sx - ox, box[3] * sy - oy
    grid = side // patch
    cover = []
    for r in range(grid):
        row = []
        for c in range(grid):
            w = max(0.0, min(x1, (c + 1) * patch) - max(x0, c * patch))
            h = max(0.0, min(y1, (r + 1) * patch) - max(y0, r * patch))
            row.append(w * h / (patch * patch))
        cover.append(row)
    return cover


def test_mass_in_box_and_its_chance_by_hand_on_a_real_trace():
    """Acceptance: mass in box and its chance level, recomputed by hand (pure Python over the patch
    grid, the processor's resize and crop written out) for a few traced samples, equal alignment_table's."""
    from PIL import Image

    from interp.models import tiny_llava, tiny_llava_processor
    from interp.vlm import trace_image_attention

    side, patch = 112, 14  # 8×8 grid
    model, proc = tiny_llava(n_layers=2, image_size=side, patch_size=patch, seed=2), tiny_llava_processor(side, patch)
    cases = [((200, 120), (60, 20, 110, 90)), ((120, 200), (10, 150, 100, 198)), ((150, 150), (0, 0, 37, 150))]
    images = [Image.new("RGB", size, (30 * i, 200, 90)) for i, (size, _) in enumerate(cases)]
    prompt = "<image>\nUSER: Where is the box?\nASSISTANT:"
    trace = trace_image_attention(model, proc, images, [prompt] * 3, progress=False)
    table = alignment_table(trace, trace.box_masks([box for _, box in cases]), metrics=["mass"])
    for i, (size, box) in enumerate(cases):
        cover = _hand_coverage(box, size, side, patch)
        flat_cover = [x for row in cover for x in row]
        chance = sum(flat_cover) / len(flat_cover)
        for block in trace.blocks:
            maps = trace.patches[i, trace.blocks.index(block)].double()  # [H, 8, 8]
            for head in [*range(maps.shape[0]), "mean"]:
                a = maps.mean(0) if head == "mean" else maps[head]
                flat = a.flatten().tolist()
                mass = sum(x * m for x, m in zip(flat, flat_cover, strict=True)) / sum(flat)
                row = table[(table["sample"] == i) & (table["block"] == block) & (table["head"] == head)]
                assert row["mass"].item() == pytest.approx(mass, rel=1e-6, abs=1e-9)
                assert row["mass_chance"].item() == pytest.approx(chance, rel=1e-6, abs=1e-9)
        assert 0 < chance < 1
