"""Benchmark: the layer × layer mutual-kNN matrix of gemma-3-270m on the UDHR set.

gemma-3-270m (embedded default), all 19 hidden states, mean pooling, the 930 UDHR texts of
``../shared/data/udhr30.jsonl`` (30 languages × 31 articles) -> activations ``[19, 930, 640]``.

Timed (best of 3, extraction excluded and reported once):

* ``interp.similarity.layer_similarity(acts, "mutual_knn", k=10)``: one batched exact
  :func:`interp.knn` over the 19 layers, then all 190 layer pairs from the neighbour lists;
* the upstream way (platonic-rep ``metrics.py`` semantics, re-implemented here from the
  description, not copied): for every ordered layer pair, the neighbours of both layers again by
  ``(X Xᵀ).fill_diagonal_(-1e8).argsort(descending)[:, :k]`` on L2-normalised features and two dense
  N × N float masks -- 361 pairs;
* for scale: the same matrix for ``cknna`` and ``unbiased_cka``.

The mutual-kNN matrix is checked against an exact float64 reference (neighbours from a stable sort
of float64 cosine distances; must agree) and compared with the upstream-style one, which ranks by a
float32 X Xᵀ: float32 rounding reorders near-tied neighbours, so a few slots differ.

usage: python benchmarks/similarity.py [--data PATH] [--k 10] [--cache acts.pt]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import describe

import interp
from interp.data import load_parallel
from interp.similarity import layer_similarity

UDHR = Path(__file__).resolve().parents[2] / "shared" / "data" / "udhr30.jsonl"


def upstream_mutual_knn_matrix(x: torch.Tensor, k: int) -> torch.Tensor:
    """Every ordered pair, neighbours recomputed per pair, dense masks (upstream's cost model)."""
    n_layers, n = x.shape[0], x.shape[1]
    out = torch.empty(n_layers, n_layers, dtype=torch.float64)
    rows = torch.arange(n).unsqueeze(1)
    for a in range(n_layers):
        for b in range(n_layers):
            lists = []
            for layer in (a, b):
                feats = F.normalize(x[layer], dim=-1)
                lists.append((feats @ feats.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :k])
            mask_a, mask_b = torch.zeros(n, n), torch.zeros(n, n)
            mask_a[rows, lists[0]] = 1.0
            mask_b[rows, lists[1]] = 1.0
            out[a, b] = ((mask_a * mask_b).sum(1) / k).mean()
    return out


def float64_mutual_knn_matrix(x: torch.Tensor, k: int) -> torch.Tensor:
    """Exact check: float64 cosine neighbours per layer (stable sort: ties to the lower index), dense masks."""
    n_layers, n = x.shape[0], x.shape[1]
    masks = torch.zeros(n_layers, n, n, dtype=torch.bool)
    for layer in range(n_layers):
        feats = F.normalize(x[layer].double(), dim=-1)
        distance = (1 - feats @ feats.T).fill_diagonal_(float("inf"))
        masks[layer].scatter_(1, torch.sort(distance, dim=1, stable=True).indices[:, :k], True)
    flat = masks.reshape(n_layers, -1).double()
    return flat @ flat.T / (n * k)


def best_of(fn, repeats: int = 3):
    times, result = [], None
    for _ in range(repeats):
        tic = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - tic)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(UDHR))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cache", help="save / reuse the activations tensor here (skips extraction on reruns)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"machine: {describe()}")

    corpus = load_parallel(f"jsonl:{args.data}")
    texts, langs, ids = corpus.flat()
    if args.cache and os.path.isfile(args.cache):
        acts = torch.load(args.cache)
        print(f"{corpus}: activations {tuple(acts.shape)} from {args.cache}")
    else:
        model, tok = interp.load_model()
        tic = time.perf_counter()
        acts = interp.extract(model, tok, texts, layers="all", pooling="mean", labels=langs, ids=ids,
                              batch_size=8, progress=False).tensor  # fmt: skip
        print(f"{corpus}: activations {tuple(acts.shape)}, extraction {time.perf_counter() - tic:.1f} s (once)")
        if args.cache:
            torch.save(acts, args.cache)

    k = args.k
    ours_s, ours = best_of(lambda: layer_similarity(acts, "mutual_knn", k=k, progress=False))
    upstream_s, upstream = best_of(lambda: upstream_mutual_knn_matrix(acts, k), repeats=1)
    exact = float64_mutual_knn_matrix(acts, k)
    print(f"\nlayer x layer mutual-kNN, 19 x 19, k={k}, N={acts.shape[1]}, D={acts.shape[2]}")
    print(f"  interp.similarity.layer_similarity:   {ours_s:8.3f} s")
    print(f"  upstream-style (per pair, N x N):     {upstream_s:8.3f} s   ({upstream_s / ours_s:.0f}x slower, 1 run)")
    for name, other in (("float64 exact reference", exact), ("upstream-style (float32 X Xᵀ)", upstream)):
        diff = (ours.values - other).abs()
        print(f"  vs {name}: max |difference| {diff.max():.2e}, entries differing {(diff > 1e-12).sum()} of 361")
    row, col, value = ours.argmax()
    print(f"  max off-diagonal {value:.3f} at layers ({row}, {col}); mean off-diagonal {ours.offdiagonal_mean():.3f}")
    for metric in ("cknna", "unbiased_cka"):
        seconds, _ = best_of(lambda metric=metric: layer_similarity(acts, metric, k=k, progress=False))
        print(f"  {metric:<14} matrix:                 {seconds:8.3f} s")


if __name__ == "__main__":
    main()
