"""interp.knn against an independent float64 reference, on every backend.

The reference measures every pair in float64 straight from the definitions,
rounds to float32 (the returned dtype) and sorts stably by (distance, index).
Acceptance: neighbour sets equal wherever the reference's k-th and (k+1)-th
distances differ by more than 1e-6 relative, distances within 1e-5. The
engine is exact, so the tests also demand the full order where no tie
straddles the boundary.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import interp  # noqa: E402
from interp.neighbors import api  # noqa: E402

BACKENDS = ["torch", "triton", "faiss"]


def reference(X: torch.Tensor, k: int, metric: str, exclude_self: bool = True, queries=None):
    P = X.double()
    Q = P if queries is None else queries.double()
    if metric == "cosine":
        pn, qn = P.norm(dim=1, keepdim=True), Q.norm(dim=1, keepdim=True)
        pu = torch.where(pn > 0, P / pn.clamp_min(1e-300), 0.0)
        qu = torch.where(qn > 0, Q / qn.clamp_min(1e-300), 0.0)
        D = 1.0 - qu @ pu.T
    else:
        D = ((Q[:, None, :] - P[None, :, :]) ** 2).sum(-1).sqrt()
    D32 = D.float()
    if exclude_self:
        D32.fill_diagonal_(float("inf"))
    order = torch.argsort(D32, dim=1, stable=True)  # ties: lower index first
    return order, D.gather(1, order), D32.gather(1, order)


def datasets(metric: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    random = torch.randn(160, 24, generator=g)
    dup = random.clone()
    dup[50] = dup[3]
    dup[90] = dup[3]
    dup[100:112] = dup[7]  # 13 copies of one point: ties straddle k
    ties = torch.randint(-2, 3, (160, 6), generator=g).float()  # many exact distance ties
    near = random.clone()
    near[20:40] = near[20] + 1e-4 * torch.randn(20, 24, generator=g)  # near-ties
    near[40:44] = near[41] + 1e-7 * torch.randn(4, 24, generator=g)
    zero = random.clone()
    zero[5] = 0.0
    zero[6] = 0.0
    out = {"random": random, "duplicates": dup, "exact_ties": ties, "near_ties": near, "zero_rows": zero}
    if metric == "euclidean":
        out["scaled"] = random * 1e3 + 5e3
    return out


def check(indices, distances, X, k, metric, exclude_self=True, queries=None):
    order, d64, d32 = reference(X, k, metric, exclude_self, queries)
    assert indices.shape == distances.shape == (order.shape[0], k)
    assert indices.dtype == torch.int64 and distances.dtype == torch.float32
    # acceptance: distances within 1e-5 (relative above 1: float32 output), sets equal unless a
    # 1e-6-relative near-tie straddles k
    assert ((distances.double() - d64[:, :k]).abs() <= 1e-5 * d64[:, :k].abs().clamp_min(1.0)).all()
    n_avail = d64.shape[1] - int(exclude_self)
    if k < n_avail:
        kth, nxt = d64[:, k - 1], d64[:, k]
        clear = (nxt - kth) > 1e-6 * kth.abs().clamp_min(1e-30)
        # exactness (stronger): sets equal unless the float32 k-th and (k+1)-th are equal or adjacent floats
        adjacent = d32[:, k] <= torch.nextafter(d32[:, k - 1], torch.tensor(float("inf")))
        clear = clear | ~adjacent
    else:
        clear = torch.ones(order.shape[0], dtype=torch.bool)
    for row in clear.nonzero().squeeze(1).tolist():
        assert set(indices[row].tolist()) == set(order[row, :k].tolist()), row
    # the contract: each row sorted by (distance, index) -- ties to the lower index
    step = distances[:, 1:] - distances[:, :-1]
    assert (step >= 0).all()
    assert (indices[:, 1:][step == 0] > indices[:, :-1][step == 0]).all()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_against_float64_reference(backend, metric):
    if backend == "faiss":
        pytest.importorskip("faiss")
    for name, X in datasets(metric).items():
        for k in (1, 5, 10, 32):
            with api.collect_stats() as calls:
                indices, distances = interp.knn(X, k, metric=metric, backend=backend)
            check(indices, distances, X, k, metric)
            assert [c.backend for c in calls] == [backend], name


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_equals_unbatched_and_reference(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(2)
    X = torch.randn(3, 120, 20, generator=g)
    X[1, 10] = X[1, 11]  # a duplicate in one problem only
    for metric in ("cosine", "euclidean"):
        indices, distances = interp.knn(X, 5, metric=metric, backend=backend)
        assert indices.shape == (3, 120, 5)
        for b in range(3):
            i1, d1 = interp.knn(X[b], 5, metric=metric, backend=backend)
            assert torch.equal(indices[b], i1) and torch.equal(distances[b], d1)
            check(indices[b], distances[b], X[b], 5, metric)


def test_backends_agree_bit_for_bit():
    X = datasets("cosine")["duplicates"]
    results = [interp.knn(X, 10, backend=b) for b in BACKENDS if b != "faiss" or _has_faiss()]
    for indices, distances in results[1:]:
        assert torch.equal(indices, results[0][0]) and torch.equal(distances, results[0][1])


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(("backend", "blocks"), [("torch", (16, 48, 100, 4096)), ("triton", (16, 32, 128))])
def test_tile_size_invariance(backend, blocks):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(2, 150, 33, generator=g)
    X[0, 70:80] = X[0, 2]
    for metric in ("cosine", "euclidean"):
        outs = [interp.knn(X, 7, metric=metric, backend=backend, block=b) for b in blocks]
        for indices, distances in outs[1:]:
            assert torch.equal(indices, outs[0][0]) and torch.equal(distances, outs[0][1])


def test_self_excluded_by_index_not_position():
    """Duplicates of a point are its neighbours at distance 0; the point itself never is."""
    X = torch.randn(50, 8)
    X[[10, 20, 30]] = X[0].clone()
    for backend in BACKENDS[:2]:
        indices, distances = interp.knn(X, 3, metric="euclidean", backend=backend)
        assert indices[0].tolist() == [10, 20, 30] and distances[0].tolist() == [0.0, 0.0, 0.0]
        assert indices[10].tolist() == [0, 20, 30]
        assert (indices != torch.arange(50)[:, None]).all()


def test_k_equals_n_minus_one_returns_everyone_else():
    X = torch.randn(20, 4)
    indices, _ = interp.knn(X, 19)
    for i in range(20):
        assert sorted(indices[i].tolist()) == [j for j in range(20) if j != i]
    indices, _ = interp.knn(X, 20, exclude_self=False)
    assert (indices[:, 0] == torch.arange(20)).all()  # itself first, at distance ~0


@pytest.mark.parametrize("backend", BACKENDS)
def test_queries(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(4)
    X, Q = torch.randn(130, 16, generator=g), torch.randn(40, 16, generator=g)
    Q[3] = X[17]
    for metric in ("cosine", "euclidean"):
        indices, distances = interp.knn(X, 6, metric=metric, backend=backend, queries=Q)
        check(indices, distances, X, 6, metric, exclude_self=False, queries=Q)
        assert indices[3, 0] == 17
    # exclude_self with queries: query i is point i (e.g. the same sentences at another layer)
    Y = X + 0.01 * torch.randn(130, 16, generator=g)
    indices, _ = interp.knn(X, 4, backend=backend, queries=Y, exclude_self=True)
    assert (indices != torch.arange(130)[:, None]).all()


def test_zero_rows_cosine_are_at_distance_one():
    X = torch.randn(30, 5)
    X[4] = 0
    indices, distances = interp.knn(X, 29)
    assert torch.allclose(distances[4], torch.ones(29))
    assert (distances[indices == 4] == 1.0).all()


def test_numpy_float64_and_half_inputs():
    X = np.random.default_rng(0).normal(size=(60, 12))
    i64, d64 = interp.knn(X, 4)
    check(i64, d64, torch.from_numpy(X), 4, "cosine")
    i16, _ = interp.knn(torch.from_numpy(X).half(), 4)
    check(i16, interp.knn(torch.from_numpy(X).half().float(), 4)[1], torch.from_numpy(X).half().float(), 4, "cosine")


def test_neighbor_labels():
    X = torch.randn(40, 6)
    langs = np.array(["eng", "fra", "deu", "zho"] * 10)
    indices, _ = interp.knn(X, 5)
    codes = interp.neighbor_labels(indices, langs)
    classes = np.unique(langs)
    assert codes.shape == (40, 5)
    assert (classes[codes.numpy()] == langs[indices.numpy()]).all()
    batched = interp.neighbor_labels(torch.stack([indices, indices]), torch.arange(40) % 3)
    assert torch.equal(batched[1], indices % 3)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((torch.randn(10, 3), 10), {}, ValueError, r"k must be an int in \[1, 9\] for 10 points with self-exclusion"),
        ((torch.randn(10, 3), 0), {}, ValueError, "k must be"),
        ((torch.randn(10, 3), 11), {"exclude_self": False}, ValueError, r"\[1, 10\]"),
        ((torch.randn(10, 3), 2.5), {}, ValueError, "k must be an int"),
        ((torch.tensor([[0.0, float("nan")], [1.0, 2.0], [3.0, 1.0]]), 1), {}, ValueError, "NaN or Inf"),
        ((torch.tensor([[0.0, float("inf")], [1.0, 2.0], [3.0, 1.0]]), 1), {}, ValueError, "NaN or Inf"),
        ((torch.randn(10), 2), {}, ValueError, r"\[N, D\] or \[B, N, D\]"),
        ((torch.randint(0, 5, (10, 3)), 2), {}, TypeError, "floating point"),
        (([[1.0, 2.0]], 1), {}, TypeError, "torch.Tensor or numpy"),
        ((torch.randn(10, 3), 2), {"metric": "manhattan"}, ValueError, "unknown metric"),
        ((torch.randn(10, 3), 2), {"backend": "annoy"}, ValueError, "unknown backend"),
        ((torch.randn(10, 3), 2), {"queries": torch.randn(4, 5)}, ValueError, "do not match"),
        (
            (torch.randn(10, 3), 2),
            {"queries": torch.randn(4, 3), "exclude_self": True},
            ValueError,
            "query i is point i",
        ),
        ((torch.randn(10, 3), 2), {"backend": "torch", "precision": "bf16"}, ValueError, "backend='triton'"),
    ],
)
def test_bad_input(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        interp.knn(*args, **kwargs)


# ---------------------------------------------------------------- CUDA (runs only on a GPU machine)
# The tests above run Triton in the CPU interpreter. On a CUDA machine run the compiled kernel with
#   TRITON_INTERPRET=0 python -m pytest -q tests/neighbors/test_knn.py -k cuda
CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") == "0"


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU and TRITON_INTERPRET=0")
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize(
    ("backend", "precision"), [("triton", "ieee"), ("triton", "tf32"), ("triton", "bf16"), ("torch", "ieee")]
)
def test_cuda_matches_reference_and_cpu(backend, precision, metric):
    for X in datasets(metric).values():
        for k in (1, 5, 10, 32):
            idx, dist = interp.knn(X.cuda(), k, metric, backend=backend, precision=precision)
            check(idx.cpu(), dist.cpu(), X, k, metric)
    g = torch.Generator().manual_seed(3)
    big = torch.randn(3, 5000, 96, generator=g)
    big[:, 4000:4100] = big[:, 7:8]  # a block of duplicates across tiles
    gpu = interp.knn(big.cuda(), 10, metric, backend=backend, precision=precision)
    cpu = interp.knn(big, 10, metric, backend="torch")
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])


@pytest.mark.parametrize("kc", [1, 5, 16, 40])
@pytest.mark.parametrize("with_queries", [False, True])
def test_triton_stage1_exact_on_integer_data(kc, with_queries):
    """The fused kernel's own top-kc (before any re-rank) equals the float64 order.

    Small integer coordinates make every squared euclidean distance an exact
    integer in float32, so stage 1 has no rounding to hide behind: the kernel
    must return exactly the kc smallest (distance, index) keys, ties to the
    lower index, across several point tiles, a ragged last query block and a
    batch of 2 problems.
    """
    from interp.neighbors.triton_kernel import triton_candidates

    g = torch.Generator().manual_seed(5)
    points = torch.randint(-3, 4, (2, 203, 5), generator=g).float()  # many exact ties
    queries = torch.randint(-3, 4, (2, 71, 5), generator=g).float() if with_queries else None
    exclude_self = not with_queries
    cand, approx = triton_candidates(points, queries, kc, "euclidean", exclude_self, block=32)
    one_by_one = triton_candidates(points, queries, kc, "euclidean", exclude_self, block=32, chunk_bytes=1)
    assert torch.equal(one_by_one[0], cand) and torch.equal(one_by_one[1], approx)  # a launch per problem
    for b in range(2):
        P = points[b].double()
        Q = P if queries is None else queries[b].double()
        D = ((Q[:, None, :] - P[None, :, :]) ** 2).sum(-1)
        if exclude_self:
            D.fill_diagonal_(float("inf"))
        order = torch.argsort(D, dim=1, stable=True)[:, :kc]
        assert torch.equal(cand[b], order)
        assert torch.equal(approx[b].double(), D.gather(1, order))


def test_triton_candidate_limit():
    """Beyond 128 candidates per query the kernel would spill: a clear error, and 'auto' takes torch."""
    X = torch.randn(300, 4)
    with pytest.raises(ValueError, match="at most 128 candidates.*backend='torch'"):
        interp.knn(X, 100, backend="triton")
    assert api._auto_backend(torch.device("cuda"), 128) == "triton"
    assert api._auto_backend(torch.device("cuda"), 129) == "torch"
    assert api._auto_backend(torch.device("cpu"), 10) == "torch"


@pytest.mark.parametrize(("setting", "stage1"), [("highest", "ieee"), ("high", "tf32"), ("medium", "bf16")])
def test_torch_backend_follows_global_matmul_precision(setting, stage1, monkeypatch):
    """A notebook's ``torch.set_float32_matmul_precision`` lowers the torch backend's GEMM precision:
    the certification must use that error bound (and the results stay exact)."""
    seen = []
    real = api.rerank

    def spy(*args):
        seen.append(args[-1])
        return real(*args)

    monkeypatch.setattr(api, "rerank", spy)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(setting)
    try:
        for metric in ("cosine", "euclidean"):
            for X in datasets(metric).values():
                idx, dist = interp.knn(X, 5, metric, backend="torch")
                check(idx, dist, X, 5, metric)
    finally:
        torch.set_float32_matmul_precision(before)
    assert set(seen) == {stage1}


def test_interpreter_requested_after_triton_import_is_a_clear_error():
    """TRITON_INTERPRET=1 set after triton was imported leaves triton's library compiled: say so."""
    import subprocess
    import sys

    code = (
        "import os, triton, torch, interp\n"
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        "interp.knn(torch.randn(20, 4), 3, backend='triton')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode != 0
    assert "set TRITON_INTERPRET=1 before importing torch" in run.stderr, run.stderr[-2000:]


@pytest.mark.parametrize("library", ["onednn", "torch"])
def test_block_gemm_libraries_stay_within_the_float32_bound(library):
    from interp.neighbors.cpu_gemm import BlockGemm

    g = torch.Generator().manual_seed(3)
    blocks = [torch.randn(r, 96, generator=g) for r in (64, 37)]
    rows = [torch.randn(50, 96, generator=g)[:, ::2].repeat_interleave(2, 1)]  # non-contiguous source
    gemm = BlockGemm(blocks, library=library)
    other = BlockGemm(rows, blocks, library=library)
    for (i, j), (a, b) in {(0, 1): (blocks[0], blocks[1]), (1, 1): (blocks[1], blocks[1])}.items():
        exact = a.double() @ b.double().T
        bound = (96 + 4) * 2.0**-24 * (a.double().norm(dim=1)[:, None] * b.double().norm(dim=1)[None, :])
        got = gemm(i, j)
        assert got.dtype == torch.float32 and got.layout == torch.strided and got.shape == exact.shape
        assert ((got.double() - exact).abs() <= bound).all()
    exact = rows[0].double() @ blocks[0].double().T
    assert torch.allclose(other(0, 0).double(), exact, rtol=0, atol=1e-4)
    points = torch.randn(70, 96, generator=g)
    picks = [torch.randperm(70, generator=g)[:33], torch.tensor([69, 0, 5])]  # uneven blocks, one reused buffer
    gathered = BlockGemm.gathered(points, picks, library=library)
    for i in range(2):
        for j in range(2):
            a, b = points[picks[i]].double(), points[picks[j]].double()
            bound = (96 + 4) * 2.0**-24 * (a.norm(dim=1)[:, None] * b.norm(dim=1)[None, :])
            assert ((gathered(i, j).double() - a @ b.T).abs() <= bound).all(), (i, j)
    with pytest.raises(ValueError, match="library must be"):
        BlockGemm(blocks, library="mkl")
