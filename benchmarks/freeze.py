"""Benchmark: cost of a fine-tuning step with and without the official freezing recipe,
and the freezing experiment end to end on the tiny offline configuration.

1. gemma-3-270m (embedded, offline), ``interp.freeze.finetune``: marginal seconds per optimizer
   step (a run of 1 + n steps minus a run of 1 step, over n; set-up and optimizer creation excluded)
   for a full fine-tune and for the official recipe (blocks 0..8 + embeddings + final norm + LM head
   frozen: no backward through the first 9 blocks, no optimizer state for them). Texts: UDHR-style French sentences,
   ``batch_size`` x ``max_length`` tokens.
2. ``run_experiment`` on a 12-block tiny Llama (what the notebook and CI run), wall time.

usage: python benchmarks/freeze.py [--steps 4] [--batch-size 4] [--max-length 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch
from machine import describe

import interp
from interp.data import load_parallel
from interp.freeze import FreezeSpec, finetune, run_experiment, train_heldout_split
from interp.models import byte_tokenizer, tiny_llama

TEXTS = [
    "Tous les êtres humains naissent libres et égaux en dignité et en droits. Ils sont doués de raison et de "
    "conscience et doivent agir les uns envers les autres dans un esprit de fraternité.",
    "Chacun peut se prévaloir de tous les droits et de toutes les libertés proclamés dans la présente Déclaration, "
    "sans distinction aucune, notamment de race, de couleur, de sexe, de langue, de religion.",
    "Tout individu a droit à la vie, à la liberté et à la sûreté de sa personne.",
    "Nul ne sera tenu en esclavage ni en servitude; l'esclavage et la traite des esclaves sont interdits sous "
    "toutes leurs formes.",
] * 4


def _step_times(model, tok, spec, args) -> tuple[float, int]:
    """Marginal seconds per optimizer step: (time of 1 + n steps - time of 1 step) / n."""
    elapsed = []
    for steps in (1, 1 + args.steps):
        tic = time.perf_counter()
        run = finetune(model, tok, TEXTS, steps=steps, batch_size=args.batch_size, max_length=args.max_length,
                       freeze=spec, inplace=True, progress=False)  # fmt: skip
        if args.device != "cpu":
            torch.cuda.synchronize()
        elapsed.append(time.perf_counter() - tic)
    return (elapsed[1] - elapsed[0]) / args.steps, run.n_trainable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"machine: {describe()}, device {args.device}")
    model, tok = interp.load_model(device=args.device)
    print(f"\n1. gemma-3-270m, one optimizer step (AdamW), batch {args.batch_size} x <= {args.max_length} tokens "
          "(inplace=True: the copy is not timed)")  # fmt: skip
    print("| condition | trainable params | s / step | vs full |\n|---|---|---|---|")
    full = None
    for name, spec in (("full fine-tune", None), ("official recipe (blocks 0-8 + emb + norm + head)",
                                                    FreezeSpec.official(8))):  # fmt: skip
        seconds, n_trainable = _step_times(model, tok, spec, args)
        full = full or seconds
        print(f"| {name} | {n_trainable / 1e6:.1f} M | {seconds:.2f} | {seconds / full:.2f}× |")
    del model

    tic = time.perf_counter()
    corpus = load_parallel("cldr", langs=["eng_Latn", "fra_Latn", "deu_Latn", "rus_Cyrl", "zho_Hans"]).head(40)
    train, held = train_heldout_split(corpus, "fra_Latn", 0.5)
    run_experiment(tiny_llama(n_layers=12, d_model=64), byte_tokenizer(), train, held, train_language="fra_Latn",
                   steps=15, lr=1e-3, batch_size=8, max_length=32, progress=False)  # fmt: skip
    print(f"\n2. run_experiment, tiny 12-block Llama, 5 languages x 20 held-out items, 15 steps, 3 conditions: "
          f"{time.perf_counter() - tic:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
