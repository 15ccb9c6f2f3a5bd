"""Sharded kNN and ILO over gloo processes on CPU; extraction through an accelerate device_map.

The multi-process runs start plain ``python`` processes with the environment
``torchrun`` would give them (``tests/integration/distributed_worker.py``), so
``interp.launch.init_distributed`` is exercised too. Each launch checks
several things at once (process start-up dominates the cost). Acceptance:
the sharded results equal the single-process ones bit for bit (uneven and
empty shards, duplicated points, a zero vector), the single-process ones
match an independent float64 reference written below from the definitions,
and a dead or stalled rank fails the job with a clear error within the
timeout instead of hanging.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ilo_reference import ref_scores

import interp
from interp.neighbors.distributed import knn_sharded, shard_range

WORKER = Path(__file__).with_name("distributed_worker.py")
K = 4
LANGS = ["en", "fr", "de", "zh"]
ITEMS = 14


# -- independent references (float64, from the definitions) ------------------------------------------------------


def reference_knn(x: torch.Tensor, k: int, metric: str, queries: torch.Tensor | None = None):
    """Brute force in float64; rows sorted by (float32 distance, index); self excluded by index."""
    p = x.double()
    q = p if queries is None else queries.double()
    if metric == "cosine":
        pn = p.norm(dim=1, keepdim=True)
        qn = q.norm(dim=1, keepdim=True)
        pu = torch.where(pn > 0, p / pn.clamp_min(1e-300), 0.0)
        qu = torch.where(qn > 0, q / qn.clamp_min(1e-300), 0.0)
        d = 1.0 - qu @ pu.T
    else:
        d = ((q[:, None, :] - p[None, :, :]) ** 2).sum(-1).sqrt()
    d32 = d.float()
    rows_i, rows_d = [], []
    for i in range(q.shape[0]):
        order = sorted((j for j in range(p.shape[0]) if queries is not None or j != i), key=lambda j: (d32[i, j], j))
        rows_i.append(order[:k])
        rows_d.append([float(d32[i, j]) for j in order[:k]])
    return torch.tensor(rows_i), torch.tensor(rows_d, dtype=torch.float64)


# -- launching ----------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(mode: str, case: Path, out: Path, world: int, timeout: float = 120) -> tuple[list[int], float]:
    """Start ``world`` worker processes like torchrun; return their exit codes and the wall time."""
    env = {**os.environ, "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    tic = time.time()
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), mode, str(case), str(out)],
            env={**env, "RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    codes, logs = [], []
    try:
        for proc in procs:
            remaining = max(1.0, timeout - (time.time() - tic))
            output, _ = proc.communicate(timeout=remaining) if mode == "check" or proc is procs[0] else ("", None)
            logs.append(output.decode(errors="replace") if output else "")
            codes.append(proc.returncode)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if mode == "check" and any(codes):
        pytest.fail("worker failed:\n" + "\n---\n".join(log[-3000:] for log in logs))
    return codes, time.time() - tic


def make_case(path: Path, sizes: list[int], qsizes: list[int]) -> dict:
    g = torch.Generator().manual_seed(5)
    n, d = len(LANGS) * ITEMS, 8
    shared = torch.randn(2, ITEMS, d, generator=g).repeat(1, len(LANGS), 1)
    X = shared * 1.2 + torch.randn(2, n, d, generator=g)
    X[:, 20] = X[:, 3]  # duplicates across languages: exact ties
    X[:, 40] = X[:, 3]
    X[:, 9] = X[:, 8]  # and within a language
    X[:, 33] = 0.0  # a zero vector: cosine distance 1 to everything
    X[1, 50] = 0.5 * X[1, 51]  # same direction: cosine 0
    Q = torch.randn(2, sum(qsizes), d, generator=g)
    Q[:, 0] = X[:, 3]
    labels = [lang for lang in LANGS for _ in range(ITEMS)]
    ids = [item for _ in LANGS for item in range(ITEMS)]
    ids[-ITEMS:] = [0] * ITEMS  # the last language holds one item: some bootstrap resamples miss it (NaN)
    topics = [("sports", "health", "travel")[item % 3] for item in ids]  # the topic baseline crosses ranks too
    case = {"X": X, "Q": Q, "labels": labels, "ids": ids, "topics": topics, "sizes": sizes, "qsizes": qsizes, "k": K}
    assert sum(sizes) == n
    torch.save(case, path)
    return case


# -- tests --------------------------------------------------------------------------------------------------------


def test_shard_range_covers_points_in_order():
    for n in (0, 1, 7, 10):
        for world in (1, 3, 4):
            ranges = [shard_range(n, r, world) for r in range(world)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(ranges[r][1] == ranges[r + 1][0] for r in range(world - 1))
            assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1
    with pytest.raises(ValueError, match="rank must be in"):
        shard_range(5, 3, 3)


def test_sharded_knn_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_distributed"):
        knn_sharded(torch.randn(5, 3), 2)


@pytest.mark.parametrize(
    "sizes, qsizes",
    [([23, 33], [2, 3]), ([5, 0, 40, 11], [0, 3, 1, 1])],
    ids=["2-ranks-uneven", "4-ranks-with-empty-shard"],
)
def test_sharded_equals_single_process(tmp_path, sizes, qsizes):
    case = make_case(tmp_path / "case.pt", sizes, qsizes)
    launch("check", tmp_path / "case.pt", tmp_path, len(sizes))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(len(sizes))]
    X, Q, labels, ids = case["X"], case["Q"], case["labels"], case["ids"]

    def joined(name):
        return torch.cat([r[name][0] for r in ranks], -2), torch.cat([r[name][1] for r in ranks], -2)

    # neighbours: bit-identical to the single-process engine, which matches the float64 reference
    single = {
        "cosine": interp.knn(X, K),
        "euclidean_2d": interp.knn(X[1], K, metric="euclidean"),
        "queries": interp.knn(X, K, queries=Q, exclude_self=False),
    }
    for name, (idx, dist) in single.items():
        got_i, got_d = joined(name)
        assert torch.equal(got_i, idx), name
        assert torch.equal(got_d, dist), name
    for layer in range(2):
        ref_i, ref_d = reference_knn(X[layer], K, "cosine")
        assert torch.equal(single["cosine"][0][layer], ref_i)
        torch.testing.assert_close(single["cosine"][1][layer].double(), ref_d, rtol=0, atol=1e-6)
        ref_i, ref_d = reference_knn(X[layer], K, "cosine", queries=Q[layer])
        assert torch.equal(single["queries"][0][layer], ref_i)
    ref_i, ref_d = reference_knn(X[1], K, "euclidean")
    assert torch.equal(single["euclidean_2d"][0], ref_i)
    torch.testing.assert_close(single["euclidean_2d"][1].double(), ref_d, rtol=1e-6, atol=1e-6)
    # duplicates are each other's nearest neighbours (distance 0), ties to the lower index
    assert single["cosine"][0][0, 3, :2].tolist() == [20, 40] and single["cosine"][0][0, 20, :2].tolist() == [3, 40]

    # ILO tables: every rank holds the single-process result, bit for bit
    for compat in (False, True):
        ref = interp.ilo.score(X, labels, k=K, t=2, ids=ids, null=4, bootstrap=8, retrieval=True, compat=compat,
                               topics=case["topics"])  # fmt: skip
        assert "topic_share" in ref.table
        offsets = np.cumsum([0, *sizes])
        for r, got in enumerate(ranks):
            got = got[f"ilo_compat={compat}"]
            assert got["table"].equals(ref.table), (compat, r)
            assert got["by_layer"].equals(ref.by_layer), (compat, r)
            assert torch.equal(got["cooccurrence"], ref.cooccurrence)
            assert torch.equal(got["retrieval"].nan_to_num(-1.0), ref.retrieval.nan_to_num(-1.0))
            assert torch.equal(got["indices"], ref.indices[:, offsets[r] : offsets[r + 1]])
        if not compat:
            for layer in range(2):
                expected = ref_scores(reference_knn(X[layer], K, "cosine")[0].tolist(), labels, t=2)
                rows = ref.table[ref.table.layer == layer].set_index("language")
                for lang, (bridge, _, reach, ilo) in expected.items():
                    assert rows.loc[lang, ["bridge", "reach", "ilo"]].tolist() == pytest.approx([bridge, reach, ilo])

    # bad input on one rank raises a clear ValueError on every rank (nobody hangs)
    for r, got in enumerate(ranks):
        assert got["error_nan"].startswith("ValueError")
        assert "NaN" in got["error_nan"] if r == len(sizes) - 1 else f"rank(s) [{len(sizes) - 1}]" in got["error_nan"]
        assert "k must be an int in [1, 55]" in got["error_k"]
        assert "disagree on batch size / dimension" in got["error_dim"]
        last = len(sizes) - 1
        assert got["error_k_mismatch"].startswith(f"ValueError: rank {r}: the ranks called knn_sharded with "
                                                  f"different k (rank 0: {K}, ")  # fmt: skip
        assert got["error_k_mismatch"].endswith(f"rank {last}: {K + 1}); every rank must pass the same k")
        assert got["error_ilo_t_mismatch"].startswith(f"ValueError: rank {r}: the ranks called interp.ilo.score "
                                                      "with different t (rank 0: 2, ")  # fmt: skip
        assert f"rank {last}: 3)" in got["error_ilo_t_mismatch"]


@pytest.mark.parametrize("mode", ["kill", "stall"])
def test_dead_or_stalled_rank_fails_with_clear_error(tmp_path, mode):
    make_case(tmp_path / "case.pt", [28, 28], [1, 1])
    codes, wall = launch(mode, tmp_path / "case.pt", tmp_path, 2, timeout=90)
    lines = (tmp_path / "rank0.txt").read_text().splitlines()
    assert codes[0] == 1 and len(lines) == 2
    for line, where in zip(lines, ("", "exchanging labels, ids and arguments (sharded ILO)"), strict=True):
        elapsed, message = line.split("\t")  # first the kNN, then the sharded ILO on a fresh group
        assert message.startswith("DistributedKNNError: rank 0: distributed step failed while " + where)
        assert "check the other ranks' logs" in message
        assert float(elapsed) < 30  # the timeout is 4 s (the group's is 60 s); a dead peer is noticed at once
    assert wall < 90


def test_extract_through_accelerate_device_map(tok):
    """Blocks dispatched by accelerate (some offloaded to disk, weights on meta until their forward):
    the hooks fire where each block runs, results come back on CPU, identical to the plain model."""
    accelerate = pytest.importorskip("accelerate")
    from interp.models import tiny_llama

    texts = ["hello world", "bonjour le monde entier", "x", "guten Tag, Welt"]
    plain = interp.extract(tiny_llama(n_layers=4, seed=3), tok, texts, progress=False).tensor
    model = tiny_llama(n_layers=4, seed=3)
    device_map = {"model.embed_tokens": "disk", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.layers.2": "cpu", "model.layers.3": "disk", "model.norm": "cpu",
                  "model.rotary_emb": "cpu", "lm_head": "cpu"}  # fmt: skip
    with tempfile.TemporaryDirectory() as offload:
        model = accelerate.dispatch_model(model, device_map=device_map, offload_dir=offload)
        assert model.model.layers[1].self_attn.q_proj.weight.device.type == "meta"
        hooks_before = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
        acts = interp.extract(model, tok, texts, progress=False)
        hooks_after = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    assert acts.tensor.device.type == "cpu"
    assert torch.equal(acts.tensor, plain)
    assert hooks_after == hooks_before


def test_backend_follows_the_requested_device(monkeypatch):
    from interp.launch import init_distributed, resolve_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node, as far as the code can tell
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_backend("auto", "cpu") == "gloo"  # --device cpu on a GPU node stays on gloo
    assert resolve_backend("auto", "cuda") == "nccl" and resolve_backend("auto", "cuda:0") == "nccl"
    assert resolve_backend("auto", "auto") == "nccl" and resolve_backend("gloo", "auto") == "gloo"
    with pytest.raises(ValueError, match="dist_backend 'nccl' does not fit device 'cpu'"):
        resolve_backend("nccl", "cpu")
    with pytest.raises(ValueError, match="unknown dist_backend 'mpi'"):
        resolve_backend("mpi", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_backend("auto", "auto") == "gloo"
    # NCCL with more local ranks than GPUs: a clear error before any process group is created
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    with pytest.raises(RuntimeError, match=r"LOCAL_RANK=1, but this node has 1 visible GPU\(s\)"):
        init_distributed(device="cuda")
    assert not torch.distributed.is_initialized()


class _Stop(Exception):
    pass


def test_ilo_job_passes_its_device_to_the_process_group(monkeypatch, tmp_path):
    import interp.parallel
    from interp.cli.ilo import run_ilo_job

    seen = {}

    def fake_init(**kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(interp.parallel, "init_distributed", fake_init)
    with pytest.raises(_Stop):
        run_ilo_job(distributed=True, device="cpu", out=tmp_path, timeout_s=7.0, progress=False)
    assert seen == {"timeout_s": 7.0, "device": "cpu"}
