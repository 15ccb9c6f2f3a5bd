"""How many merge rounds the fused kNN kernel spends per tile (simulated in torch, no GPU).

The kernel merges a ``[BM, BN]`` tile into each row's running ``KP`` best by
"replace the worst" (interp/neighbors/triton_kernel.py): one round per key a row
gains, so a tile costs ``max over the block's rows of keys gained``. This replays
that on sampled row blocks of the knn benchmark's single case (N = 30,907,
D = 640, cosine, k = 5 -> KP = 16) and reports the mean, next to the ``KP``
rounds per merged tile of a fixed-round merge.

Usage:  python benchmarks/triton_merge_rounds.py [--blocks 12]
"""

from __future__ import annotations

import argparse

import torch
from knn import make_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=12, help="row blocks sampled")
    args = parser.parse_args()
    bm = bn = 64
    kp = 16
    x = torch.nn.functional.normalize(make_data(1, 30907, 640), dim=-1)
    n = x.shape[0]
    blocks = torch.randperm(n // bm, generator=torch.Generator().manual_seed(0))[: args.blocks]
    rounds, tiles, touched = 0, 0, 0
    for block in blocks.tolist():
        rows = torch.arange(block * bm, (block + 1) * bm)
        dist = 1 - x[rows] @ x.T
        dist[torch.arange(bm), rows] = float("inf")  # self excluded
        best = torch.full((bm, kp), float("inf"))
        for n0 in range(0, n, bn):
            tile = dist[:, n0 : n0 + bn]
            merged = torch.cat([best, tile], 1).sort(1).values[:, :kp]
            gained = (tile <= merged[:, -1:]).sum(1).clamp(max=kp)  # keys of this tile now kept, per row
            rounds += int(gained.max())
            touched += int(gained.max() > 0)
            tiles += 1
            best = merged
    print(f"N={n} D=640 KP={kp}, {args.blocks} row blocks of {bm}, tiles of {bn}:")
    print(f"  replace-the-worst: {rounds / tiles:.2f} rounds per tile on average")
    print(f"  fixed {kp} rounds per merged tile: {kp * touched / tiles:.2f} ({touched / tiles:.1%} of tiles merge)")


if __name__ == "__main__":
    main()
