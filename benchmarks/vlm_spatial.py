"""AdaptVis' findings measured on the toy spatial VLM (docs/results.md, "VLM: a toy LLaVA ..."; an experiment).

Trains (or loads from the cache) ``interp.vlm.spatial_vlm(variant)``, then on held-out scenes:

1. accuracy per split (iid test, held-out colour/shape combinations, held-out positions) and per
   relation, with Wilson 95 % intervals, against chance (1/4) and two image ablations (a blank
   image, and each question asked about another scene's image);
2. attention-to-object alignment of the last prompt token, per decoder block, for correct vs
   incorrect answers (mass in the boxes of both queried objects, pointing game, patch AUROC; mean ±
   95 % t-interval; the chance level of each metric), and the per-block AUROC of alignment at
   separating correct from incorrect answers;
   then, in scenes with distractors, accuracy by distractor condition and the attention mass on A,
   on the table and on distractors sharing A's colour or shape, correct vs incorrect;
3. accuracy as a function of the ScalingVis temperature α, and AdaptVis' confidence rule vs the best
   fixed α, both chosen on a validation part (20 %, ``random.seed(1)``, as the official code) of
   the pooled held-out scenes and reported on the rest; the official Controlled-A preset too;
4. the cost of AdaptVis: the official two full generations vs interp's cache-reusing one.

Figures go to ``docs/figures/`` (PNG), numbers to ``<out>/vlm_spatial.json``. Everything is seeded; the
model is cached, so a re-run only repeats the evaluation (a few minutes on one CPU core).

    python benchmarks/vlm_spatial.py [--variant full] [--n 400] [--out out/vlm_spatial]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from machine import describe  # noqa: E402
from PIL import Image  # noqa: E402

from interp.vlm import (  # noqa: E402
    SyntheticScene,
    adaptvis_generate,
    alignment_table,
    answer_scenes,
    block_curves,
    box_mask,
    choose_alpha,
    correctness_auroc,
    plot_alignment_curves,
    plot_correctness_auroc,
    plot_head_grid,
    plot_head_summary,
    plot_image_attention,
    plot_query_alignment,
    preset,
    scale_image_attention,
    spatial_scenes,
    spatial_vlm,
    trace_image_attention,
    trace_query_tokens,
)

SPLITS = ("test", "held_out_objects", "held_out_positions")
ALPHAS = (0.25, 0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0)
FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def accuracy_row(frame: pd.DataFrame) -> dict:
    k, n = int(frame["correct"].sum()), len(frame)
    low, high = wilson(k, n)
    return {"accuracy": k / n, "ci_low": low, "ci_high": high, "n": n}


def ablated(scenes: list[SyntheticScene], how: str) -> list[SyntheticScene]:
    """The same questions with the image blanked (background only) or taken from the next scene."""
    out = []
    for i, s in enumerate(scenes):
        image = Image.new("RGB", s.image.size, s.image.getpixel((0, 0))) if how == "blank" else scenes[
            (i + 1) % len(scenes)].image  # fmt: skip
        out.append(SyntheticScene(image, s.boxes, s.prompt, s.answer, s.relation, s.distractors, s.split))
    return out


def validation_split(n: int) -> tuple[list[int], list[int]]:
    """The official AdaptVis split: random.seed(1), sample 20 % as validation, the rest is test."""
    random.seed(1)
    val = sorted(random.sample(range(n), int(0.2 * n)))
    chosen = set(val)
    return val, [i for i in range(n) if i not in chosen]


def adaptvis_choice(by_alpha: dict[float, pd.DataFrame], conf: np.ndarray, rows, low, high, thr) -> np.ndarray:
    """Correctness of AdaptVis' answers on ``rows``: the library's rule on the confidence rounded as officially."""
    pick = [choose_alpha(round(float(conf[r]), 2), low, high, thr) for r in rows]
    return np.array([by_alpha[a]["correct"].to_numpy()[r] for a, r in zip(pick, rows, strict=True)])


def time_per_sample(fn, scenes, repeats: int = 3) -> float:
    fn(scenes[0])
    times = []
    for s in scenes:
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            fn(s)
            best = min(best, time.perf_counter() - start)
        times.append(best)
    return statistics.median(times)


OBJECTS = {
    "A": "the small object A",
    "table": "the table B",
    "confusable": "distractors sharing A's colour or shape",
}


def object_boxes(scene: SyntheticScene, which: str) -> list:
    """Boxes of one kind of object in a scene: ``A``, ``table`` or ``confusable`` distractors (may be empty)."""
    name_a, name_b = scene.names
    if which == "A":
        return [scene.boxes[name_a]]
    if which == "table":
        return [scene.boxes[name_b]]
    color, shape = name_a.split()
    return [box for name, box in scene.distractors.items() if name.split()[0] == color or name.split()[1] == shape]


def per_object_table(trace, scenes: list[SyntheticScene], correct: list[bool], which: str) -> pd.DataFrame:
    """Head-mean attention mass on one kind of object (samples that have one), with its chance level."""
    keep = [i for i, s in enumerate(scenes) if object_boxes(s, which)]
    masks = [box_mask(object_boxes(scenes[i], which), scenes[i].image.size, trace.geometries[i]) for i in keep]
    table = alignment_table(trace.patches[keep], masks, correct=[correct[i] for i in keep], heads="mean",
                            metrics=["mass"], blocks=trace.blocks)  # fmt: skip
    table["object"] = which
    return table


def savefig(fig, name: str) -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / name, dpi=110)
    plt.close(fig)
    size = (FIGURES / name).stat().st_size
    print(f"wrote docs/figures/{name} ({size / 1024:.0f} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="full")
    parser.add_argument("--n", type=int, default=400, help="scenes per held-out split")
    parser.add_argument("--out", default="out/vlm_spatial")
    parser.add_argument("--timing-scenes", type=int, default=20)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    print(describe())
    start = time.perf_counter()
    model, processor = spatial_vlm(args.variant)
    config, log = model.spatial_config, model.training_log
    print(f"model: {config}\n  trained in {log[-1]['seconds']:.0f} s ({len(log)} steps), loaded in "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    results: dict = {"machine": describe(), "config": {k: str(v) for k, v in vars(config).items()},
                     "train_seconds": log[-1]["seconds"]}  # fmt: skip
    scenes = {s: spatial_scenes(args.n, s, seed=1, size=config.scene_size) for s in SPLITS}

    # 1. accuracy ----------------------------------------------------------------------------------
    answers = pd.concat([answer_scenes(model, processor, scenes[s], progress=True) for s in SPLITS],
                        ignore_index=True)  # fmt: skip
    acc = {s: accuracy_row(answers[answers["split"] == s]) for s in SPLITS}
    by_relation = answers.groupby(["split", "relation"])["correct"].mean().unstack()
    controls = {}
    for how in ("blank", "shuffled"):
        ab = answer_scenes(model, processor, ablated(scenes["test"], how))
        controls[how] = accuracy_row(ab) | {"predictions": ab["prediction"].value_counts().to_dict()}
    print(pd.DataFrame(acc).T.round(3), "\n", by_relation.round(3), "\ncontrols:", controls)
    results["accuracy"] = acc
    results["accuracy_by_relation"] = by_relation.round(4).to_dict()
    results["controls"] = controls

    # 2. alignment of the last prompt token --------------------------------------------------------
    pooled = [s for split in SPLITS for s in scenes[split]]
    correct = answers["correct"].tolist()
    trace = trace_image_attention(model, processor, [s.image for s in pooled], [s.prompt for s in pooled],
                                  batch_size=32)  # fmt: skip
    masks = trace.box_masks([list(s.boxes.values()) for s in pooled])
    table = alignment_table(trace, masks, correct=correct, progress=True)
    table["split"] = [pooled[i].split for i in table["sample"]]
    metrics = ["mass", "pointing", "auroc"]
    curves = block_curves(table, metrics)
    sep = pd.concat([correctness_auroc(table, m) for m in metrics], ignore_index=True)
    print(curves.round(3).to_string(), "\n", sep.round(3).to_string())
    results["alignment_curves"] = curves.round(5).to_dict(orient="records")
    results["correctness_auroc"] = sep.round(5).to_dict(orient="records")
    heads = table[table["head"] != "mean"].groupby(["block", "head"])["mass"].mean()
    results["best_head_mass"] = {"block_head": list(map(int, heads.idxmax())), "mass": float(heads.max()),
                                 "chance": float(table["mass_chance"].mean())}  # fmt: skip
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), layout="constrained")
    axes = axes.ravel()
    titles = {"mass": "attention mass in the two boxes", "pointing": "pointing game (argmax in a box)",
              "auroc": "patch AUROC (box vs rest)"}  # fmt: skip
    for ax, metric in zip(axes, metrics, strict=False):
        plot_alignment_curves(curves, metric, ax=ax, title=titles[metric])
    plot_correctness_auroc(sep, ax=axes[3], title="does alignment separate correct / incorrect?")
    n_ok, n_bad = int(answers["correct"].sum()), int((~answers["correct"]).sum())
    fig.suptitle(
        f"Last prompt token's attention vs the queried objects' boxes (head mean; mean ± 95 % CI)\n"
        f"{n_ok} correct, {n_bad} incorrect answers, {len(SPLITS)} held-out splits pooled; dashed: chance",
        fontsize=11,
    )
    savefig(fig, "vlm_spatial_alignment.png")
    fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
    plot_head_summary(table, "mass", ax=ax)
    savefig(fig, "vlm_spatial_head_summary.png")

    # 2b. where wrong answers look: A, the table, distractors that share A's colour or shape -----------
    accuracy_by_distractors = {}
    for label, test in (("no distractor", lambda s: not s.distractors),
                        ("distractors, none confusable", lambda s: s.distractors and not object_boxes(s, "confusable")),
                        ("a confusable distractor", lambda s: bool(object_boxes(s, "confusable")))):  # fmt: skip
        rows = [i for i, s in enumerate(pooled) if test(s)]
        accuracy_by_distractors[label] = accuracy_row(answers.iloc[rows])
    print(pd.DataFrame(accuracy_by_distractors).T.round(3))
    results["accuracy_by_distractors"] = accuracy_by_distractors
    crowded = [i for i, s in enumerate(pooled) if s.distractors]
    sub = [pooled[i] for i in crowded]
    sub_trace = trace_image_attention(model, processor, [s.image for s in sub], [s.prompt for s in sub],
                                      batch_size=32, progress=False)  # fmt: skip
    objects = pd.concat([per_object_table(sub_trace, sub, [correct[i] for i in crowded], w) for w in OBJECTS])
    object_curves = pd.concat([block_curves(objects[objects["object"] == w], "mass").assign(object=w)
                               for w in OBJECTS], ignore_index=True)  # fmt: skip
    print(object_curves.round(3).to_string())
    results["object_curves"] = object_curves.round(5).to_dict(orient="records")
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), layout="constrained", sharey=True)
    for ax, (w, title) in zip(axes, OBJECTS.items(), strict=True):
        plot_alignment_curves(object_curves[object_curves["object"] == w], "mass", ax=ax, title=title)
        ax.set_ylabel("attention mass in the boxes" if w == "A" else "")
    fig.suptitle(f"Scenes with distractors ({len(sub)}): where the last prompt token looks, correct vs incorrect "
                 "(head mean, mean ± 95 % CI; dashed: chance)", fontsize=10)  # fmt: skip
    savefig(fig, "vlm_spatial_objects.png")

    # 3. ScalingVis α sweep and AdaptVis -----------------------------------------------------------
    by_alpha = {a: answer_scenes(model, processor, pooled, a, progress=True) for a in ALPHAS}
    sweep = pd.DataFrame([{"alpha": a, "split": s, **accuracy_row(f[f["split"] == s])}
                          for a, f in by_alpha.items() for s in SPLITS])  # fmt: skip
    conf = by_alpha[1.0]["confidence"].to_numpy()
    val, test = validation_split(len(pooled))
    acc_at = {a: float(by_alpha[a]["correct"].to_numpy()[test].mean()) for a in ALPHAS}
    val_at = {a: float(by_alpha[a]["correct"].to_numpy()[val].mean()) for a in ALPHAS}
    best_fixed = max(ALPHAS, key=lambda a: (val_at[a], -abs(math.log(a))))
    grid = [(lo, hi, t) for lo in ALPHAS if lo <= 1 for hi in ALPHAS if hi >= 1 for t in np.arange(0.3, 1.0, 0.05)]
    scored = [(adaptvis_choice(by_alpha, conf, val, lo, hi, round(t, 2)).mean(), lo, hi, round(t, 2))
              for lo, hi, t in grid]  # fmt: skip
    _, lo, hi, thr = max(scored, key=lambda x: (x[0], -x[3]))
    p = preset("Controlled_Images_A")
    adapt = {
        "baseline (α = 1)": acc_at[1.0],
        f"best fixed α on validation ({best_fixed:g})": acc_at[best_fixed],
        "best fixed α on test (oracle)": max(acc_at.values()),
        f"AdaptVis, chosen on validation ({lo:g} / {hi:g} / {thr:.2f})": float(
            adaptvis_choice(by_alpha, conf, test, lo, hi, thr).mean()),
        f"AdaptVis, official Controlled-A preset ({p.alpha_low:g} / {p.alpha_high:g} / {p.threshold:g})":
            float(adaptvis_choice(by_alpha, conf, test, p.alpha_low, p.alpha_high, p.threshold).mean()),
    }  # fmt: skip
    print(sweep.round(3).to_string(), "\n", json.dumps(adapt, indent=1))
    results["alpha_sweep"] = sweep.round(5).to_dict(orient="records")
    results["adaptvis"] = {"n_validation": len(val), "n_test": len(test), "accuracy": adapt,
                           "confidence_quartiles": np.quantile(conf, [0.25, 0.5, 0.75]).round(3).tolist()}  # fmt: skip
    # the same intervention seen in the attention: image share and mass in the boxes at a few α
    shares = []
    for a in (0.5, 1.0, 2.0):
        t = trace_image_attention(model, processor, [s.image for s in pooled[:200]], [s.prompt for s in pooled[:200]],
                                  alpha=a, batch_size=32, progress=False)  # fmt: skip
        tab = alignment_table(t, masks[:200], heads="mean", metrics=["mass", "image_share"])
        shares.append({"alpha": a, "image_share": float(tab["image_share"].mean()), "mass": float(tab["mass"].mean())})
    results["alpha_attention"] = shares
    print(pd.DataFrame(shares).round(4))
    fig, axes = plt.subplots(2, 1, figsize=(9, 7.5), layout="constrained", gridspec_kw={"height_ratios": [3, 2]})
    ax = axes[0]
    for split, frame in sweep.groupby("split", sort=False):
        line = ax.plot(frame["alpha"], frame["accuracy"], marker="o", markersize=4, label=split)[0]
        ax.fill_between(frame["alpha"], frame["ci_low"], frame["ci_high"], color=line.get_color(), alpha=0.15)
    ax.axhline(0.25, color="0.35", linestyle="--", label="chance (1/4)")
    ax.axvline(1.0, color="0.6", linewidth=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(ALPHAS, [f"{a:g}" for a in ALPHAS])
    ax.set_xlabel("ScalingVis α (last prompt row's image-attention logits × α; < 1 smooths, > 1 sharpens)", fontsize=9)
    ax.set_ylabel("accuracy (95 % Wilson CI)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(f"Accuracy vs α, per held-out split ({args.n} scenes each)", fontsize=10)
    ax = axes[1]
    names = list(adapt)
    ax.barh(range(len(names)), [adapt[k] for k in names], color=["0.6", "C0", "C0", "C3", "C3"])
    for i, k in enumerate(names):
        ax.text(adapt[k] + 0.005, i, f"{adapt[k]:.3f}", va="center", fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.25, color="0.35", linestyle="--")
    lo_x = max(0.0, min(adapt.values()) - 0.1)
    ax.set_xlim(lo_x, min(1.0, max(adapt.values()) + 0.08))
    ax.set_xlabel(f"accuracy on the {len(test)} test scenes (80 %)")
    ax.set_title("AdaptVis vs fixed α (α, thresholds chosen on the 20 % validation part; pooled splits)", fontsize=10)
    savefig(fig, "vlm_spatial_alpha.png")

    # 4. cost: official two generations vs interp's cache reuse ------------------------------------
    timing = pooled[: args.timing_scenes]
    new = 8  # a limit: every method stops at <eos> (after the one-word answer), as the official runs do

    def greedy(s):
        inputs = processor(images=s.image, text=s.prompt, return_tensors="pt")
        with torch.no_grad():
            model.generate(**inputs, do_sample=False, max_new_tokens=new)

    def official(s):
        greedy(s)
        inputs = processor(images=s.image, text=s.prompt, return_tensors="pt")
        with torch.no_grad(), scale_image_attention(model, p.alpha_high):
            model.generate(**inputs, do_sample=False, max_new_tokens=new)

    def ours(s):
        adaptvis_generate(model, processor, s.image, s.prompt, p.alpha_low, p.alpha_high, p.threshold,
                          max_new_tokens=new)  # fmt: skip

    cost = {name: time_per_sample(fn, timing) for name, fn in
            (("greedy generation", greedy), ("AdaptVis, official (two generations)", official),
             ("AdaptVis, interp (cache reuse)", ours))}  # fmt: skip
    results["cost_seconds_per_sample"] = cost | {"new_tokens": new, "scenes": len(timing)}
    print(json.dumps(cost, indent=1))

    # example figures: one correct and one incorrect answer, every head; which tokens look where ------------
    for label, want in (("correct", True), ("incorrect", False)):
        i = next(j for j in range(len(pooled)) if correct[j] == want)
        s = pooled[i]
        fig = plot_head_grid(trace, i, image=s.image, boxes=s.boxes, blocks="all", width=8)
        fig.suptitle(f"{label} answer ({answers['prediction'][i]!r}, gold {s.answer!r}): {s.names[0]} in relation to "
                     f"{s.names[1]} -- blocks × heads, last prompt token", fontsize=9)  # fmt: skip
        savefig(fig, f"vlm_spatial_heads_{label}.png")
    s = pooled[0]
    q = trace_query_tokens(model, processor, s.image, s.prompt)
    qtable = alignment_table(q, [masks[0]] * len(q), heads="mean", metrics=["mass"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.6), layout="constrained", gridspec_kw={"width_ratios": [1.1, 1]})
    plot_query_alignment(qtable, q.query_tokens, ax=axes[0])
    best = int(qtable.groupby("block")["mass"].mean().idxmax())
    plot_image_attention(trace.block(best)[0].mean(0), s.image, trace.geometries[0], s.boxes, ax=axes[1],
                         title=f"last token ':' , block {best}, head mean")  # fmt: skip
    savefig(fig, "vlm_spatial_query_tokens.png")

    (out / "vlm_spatial.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {out / 'vlm_spatial.json'}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
