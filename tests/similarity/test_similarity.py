"""interp.similarity against independent float64 references written here from the definitions
(dense N × N matrices, Python sets, the classic LCS dynamic programme, Song et al.'s Eq. 5), and
CKA against the packaged oracle ``ckatorch``."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import interp
import interp.similarity as sim
from interp.similarity import knn_metrics

# ------------------------------------------------------------------------------------------------
# references (no interp code)


def ref_neighbors(X: torch.Tensor, k: int) -> torch.Tensor:
    """k nearest by cosine distance, self excluded, ties to the lower index (stable sort), float64."""
    X = X.double()
    unit = X / X.norm(dim=1, keepdim=True)
    distance = 1 - unit @ unit.T
    distance.fill_diagonal_(math.inf)
    return torch.sort(distance, dim=1, stable=True).indices[:, :k]


def ref_mutual(ia, ib) -> float:
    k = ia.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ia.tolist(), ib.tolist(), strict=True)]))


def ref_cycle(ia, ib) -> float:
    lists_a = [set(row) for row in ia.tolist()]
    return float(np.mean([any(i in lists_a[j] for j in row) for i, row in enumerate(ib.tolist())]))


def ref_lcs_length(x: list, y: list) -> int:
    table = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            if x[i - 1] == y[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def ref_lcs(ia, ib) -> float:
    """Upstream's unnormalised value: mean LCS length."""
    return float(np.mean([ref_lcs_length(a, b) for a, b in zip(ia.tolist(), ib.tolist(), strict=True)]))


def ref_hsic_biased(K, L):
    n = K.shape[0]
    H = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
    return torch.trace(K @ H @ L @ H)


def ref_hsic_unbiased(K, L):
    """Song et al. (2012) Eq. 5, with explicit matrices (K, L need not be symmetric)."""
    n = K.shape[0]
    Kt, Lt = K.clone(), L.clone()
    Kt.fill_diagonal_(0)
    Lt.fill_diagonal_(0)
    ones = torch.ones(n, dtype=torch.float64)
    total = (
        torch.trace(Kt @ Lt)
        + (ones @ Kt @ ones) * (ones @ Lt @ ones) / ((n - 1) * (n - 2))
        - 2 * (ones @ Kt @ Lt @ ones) / (n - 2)
    )
    return total / (n * (n - 3))


def ref_cka(A, B, unbiased, epsilon):
    K, L = A.double() @ A.double().T, B.double() @ B.double().T
    h = ref_hsic_unbiased if unbiased else ref_hsic_biased
    return float(h(K, L) / (torch.sqrt(h(K, K) * h(L, L)) + epsilon))


def ref_topk_mask(K, k):
    """Upstream's CKNNA mask: 1 at the k largest entries of each row of K, diagonal set to −inf first.
    (Upstream uses torch.topk, whose tie order is unspecified; a stable sort puts ties to the lower index.)"""
    n = K.shape[0]
    scores = K.clone()
    scores.fill_diagonal_(-math.inf)
    top = torch.sort(-scores, dim=1, stable=True).indices[:, :k]
    return torch.zeros(n, n, dtype=torch.float64).scatter_(1, top, 1.0)


def ref_cknna_upstream(A, B, k, epsilon=1e-6):
    """float64 port of platonic-rep ``cknna(feats_A, feats_B, topk=k)`` (unbiased): mask and kernel both
    from K = AAᵀ, L = BBᵀ of the features *as given*."""
    K, L = A.double() @ A.double().T, B.double() @ B.double().T
    mask_k, mask_l = ref_topk_mask(K, k), ref_topk_mask(L, k)
    both = mask_k * mask_l
    kl = ref_hsic_unbiased(both * K, both * L)
    kk = ref_hsic_unbiased(mask_k * K, mask_k * K)
    ll = ref_hsic_unbiased(mask_l * L, mask_l * L)
    return float(kl / (torch.sqrt(kk * ll) + epsilon))


def ref_unit(X):
    X = X.double()
    return X / X.norm(dim=1, keepdim=True)


def ref_cknna(A, B, k, epsilon=1e-6):
    """interp's CKNNA by definition: upstream's cknna on L2-normalised rows (as the Platonic pipeline)."""
    return ref_cknna_upstream(ref_unit(A), ref_unit(B), k, epsilon)


# ------------------------------------------------------------------------------------------------
# data


def random_pair(n=48, d_a=12, d_b=20, noise=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, d_a, generator=g)
    B = torch.cat([A, torch.randn(n, d_b - d_a, generator=g)], 1) + noise * torch.randn(n, d_b, generator=g)
    return A, B


def structured_pair(seed=1):
    """Clusters with exact duplicates (ties) in A; B = an orthogonal rotation of A with some rows
    replaced -- most neighbourhoods shared, some broken."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, 10, generator=g) * 3
    A = centres[torch.arange(40) % 6] + 0.4 * torch.randn(40, 10, generator=g)
    A[7] = A[1]  # exact duplicate: a tie
    A[13] = A[1]
    Q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
    B = (A.double() @ Q).float()
    B[::5] = torch.randn(8, 10, generator=g) * 3
    return A, B


DATA = {"random": random_pair(), "structured": structured_pair(), "random_far": random_pair(noise=4.0, seed=3)}


# ------------------------------------------------------------------------------------------------
# kNN metrics


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("k", [1, 4, 11])
def test_knn_metrics_match_reference(data, k):
    A, B = DATA[data]
    ia, ib = ref_neighbors(A, k), ref_neighbors(B, k)
    assert sim.mutual_knn(A, B, k) == pytest.approx(ref_mutual(ia, ib), abs=1e-12)
    assert sim.cycle_knn(A, B, k) == pytest.approx(ref_cycle(ia, ib), abs=1e-12)
    assert sim.cycle_knn(B, A, k) == pytest.approx(ref_cycle(ib, ia), abs=1e-12)
    assert sim.lcs_knn(A, B, k, normalize=False) == pytest.approx(ref_lcs(ia, ib), abs=1e-12)
    assert sim.lcs_knn(A, B, k) == pytest.approx(ref_lcs(ia, ib) / k, abs=1e-12)


def test_lcs_is_order_sensitive_and_mutual_is_not():
    """Hand-built lists: same sets, reversed order -> mutual 1, LCS 1/k (k=4: LCS of abcd, dcba = 1)."""
    ia = torch.tensor([[1, 2, 3, 4], [0, 2, 3, 4], [0, 1, 3, 4], [0, 1, 2, 4], [0, 1, 2, 3]])
    ib = ia.flip(-1)
    assert float(knn_metrics.mutual_from_lists(ia, ib)) == 1.0
    assert float(knn_metrics.lcs_from_lists(ia, ib)) == pytest.approx(0.25)
    assert float(knn_metrics.lcs_from_lists(ia, ib, normalize=False)) == pytest.approx(1.0)
    # partial overlap in a different order: [1, 2, 3, 4] vs [3, 9, 1, 2] -> LCS "1 2" = 2, overlap 3
    a, b = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[3, 9, 1, 2]])
    assert float(knn_metrics.lcs_from_lists(a, b, normalize=False)) == 2.0
    assert float(knn_metrics.mutual_from_lists(a, b)) == 0.75


def test_cycle_hand_case():
    """0 -> 1 in B and 1 -> 0 in A closes the cycle for 0; point 2's B-neighbour 0 does not list 2."""
    ia = torch.tensor([[1], [0], [1]])
    ib = torch.tensor([[1], [2], [0]])
    # i=0: j=1, is 0 in N_A(1)={0}: yes.  i=1: j=2, N_A(2)={1}: yes.  i=2: j=0, N_A(0)={1}: no.
    assert float(knn_metrics.cycle_from_lists(ia, ib)) == pytest.approx(2 / 3)


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("k", [2, 5, 15])
def test_cknna_matches_reference(data, k):
    A, B = DATA[data]
    assert sim.cknna(A, B, k) == pytest.approx(ref_cknna(A, B, k), rel=1e-9, abs=1e-12)
    assert sim.cknna(B, A, k, epsilon=0) == pytest.approx(ref_cknna(B, A, k, epsilon=0), rel=1e-9, abs=1e-12)


def test_identical_inputs():
    A, _ = random_pair(n=40)
    assert sim.mutual_knn(A, A, 7) == 1.0
    assert sim.lcs_knn(A, A, 7) == 1.0
    # a rotation and rescaling keeps cosine neighbours and CKA
    Q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(5)))
    rotated = 3.0 * (A.double() @ Q)
    assert sim.mutual_knn(A, rotated, 7) == 1.0
    for unbiased in (False, True):
        assert sim.cka(A, A, unbiased=unbiased, epsilon=0) == pytest.approx(1.0, abs=1e-12)
        assert sim.cka(A, rotated, unbiased=unbiased, epsilon=0) == pytest.approx(1.0, abs=1e-10)
        # upstream's +1e-6 keeps CKA(X, X) just below 1: HSIC / (HSIC + 1e-6)
        K = A.double() @ A.double().T
        h = (ref_hsic_unbiased if unbiased else ref_hsic_biased)(K, K)
        assert sim.cka(A, A, unbiased=unbiased) == pytest.approx(float(h / (h + 1e-6)), rel=1e-12)
    assert sim.cknna(A, A, 7, epsilon=0) == pytest.approx(1.0, abs=1e-12)


def uneven_norms(X, seed):
    """Rows rescaled by factors 2^-5 .. 2^5: powers of two scale exactly, so rows that were exact
    duplicates (ties) keep bit-identical directions."""
    g = torch.Generator().manual_seed(seed)
    return X * torch.pow(2.0, torch.randint(-5, 6, (X.shape[0], 1), generator=g).float())


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("k", [3, 9])
def test_cknna_uneven_norms_is_upstream_on_normalised_rows(data, k):
    """Rows of very different norms: CKNNA = upstream's cknna (float64 port) on the L2-normalised rows.
    Mixing cosine neighbours with the raw inner-product kernel (the old behaviour) fails this."""
    A, B = DATA[data]
    A, B = uneven_norms(A, 20), uneven_norms(B, 21)
    expected = ref_cknna_upstream(ref_unit(A), ref_unit(B), k)
    assert sim.cknna(A, B, k) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert sim.cknna(B, A, k, epsilon=0) == pytest.approx(
        ref_cknna_upstream(ref_unit(B), ref_unit(A), k, epsilon=0), rel=1e-9, abs=1e-12
    )
    # the pairwise engine (layer / model matrices) takes the same normalised kernel
    values = sim.model_similarity(A[None], B[None], "cknna", k=k, progress=False).values
    assert float(values[0, 0]) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_cknna_needs_cosine_neighbours():
    A, B = random_pair(n=20)
    with pytest.raises(ValueError, match="neighbour metric must be 'cosine'"):
        sim.cknna(A, B, 3, metric="euclidean")
    with pytest.raises(ValueError, match="neighbour metric must be 'cosine'"):
        sim.layer_similarity(layer_stack(), "cknna", k=3, knn_metric="euclidean", progress=False)


@pytest.mark.parametrize("data", DATA)
def test_cknna_full_neighbourhood_is_unbiased_cka(data):
    """k = N − 1 keeps every off-diagonal pair: CKNNA = unbiased CKA of the L2-normalised rows, same epsilon."""
    A, B = DATA[data]
    A, B = uneven_norms(A, 22), uneven_norms(B, 23)
    n = A.shape[0]
    for epsilon in (1e-6, 0.0):
        full = ref_cka(ref_unit(A), ref_unit(B), True, epsilon)
        assert sim.cknna(A, B, n - 1, epsilon=epsilon) == pytest.approx(full, abs=1e-12)
        assert sim.cknna(A, B, None, epsilon=epsilon) == pytest.approx(full, abs=1e-12)
        assert sim.cka(F.normalize(A, dim=1), F.normalize(B, dim=1), unbiased=True, epsilon=epsilon) == pytest.approx(
            full, abs=1e-6
        )


# ------------------------------------------------------------------------------------------------
# CKA


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("route", ["features", "gram"])
def test_cka_matches_reference(data, unbiased, route):
    A, B = DATA[data]
    for epsilon in (1e-6, 0.0):
        assert sim.cka(A, B, unbiased=unbiased, epsilon=epsilon, route=route) == pytest.approx(
            ref_cka(A, B, unbiased, epsilon), rel=1e-10
        )
    K, L = A.double() @ A.double().T, B.double() @ B.double().T
    h = ref_hsic_unbiased if unbiased else ref_hsic_biased
    assert sim.hsic(A, B, unbiased=unbiased, route=route) == pytest.approx(float(h(K, L)), rel=1e-10)


def test_cka_matches_ckatorch():
    pytest.importorskip("ckatorch", reason="CKA oracle: pip install ckatorch (dev extra)")
    from ckatorch.core import cka_base
    from ckatorch.hsic import hsic0
    from ckatorch.utils import center_gram_matrix

    g = torch.Generator().manual_seed(11)
    for n, d_a, d_b in ((30, 8, 50), (64, 40, 12), (200, 16, 16)):
        A = torch.randn(n, d_a, generator=g)
        B = A @ torch.randn(d_a, d_b, generator=g) + 2 * torch.randn(n, d_b, generator=g)
        for unbiased in (False, True):
            oracle = float(cka_base(A, B, kernel="linear", unbiased=unbiased))
            assert sim.cka(A, B, unbiased=unbiased, epsilon=0) == pytest.approx(oracle, abs=1e-5)
        # upstream's epsilon replicated on the oracle's HSIC values
        K, L = A.double() @ A.double().T, B.double() @ B.double().T
        scale = (n - 1) ** 2  # ckatorch's hsic0 divides tr(KHLH) by (n-1)^2; upstream does not
        kl, kk, ll = (float(hsic0(x, y)) * scale for x, y in ((K, L), (K, K), (L, L)))
        assert sim.cka(A, B) == pytest.approx(kl / (math.sqrt(kk * ll) + 1e-6), abs=1e-5)
        # unbiased: the U-centred Gram inner product of ckatorch divided by n(n-3) is Song's HSIC
        Ku, Lu = center_gram_matrix(K.clone(), True), center_gram_matrix(L.clone(), True)
        kl, kk, ll = (float((x * y).sum()) / (n * (n - 3)) for x, y in ((Ku, Lu), (Ku, Ku), (Lu, Lu)))
        assert sim.cka(A, B, unbiased=True) == pytest.approx(kl / (math.sqrt(kk * ll) + 1e-6), abs=1e-5)


def test_biased_cka_inflated_at_small_n():
    """Independent features: biased CKA is far from 0 at small N, unbiased CKA is near 0."""
    g = torch.Generator().manual_seed(2)
    A, B = torch.randn(32, 64, generator=g), torch.randn(32, 64, generator=g)
    assert sim.cka(A, B) > 0.5
    assert abs(sim.cka(A, B, unbiased=True)) < 0.1


def test_epsilon_is_not_negligible_for_unit_rows_and_unbiased_hsic():
    """Unit-norm rows bunched around one direction (like mean-pooled LM states) have a tiny HSIC_u(K, K);
    then upstream's ε = 1e-6 changes unbiased CKA by tens of per cent, while the biased estimator (not
    divided by N(N−3)) and raw-scale rows are barely affected. Reference: Song's Eq. 5 with explicit
    matrices, CKA = HSIC(K, L) / (sqrt(HSIC(K, K)·HSIC(L, L)) + ε), in float64."""
    g = torch.Generator().manual_seed(11)
    n, d, eps = 60, 16, 1e-6
    centre = torch.randn(d, dtype=torch.float64, generator=g)
    centre = centre / centre.norm()
    Z = torch.randn(n, d, dtype=torch.float64, generator=g)
    X = F.normalize(centre + 0.02 * Z, dim=1)
    Y = F.normalize(centre + 0.02 * (Z + 0.5 * torch.randn(n, d, dtype=torch.float64, generator=g)), dim=1)
    K, L = X @ X.T, Y @ Y.T
    h_k, h_l, h_kl = ref_hsic_unbiased(K, K), ref_hsic_unbiased(L, L), ref_hsic_unbiased(K, L)
    assert 1e-7 < h_k < 1e-5 and 1e-7 < h_l < 1e-5  # the same order as ε (gemma-3-270m: 2.4e-6 at worst)

    # CKA(X, X) = h / (h + ε): well below 1 with ε, exactly 1 (to rounding) with ε = 0
    expected_self = float(h_k / (torch.sqrt(h_k * h_k) + eps))
    assert expected_self < 0.9
    assert sim.cka(X, X, unbiased=True) == pytest.approx(expected_self, rel=1e-9)
    assert sim.cka(X, X, unbiased=True, epsilon=0) == pytest.approx(1.0, abs=1e-12)

    # a pair: lowered by the factor sqrt(h_k h_l) / (sqrt(h_k h_l) + ε), whatever HSIC(K, L) is
    scale = float(torch.sqrt(h_k * h_l))
    exact = float(h_kl / scale)
    with_eps = float(h_kl / (scale + eps))
    assert sim.cka(X, Y, unbiased=True, epsilon=0) == pytest.approx(exact, rel=1e-9)
    assert sim.cka(X, Y, unbiased=True) == pytest.approx(with_eps, rel=1e-9)
    assert 1 - with_eps / exact == pytest.approx(eps / (scale + eps), rel=1e-9)
    assert 1 - with_eps / exact > 0.1
    # CKNNA with every pair kept is the same unbiased CKA of unit rows: the same ε effect
    assert sim.cknna(X, Y, None) == pytest.approx(with_eps, rel=1e-9)

    # the biased HSIC (tr(KHLH), not divided by N(N−3)) is ~N² larger: ε is negligible there
    b_k = ref_hsic_biased(K, K)
    assert b_k > 1000 * h_k
    assert 1 - sim.cka(X, X) == pytest.approx(float(eps / (b_k + eps)), rel=1e-6)
    assert 1 - sim.cka(X, X) < 1e-3
    # and so it is for rows of norm 30 (HSIC scales with the 4th power of the norm)
    assert 1 - sim.cka(30 * X, 30 * X, unbiased=True) < 1e-4


# ------------------------------------------------------------------------------------------------
# matrices


def layer_stack(n_layers=4, n=36, d=10, seed=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_layers, n, d, generator=g).cumsum(0)  # neighbouring layers are similar


def reference_value(metric, A, B, k, epsilon=1e-6):
    if metric in ("cka", "unbiased_cka"):
        return ref_cka(A, B, metric == "unbiased_cka", epsilon)
    if metric == "cknna":
        return ref_cknna(A, B, k, epsilon)
    ia, ib = ref_neighbors(A, k), ref_neighbors(B, k)
    return {"mutual_knn": ref_mutual, "cycle_knn": ref_cycle, "lcs_knn": lambda a, b: ref_lcs(a, b) / k}[metric](ia, ib)


@pytest.mark.parametrize("metric", sim.MEASURES)
def test_layer_matrix_matches_reference(metric):
    X = layer_stack()
    result = sim.layer_similarity(X, metric, k=5, progress=False)
    assert result.values.shape == (4, 4) and result.rows == [0, 1, 2, 3]
    for r in range(4):
        for c in range(4):
            assert float(result.values[r, c]) == pytest.approx(reference_value(metric, X[r], X[c], 5), abs=1e-10)


@pytest.mark.parametrize("metric", ["mutual_knn", "cycle_knn", "cknna", "unbiased_cka"])
def test_model_matrix_matches_reference(metric):
    XA = layer_stack(3, d=10, seed=5)
    noise = torch.randn(2, 36, 20, generator=torch.Generator().manual_seed(6))
    XB = torch.cat([XA[[2, 0]], XA[[1, 2]] * 0.5], 2) + noise
    result = sim.model_similarity(XA, XB, metric, k=4, progress=False)
    assert result.values.shape == (3, 2)
    for r in range(3):
        for c in range(2):
            assert float(result.values[r, c]) == pytest.approx(reference_value(metric, XA[r], XB[c], 4), abs=1e-10)


def test_cka_matrix_feature_route(monkeypatch):
    """When Gram matrices would not fit, every pair takes the feature route: same values."""
    X = layer_stack()
    gram = sim.layer_similarity(X, "unbiased_cka", progress=False).values
    monkeypatch.setattr("interp.similarity.matrices.GRAM_BUDGET", 10)
    assert torch.allclose(sim.layer_similarity(X, "unbiased_cka", progress=False).values, gram, atol=1e-12)


GRAM_MEMORY_PROBE = """
import resource, torch
import interp.similarity as sim
X = torch.randn(8, 1500, 8, generator=torch.Generator().manual_seed(0))
sim.layer_similarity(X[:, :50], "unbiased_cka", progress=False)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sim.layer_similarity(X, "unbiased_cka", progress=False)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB is Linux's convention")
def test_cka_gram_route_memory_is_the_grams():
    """8 layers × N = 1500: the Grams are 137 MiB; the peak-RSS rise must stay under 2× that (per-pair
    products of flattened Grams, [pairs, N²], would add ~2 GB)."""
    result = subprocess.run([sys.executable, "-c", GRAM_MEMORY_PROBE], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    grams = 8 * 1500 * 1500 * 8
    assert int(result.stdout.split()[-1]) < 2 * grams


def test_neighbour_lists_computed_once_per_stack(monkeypatch):
    calls = []
    original = knn_metrics.knn

    def counting(X, *args, **kwargs):
        calls.append(tuple(X.shape))
        return original(X, *args, **kwargs)

    monkeypatch.setattr(knn_metrics, "knn", counting)
    X = layer_stack(5)
    sim.layer_similarity(X, "cknna", k=4, progress=False)
    assert calls == [(5, 36, 10)]
    calls.clear()
    sim.model_similarity(X, X[:2], "mutual_knn", k=4, progress=False)
    assert calls == [(5, 36, 10), (2, 36, 10)]


def test_chunked_pairs_give_same_values(monkeypatch):
    X = layer_stack(5)
    whole = sim.layer_similarity(X, "cknna", k=4, progress=False).values
    monkeypatch.setattr("interp.similarity.matrices.CHUNK", 50)  # one pair per step
    assert torch.allclose(sim.layer_similarity(X, "cknna", k=4, progress=False).values, whole, atol=1e-14)


def parallel_corpus(n_langs=3, n_items=15, d=8, seed=7):
    g = torch.Generator().manual_seed(seed)
    items = torch.randn(n_items, d, generator=g)
    X = torch.stack(
        [torch.cat([items + 0.5 * (a + 1) * torch.randn(n_items, d, generator=g) for a in range(n_langs)])]
        + [torch.cat([items + 0.2 * torch.randn(n_items, d, generator=g) for _ in range(n_langs)])]
    )  # [2 layers, n_langs * n_items, d]
    langs = [f"lang{a}" for a in range(n_langs) for _ in range(n_items)]
    ids = [f"item{j}" for _ in range(n_langs) for j in range(n_items)]
    return X, langs, ids


@pytest.mark.parametrize("metric", ["mutual_knn", "cycle_knn", "lcs_knn", "cka"])
def test_language_matrix_matches_reference(metric):
    X, langs, ids = parallel_corpus()
    # shuffle the points: pairing must come from the ids, not the order
    perm = torch.randperm(X.shape[1], generator=torch.Generator().manual_seed(0))
    result = sim.language_similarity(X[:, perm], [langs[i] for i in perm], [ids[i] for i in perm], metric, k=3,
                                     progress=False)  # fmt: skip
    assert result.values.shape == (2, 3, 3) and result.layers == [0, 1]
    assert sorted(result.rows) == ["lang0", "lang1", "lang2"]
    for layer in range(2):
        for a, lang_a in enumerate(result.rows):
            for b, lang_b in enumerate(result.cols):
                # rows of language g, in the item order of the first language in result.rows' source
                first = [ids[i] for i in perm if langs[i] == result.rows[0]]
                rows_a = [langs.index(lang_a) + int(item[4:]) for item in first]
                rows_b = [langs.index(lang_b) + int(item[4:]) for item in first]
                expected = reference_value(metric, X[layer, rows_a], X[layer, rows_b], 3)
                assert float(result.values[layer, a, b]) == pytest.approx(expected, abs=1e-10)
    # translations closer in layer 1 -> higher cross-language agreement
    means = result.offdiagonal_mean()
    assert list(means.index) == [0, 1] and means[1] > means[0]


def test_language_matrix_from_activations_on_udhr(llama, tok):
    """Real text through a tiny model: Activations carry languages and ids."""
    from conftest import require_udhr

    from interp.data import load_parallel

    corpus = load_parallel(f"jsonl:{require_udhr()}", langs=["eng_Latn", "fra_Latn", "deu_Latn"]).head(12)
    texts, langs, ids = corpus.flat()
    acts = interp.extract(llama, tok, texts, labels=langs, ids=ids, progress=False)
    result = sim.language_similarity(acts, metric="mutual_knn", k=3, layers=[1, 4], progress=False)
    assert result.layers == [1, 4] and result.rows == ["eng_Latn", "fra_Latn", "deu_Latn"]
    X = acts.tensor
    for position, layer in enumerate([1, 4]):
        eng = X[acts.layers.index(layer), :12]
        fra = X[acts.layers.index(layer), 12:24]
        expected = ref_mutual(ref_neighbors(eng, 3), ref_neighbors(fra, 3))
        assert float(result.values[position, 0, 1]) == pytest.approx(expected, abs=1e-12)
    layers = sim.layer_similarity(acts, "unbiased_cka", progress=False)
    assert layers.rows == list(acts.layers)
    assert float(layers.values[2, 3]) == pytest.approx(ref_cka(X[2], X[3], True, 1e-6), rel=1e-9)


# ------------------------------------------------------------------------------------------------
# result object and plots


def test_argmax_frame_and_plot():
    values = torch.tensor([[1.0, 0.2, 0.7], [0.2, 1.0, 0.4], [0.7, 0.4, 1.0]], dtype=torch.float64)
    result = sim.SimilarityMatrix(values, ["x", "y", "z"], ["x", "y", "z"], "mutual_knn", {"k": 5}, same_space=True)
    assert result.argmax() == ("x", "z", pytest.approx(0.7))  # diagonal left out within one space
    assert result.argmax(diagonal=True)[2] == 1.0
    assert result.offdiagonal_mean() == pytest.approx((0.2 + 0.7 + 0.4) * 2 / 6)
    assert result.frame().loc["y", "z"] == pytest.approx(0.4)
    assert "selection-biased" in repr(result)
    fig = result.plot()
    ax = fig.axes[0]
    boxes = [p for p in ax.patches if p.get_edgecolor()[:3] == (1.0, 0.0, 0.0)]
    assert len(boxes) == 1 and boxes[0].get_xy() == (1.5, -0.5)  # column z (2), row x (0)
    assert "selection-biased" in ax.get_title()
    assert ax.images[0].get_clim() == pytest.approx((0.2, 0.7))  # colours span the off-diagonal entries
    import matplotlib.pyplot as plt

    plt.close(fig)
    cross = sim.SimilarityMatrix(values, [0, 1, 2], [0, 1, 2], "cka")
    assert cross.argmax()[2] == 1.0  # across models the diagonal counts


def test_language_result_needs_layer():
    X, langs, ids = parallel_corpus()
    result = sim.language_similarity(X, langs, ids, k=3, progress=False)
    with pytest.raises(ValueError, match="pick a layer"):
        result.frame()
    with pytest.raises(KeyError, match="not computed"):
        result.frame(7)
    assert result.frame(1).shape == (3, 3)
    import matplotlib.pyplot as plt

    plt.close(result.plot(1))


# ------------------------------------------------------------------------------------------------
# preprocessing


def test_remove_outliers_and_preprocess():
    g = torch.Generator().manual_seed(9)
    X = torch.randn(3, 20, 6, generator=g) * torch.linspace(0.5, 5, 6)
    flat = np.sort(np.abs(X.numpy()).ravel())
    exact = flat[int(0.95 * flat.size)]
    assert torch.equal(sim.remove_outliers(X, 0.95, exact=True), X.clamp(-float(exact), float(exact)))
    per_input = torch.quantile(X.abs().permute(1, 0, 2).reshape(20, -1).double(), 0.95, dim=1).mean()
    assert torch.allclose(sim.remove_outliers(X, 0.95), X.clamp(-float(per_input), float(per_input)), atol=1e-6)
    out = sim.preprocess(X[0], 0.9)
    assert out.shape == (20, 6) and torch.allclose(out.norm(dim=1), torch.ones(20), atol=1e-6)
    assert torch.equal(sim.remove_outliers(X, 1.0), X)


# ------------------------------------------------------------------------------------------------
# bad input


def test_errors():
    A, B = random_pair(n=20)
    with pytest.raises(ValueError, match="A has 20 rows but B has 19"):
        sim.mutual_knn(A, B[:19])
    for bad_k in (0, 20, 2.5, True):
        with pytest.raises(ValueError, match=r"k must be an int in \[1, N - 1 = 19\]"):
            sim.mutual_knn(A, B, bad_k)
    with pytest.raises(ValueError, match=r"k must be an int in \[2,"):
        sim.cknna(A, B, 1)
    with pytest.raises(ValueError, match="N >= 4"):
        sim.cknna(A[:3], B[:3], 2)
    with pytest.raises(ValueError, match="N >= 4"):
        sim.cka(A[:3], B[:3], unbiased=True)
    with pytest.raises(ValueError, match=r"must be \[N, D\]"):
        sim.cka(A[None], B)
    with pytest.raises(TypeError, match="floating point"):
        sim.lcs_knn(A.long(), B)
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        sim.cycle_knn(A.tolist(), B)
    nan = A.clone()
    nan[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        sim.cka(nan, B)
    with pytest.raises(ValueError, match="epsilon"):
        sim.cka(A, B, epsilon=-1)
    with pytest.raises(ValueError, match="unknown route"):
        sim.cka(A, B, route="fast")
    X = layer_stack()
    with pytest.raises(ValueError, match="unknown metric 'svcca'"):
        sim.layer_similarity(X, "svcca")
    with pytest.raises(ValueError, match=r"\[n_layers, N, D\]"):
        sim.layer_similarity(X[0])
    with pytest.raises(KeyError, match=r"layers \[9\]"):
        sim.layer_similarity(X, layers=[0, 9])
    with pytest.raises(ValueError, match="must be paired"):
        sim.model_similarity(X, X[:, :30])
    with pytest.raises(IndexError, match="pairs index"):
        sim.matrices.pairwise("mutual_knn", X, None, [[0, 4]], k=3, progress=False)
    Xc, langs, ids = parallel_corpus()
    with pytest.raises(ValueError, match="needs langs and ids"):
        sim.language_similarity(Xc, langs)
    broken = list(ids)
    broken[-1] = "item99"
    with pytest.raises(ValueError, match=r"'lang2' is not parallel.*missing ids \['item14'\], extra ids \['item99'\]"):
        sim.language_similarity(Xc, langs, broken)
    twice = list(ids)
    twice[1] = "item0"
    with pytest.raises(ValueError, match="appears twice"):
        sim.language_similarity(Xc, langs, twice)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, N - 1 = 14\]"):
        sim.language_similarity(Xc, langs, ids, k=15)


def test_old_backend_keyword_is_a_deprecated_knn_backend():
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(30, 6, generator=gen), torch.randn(30, 5, generator=gen)
    new = interp.similarity.mutual_knn(a, b, k=4, knn_backend="torch")
    with pytest.warns(DeprecationWarning, match=r"backend= is deprecated.*use knn_backend="):
        assert interp.similarity.mutual_knn(a, b, k=4, backend="torch") == new
    stack = torch.randn(3, 30, 6, generator=gen)
    with pytest.warns(DeprecationWarning, match="layer_similarity: backend= is deprecated"):
        old = interp.similarity.layer_similarity(stack, "mutual_knn", k=4, backend="torch", progress=False)
    assert torch.equal(old.values, interp.similarity.layer_similarity(stack, "mutual_knn", k=4, progress=False).values)
