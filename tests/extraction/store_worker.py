"""Subprocess for the store's crash and concurrency tests: extract a corpus into a store.

usage: python store_worker.py STORE [--slow] [--texts N] [--kill-at STEP:SHARD]

Prints the number of forward passes it ran (batches actually computed). ``--kill-at``
sends this process SIGKILL at one write step of the store (``corpus`` and ``model``
below are what :func:`reference` in the tests rebuilds):

* ``create-tmp``      the new store's first manifest is written to its temporary file, not renamed
* ``before-shard``    shard SHARD is about to be written
* ``shard-tmp``       shard SHARD is in its temporary file (fsync'ed), not renamed
* ``shard-renamed``   shard SHARD is in place, the manifest does not list it yet
* ``manifest-tmp``    the manifest listing shard SHARD is in its temporary file, not renamed
* ``manifest-renamed`` the manifest listing shard SHARD is in place
"""

import argparse
import os
import signal
import time
from pathlib import Path

import torch

import interp
from interp.extraction import store as store_module
from interp.models import byte_tokenizer, tiny_llama

STEPS = ("create-tmp", "before-shard", "shard-tmp", "shard-renamed", "manifest-tmp", "manifest-renamed")


def corpus(n: int) -> list[str]:
    return [f"sentence number {i} " + "word " * (i % 13) for i in range(n)]


def model():
    return tiny_llama(n_layers=3, seed=7), byte_tokenizer()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt:
    """Wraps the store's write functions and SIGKILLs this process at the chosen step."""

    def __init__(self, step: str, shard: int):
        self.step, self.shard = step, shard
        self.replace, self.save = os.replace, store_module._save_shard
        self.committing: int | None = None  # shard whose manifest entry is being written

    def save_shard(self, tensors, path: Path) -> None:
        index = int(Path(path).name.split(".")[1].split("-")[1])
        self.committing = index
        if self.step == "before-shard" and index == self.shard:
            die()
        self.save(tensors, path)
        if self.step == "shard-tmp" and index == self.shard:
            die()

    def os_replace(self, src, dst) -> None:
        name = Path(dst).name
        creating = name == "manifest.json" and self.committing is None
        manifest_of_shard = name == "manifest.json" and self.committing == self.shard
        if (self.step == "create-tmp" and creating) or (self.step == "manifest-tmp" and manifest_of_shard):
            die()
        self.replace(src, dst)
        if self.step == "shard-renamed" and name == f"shard-{self.shard:05d}.safetensors":
            die()
        if self.step == "manifest-renamed" and manifest_of_shard:
            die()


class CountForwards:
    """A forward hook counting the batches computed (``--slow``: 0.15 s each, so a kill lands mid-run)."""

    def __init__(self, slow: bool):
        self.calls, self.slow = 0, slow

    def __call__(self, module, inputs, output) -> None:
        self.calls += 1
        if self.slow:
            time.sleep(0.15)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("--slow", action="store_true")
    parser.add_argument("--texts", type=int, default=96)
    parser.add_argument("--kill-at", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    net, tok = model()
    counter = CountForwards(args.slow)
    net.model.layers[0].register_forward_hook(counter)
    if args.kill_at:
        step, shard = args.kill_at.split(":")
        assert step in STEPS, step
        killer = KillAt(step, int(shard))
        store_module._save_shard = killer.save_shard
        os.replace = killer.os_replace
    interp.extract(net, tok, corpus(args.texts), batch_size=4, shard_size=8, store=args.store, progress=False)
    print(f"forward passes: {counter.calls}", flush=True)


if __name__ == "__main__":
    main()
