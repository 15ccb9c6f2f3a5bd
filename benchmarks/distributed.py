"""Benchmark: peak memory per rank of the sharded kNN (``knn_sharded``) against the number of ranks P.

Each rank is its own process (gloo, started like ``torchrun``), generates only
its own shard of the points (seeded blocks of rows, so the union over ranks is
the same data for every P) and runs the ring. Reported per rank: the shard's
bytes; the RSS its data added ("data") and the further peak during the kNN
("kNN working"), both above the rank's baseline (after imports and
process-group setup); their sum ("peak extra"); and the kNN's wall time. All
memory columns are the maximum over ranks. The point shard
and the ring buffers are ~3 N D / P bytes, so "extra" should fall ~1/P; the
interpreter and torch (~0.3-0.4 GB per process) are the baseline and do not.

Correctness is checked too: the concatenated rows of every P must equal P=1's.

On a 2-core machine the P > 2 runs share two cores, so their times say nothing
about speed-up; this benchmark is about memory.

usage: python benchmarks/distributed.py [--n 16000] [--d 4096] [--k 5] [--worlds 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

import torch
from machine import describe

BLOCK = 1024  # rows per seeded generation block


def rows(start: int, stop: int, d: int) -> torch.Tensor:
    """Rows ``start..stop`` of the global data set (Gaussian mixture), filled in place (no N-sized temporaries)."""
    centres = torch.randn(64, d, generator=torch.Generator().manual_seed(0))
    out = torch.empty(stop - start, d)
    for block in range(start // BLOCK, -(-stop // BLOCK)):
        g = torch.Generator().manual_seed(1000 + block)
        which = torch.randint(0, 64, (BLOCK,), generator=g)
        values = centres[which] + 0.7 * torch.randn(BLOCK, d, generator=g)
        lo, hi = max(start, block * BLOCK), min(stop, (block + 1) * BLOCK)
        out[lo - start : hi - start] = values[lo - block * BLOCK : hi - block * BLOCK]
    return out


def worker(args) -> None:
    torch.set_num_threads(1)
    from interp.launch import init_distributed
    from interp.neighbors.distributed import knn_sharded, shard_range

    rank, world = init_distributed("gloo", timeout_s=1800)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    lo, hi = shard_range(args.n, rank, world)
    shard = rows(lo, hi, args.d)
    with_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tic = time.perf_counter()
    index, dist = knn_sharded(shard, args.k, timeout=1800)
    wall = time.perf_counter() - tic
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.save((index, dist), os.path.join(args.out, f"rank{rank}.pt"))
    print(
        json.dumps(
            {
                "rank": rank,
                "world": world,
                "shard_rows": hi - lo,
                "shard_bytes": shard.numel() * 4,
                "baseline_bytes": base,
                "data_bytes": with_data - base,
                "knn_bytes": peak - with_data,
                "peak_bytes": peak,
                "extra_bytes": peak - base,
                "seconds": wall,
            }
        )
    )
    import torch.distributed as dist_

    dist_.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(world: int, args, out: str) -> list[dict]:
    env = {**os.environ, "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [sys.executable, __file__, "--worker", "--n", str(args.n), "--d", str(args.d), "--k", str(args.k),
           "--out", out]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, text=True) for r in range(world)
    ]
    results = []
    for proc in procs:
        output, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a rank failed (exit {proc.returncode})")
        results.append(json.loads(output.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=16000)
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--worlds", default="1,2,4")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    gib = 2.0**30
    machine = describe()
    print(f"N={args.n}, D={args.d}, k={args.k}, cosine, float32: X = {args.n * args.d * 4 / gib:.3f} GiB; {machine}")
    print("| P | shard GiB | baseline GiB | data GiB | kNN working GiB | peak extra GiB | extra / shard "
          "| extra × P / X | kNN s |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    reference = None
    for world in [int(w) for w in args.worlds.split(",")]:
        with tempfile.TemporaryDirectory() as out:
            res = run(world, args, out)
            parts = [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(world)]
        found = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
        if reference is None:
            reference = found
        same = torch.equal(found[0], reference[0]) and torch.equal(found[1], reference[1])
        shard = max(r["shard_bytes"] for r in res)
        extra = max(r["extra_bytes"] for r in res)
        baseline = max(r["baseline_bytes"] for r in res)
        data = max(r["data_bytes"] for r in res)
        working = max(r["knn_bytes"] for r in res)
        print(f"| {world} | {shard / gib:.3f} | {baseline / gib:.2f} | {data / gib:.3f} | {working / gib:.3f} "
              f"| {extra / gib:.3f} | "
              f"{extra / shard:.2f} | {extra * world / (args.n * args.d * 4):.2f} | "
              f"{max(r['seconds'] for r in res):.1f} |" + ("" if same else " **rows differ from P=1**"))  # fmt: skip


if __name__ == "__main__":
    main()
