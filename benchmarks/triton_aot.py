"""Compile the fused kNN kernel for NVIDIA GPUs ahead of time -- no GPU needed.

The Triton interpreter (``TRITON_INTERPRET=1``, what CPU tests run) executes
the kernel with numpy: it is permissive where the compiler is not (it accepted
a plain Python global inside the kernel, which the compiler rejects) and it
says nothing about registers or shared memory. This script lowers every launch
that ``interp.knn`` can make through the real pipeline (TTIR -> TTGIR -> LLVM
-> PTX -> cubin, with the ptxas that ships in the Triton wheel) for sm_80
(A100) and sm_90 (H100), and reads the cubin's resource usage with cuobjdump.

``--check`` fails unless every launch compiles, spills at most
``SPILL_BUDGET`` bytes (ptxas keeps sm_80 at 128 registers for occupancy and
parks a few bytes in L1 for 5 of 60 launches), fits the architecture's shared
memory, and computes every address offset in int64 (``B·N·D`` passes 2**31 at
80 layers × 31k × 1k).
What it cannot show: speed, and the runtime behaviour of the compiled code.

Usage:  python benchmarks/triton_aot.py [--quick] [--check] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ["TRITON_INTERPRET"] = "0"  # before triton is imported: compile, not interpret
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from interp.neighbors.triton_kernel import MAX_CANDIDATES, _knn_kernel, launch_config  # noqa: E402

SPILL_BUDGET = 32  # bytes of stack frame per thread
ARCHS = {80: 163 * 1024, 90: 227 * 1024}  # compute capability -> shared memory per block (bytes)
POINTERS = ["q_ptr", "p_ptr", "qn_ptr", "pn_ptr", "out_ptr"]
INTS = ["M", "N", "D", "stride_qb", "stride_qm", "stride_pb", "stride_pn", "stride_ob", "stride_om"]
ALIGNED = POINTERS + ["D", "stride_qb", "stride_qm", "stride_pb", "stride_pn"]  # torch buffers, D % 16 == 0


def compile_launch(arch: int, kc: int, metric: str, exclude_self: bool, precision: str) -> dict:
    """Compile the launch ``interp.knn`` makes for these arguments; return its resource report."""
    constexprs, options = launch_config(kc, metric, exclude_self, precision, compiled=True)
    names = _knn_kernel.arg_names
    signature = {name: "*fp32" for name in POINTERS[:4]} | {"out_ptr": "*i64"}
    signature |= {name: "i32" for name in INTS} | {name: "constexpr" for name in constexprs}
    signature = {name: signature[name] for name in names}
    attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in ALIGNED}
    start = time.perf_counter()
    kernel = triton.compile(
        ASTSource(_knn_kernel, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32), options=options
    )
    seconds = time.perf_counter() - start
    registers, stack = _resource_usage(kernel.asm["cubin"])
    narrow = [line for line in kernel.asm["ttir"].splitlines() if "tt.addptr" in line and not _i64_offset(line)]
    return {
        "arch": f"sm_{arch}", "precision": precision, "metric": metric, "exclude_self": exclude_self,
        "kc": kc, "KP": constexprs["KP"], "tiles": f"{constexprs['BM']}x{constexprs['BN']}x{constexprs['BD']}",
        "warps": options["num_warps"], "registers": registers, "spill_bytes": stack,
        "shared_bytes": kernel.metadata.shared, "shared_limit": ARCHS[arch], "int32_offsets": len(narrow),
        "compile_s": round(seconds, 2),
    }  # fmt: skip


def _i64_offset(addptr_line: str) -> bool:
    """True when a TTIR ``tt.addptr`` line adds an int64 offset (``i64`` or ``tensor<...xi64>``)."""
    offset_type = addptr_line.split(" loc(")[0].rsplit(", ", 1)[1]
    return offset_type == "i64" or offset_type.endswith("xi64>")


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack frame bytes) of the cubin's one kernel, via the wheel's cuobjdump."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        report = subprocess.run(
            [triton.knobs.nvidia.cuobjdump.path, "-res-usage", handle.name], capture_output=True, text=True, check=True
        ).stdout
    match = re.search(r"REG:(\d+) STACK:(\d+)", report)
    if match is None:
        raise RuntimeError(f"no resource line in cuobjdump output:\n{report}")
    return int(match.group(1)), int(match.group(2))


def launches(quick: bool):
    """Every (arch, kc, metric, exclude_self, precision) to compile; ``quick`` keeps the extremes of kc."""
    kcs = [1, MAX_CANDIDATES] if quick else [1, 15, 23, 56, MAX_CANDIDATES]  # KP 1, 16, 32, 64, 128
    modes = list(itertools.product(["cosine", "euclidean"], [True, False]))
    if quick:
        modes = [("cosine", True), ("euclidean", False)]
    for arch, kc, (metric, exclude_self), precision in itertools.product(ARCHS, kcs, modes, ["ieee", "tf32", "bf16"]):
        yield arch, kc, metric, exclude_self, precision


def problems(report: dict) -> list[str]:
    """What ``--check`` rejects in one report."""
    out = []
    if report["spill_bytes"] > SPILL_BUDGET:
        out.append(f"{report['spill_bytes']} bytes of register spills > {SPILL_BUDGET}")
    if report["shared_bytes"] > report["shared_limit"]:
        out.append(f"{report['shared_bytes']} B shared memory > {report['shared_limit']} B")
    if report["int32_offsets"]:
        out.append(f"{report['int32_offsets']} int32 address offsets")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="kc in {1, 128} and two metric modes only")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 on spills over budget, shared-memory overflow or int32 offsets"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per launch instead of a table")
    args = parser.parse_args()
    failures = 0
    if not args.json:
        print("arch   precision metric    self  KP   tiles     warps regs spill shared  compile")
    for launch in launches(args.quick):
        report = compile_launch(*launch)
        bad = problems(report)
        failures += bool(bad)
        if args.json:
            print(json.dumps(report | {"problems": bad}), flush=True)
        else:
            print(
                f"{report['arch']:6} {report['precision']:9} {report['metric']:9} {report['exclude_self']!s:5} "
                f"{report['KP']:<4} {report['tiles']:9} {report['warps']:<5} {report['registers']:<4} "
                f"{report['spill_bytes']:<5} {report['shared_bytes']:<7} {report['compile_s']:.1f}s"
                + (f"   <- {'; '.join(bad)}" if bad else ""),
                flush=True,
            )
    return 1 if args.check and failures else 0


if __name__ == "__main__":
    sys.exit(main())
