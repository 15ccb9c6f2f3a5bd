"""Measurement: how much the official ILO code's float32 neighbour step differs from exact neighbours.

The official code (HLTCHKUST/interlingua, described in ``../shared/reference/ilo.md`` §1.2) builds
the full N × N float32 matrix ``1 − X̂X̂ᵀ`` of L2-normalised rows, takes ``torch.topk(−D, k + 1)`` and
drops column 0 as "self" (re-implemented here from that description, as ``run_official`` in
``benchmarks/knn.py``; not copied). Its scores: the official-style loop of ``benchmarks/ilo.py``.
``interp`` is exact: float64 re-ranked distances, self excluded by index, ties to the lower index
(``interp.ilo.score``; ``compat=True`` drops the first of the k + 1 exact neighbours instead).

Data: gemma-3-270m (embedded default), all 19 hidden states, mean pooling, a parallel JSON Lines
corpus -- by default the 930 UDHR texts (30 languages × 31 articles); ``--data
../shared/data/flores31.jsonl --items 100`` takes the first 100 FLORES items of 31 languages.

Reported per layer and overall, at k = 5, t = 3 (the official defaults):

* exact duplicates (rows equal to another row) -- where ``compat`` itself differs from exclusion by index;
* rows whose official column 0 is not the point itself (float32 self-distance beaten);
* rows whose official neighbour *set* differs from interp's (``compat=False``), and from ``compat=True``;
* the largest float64 distance by which an official-only neighbour is farther than the interp-only
  neighbour it displaced (near-ties: of the order of float32 rounding);
* (layer, language) cells whose ILO differs (official-style Python loop on the official lists vs
  ``interp.ilo.score``), and the largest |ΔILO|.

On CPU the float32 GEMM is MKL/oneDNN's; on CUDA it would be cuBLAS's (the official code runs on
CUDA): the rows that flip depend on that rounding, the order of magnitude is what this measures.

usage: python benchmarks/ilo_float32_ties.py [--data PATH] [--items N] [--k 5] [--t 3] [--cache acts.pt]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import interp
from interp.data import load_parallel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cka_epsilon import UDHR, activations  # noqa: E402 (benchmarks/ is a folder of scripts)
from ilo import official_loop  # noqa: E402


def official_neighbours(x: torch.Tensor, k: int) -> torch.Tensor:
    """The official step on float32 ``[N, D]``: ``topk(−(1 − X̂X̂ᵀ), k + 1)`` -> ``[N, k + 1]``, column 0 "self"."""
    unit = F.normalize(x.float(), dim=-1)
    dists = 1 - unit @ unit.T
    return torch.topk(-dists, k + 1, dim=1).indices


def set_differs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: the rows of two ``[N, k]`` neighbour lists hold different sets."""
    return (a.sort(-1).values != b.sort(-1).values).any(-1)


def swap_gap(x: torch.Tensor, official: torch.Tensor, exact: torch.Tensor) -> float:
    """Largest float64 cosine-distance excess of an official-only neighbour over an interp-only one."""
    unit = F.normalize(x.double(), dim=-1)
    gap = 0.0
    for i in set_differs(official, exact).nonzero().squeeze(1).tolist():
        extra = sorted(set(official[i].tolist()) - set(exact[i].tolist()))
        missing = sorted(set(exact[i].tolist()) - set(official[i].tolist()))
        distance = 1 - unit[i] @ unit.T
        gap = max(gap, float(distance[extra].max() - distance[missing].min()))
    return gap


def exact_duplicates(x: torch.Tensor) -> int:
    """Number of rows equal to some other row."""
    _, inverse, counts = torch.unique(x, dim=0, return_inverse=True, return_counts=True)
    return int((counts[inverse] > 1).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(UDHR))
    parser.add_argument("--items", type=int, help="first N items of every language (default: all)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--t", type=int, default=3)
    parser.add_argument("--cache", help="save / reuse the activations tensor here (skips extraction on reruns)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")  # fmt: skip
    acts = activations(args.data, args.cache, args.items)
    corpus = load_parallel(f"jsonl:{args.data}")
    _, langs, ids = (corpus if args.items is None else corpus.head(args.items)).flat()
    k, t = args.k, args.t
    n_layers, n = acts.shape[0], acts.shape[1]

    plain = interp.ilo.score(acts, langs, k=k, t=t, ids=ids)
    compat = interp.ilo.score(acts, langs, k=k, t=t, ids=ids, compat=True)
    languages, label_array = plain.languages, np.array(langs)
    totals = dict.fromkeys(("duplicates", "self_beaten", "vs_plain", "vs_compat", "cells"), 0)
    worst, gap = 0.0, 0.0
    print(f"\nN = {n} ({len(languages)} languages), D = {acts.shape[2]}, k = {k}, t = {t}, {n_layers} layers")
    print("layer  duplicates  col0!=self  set!=interp  set!=compat  ILO cells differing  max|ΔILO|")
    for layer in range(n_layers):
        x = acts[layer].float()
        found = official_neighbours(x, k)
        first, official = found[:, 0], found[:, 1:]
        stats = {
            "duplicates": exact_duplicates(x),
            "self_beaten": int((first != torch.arange(n)).sum()),
            "vs_plain": int(set_differs(official, plain.indices[layer]).sum()),
            "vs_compat": int(set_differs(official, compat.indices[layer]).sum()),
        }
        gap = max(gap, swap_gap(x, official, plain.indices[layer]))
        scores = official_loop(official.numpy(), label_array, t)
        ours = plain.table[plain.table.layer == plain.layers[layer]].set_index("language")
        deltas = []
        for lang in languages:
            bridge, reach_raw = scores[lang]
            reach = reach_raw / (len(languages) - 1)
            ilo = 2 * bridge * reach / (bridge + reach) if bridge and reach else 0.0
            deltas.append(abs(ilo - float(ours.loc[lang, "ilo"])))
        stats["cells"] = int(sum(d > 1e-12 for d in deltas))
        worst = max(worst, max(deltas))
        for key, value in stats.items():
            totals[key] += value
        print(f"{plain.layers[layer]:>5}  {stats['duplicates']:>10}  {stats['self_beaten']:>10}  "
              f"{stats['vs_plain']:>11}  {stats['vs_compat']:>11}  {stats['cells']:>8} of {len(languages):<8}  "
              f"{max(deltas):.4f}")  # fmt: skip
    rows, cells = n_layers * n, n_layers * len(languages)
    print(f"\nall layers: {totals['duplicates']} duplicate rows; column 0 not self in {totals['self_beaten']} "
          f"of {rows} rows; neighbour set differs from interp in {totals['vs_plain']} rows "
          f"({100 * totals['vs_plain'] / rows:.2f} %), from compat=True in {totals['vs_compat']} "
          f"({100 * totals['vs_compat'] / rows:.2f} %); ILO differs in {totals['cells']} of {cells} "
          f"(layer, language) cells ({100 * totals['cells'] / cells:.2f} %), max |ΔILO| {worst:.4f}; "
          f"displaced neighbours were at most {gap:.2g} closer in float64 cosine distance")  # fmt: skip


if __name__ == "__main__":
    main()
