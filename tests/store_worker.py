"""Subprocess for the kill -9 test: extract a corpus into a store.

usage: python store_worker.py STORE [--slow]
Prints the number of forward passes it ran (batches actually computed).
"""

import sys
import time

import torch

import interp
from interp.models import byte_tokenizer, tiny_llama

torch.set_num_threads(1)
store, slow = sys.argv[1], "--slow" in sys.argv
model, tok = tiny_llama(n_layers=3, seed=7), byte_tokenizer()
texts = [f"sentence number {i} " + "word " * (i % 13) for i in range(96)]
calls = []


def count(module, args, output):
    calls.append(1)
    if slow:
        time.sleep(0.15)


model.model.layers[0].register_forward_hook(count)
interp.extract(model, tok, texts, pooling="mean", batch_size=4, shard_size=8, store=store, progress=False)
print(f"forward passes: {len(calls)}", flush=True)
