"""The fused kNN kernel compiles for real GPUs (sm_80, sm_90) -- checked without one.

CPU tests run the kernel in the Triton interpreter, which accepts code the
compiler rejects and cannot see registers or shared memory. This lowers every
kind of launch ``interp.knn`` makes to a cubin with the ptxas shipped in the
Triton wheel and checks the resource report (``benchmarks/triton_aot.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _nvidia_tools_present() -> bool:
    try:
        import triton
    except ImportError:
        return False
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    return (tools / "ptxas").exists() and (tools / "cuobjdump").exists()


@pytest.mark.skipif(not _nvidia_tools_present(), reason="the Triton wheel has no NVIDIA ptxas/cuobjdump here")
def test_kernel_compiles_for_sm80_and_sm90_within_resources():
    env = os.environ | {"TRITON_INTERPRET": "0", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "triton_aot.py"), "--quick", "--check", "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    reports = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert {(r["arch"], r["precision"]) for r in reports} == {
        (arch, precision) for arch in ("sm_80", "sm_90") for precision in ("ieee", "tf32", "bf16")
    }
    assert {r["KP"] for r in reports} == {1, 128}
    for report in reports:
        assert report["problems"] == [], report
        assert report["int32_offsets"] == 0 and report["shared_bytes"] <= report["shared_limit"], report
