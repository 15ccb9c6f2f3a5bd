"""Benchmark: attention patterns of every block without eager attention, against one eager forward.

gemma-3-270m (float32, SDPA), real UDHR sentences in length-sorted padded batches (the batches
interp uses). Best of ``--repeats`` seconds for

  (a)  the backbone's plain forward, SDPA (no hooks);
  (b)  the usual way to get patterns: the whole model switched to eager attention,
       ``output_attentions=True`` (every block's ``[heads, q, k]`` returned);
  (c)  interp's mechanism alone: SDPA forward with the pattern hook
       (``interp.models.attention``) on every block, probabilities returned as weights;
  (d)  ``interp.extract(..., sites="blocks.*.attn.hook_pattern", pooling="none")`` end to
       end (batching, key alignment to text positions, copies to the result);
  (e)  the same for one block (``blocks.9.attn.hook_pattern``);

and the ratios to (b). The cases are interleaved (every case once per round, ``--repeats``
rounds) and each keeps its best round, so a busy neighbour slows all of them alike; besides wall
time each reports the CPU time of this process (``time.process_time``, all threads). On a shared
machine both still move by tens of percent, so each case's floating-point work is also counted
once (``torch.utils.flop_counter.FlopCounterMode``: matmuls, SDPA and convolutions), which does not
depend on the machine at all. Not a test: numbers go to docs/performance.md with the machine line.

usage: python benchmarks/attention_patterns.py [--data ../shared/data/udhr30.jsonl] [--n 64] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch
from extract import DEFAULT_DATA, load_sentences
from machine import describe
from torch.utils.flop_counter import FlopCounterMode

import interp
from interp.extraction.backends.base import pattern_weights
from interp.models.attention import attention_hooks
from interp.models.inputs import collate, pad_id, plan_batches, tokenize


class Batches:
    """The length-sorted padded batches of ``texts``, run through the backbone."""

    def __init__(self, model, tokenizer, texts: list[str], batch_size: int):
        tokens = tokenize(tokenizer, texts)
        lengths = [len(t.input_ids) for t in tokens]
        self.model = model
        self.batches = [collate(tokens, rows, pad_id(tokenizer), "right")
                        for rows in plan_batches(lengths, range(len(texts)), batch_size)]  # fmt: skip
        self.n_tokens = sum(lengths)

    def run(self, **kwargs) -> None:
        with torch.no_grad():
            for batch in self.batches:
                out = self.model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                       position_ids=batch.position_ids, use_cache=False, **kwargs)  # fmt: skip
                if kwargs.get("output_attentions"):
                    assert len(out.attentions) == 18 and out.attentions[0] is not None


@contextlib.contextmanager
def eager(model):
    config = model.config
    original = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(describe())
    model, tokenizer = interp.load_model()
    texts = load_sentences(args.data, args.n)
    batches = Batches(model, tokenizer, texts, args.batch_size)
    attn = model.config._attn_implementation
    print(f"{len(texts)} texts, {batches.n_tokens} tokens, batch {args.batch_size}, {attn}")
    every = dict.fromkeys(range(18), pattern_weights)

    def hooked() -> None:
        with attention_hooks(model, every):
            batches.run(output_attentions=False)

    def eager_forward() -> None:
        with eager(model):
            batches.run(output_attentions=True)

    def extract(sites) -> None:
        interp.extract(model, tokenizer, texts, sites=sites, pooling="none", batch_size=args.batch_size,
                       progress=False)  # fmt: skip

    cases = {
        "(a) SDPA forward, no patterns": batches.run,
        "(b) eager forward, output_attentions=True": eager_forward,
        "(c) SDPA + pattern hook on every block": hooked,
        "(d) extract, every block's hook_pattern": lambda: extract("blocks.*.attn.hook_pattern"),
        "(e) extract, blocks.9.attn.hook_pattern": lambda: extract("blocks.9.attn.hook_pattern"),
    }
    flops = {}
    for name, fn in cases.items():
        with FlopCounterMode(display=False) as counter:
            fn()
        flops[name] = counter.get_total_flops() / 1e9
    wall, cpu = dict.fromkeys(cases, float("inf")), dict.fromkeys(cases, float("inf"))
    for round_ in range(args.repeats):
        for name, fn in cases.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
        print(f"round {round_ + 1}: wall " + ", ".join(f"{v:.2f}" for v in wall.values())
              + "; cpu " + ", ".join(f"{v:.2f}" for v in cpu.values()), flush=True)  # fmt: skip
    base, base_cpu = wall["(b) eager forward, output_attentions=True"], cpu["(b) eager forward, output_attentions=True"]
    base_flops = flops["(b) eager forward, output_attentions=True"]
    print(f"{'':45s} {'wall s':>8s} {'of (b)':>7s} {'cpu s':>8s} {'of (b)':>7s} {'GFLOP':>8s} {'of (b)':>7s}")
    for name in cases:
        w, c, f = wall[name], cpu[name], flops[name]
        print(f"{name:45s} {w:8.3f} {w / base:6.2f}x {c:8.3f} {c / base_cpu:6.2f}x {f:8.2f} {f / base_flops:6.3f}x")


if __name__ == "__main__":
    main()
