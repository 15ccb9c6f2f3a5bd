"""Benchmark: exact kNN, interp.knn against FAISS, the official ILO method, sklearn and the GEMM floor.

Each method runs in its own subprocess so that its peak RSS (``ru_maxrss``) is
its own. Data: a seeded Gaussian mixture (300 clusters, like sentence
embeddings: dense neighbourhoods, many near-ties), cosine, self excluded.

Cases (``--case``):

* ``single``  N=30,907 (31 languages × 997 FLORES sentences), D=640 (gemma-3-270m), k=5;
* ``gaussian`` the same size on unstructured i.i.d. Gaussian data (no clusters: every block must be
  searched, the block reordering cannot help);
* ``batched`` B=19 layers, N=4,000, D=640, k=5;
* ``large``   N=200,000, D=1,024, k=5 (interp.knn only, and the GEMM floor estimate).

Methods (``single``): ``interp-torch``, ``interp-triton`` (CUDA), ``faiss``
(IndexFlatIP, search k+1, drop self by index), ``official`` (full N×N
``1 - X̂X̂ᵀ``, ``topk(-D, k+1)``, drop column 0, copy to host), ``sklearn``
(``NearestNeighbors(algorithm="brute", metric="cosine")``) and ``gemm`` (the
floor: ``X̂ X̂ᵀ`` in row blocks of 2048, nothing else).

usage: python benchmarks/knn.py [--case single|batched|large|all] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from machine import describe

CASES = {
    "single": {"b": 1, "n": 30907, "d": 640, "k": 5},
    "gaussian": {"b": 1, "n": 30907, "d": 640, "k": 5, "clusters": 0},
    "batched": {"b": 19, "n": 4000, "d": 640, "k": 5},
    "large": {"b": 1, "n": 200_000, "d": 1024, "k": 5},
}


def make_data(b: int, n: int, d: int, clusters: int = 300, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if clusters == 0:
        x = torch.randn(b, n, d, generator=g)
        return x if b > 1 else x[0]
    centres = torch.randn(b, 300, d, generator=g)
    labels = torch.randint(0, 300, (b, n), generator=g)
    x = torch.gather(centres, 1, labels[..., None].expand(b, n, d)) + 0.5 * torch.randn(b, n, d, generator=g)
    return x if b > 1 else x[0]


def run_interp(x, k, backend, device):
    import interp

    out = interp.knn(x.to(device), k, backend=backend)
    if device == "cuda":
        torch.cuda.synchronize()
    return out[0].cpu()


def run_faiss(x, k):
    import faiss
    import numpy as np

    xn = torch.nn.functional.normalize(x, dim=-1).numpy()
    index = faiss.IndexFlatIP(xn.shape[1])
    index.add(xn)
    _, found = index.search(xn, k + 1)
    is_self = found == np.arange(len(found))[:, None]
    drop = np.where(is_self.any(1), is_self.argmax(1), k)
    keep = np.ones_like(found, dtype=bool)
    keep[np.arange(len(found)), drop] = False
    return torch.from_numpy(found[keep].reshape(len(found), k))


def run_official(x, k, device):
    xn = torch.nn.functional.normalize(x.to(device), dim=-1)
    similarity = xn @ xn.T
    dists = 1 - similarity
    _, idx = torch.topk(-dists, k + 1, dim=1)
    dists.cpu().numpy()  # the official code copies the full matrix to the host
    return idx[:, 1:].cpu()


def run_sklearn(x, k):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine").fit(x.numpy())
    return torch.from_numpy(nn.kneighbors(return_distance=False))


def run_gemm(x, device):  # the floor: every similarity computed once, nothing kept
    xn = torch.nn.functional.normalize(x.to(device), dim=-1)
    for start in range(0, xn.shape[0], 2048):
        xn[start : start + 2048] @ xn.T
    if device == "cuda":
        torch.cuda.synchronize()
    return None


def run_method(method: str, x: torch.Tensor, k: int, device: str):
    if method.startswith("interp-"):
        return run_interp(x, k, method.split("-", 1)[1], device)
    if method == "faiss":
        return run_faiss(x, k)
    if method == "official":
        return run_official(x, k, device)
    if method == "sklearn":
        return run_sklearn(x, k)
    if method == "gemm":
        for problem in x if x.ndim == 3 else [x]:
            run_gemm(problem, device)
        return None
    if method == "baseline":  # interpreter + torch + the input data: subtracted from every peak
        return None
    raise SystemExit(f"unknown method {method}")


def child(method: str, case: str, device: str) -> None:
    spec = CASES[case]
    x = make_data(spec["b"], spec["n"], spec["d"], spec.get("clusters", 300))
    k = spec["k"]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if method.startswith("interp-"):  # imports are not part of the timing
        import interp  # noqa: F401
    elif method == "faiss":
        import faiss  # noqa: F401
    elif method == "sklearn":
        import sklearn.neighbors  # noqa: F401
    if device == "cuda" and method != "baseline":  # CUDA context, cuBLAS handles, Triton JIT: not timed
        run_method(method, x, k, device)
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = run_method(method, x, k, device)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is KiB on Linux)
    gpu_peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    if result is not None:
        torch.save(result, f"/tmp/knn-bench-{method}-{case}.pt")
    print(json.dumps({"method": method, "seconds": seconds, "peak_rss_gib": peak, "gpu_peak_gib": gpu_peak}))


def measure(method: str, case: str, device: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", method, "--case", case, "--device", device],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        return {"method": method, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_sets(a: str, b: str, case: str) -> str:
    try:
        x, y = torch.load(f"/tmp/knn-bench-{a}-{case}.pt"), torch.load(f"/tmp/knn-bench-{b}-{case}.pt")
    except FileNotFoundError:
        return "n/a"
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    equal = (x.sort(dim=1).values == y.sort(dim=1).values).all(dim=1)
    text = f"{int(equal.sum())}/{len(equal)} rows identical"
    differ = (~equal).nonzero().squeeze(1)[:5].tolist()
    if differ and CASES[case]["b"] == 1:  # who is right? float64 distances of the k-th neighbour of each set
        spec = CASES[case]
        data = torch.nn.functional.normalize(
            make_data(1, spec["n"], spec["d"], spec.get("clusters", 300)).double(), dim=-1
        )
        for row in differ:
            kth = [float((1 - data[s] @ data[row]).max()) for s in (x[row], y[row])]
            text += f"\n  row {row}: k-th distance {a} {kth[0]:.9f}, {b} {kth[1]:.9f} (float64)"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="all", choices=[*CASES, "all"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.case, args.device)
        return
    cuda = args.device == "cuda"
    print(f"machine: {describe()}")
    cases = list(CASES) if args.case == "all" else [args.case]
    for case in cases:
        spec = CASES[case]
        print(f"\ncase {case}: B={spec['b']} N={spec['n']} D={spec['d']} k={spec['k']} cosine")
        if case in ("single", "gaussian"):
            methods = ["gemm", "interp-torch", *(["interp-triton"] if cuda else []), "faiss", "official", "sklearn"]
            if cuda:
                methods.remove("faiss")
                methods.remove("sklearn")
        elif case == "batched":
            methods = ["gemm", "interp-torch", *(["interp-triton"] if cuda else [])]
        else:
            methods = ["interp-torch", *(["interp-triton"] if cuda else [])]
        base = measure("baseline", case, args.device).get("peak_rss_gib", 0.0)
        rows = [measure(m, case, args.device) for m in methods]
        floor = next((r["seconds"] for r in rows if r["method"] == "gemm" and "seconds" in r), None)
        print(f"baseline RSS (python + torch + data): {base:.2f} GiB; 'extra' = peak RSS - baseline")
        print(
            f"{'method':16s} {'seconds':>9s} {'peak RSS GiB':>13s} {'extra GiB':>10s} {'GPU GiB':>8s} {'vs GEMM':>8s}"
        )
        for r in rows:
            if "error" in r:
                print(f"{r['method']:16s} error: {r['error']}")
                continue
            ratio = f"{r['seconds'] / floor:.2f}x" if floor else "-"
            gpu = f"{r['gpu_peak_gib']:.2f}" if r["gpu_peak_gib"] is not None else "-"
            extra = r["peak_rss_gib"] - base
            print(
                f"{r['method']:16s} {r['seconds']:9.2f} {r['peak_rss_gib']:13.2f} {extra:10.2f} {gpu:>8s} {ratio:>8s}"
            )
        if case in ("single", "gaussian"):
            for other in ("faiss", "official", "sklearn", "interp-triton"):
                if other in methods:
                    print(f"neighbour sets interp-torch vs {other}: {same_sets('interp-torch', other, case)}")


if __name__ == "__main__":
    main()
