"""Acceptance: an extraction killed with SIGKILL mid-run resumes without
recomputing committed shards and ends bit-identical to an uninterrupted run;
corrupt shards are detected, never silently loaded."""

from __future__ import annotations

import errno
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
from interp.extraction.store import StoreLocked
from interp.models import byte_tokenizer, tiny_llama

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
    assert torch.equal(sub.states(2), mem.states(2)[[4, 1]])


# ----------------------------------------------------------------------------------------------------------------
# crash at every write step, concurrent writers, full disk, tokenisation drift (issue 13)

sys.path.insert(0, str(WORKER.parent))
import store_worker  # noqa: E402

KILL_TEXTS = 32  # 4 shards of 8


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the worker's extraction, run once without a kill."""
    store = tmp_path_factory.mktemp("clean") / "s"
    net, tok = store_worker.model()
    torch.set_num_threads(1)
    try:
        acts = interp.extract(net, tok, store_worker.corpus(KILL_TEXTS), batch_size=4, shard_size=8, store=store,
                              progress=False)  # fmt: skip
    finally:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    return acts, json.loads((store / "manifest.json").read_text())


@pytest.mark.parametrize("step", store_worker.STEPS)
def test_kill9_at_every_write_step_resumes_bit_identical(tmp_path, uninterrupted, step):
    store = tmp_path / "s"
    shard = 0 if step == "create-tmp" else 1
    proc = _run_worker(store, "--texts", str(KILL_TEXTS), "--kill-at", f"{step}:{shard}")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    expected_committed = {"create-tmp": 0, "before-shard": 1, "shard-tmp": 1, "shard-renamed": 1,
                          "manifest-tmp": 1, "manifest-renamed": 2}[step]  # fmt: skip
    assert len(_committed(store)) == expected_committed
    if expected_committed < 4:
        with pytest.raises(StoreError):
            ActivationStore(store).load()
    reference, reference_manifest = uninterrupted
    net, tok = store_worker.model()
    resumed = interp.extract(net, tok, store_worker.corpus(KILL_TEXTS), batch_size=4, shard_size=8, store=store,
                             progress=False)  # fmt: skip
    assert torch.equal(resumed.tensor, reference.tensor) and resumed.ids == reference.ids
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["committed"] == reference_manifest["committed"]  # same files, same SHA-256
    assert manifest["fingerprint"] == reference_manifest["fingerprint"] and manifest["complete"]
    assert sorted(os.listdir(store)) == [".lock", "manifest.json", *(f"shard-{i:05d}.safetensors" for i in range(4))]


def test_two_concurrent_writers_one_proceeds(tmp_path, uninterrupted):
    store = tmp_path / "s"
    procs = [_run_worker(store, "--slow", "--texts", str(KILL_TEXTS)) for _ in range(2)]
    results = [(p, *p.communicate(timeout=300)) for p in procs]
    winners = [(p, out) for p, out, _ in results if p.returncode == 0]
    losers = [(p, err.decode()) for p, _, err in results if p.returncode != 0]
    assert len(winners) == 1 and len(losers) == 1, [err.decode()[-400:] for _, _, err in results]
    (winner, out), (_, err) = winners[0], losers[0]
    assert f"is locked by PID {winner.pid}" in err and "StoreLocked" in err, err[-600:]
    assert "forward passes: 8" in out.decode()  # the winner did all the work, once
    assert torch.equal(ActivationStore(store).load().tensor, uninterrupted[0].tensor)


def test_second_writer_in_the_same_process_is_refused(llama, tok, tmp_path):
    store = ActivationStore(tmp_path / "s")
    header = {"fingerprint": {"x": 1}, "shards": [[0, 1]], "layers": [0], "ids": [0], "labels": None,
              "pooling": "mean", "model_name": "m"}  # fmt: skip
    with store.writing(header) as done:
        assert done == set()
        with pytest.raises(StoreLocked, match=rf"locked by PID {os.getpid()}\b"):
            interp.extract(llama, tok, ["a"], store=store.path, progress=False)
    assert (store.path / "manifest.json").is_file()  # the refused call took nothing away


def test_lock_is_released_on_error_and_a_failed_fresh_store_leaves_nothing(llama, tok, tmp_path):
    store = tmp_path / "new" / "s"
    with pytest.raises(TypeError):
        interp.extract(llama, tok, ["a", "b"], store=store, progress=False, ids=[object(), 1])
    assert not store.exists()
    bad_forward = _Boom(after=1)
    handle = llama.model.layers[0].register_forward_hook(bad_forward)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            interp.extract(llama, tok, ["a", "b", "c"], store=store, shard_size=1, batch_size=1, progress=False)
    finally:
        handle.remove()
    assert len(_committed(store)) == 1  # one shard committed before the failure: the store stays, unlocked
    again = interp.extract(llama, tok, ["a", "b", "c"], store=store, shard_size=1, batch_size=1, progress=False)
    plain = interp.extract(llama, tok, ["a", "b", "c"], batch_size=1, progress=False)
    assert torch.equal(again.tensor, plain.tensor)


class _Boom:
    def __init__(self, after: int):
        self.after, self.calls = after, 0

    def __call__(self, module, inputs, output):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("boom")


def _tokenizer_without_bos():
    from tokenizers import processors

    other = byte_tokenizer()
    other.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    return other


def test_resume_with_a_differently_tokenising_tokenizer_is_refused(llama, tok, tmp_path):
    texts = [f"text number {i}" for i in range(6)]
    other = _tokenizer_without_bos()
    other.padding_side = tok.padding_side  # (the fingerprint records the padding side too: only tokens differ)
    assert (type(other), other.name_or_path, len(other)) == (type(tok), tok.name_or_path, len(tok))
    assert other(texts[0])["input_ids"] != tok(texts[0])["input_ids"]  # the same on paper, not in fact
    store = tmp_path / "s"
    interp.extract(llama, tok, texts, store=store, shard_size=2, progress=False)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["committed"].pop("2")  # as if interrupted before the last shard
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"differs in: tokens \(the tokenizer gives different token ids"):
        interp.extract(llama, other, texts, store=store, shard_size=2, progress=False)
    resumed = interp.extract(llama, tok, texts, store=store, shard_size=2, progress=False)
    assert torch.equal(resumed.tensor, interp.extract(llama, tok, texts, shard_size=2, progress=False).tensor)


def test_store_written_before_the_full_fingerprint_resumes_on_its_sampled_digest(tok, tmp_path):
    from interp.extraction.fingerprint import legacy_model_digest

    texts = ["one", "two", "three"]
    net = tiny_llama(n_layers=2, d_model=32, seed=0)
    store = tmp_path / "s"
    first = interp.extract(net, tok, texts, store=store, shard_size=1, progress=False)
    manifest = json.loads((store / "manifest.json").read_text())
    fingerprint = manifest["fingerprint"]
    for key in ("weights", "tokens", "attn_implementation", "device", "matmul_precision"):
        fingerprint.pop(key)  # what the earlier version did not record
    fingerprint["model_digest"] = legacy_model_digest(net)
    manifest["committed"].pop("2")
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"differs in: model_digest \(model weights\)"):
        interp.extract(tiny_llama(n_layers=2, d_model=32, seed=1), tok, texts, store=store, shard_size=1,
                       progress=False)  # fmt: skip
    again = interp.extract(net, tok, texts, store=store, shard_size=1, progress=False)
    assert torch.equal(again.tensor, first.tensor)


def test_weights_digest_sees_every_weight(tok):
    from interp.extraction.fingerprint import model_digest

    net = tiny_llama(n_layers=2, d_model=32, seed=0)
    before = model_digest(net)
    weight = net.model.layers[1].mlp.down_proj.weight
    with torch.no_grad():
        a, b = weight[3, 5].clone(), weight[7, 2].clone()
        weight[3, 5], weight[7, 2] = b, a  # same sum, positions the old sampled digest skipped
        assert model_digest(net) != before
        weight[3, 5], weight[7, 2] = a, b
        assert model_digest(net) == before
        weight[0, 0] = torch.nextafter(weight[0, 0], torch.tensor(1.0))  # one ulp
        assert model_digest(net) != before


def test_swapped_shard_files_are_detected_and_recomputed(llama, tok, tmp_path):
    texts = [f"text {i}" for i in range(6)]
    store = tmp_path / "s"
    first = interp.extract(llama, tok, texts, store=store, shard_size=2, progress=False)
    a, b = store / "shard-00000.safetensors", store / "shard-00001.safetensors"
    tmp = store / "swap"
    a.rename(tmp), b.rename(a), tmp.rename(b)  # both valid safetensors files of the right shape
    with pytest.raises(StoreError, match="shard 0 .* missing or corrupt"):
        ActivationStore(store).load()
    with pytest.warns(UserWarning, match="shard 0 is corrupt"):
        again = interp.extract(llama, tok, texts, store=store, shard_size=2, progress=False)
    assert torch.equal(again.tensor, first.tensor)


def _assert_consistent_after_disk_full(store: Path, n_committed: int) -> None:
    manifest = json.loads((store / "manifest.json").read_text())
    assert len(manifest["committed"]) == n_committed and not manifest["complete"]
    assert not [name for name in os.listdir(store) if name.endswith(".tmp")], os.listdir(store)
    assert ActivationStore(store).progress() == (n_committed, len(manifest["shards"]))


@pytest.mark.parametrize("where", ["shard", "manifest"])
def test_disk_full_is_reported_and_resumable(llama, tok, tmp_path, monkeypatch, where):
    from interp.extraction import store as store_module

    texts = [f"text {i}" for i in range(8)]
    store = tmp_path / "s"
    full = _FullAfter(2, store_module._save_shard if where == "shard" else store_module._write_json_atomic)
    monkeypatch.setattr(store_module, "_save_shard" if where == "shard" else "_write_json_atomic", full)
    with pytest.raises(StoreError, match="no space left on the device .* while writing shard 2; .* resume"):
        interp.extract(llama, tok, texts, store=store, shard_size=2, progress=False)
    monkeypatch.undo()
    _assert_consistent_after_disk_full(store, 2)
    resumed = interp.extract(llama, tok, texts, store=store, shard_size=2, progress=False)
    assert torch.equal(resumed.tensor, interp.extract(llama, tok, texts, shard_size=2, progress=False).tensor)


class _FullAfter:
    """Stand-in for a store write function: works ``n_ok`` times (the first manifest write aside), then ENOSPC."""

    def __init__(self, n_ok: int, real):
        self.n_ok, self.real, self.calls = n_ok, real, 0

    def __call__(self, first, second):
        path, payload = (first, second) if isinstance(first, Path) else (second, first)  # json: (path, payload)
        if path.name == "manifest.json" and not payload["committed"]:
            return self.real(first, second)  # the store's creation
        self.calls += 1
        if self.calls > self.n_ok:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return self.real(first, second)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 64 KiB tmpfs (needs root and mount rights; skipped where they are missing)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_on_a_real_tmpfs(llama, tok, small_tmpfs):
    texts = [f"text {i}" for i in range(40)]  # 5 hidden states x 4 x 64 float32 = 5 KiB per 4-text shard
    store = small_tmpfs / "s"
    with pytest.raises(StoreError, match="no space left on the device"):
        interp.extract(llama, tok, texts, store=store, shard_size=4, progress=False)
    committed = len(_committed(store))
    assert 1 <= committed < 10
    _assert_consistent_after_disk_full(store, committed)
    subprocess.run(["mount", "-o", "remount,size=1m", str(small_tmpfs)], check=True)
    resumed = interp.extract(llama, tok, texts, store=store, shard_size=4, progress=False)
    assert torch.equal(resumed.tensor, interp.extract(llama, tok, texts, shard_size=4, progress=False).tensor)


# batch size is not part of a store's identity (issue 16)


def test_resume_with_another_batch_size_keeps_committed_shards(llama, tok, tmp_path):
    """A run stopped after 2 of 4 shards (batch size 4) resumes with batch size 1: the 2 committed
    shards are reused untouched, each shard records the batch size that wrote it, and the result
    matches an uninterrupted batch-1 run to float32 rounding (and a float64 per-text reference)."""
    texts = [f"text {i} " + "word " * (i % 5) for i in range(8)]
    store = tmp_path / "s"
    stop = _Boom(after=2)  # one batch per 2-text shard: shards 0 and 1 commit, the third forward fails
    handle = llama.model.layers[0].register_forward_hook(stop)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            interp.extract(llama, tok, texts, batch_size=4, shard_size=2, store=store, progress=False)
    finally:
        handle.remove()
    first = _committed(store)
    assert sorted(first) == ["0", "1"] and all(entry["batch_size"] == 4 for entry in first.values())
    files = {key: os.stat(store / entry["file"]).st_mtime_ns for key, entry in first.items()}
    resumed = interp.extract(llama, tok, texts, batch_size=1, shard_size=2, store=store, progress=False)
    final = _committed(store)
    assert {key: final[key] for key in first} == first  # same files, same hashes: not recomputed
    assert {key: os.stat(store / final[key]["file"]).st_mtime_ns for key in first} == files
    assert [final[str(i)]["batch_size"] for i in range(4)] == [4, 4, 1, 1]
    plain = interp.extract(llama, tok, texts, batch_size=1, progress=False)
    assert torch.allclose(resumed.tensor, plain.tensor, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # independent reference: each text alone, mean over its tokens, float64
        for i, text in enumerate(texts):
            hidden = llama(**tok(text, return_tensors="pt"), output_hidden_states=True).hidden_states
            expected = torch.stack([h[0].double().mean(0) for h in hidden])
            assert torch.allclose(resumed.tensor[:, i].double(), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(StoreError, match=r"differs in: shard_size"):  # shard size still fixes the layout
        interp.extract(llama, tok, texts, batch_size=1, shard_size=4, store=store, progress=False)
