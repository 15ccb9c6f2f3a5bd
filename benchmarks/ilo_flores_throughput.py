"""Benchmark: throughput of the paper-scale ILO job's two stages on a FLORES-200 slice, load-aware.

On a shared machine a wall time mixes our work with everyone else's, so every stage reports
wall seconds, the CPU seconds this process used (``time.process_time``: what the work costs,
nearly independent of the other jobs when torch runs one thread) and the load average
before and after:

1. extraction: ``interp.extract`` (gemma-3-270m, 19 hidden states, mean pooling, batch 16) of
   every ``--every``-th FLORES sentence (31 languages; ~300 sentences, ~12k tokens), as tokens/s
   (wall) and tokens per CPU-second, with 1 and 2 torch threads;
2. kNN + scoring: ``interp.ilo.score`` (k=5, t=3, cosine, no null) on one layer of N = 31,124
   points × 640 (the real size; random vectors), wall and CPU seconds.

It also prints the effective GFLOP/s of extraction (2 × non-embedding parameters per token),
the number the Llama-3.1-8B cost model in docs/performance.md starts from.

usage: python benchmarks/ilo_flores_throughput.py [--data ../shared/data/flores31.jsonl] [--every 100]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from machine import describe

import interp
from interp.data import load_parallel


def _stage(label: str, fn) -> tuple[float, float]:
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"  {label}: wall {wall:.1f} s, CPU {cpu:.1f} s, load {load:.1f} -> {os.getloadavg()[0]:.1f}")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/flores31.jsonl")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    corpus = load_parallel(f"jsonl:{args.data}")
    texts, langs, _ = corpus.flat()
    texts = texts[:: args.every]
    model, tok = interp.load_model()
    n_tokens = sum(len(tok(text)["input_ids"]) for text in texts)
    blocks = sum(p.numel() for p in interp.models.get_adapter(model).blocks.parameters())
    print(f"machine: {describe()}")
    print(f"1. extraction of {len(texts)} FLORES sentences ({n_tokens} tokens, BOS included), 19 hidden states")
    for threads in [int(x) for x in args.threads.split(",")]:
        torch.set_num_threads(threads)
        interp.extract(model, tok, texts[:8], progress=False)  # warm-up
        wall, cpu = _stage(f"{threads} thread(s)", lambda: interp.extract(model, tok, texts, progress=False))
        flops = 2 * blocks * n_tokens
        print(f"     {n_tokens / wall:.0f} tok/s wall, {n_tokens / cpu:.0f} tok per CPU-s; "
              f"{flops / cpu / 1e9:.1f} GFLOP per CPU-s (2 x {blocks / 1e6:.1f} M block params / token)")  # fmt: skip
    torch.set_num_threads(1)
    n = corpus.n_items * corpus.n_langs
    x = torch.randn(1, n, 640, generator=torch.Generator().manual_seed(0))
    labels = [lang for lang in corpus.langs for _ in range(corpus.n_items)]
    print(f"2. kNN + scoring of one layer, N = {n} x 640, k=5, t=3, cosine, 1 thread")
    _stage("score", lambda: interp.ilo.score(x, labels, k=5, t=3))


if __name__ == "__main__":
    main()
