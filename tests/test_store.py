"""Acceptance: an extraction killed with SIGKILL mid-run resumes without
recomputing committed shards and ends bit-identical to an uninterrupted run;
corrupt shards are detected, never silently loaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import interp
from interp.extraction import ActivationStore, StoreError

WORKER = Path(__file__).with_name("store_worker.py")
N_SHARDS = 12  # 96 texts / shard_size 8


def _run_worker(store: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(store), *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )


def _committed(store: Path) -> dict:
    try:
        return json.loads((store / "manifest.json").read_text())["committed"]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_kill9_then_resume_is_bit_identical(tmp_path):
    interrupted, clean = tmp_path / "interrupted", tmp_path / "clean"
    proc = _run_worker(interrupted, "--slow")
    deadline = time.time() + 120
    while len(_committed(interrupted)) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "worker made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _committed(interrupted)
    assert 3 <= len(done) < N_SHARDS, "the kill must land mid-run"
    stats = {k: os.stat(interrupted / v["file"]) for k, v in done.items()}
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore(interrupted).load()

    resumed = _run_worker(interrupted)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()
    # only the missing shards were computed: 2 batches of 4 per 8-text shard
    assert f"forward passes: {2 * (N_SHARDS - len(done))}" in out.decode()
    for key, before in stats.items():
        after = os.stat(interrupted / done[key]["file"])
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    uninterrupted = _run_worker(clean)
    out, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err.decode()
    a, b = ActivationStore(interrupted).load(), ActivationStore(clean).load()
    assert a.tensor.shape == (4, 96, 64)
    assert torch.equal(a.tensor, b.tensor)
    assert a.ids == b.ids == list(range(96))


def test_corrupt_shard_detected_and_recomputed(llama, tok, tmp_path):
    texts = [f"text {i}" for i in range(10)]
    store = tmp_path / "s"
    first = interp.extract(llama, tok, texts, store=store, shard_size=4, progress=False)
    shard = store / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0xFF  # flip bits inside the tensor payload
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="shard 1 .* corrupt"):
        ActivationStore(store).load()
    with pytest.warns(UserWarning, match="shard 1 is corrupt"):
        again = interp.extract(llama, tok, texts, store=store, shard_size=4, progress=False)
    assert torch.equal(first.tensor, again.tensor)


def test_truncated_and_orphan_files(llama, tok, tmp_path):
    texts = [f"text {i}" for i in range(10)]
    store = tmp_path / "s"
    first = interp.extract(llama, tok, texts, store=store, shard_size=4, progress=False)
    shard = store / "shard-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:50])  # a half-written file
    (store / ".shard-00003.safetensors.tmp").write_bytes(b"garbage")  # an orphan temp file
    with pytest.raises(StoreError):
        ActivationStore(store).load()
    with pytest.warns(UserWarning, match="shard 2 is corrupt"):
        again = interp.extract(llama, tok, texts, store=store, shard_size=4, progress=False)
    assert torch.equal(first.tensor, again.tensor)


def test_store_refuses_a_different_extraction(llama, tok, tmp_path):
    store = tmp_path / "s"
    interp.extract(llama, tok, ["a", "b"], store=store, progress=False)
    with pytest.raises(StoreError, match="differs in: layers, pooling"):
        interp.extract(llama, tok, ["a", "b"], pooling="last", layers=[1], store=store, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not an activation store"):
        interp.extract(llama, tok, ["a"], store=tmp_path / "other", progress=False)


def test_store_roundtrip_none_pooling_and_layer_subset(llama, tok, tmp_path):
    texts = ["one", "two words", "three words here"]
    mem = interp.extract(llama, tok, texts, pooling="none", shard_size=2, progress=False, labels=["x", "y", "z"])
    disk = interp.extract(
        llama, tok, texts, pooling="none", store=tmp_path / "s", shard_size=2, progress=False, labels=["x", "y", "z"]
    )
    assert torch.equal(mem.tensor, disk.tensor) and torch.equal(mem.lengths, disk.lengths)
    assert disk.labels == ["x", "y", "z"]
    sub = ActivationStore(tmp_path / "s").load(layers=[4, 1])
    assert torch.equal(sub.tensor, mem.tensor[[4, 1]]) and sub.layers == [4, 1]
    assert torch.equal(sub.tokens(2), mem.tokens(2)[[4, 1]])
