"""Do cross-language neighbours share meaning beyond being translations?  (FLORES topics)

The ILO job's topic share counts a point's same-topic neighbours in other languages, translations
included; at the layers where ILO peaks most of those are translations, so the share alone cannot
say whether the *other* cross-language neighbours are topical or random. This script separates them.

For each hidden state of a finished ``interp ilo`` run (the activations are read back from the
run's cache, ``manifest.json:activation_cache``; no model is loaded) it takes every point's k
nearest neighbours (``interp.knn``, cosine, self excluded) and splits the (point, neighbour) pairs
into

* translations -- the same FLORES item in another language;
* other cross-language neighbours -- another item in another language;
* same-language neighbours -- another item in the same language;

and, for the last two, the share whose item has the point's topic, against its chance value: the
mean over those pairs of ``(items of the point's topic - 1) / (items - 1)`` (a neighbour drawn
uniformly among the other items). Topics are SIB-200's 7 labels of ``flores31.jsonl``.

usage: python benchmarks/ilo_flores_topics.py <ilo out dir> [--data ../shared/data/flores31.jsonl]
       [--csv out.csv]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe
from tqdm.auto import tqdm

from interp.data import load_parallel
from interp.extraction import ActivationStore
from interp.neighbors import knn


def topic_table(acts, corpus, k: int, metric: str, progress: bool = True) -> pd.DataFrame:
    """One row per hidden state: pair counts and same-topic shares with their chance values."""
    topic_of = dict(zip(corpus.ids, corpus.meta["topic"], strict=True))
    ids, langs = np.asarray(acts.ids), np.asarray(acts.labels)
    topics = np.asarray([topic_of[i] for i in acts.ids])
    per_topic = Counter(corpus.meta["topic"])
    chance = np.asarray([(per_topic[t] - 1) / (corpus.n_items - 1) for t in topics])
    rows = []
    for a, layer in enumerate(tqdm(acts.layers, desc="kNN per hidden state", disable=not progress)):
        indices = knn(acts.tensor[a], k=k, metric=metric)[0].numpy()
        p, q = np.repeat(np.arange(len(ids)), k), indices.reshape(-1)
        other_lang, same_item, same_topic = langs[p] != langs[q], ids[p] == ids[q], topics[p] == topics[q]
        row = {"layer": layer, "translation_pairs": int((other_lang & same_item).sum())}
        for name, pairs in (("cross_other", other_lang & ~same_item), ("same_language", ~other_lang)):
            row[f"{name}_pairs"] = int(pairs.sum())
            row[f"{name}_topic_share"] = float(same_topic[pairs].mean()) if pairs.any() else float("nan")
            row[f"{name}_chance"] = float(chance[p[pairs]].mean()) if pairs.any() else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="an `interp ilo` output folder (its manifest names the activation cache)")
    parser.add_argument("--data", default="../shared/data/flores31.jsonl")
    parser.add_argument("--csv", default=None, help="also write the table here")
    args = parser.parse_args()
    manifest = json.loads((Path(args.run) / "manifest.json").read_text())
    acts = ActivationStore(manifest["activation_cache"]).load()
    corpus = load_parallel(f"jsonl:{args.data}")
    settings = manifest["arguments"]
    print(f"machine: {describe()}")
    print(f"{acts.tensor.shape[1]} points, k={settings['k']}, metric={settings['metric']}")
    table = topic_table(acts, corpus, settings["k"], settings["metric"])
    pd.set_option("display.width", 200)
    print(table.round(3).to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
