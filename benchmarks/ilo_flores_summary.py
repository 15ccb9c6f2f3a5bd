"""Summarise an ``interp ilo`` output folder for docs/results.md: the numbers a reader asks for.

Reads ``ilo_table.csv``, ``ilo_by_layer.csv`` and ``manifest.json`` of a run (the paper-scale one:
``interp ilo --data jsonl:../shared/data/flores31.jsonl``) and prints

* the layers where mean ILO, translation share and topic share peak, and each at the peak;
* ILO per family at the peak layer (mean over the family's languages) and the languages that stay
  fragmented (lowest ILO at the peak layer, and lowest mean ILO over the middle layers);
* how ILO, the translation share and the topic share relate: Spearman correlation across layers
  (means over languages) and across languages (at the peak layer), and the shares against chance;
* the run's timing (load / extract / kNN / scoring seconds, peak RSS).

With ``--figures <dir>`` it copies the run's PNGs there (checking each is under 300 KB).

usage: python benchmarks/ilo_flores_summary.py <out dir> [--figures docs/figures --prefix ilo_flores31_]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

MIDDLE = range(4, 14)  # hidden states 4..13: where mean ILO is high on FLORES (see docs/results.md)


def summarise(out: Path) -> dict:
    table = pd.read_csv(out / "ilo_table.csv")
    by_layer = pd.read_csv(out / "ilo_by_layer.csv", index_col="layer")
    manifest = json.loads((out / "manifest.json").read_text())
    peak = int(by_layer["ilo_mean"].idxmax())
    at_peak = table[table.layer == peak].set_index("language")
    middle = table[table.layer.isin(MIDDLE)].groupby("language")["ilo"].mean().sort_values()
    families = at_peak.groupby("family")["ilo"].agg(["mean", "min", "max", "count"]).sort_values("mean")
    shares = {}
    for column in ("translation_share", "topic_share"):
        if column in by_layer:
            shares[column] = {
                "peak_layer": int(by_layer[column].idxmax()),
                "peak": float(by_layer[column].max()),
                "at_ilo_peak": float(by_layer.loc[peak, column]),
                "chance": float(by_layer[f"{column}_chance"].mean()),
                "spearman_layers_vs_ilo": float(by_layer["ilo_mean"].corr(by_layer[column], method="spearman")),
                "spearman_languages_vs_ilo_at_peak": float(at_peak["ilo"].corr(at_peak[column], method="spearman")),
            }
    return {
        "peak_layer": peak,
        "peak_mean_ilo": float(by_layer.loc[peak, "ilo_mean"]),
        "null_mean_at_peak": float(by_layer.loc[peak, "null_mean"]) if "null_mean" in by_layer else None,
        "by_layer": by_layer,
        "families_at_peak": families,
        "lowest_at_peak": at_peak["ilo"].sort_values().head(6),
        "lowest_middle_mean": middle.head(6),
        "highest_middle_mean": middle.tail(6),
        "shares": shares,
        "timing": manifest["timing"],
        "corpus": manifest["corpus"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--figures", type=Path, default=None)
    parser.add_argument("--prefix", default="ilo_flores31_")
    args = parser.parse_args()
    s = summarise(args.out)
    pd.set_option("display.width", 200)
    print(f"corpus: {s['corpus']}")
    print(f"peak: layer {s['peak_layer']}, mean ILO {s['peak_mean_ilo']:.3f} (null {s['null_mean_at_peak']})")
    wanted = ("ilo_mean", "ilo_min", "null_mean", "ilo_share_of_null", "translation_share",
              "translation_share_chance", "topic_share", "topic_share_chance")  # fmt: skip
    columns = [c for c in wanted if c in s["by_layer"]]
    print(s["by_layer"][columns].round(3).to_string())
    print("\nfamilies at the peak layer:\n" + s["families_at_peak"].round(3).to_string())
    print("\nlowest ILO at the peak layer:\n" + s["lowest_at_peak"].round(3).to_string())
    print(f"\nmean ILO over hidden states {MIDDLE.start}..{MIDDLE.stop - 1}, lowest:\n"
          + s["lowest_middle_mean"].round(3).to_string())  # fmt: skip
    print("highest:\n" + s["highest_middle_mean"].round(3).to_string())
    print("\nshares: " + json.dumps(s["shares"], indent=1))
    print("timing: " + json.dumps(s["timing"], indent=1))
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        for png in sorted(args.out.glob("*.png")):
            size = png.stat().st_size
            if size > 300_000:
                raise SystemExit(f"{png.name} is {size / 1e3:.0f} KB (> 300 KB); save it smaller")
            shutil.copyfile(png, args.figures / f"{args.prefix}{png.name}")
            print(f"copied {png.name} ({size / 1e3:.0f} KB)")


if __name__ == "__main__":
    main()
