"""Benchmark: ILO scoring time per layer, and the main job end to end.

1. Scoring given the neighbours, N = 30,907 (31 languages × 997), k=5, t=3: ``interp``'s vectorised
   bridge/reach (``interp.ilo.measures``) against the official method -- a Python loop over every
   point with sets of neighbour labels (re-implemented here from its description, not copied).
   Both are checked to give the same numbers.
2. kNN + scoring per layer at D=640 (synthetic), for scale.
3. ``interp ilo`` end to end on the CLDR default (gemma-3-270m, 28 languages), timed as a subprocess.

usage: python benchmarks/ilo.py [--skip-job]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from machine import describe

import interp
from interp.ilo.measures import bridge_reach, slot_counts


def official_loop(indices: np.ndarray, labels: np.ndarray, t: int) -> dict:
    """Bridge and reach the official way: a Python loop over points with sets."""
    languages = list(dict.fromkeys(labels.tolist()))
    bridge_hits = dict.fromkeys(languages, 0)
    seen = {lang: set() for lang in languages}
    for i in range(len(labels)):
        own = labels[i]
        foreign = set(labels[indices[i]].tolist()) - {own}
        if len(foreign) >= t:
            bridge_hits[own] += 1
        seen[own] |= foreign
    sizes = {lang: int((labels == lang).sum()) for lang in languages}
    return {lang: (bridge_hits[lang] / sizes[lang], len(seen[lang])) for lang in languages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-job", action="store_true")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    n_langs, per, d, k, t = 31, 997, 640, 5, 3
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(300, d, generator=g)
    x = centres[torch.randint(0, 300, (n_langs * per,), generator=g)] + 0.5 * torch.randn(n_langs * per, d, generator=g)
    codes = torch.arange(n_langs).repeat_interleave(per)

    tic = time.perf_counter()
    indices, _ = interp.knn(x, k)
    knn_s = time.perf_counter() - tic

    tic = time.perf_counter()
    ours = bridge_reach(slot_counts(indices[None], codes, n_langs), codes, n_langs, t)
    ours_s = time.perf_counter() - tic
    labels = np.array([f"lang{c}" for c in codes.tolist()])
    tic = time.perf_counter()
    official = official_loop(indices.numpy(), labels, t)
    official_s = time.perf_counter() - tic
    for a in range(n_langs):
        bridge, reach_raw = official[f"lang{a}"]
        assert bridge == float(ours["bridge"][0, a]) and reach_raw == int(ours["reach_raw"][0, a])

    print(f"\nN = {n_langs * per}, D = {d}, k = {k}, t = {t}, one layer")
    print(f"  exact kNN (interp.knn, torch):        {knn_s:8.3f} s")
    print(f"  scoring, interp (vectorised):         {ours_s * 1000:8.1f} ms")
    print(f"  scoring, official-style Python loop:  {official_s * 1000:8.1f} ms   ({official_s / ours_s:.0f}x slower)")
    print("  both give identical bridge and reach for all 31 languages")

    if not args.skip_job:
        from interp.models.loading import DEFAULT_MODEL, cache_dir

        with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as cache:
            # a fresh activation cache, but the already de-quantised model (its first load is ~50 s)
            if (cache_dir() / DEFAULT_MODEL).is_dir():
                os.symlink(cache_dir() / DEFAULT_MODEL, os.path.join(cache, DEFAULT_MODEL))
            command = [sys.executable, "-m", "interp", "ilo", "--model", "gemma-3-270m", "--data", "cldr",
                       "--out", out]  # fmt: skip
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "INTERP_CACHE": cache}
            for label in ("first run (extract + score)", "re-run (cached activations)"):
                tic = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, env=env)
                print(f"interp ilo on CLDR (28 languages x 42 items, 19 layers), {label}: "
                      f"{time.perf_counter() - tic:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
