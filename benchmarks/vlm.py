"""Cost of AdaptVis / ScalingVis / tracing relative to plain greedy generation (a benchmark, not a test).

A random LLaVA with the real LLaVA-1.5 geometry (336 px, 576 image tokens) and a
small Llama text model; the eos token is disabled so every run generates exactly
``--new`` tokens. Every case starts from the PIL image and the prompt string (the
processor runs in each, as it does inside ``adaptvis_generate``). Times are medians
over ``--repeats`` runs after one warm-up.

    python benchmarks/vlm.py [--layers 8] [--width 512] [--new 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import describe

from interp.models import tiny_llava, tiny_llava_processor
from interp.vlm import (
    adaptvis_generate,
    scale_image_attention,
    scalingvis_generate,
    synthetic_scene,
    trace_image_attention,
)


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--new", type=int, default=20, help="new tokens per generation")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = tiny_llava(n_layers=args.layers, d_model=args.width, n_heads=args.heads, image_size=336)
    model.generation_config.eos_token_id = None  # fixed-length generations
    proc = tiny_llava_processor(336)
    scene = synthetic_scene("left")

    def process():
        return proc(images=scene.image, text=scene.prompt, return_tensors="pt")

    inputs = process()
    n_prompt = inputs["input_ids"].shape[1]
    kw = dict(do_sample=False, max_new_tokens=args.new, min_new_tokens=args.new)

    def greedy():
        with torch.no_grad():
            return model.generate(**process(), **kw)

    def official_adaptvis():  # two full generations: unscaled (for the confidence), then scaled
        with torch.no_grad():
            model.generate(**process(), **kw)
            with scale_image_attention(model, 0.5):
                return model.generate(**process(), **kw)

    def ours():
        return adaptvis_generate(model, proc, scene.image, scene.prompt, 0.5, 1.5, 1.0, max_new_tokens=args.new)

    def scalingvis():
        return scalingvis_generate(model, proc, scene.image, scene.prompt, 0.5, max_new_tokens=args.new)

    def forward():
        with torch.no_grad():
            return model(**process())

    eager = tiny_llava(
        n_layers=args.layers, d_model=args.width, n_heads=args.heads, image_size=336, attn_implementation="eager"
    )

    def eager_attentions():
        with torch.no_grad():
            return eager(**process(), output_attentions=True)

    def trace():
        return trace_image_attention(model, proc, scene.image, scene.prompt, progress=False)

    assert len(ours().tokens) == args.new == greedy().shape[1] - n_prompt
    base = median_time(greedy, args.repeats)
    rows = [("greedy generate (HF), 1 pass", base)]
    rows.append(("AdaptVis official (2 generations)", median_time(official_adaptvis, args.repeats)))
    rows.append(("AdaptVis interp (cache reuse)", median_time(ours, args.repeats)))
    rows.append(("ScalingVis interp", median_time(scalingvis, args.repeats)))
    fwd = median_time(forward, args.repeats)
    rows.append(("forward, SDPA (prompt only)", fwd))
    rows.append(("  of which the processor (PIL resize etc.)", median_time(process, args.repeats)))
    rows.append(("forward, eager output_attentions", median_time(eager_attentions, args.repeats)))
    rows.append(("trace_image_attention (all layers)", median_time(trace, args.repeats)))
    print(f"# {describe()}")
    print(
        f"# LLaVA geometry 336/14 (576 image tokens), text: {args.layers} layers × d={args.width}, "
        f"{args.heads} heads; prompt {n_prompt} tokens, {args.new} new tokens"
    )
    print(f"{'case':40s} {'seconds':>9s} {'× greedy':>9s} {'× forward':>9s}")
    for name, t in rows:
        print(f"{name:40s} {t:9.3f} {t / base:9.2f} {t / fwd:9.2f}")


if __name__ == "__main__":
    main()
