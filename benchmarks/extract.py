"""Benchmark: extraction throughput on gemma-3-270m over ~200 real UDHR sentences.

Reports seconds per 1k tokens for

  (a)  a plain batched forward of the backbone (no hooks, no LM head), on the
       same length-sorted, padded batches interp uses;
  (b)  ``interp.extract`` (all 19 hidden states, mean pooling) per backend;
  (c)  the official-ILO-style loop: batch 1, full model,
       ``output_hidden_states=True``, mean over tokens;

and the ratios (b)/(a) (hook overhead) and (c)/(b) (speed-up). Not a test:
numbers go to docs/performance.md with the machine they came from.

usage: python benchmarks/extract.py [--data ../shared/data/udhr30.jsonl] [--n 200] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from machine import describe

import interp
from interp.models.inputs import collate, plan_batches, tokenize

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "udhr30.jsonl"


def load_sentences(path: Path, n: int) -> list[str]:
    """``n`` sentences spread over all languages (round-robin over articles)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    by_id: dict[str, list[str]] = {}
    for row in rows:
        by_id.setdefault(row["id"], []).append(row["text"])
    ordered = [text for texts in by_id.values() for text in texts]
    return ordered[:n]


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def plain_forward(model, tokenizer, texts: list[str], batch_size: int) -> None:
    tokens = tokenize(tokenizer, texts)
    lengths = [len(t.input_ids) for t in tokens]
    with torch.no_grad():
        for rows in plan_batches(lengths, range(len(texts)), batch_size):
            batch = collate(tokens, rows, tokenizer.pad_token_id, "right")
            model.model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=False,
            )


def official_loop(model, tokenizer, texts: list[str]) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            states = model(ids, output_hidden_states=True).hidden_states
            out.append(torch.stack(states).mean(dim=2)[:, 0])
    return torch.stack(out, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model, tokenizer = interp.load_model("gemma-3-270m")
    texts = load_sentences(args.data, args.n)
    n_tokens = sum(len(tokenizer(t)["input_ids"]) for t in texts)
    per_k = 1000 / n_tokens
    print(f"machine: {describe()}")
    print(f"corpus: {len(texts)} UDHR sentences, {n_tokens} tokens (mean {n_tokens / len(texts):.1f})")

    plain_forward(model, tokenizer, texts[:16], args.batch_size)  # warm-up
    results = {
        "(a) plain batched forward": timed(
            lambda: plain_forward(model, tokenizer, texts, args.batch_size), args.repeats
        )
    }
    for backend in ("hf", "transformer_lens", "nnsight"):
        results[f"(b) interp.extract[{backend}]"] = timed(
            lambda b=backend: interp.extract(
                model, tokenizer, texts, backend=b, batch_size=args.batch_size, progress=False
            ),
            args.repeats,
        )
    results["(c) official-style loop"] = timed(lambda: official_loop(model, tokenizer, texts), 1)

    base = results["(a) plain batched forward"]
    official = results["(c) official-style loop"]
    print(f"\n{'method':34s} {'total s':>8s} {'s / 1k tok':>11s} {'vs (a)':>8s} {'(c) / this':>11s}")
    for name, seconds in results.items():
        print(f"{name:34s} {seconds:8.2f} {seconds * per_k:11.3f} {seconds / base:8.3f} {official / seconds:11.2f}")


if __name__ == "__main__":
    main()
