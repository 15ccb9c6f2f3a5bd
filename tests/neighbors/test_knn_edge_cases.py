"""Adversarial review of the exact kNN certificate (interp/neighbors/exact.py, blocked.py).

Every case is checked against an independent float64 reference written here
from the definitions: distances measured pair by pair in float64 (euclidean
from coordinate differences, cosine as ``1 - x·y / (|x| |y|)`` with a zero
vector at distance 1), rounded to float32 (the returned dtype) and sorted
stably by (distance, index). The inputs attack the float32 stage 1 where its
rounding analysis stops holding -- norms that under/overflow float32, huge
common offsets (cancellation in ``|x|² + |y|² - 2 x·y``), float64 inputs finer
than float32 -- and the float64 brute-force fallback that uncertified rows
take.
"""

from __future__ import annotations

import pytest
import torch

import interp
from interp.neighbors import api
from interp.neighbors.exact import brute_force_rows, stage1_tolerance

BACKENDS = ["torch", "faiss"]


def float64_reference(points: torch.Tensor, metric: str, queries: torch.Tensor | None, exclude_self: bool):
    """``(order [M, N], d32 [M, N] float32 sorted, d64 [M, N] float64 sorted)`` by (float32 distance, index)."""
    P = points.double()
    Q = P if queries is None else queries.double()
    rows = []
    for q in Q:  # one query at a time: an independent, cancellation-free measurement
        if metric == "euclidean":
            rows.append((P - q).pow(2).sum(1).sqrt())
        else:
            qn, pn = q.pow(2).sum().sqrt(), P.pow(2).sum(1).sqrt()
            cos = (P * q).sum(1) / (qn * pn)
            rows.append(torch.where((pn > 0) & (qn > 0), 1.0 - cos, torch.ones_like(cos)))
    d64 = torch.stack(rows)
    d32 = d64.float()
    if exclude_self:
        d32.fill_diagonal_(float("inf"))
    order = torch.argsort(d32, dim=1, stable=True)
    return order, d32.gather(1, order), d64.gather(1, order)


def assert_exact(indices, distances, points, k, metric, queries=None, exclude_self=None):
    """The engine's answer equals the reference's, up to float64 noise at float32 boundaries."""
    if exclude_self is None:
        exclude_self = queries is None
    order, d32, d64 = float64_reference(points, metric, queries, exclude_self)
    assert indices.shape == distances.shape == (order.shape[0], k)
    assert indices.dtype == torch.int64 and distances.dtype == torch.float32
    inf = torch.tensor(float("inf"))
    # float64 noise of a cosine near 0 is absolute (~D ulps of 1), beyond any float32 step there
    noise = 4 * (2 * points.shape[1] + 16) * 2.0**-53 if metric == "cosine" else 0.0
    # returned distances: the reference's value of the returned index (one float32 step of float64
    # noise allowed where a value sits on a rounding boundary)
    own = torch.stack([d64[r][torch.argsort(order[r])][indices[r]] for r in range(order.shape[0])])
    lo, hi = torch.nextafter((own - noise).float(), -inf), torch.nextafter((own + noise).float(), inf)
    assert ((distances >= lo) & (distances <= hi)).all(), (distances - own).abs().max()
    # sets equal wherever the k-th and (k+1)-th reference distances are apart (not equal or adjacent
    # float32 values, not within the float64 noise)
    n_avail = order.shape[1] - int(exclude_self)
    for r in range(order.shape[0]):
        if k < n_avail and (d32[r, k] <= torch.nextafter(d32[r, k - 1], inf) or d64[r, k] - d64[r, k - 1] <= 2 * noise):
            continue
        assert sorted(indices[r].tolist()) == sorted(order[r, :k].tolist()), (r, indices[r], order[r, : k + 1])
    step = distances[:, 1:] - distances[:, :-1]
    assert (step >= 0).all()
    assert (indices[:, 1:][step == 0] > indices[:, :-1][step == 0]).all()


def _backend(name: str) -> None:
    if name == "faiss":
        pytest.importorskip("faiss")


def _data(n: int = 96, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- float32 range: stage 1's bound does not hold


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e-25, 1e20])
def test_cosine_parallel_point_with_tiny_or_huge_norm(backend, scale):
    """A point parallel to X[3] at distance 0, whose float32 norm under/overflows in stage 1
    (it looks like a zero row there): it is still X[3]'s nearest neighbour."""
    _backend(backend)
    X = _data()
    X[7] = X[3] * scale
    indices, distances = interp.knn(X, 4, metric="cosine", backend=backend)
    assert indices[3, 0] == 7 and abs(float(distances[3, 0])) < 1e-6
    assert_exact(indices, distances, X, 4, "cosine")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e-25, 1e-22, 1e19])
def test_cosine_whole_dataset_at_extreme_scale(backend, scale):
    _backend(backend)
    X = _data() * scale
    indices, distances = interp.knn(X, 5, metric="cosine", backend=backend)
    assert_exact(indices, distances, X, 5, "cosine")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e19, 1e20])
def test_euclidean_squares_overflow_float32(backend, scale):
    """|x|² overflows float32 (inf - inf = NaN scores): a NaN bound must not certify a row."""
    _backend(backend)
    X = _data() * scale
    indices, distances = interp.knn(X, 5, metric="euclidean", backend=backend)
    assert_exact(indices, distances, X, 5, "euclidean")


@pytest.mark.parametrize("backend", BACKENDS)
def test_euclidean_squares_underflow_float32(backend):
    """Squared distances ~1e-50 are zero in float32: the fallback must not rank by them."""
    _backend(backend)
    X = _data() * 1e-25
    indices, distances = interp.knn(X, 5, metric="euclidean", backend=backend)
    assert_exact(indices, distances, X, 5, "euclidean")


# ---------------------------------------------------------------- cancellation: the float64 fallback itself


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_input_with_huge_common_offset(backend):
    """float64 points 1e8 + N(0, 1): float32 cannot tell them apart (every row falls back) and the
    float64 |x|² + |y|² - 2 x·y of the brute force loses all digits (|x|² ~ 1.6e17, ulp 32)."""
    _backend(backend)
    X = 1e8 + torch.randn(90, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with api.collect_stats() as calls:
        indices, distances = interp.knn(X, 5, metric="euclidean", backend=backend)
    assert_exact(indices, distances, X, 5, "euclidean")
    assert [c.fallback_rows for c in calls] == [90]


def test_brute_force_rows_alone_is_exact_under_cancellation():
    """The fallback on its own (every row), queries and self-exclusion, float64 offset data."""
    g = torch.Generator().manual_seed(2)
    X = 3e7 + torch.randn(70, 12, generator=g, dtype=torch.float64)
    Q = X[:30] + 0.5 * torch.randn(30, 12, generator=g, dtype=torch.float64)
    idx, dist = brute_force_rows(Q, X, 6, "euclidean", None)
    assert_exact(idx, dist, X, 6, "euclidean", queries=Q)
    idx, dist = brute_force_rows(X, X, 6, "euclidean", torch.arange(70))
    assert_exact(idx, dist, X, 6, "euclidean")


def test_stage1_tolerance_is_an_upper_bound_on_the_blocked_stage1_error():
    """Measure stage 1's approximate distances (blocked.py, float32) against float64 on data built to
    maximise rounding (one sign, big common offset, D = 4096, rows of very different norms)."""
    from interp.neighbors.blocked import blocked_candidates

    g = torch.Generator().manual_seed(3)
    X = torch.rand(64, 4096, generator=g) + 100.0
    X[:16] *= 1e3  # wildly different norms
    X[16:20] = X[20] + 1e-7 * torch.randn(4, 4096, generator=g)
    for metric in ("cosine", "euclidean"):
        cand, approx = blocked_candidates(X, None, 40, metric, True, block=24)
        P = X.double()
        if metric == "euclidean":
            true = (P[:, None, :] - P[cand]).pow(2).sum(-1)
        else:
            U = P / P.norm(dim=1, keepdim=True)
            true = 1.0 - (U[:, None, :] * U[cand]).sum(-1)
        tol = stage1_tolerance(X, X, metric)
        assert ((approx.double() - true).abs() <= tol[:, None]).all(), metric


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [40, 700])
def test_k_equals_n_minus_one_when_stage1_overflows(backend, n):
    """With kc = N - 1 every point is a candidate and no certificate is checked: the candidate list
    itself must be trustworthy (NaN scores gave self / repeated points, FAISS gave -1 indices)."""
    _backend(backend)
    X = _data(n, 8) * 1e20
    for k in (n - 1, n - 2):
        indices, distances = interp.knn(
            X, k, metric="euclidean", backend=backend, block=256 if backend == "torch" else None
        )
        assert_exact(indices, distances, X, k, "euclidean")
        assert (indices != torch.arange(n)[:, None]).all()


# ---------------------------------------------------------------- areas that held (kept as regression tests)


def _adversarial_sets() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(6)
    norms = torch.randn(130, 32, generator=g)
    norms[:20] *= 1e4  # rows of wildly different norms
    norms[20:40] *= 1e-4
    near = torch.randn(130, 24, generator=g)
    near[30:60] = near[30] + 1e-7 * torch.randn(30, 24, generator=g)  # near-duplicates at 1e-7
    zeros = torch.randn(130, 24, generator=g)
    zeros[[3, 9, 77]] = 0.0
    return {
        "offset": 1e4 + torch.randn(130, 48, generator=g),  # cancellation in |x|² + |y|² - 2 x·y
        "norms": norms,
        "near": near,
        "zeros": zeros,
        "lattice": torch.randint(-1, 2, (130, 5), generator=g).float() * 0.1 + 0.3,  # exact ties, non-dyadic
        "wide": torch.randn(40, 4096, generator=g),
        "noncontiguous": torch.randn(24, 130, generator=g).T,
        "float64": torch.randn(130, 24, generator=g, dtype=torch.float64),
    }


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_adversarial_inputs_that_held(backend, metric):
    _backend(backend)
    for X in _adversarial_sets().values():
        n = X.shape[0]
        for k in (1, 7, n - 1):
            for block in (None, 37) if backend == "torch" else (None,):
                indices, distances = interp.knn(X, k, metric=metric, backend=backend, block=block)
                assert_exact(indices, distances, X, k, metric)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_two_level_selection_with_ties_and_queries(metric):
    """N = 1200 so that blocked.select's pruned two-level path runs (lines >= 32·kc), with a block of
    duplicates larger than kc, blocks that do not divide N, queries, exclude_self with queries, a batch
    and float16 input."""
    g = torch.Generator().manual_seed(7)
    X = torch.randn(1200, 12, generator=g)
    X[600:640] = X[5]  # 41 copies: ties straddle k and kc
    for block in (None, 500):
        indices, distances = interp.knn(X, 5, metric=metric, backend="torch", block=block)
        assert_exact(indices, distances, X, 5, metric)
    Q = X[:150] + 0.01 * torch.randn(150, 12, generator=g)
    indices, distances = interp.knn(X, 6, metric=metric, backend="torch", queries=Q)
    assert_exact(indices, distances, X, 6, metric, queries=Q)
    Y = X + 0.01 * torch.randn(1200, 12, generator=g)
    indices, distances = interp.knn(X, 6, metric=metric, backend="torch", queries=Y, exclude_self=True)
    assert_exact(indices, distances, X, 6, metric, queries=Y, exclude_self=True)
    B = torch.stack([X[:300], X[300:600].half().float()]).half()
    indices, distances = interp.knn(B, 4, metric=metric, backend="torch")
    for b in range(2):
        assert_exact(indices[b], distances[b], B[b].float(), 4, metric)


def test_new_fp32_precision_api_does_not_break_knn():
    """torch >= 2.9's recommended ``torch.backends.cuda.matmul.fp32_precision = "tf32"`` makes
    ``torch.get_float32_matmul_precision()`` raise ("mix of the legacy and new APIs"), so the torch
    backend's precision probe crashes every knn call. Run in a subprocess: the setting is global."""
    import subprocess
    import sys

    code = (
        "import torch, interp\n"
        "torch.backends.cuda.matmul.fp32_precision = 'tf32'\n"
        "interp.knn(torch.randn(30, 4), 3, backend='torch')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-1000:]
