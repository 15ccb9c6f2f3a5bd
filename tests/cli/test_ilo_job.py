"""``interp ilo`` at scale (issue 16): resumable in small shards, a cache keyed by what changes the
numbers only (not the batch size), cached re-runs that never load the model, an ETA in tokens.

The model is a tiny random Llama (``ilo_worker.model``) put in place of ``load_model``; the kill
test runs the real command line in a subprocess and SIGKILLs it between shard commits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import ilo_worker  # noqa: E402

import interp.extraction.api  # noqa: E402
from interp.cli.ilo import run_ilo_job  # noqa: E402
from interp.models import loading  # noqa: E402

WORKER = Path(__file__).with_name("ilo_worker.py")
LANGS = ("eng_Latn", "fra_Latn", "deu_Latn", "spa_Latn")
N_ITEMS = 20  # 80 texts: 8 shards of 10


class Counting:
    """A forward hook counting the texts the model actually ran on."""

    def __init__(self):
        self.texts = 0

    def __call__(self, module, inputs, output):
        self.texts += output[0].shape[0] if isinstance(output, tuple) else output.shape[0]


class Loader:
    """Stands in for ``load_model``: returns the tiny model, counts calls, or refuses to load."""

    def __init__(self, refuse: bool = False):
        self.model, self.tok = ilo_worker.model()
        self.counter = Counting()
        self.model.model.layers[0].register_forward_hook(self.counter)
        self.refuse, self.calls = refuse, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.refuse:
            raise AssertionError("the model was loaded, but the activations were cached")
        return self.model, self.tok


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))  # never the developer's cache
    rows = [{"lang": lang, "id": f"s{j}", "text": f"{lang[:3]} sentence {j} " + "word " * (j % 7)}
            for lang in LANGS for j in range(N_ITEMS)]  # fmt: skip
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    return f"jsonl:{path}"


def _use(monkeypatch, loader: Loader) -> Loader:
    monkeypatch.setattr(loading, "load_model", loader)
    return loader


def _committed(store: Path) -> dict:
    try:
        return json.loads((store / "manifest.json").read_text())["committed"]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _stores(tmp_path: Path) -> list[Path]:
    root = tmp_path / "cache" / "activations"
    return sorted(root.iterdir()) if root.is_dir() else []


def _tables(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "ilo_table.csv")


def test_killed_run_resumes_losing_at_most_one_shard(corpus, tmp_path, monkeypatch):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    args = ["--data", corpus, "--out", str(tmp_path / "out"), "--shard-size", "10", "--batch-size", "4",
            "--null", "0", "--no-progress", "--no-figures"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(WORKER), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 180
    while not _stores(tmp_path) or len(_committed(_stores(tmp_path)[0])) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the job made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (store,) = _stores(tmp_path)
    done = _committed(store)
    assert 2 <= len(done) < 8, "the kill must land mid-run"
    assert not (tmp_path / "out" / "manifest.json").exists()  # nothing published by the killed run
    stamps = {key: os.stat(store / entry["file"]).st_mtime_ns for key, entry in done.items()}

    loader = _use(monkeypatch, Loader())
    manifest = run_ilo_job(
        data=corpus, out=tmp_path / "out", shard_size=10, batch_size=4, null=0, progress=False, figures=False
    )
    # the committed shards were kept: only the texts of the other shards were run again
    assert loader.counter.texts == 80 - 10 * len(done)
    final = _committed(store)
    assert {key: final[key] for key in done} == done and len(final) == 8
    assert {key: os.stat(store / done[key]["file"]).st_mtime_ns for key in done} == stamps
    assert manifest["activations_from"] == "extracted"

    clean = _use(monkeypatch, Loader())  # the same job in one go, in memory
    run_ilo_job(
        data=corpus,
        out=tmp_path / "clean",
        shard_size=10,
        batch_size=4,
        null=0,
        cache=False,
        progress=False,
        figures=False,
    )
    assert clean.counter.texts == 80
    resumed, reference = _tables(tmp_path / "out"), _tables(tmp_path / "clean")
    pd.testing.assert_frame_equal(resumed, reference, rtol=1e-9, atol=1e-12)


def test_batch_size_reuses_the_cache_and_a_cached_rerun_loads_no_model(corpus, tmp_path, monkeypatch):
    first = _use(monkeypatch, Loader())
    run_ilo_job(data=corpus, out=tmp_path / "a", batch_size=16, null=3, progress=False, figures=False)
    assert len(first.calls) == 1 and first.counter.texts == 80
    (store,) = _stores(tmp_path)
    stamp = os.stat(store / "manifest.json").st_mtime_ns
    # another batch size and shard size: the numbers do not change, so the cache is reused -- without the model
    _use(monkeypatch, Loader(refuse=True))
    manifest = run_ilo_job(
        data=corpus, out=tmp_path / "b", batch_size=8, shard_size=7, null=3, progress=False, figures=False
    )
    assert manifest["activations_from"] == "cache" and "load_model_s" not in manifest["timing"]
    assert manifest["timing"]["read_cache_s"] >= 0 and os.stat(store / "manifest.json").st_mtime_ns == stamp
    pd.testing.assert_frame_equal(_tables(tmp_path / "a"), _tables(tmp_path / "b"))
    # what changes the numbers is a new cache entry: the model is needed again
    for change in ({"max_length": 5}, {"layers": [0, 2]}, {"dtype": "bfloat16"}, {"pooling": "last"}):
        with pytest.raises(AssertionError, match="the model was loaded"):
            run_ilo_job(data=corpus, out=tmp_path / "c", null=0, progress=False, **change)
    assert len(_stores(tmp_path)) == 1


def test_flags_reach_the_model_and_the_extraction(corpus, tmp_path, monkeypatch):
    loader = _use(monkeypatch, Loader())
    manifest = run_ilo_job(data=corpus, out=tmp_path / "o", dtype="float32", max_length=4, shard_size=30,
                           null=0, progress=False, figures=False)  # fmt: skip
    assert loader.calls[0][1]["dtype"] == "float32"
    (store,) = _stores(tmp_path)
    stored = json.loads((store / "manifest.json").read_text())
    assert stored["fingerprint"]["max_length"] == 4 and stored["fingerprint"]["shard_size"] == 30
    assert [b - a for a, b in stored["shards"]] == [30, 30, 20]
    assert manifest["arguments"]["max_length"] == 4 and manifest["arguments"]["shard_size"] == 30


def test_no_cache_writes_no_store(corpus, tmp_path, monkeypatch):
    loader = _use(monkeypatch, Loader())
    manifest = run_ilo_job(data=corpus, out=tmp_path / "o", cache=False, null=0, progress=False, figures=False)
    assert loader.counter.texts == 80 and manifest["activation_cache"] is None and _stores(tmp_path) == []
    run_ilo_job(data=corpus, out=tmp_path / "o", cache=False, null=0, progress=False, figures=False)
    assert loader.counter.texts == 160  # nothing was cached


def test_bad_flags_are_clear(corpus, tmp_path):
    from interp.cli import main

    for flags, message in ((["--shard-size", "0"], "--shard-size must be a positive integer"),
                           (["--max-length", "0"], "--max-length must be a positive number"),
                           (["--batch-size", "-1"], "--batch-size must be a positive integer")):  # fmt: skip
        with pytest.raises(SystemExit, match=message):
            main(["ilo", "--data", corpus, "--out", str(tmp_path / "o"), *flags])
    with pytest.raises(SystemExit):  # argparse refuses an unknown dtype
        main(["ilo", "--data", corpus, "--dtype", "int8"])


class Bar:
    """Records what the extraction's progress bar was told."""

    made: list = []

    def __init__(self, total=None, unit="it", **kwargs):
        self.total, self.unit, self.done = total, unit, 0
        Bar.made.append(self)

    def update(self, n):
        self.done += n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_progress_counts_tokens_so_the_eta_holds(corpus, tmp_path, monkeypatch):
    loader = _use(monkeypatch, Loader())
    monkeypatch.setattr(interp.extraction.api, "tqdm", Bar)
    Bar.made.clear()
    run_ilo_job(data=corpus, out=tmp_path / "o", null=0, cache=False, figures=False)
    (bar,) = Bar.made
    from interp.data import load_parallel

    texts = load_parallel(corpus).flat()[0]
    tokens = sum(len(loader.tok(text)["input_ids"]) for text in texts)  # BOS included
    assert bar.unit == "tok" and bar.total == tokens == bar.done
