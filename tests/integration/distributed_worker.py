"""One rank of a gloo job for tests/integration/test_distributed.py (started like ``torchrun`` would).

usage: RANK=r WORLD_SIZE=P MASTER_ADDR=127.0.0.1 MASTER_PORT=port python distributed_worker.py MODE CASE OUT

CASE is a ``.pt`` file with ``X [L, N, D]``, ``Q [L, M, D]``, ``labels``, ``ids``,
``sizes`` (point shard per rank) and ``qsizes`` (query shard per rank).

* ``check``: save this rank's sharded kNN and ILO results, and the errors that
  bad input raises on every rank, to ``OUT/rank{r}.pt``.
* ``kill``: rank 1 dies after joining; rank 0 runs the kNN, then the sharded
  ILO on a second (fresh) group, and writes the errors it gets (and how long
  each took) to ``OUT/rank0.txt``, one ``seconds\tmessage`` line each.
* ``stall``: rank 1 joins and then sleeps instead of taking part; same report.
"""

import os
import sys
import time

import torch
import torch.distributed as dist

torch.set_num_threads(1)

import interp  # noqa: E402
from interp.launch import init_distributed  # noqa: E402
from interp.neighbors.distributed import DistributedKNNError, knn_sharded  # noqa: E402

mode, case_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
case = torch.load(case_path, weights_only=False)
rank, world = init_distributed("gloo", timeout_s=60)
a = sum(case["sizes"][:rank])
b = a + case["sizes"][rank]
qa = sum(case["qsizes"][:rank])
qb = qa + case["qsizes"][rank]
X, Q, labels, ids = case["X"][:, a:b], case["Q"][:, qa:qb], case["labels"][a:b], case["ids"][a:b]


def errors_of(fn) -> str:
    try:
        fn()
    except (ValueError, TypeError) as err:
        return f"{type(err).__name__}: {err}"
    return ""


if mode == "check":
    k = case["k"]
    results = {
        "cosine": knn_sharded(X, k),
        "euclidean_2d": knn_sharded(X[1], k, metric="euclidean"),
        "queries": knn_sharded(X, k, queries=Q, exclude_self=False),
    }
    for compat in (False, True):
        r = interp.ilo.score(X, labels, k=k, t=2, ids=ids, null=4, bootstrap=8, retrieval=True, compat=compat,
                             topics=case["topics"][a:b], group=dist.group.WORLD, timeout=60)  # fmt: skip
        results[f"ilo_compat={compat}"] = {"table": r.table, "by_layer": r.by_layer, "cooccurrence": r.cooccurrence,
                                           "indices": r.indices, "retrieval": r.retrieval}  # fmt: skip
    nan = X.clone()
    if rank == world - 1:  # the last rank's input is bad
        nan[0, 0, 0] = float("nan")
    results["error_nan"] = errors_of(lambda: knn_sharded(nan, k))
    results["error_k"] = errors_of(lambda: knn_sharded(X, sum(case["sizes"])))
    results["error_dim"] = errors_of(lambda: knn_sharded(X[..., : 4 + rank], k))
    # the last rank passes a different k / t: every rank raises, naming the argument
    odd = rank == world - 1
    results["error_k_mismatch"] = errors_of(lambda: knn_sharded(X, k + odd))
    results["error_ilo_t_mismatch"] = errors_of(
        lambda: interp.ilo.score(X, labels, k=k, t=2 + odd, ids=ids, group=dist.group.WORLD, timeout=60)
    )
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()
else:
    dist.barrier()  # everyone has joined
    second = dist.new_group(backend="gloo")  # a fresh group for the ILO, untouched by the failed kNN
    if rank == 1:
        if mode == "kill":
            os._exit(3)
        time.sleep(120)  # stalled: alive but never answers (the test kills it)
    lines = []
    for job in (lambda: knn_sharded(X, case["k"], timeout=4),
                lambda: interp.ilo.score(X, labels, k=case["k"], t=2, group=second, timeout=4)):  # fmt: skip
        tic = time.time()
        try:
            job()
            message = "no error"
        except DistributedKNNError as err:
            message = f"DistributedKNNError: {err}"
        lines.append(f"{time.time() - tic:.2f}\t{message.splitlines()[0]}\n")
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
        f.writelines(lines)
    os._exit(1)  # a failed job; skip the process group's orderly shutdown, which would wait for the dead peer
