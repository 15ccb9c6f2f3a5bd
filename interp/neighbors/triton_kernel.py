"""Stage 1 as one fused Triton kernel: distance tiles + running top-k in registers.

One program owns ``BM`` queries of one problem (grid = query blocks × B
problems). It sweeps the points in tiles of ``BN``: a ``tl.dot`` over ``BD``-wide
slices of the feature dimension gives the ``[BM, BN]`` similarity tile, which
becomes a distance (``1 - s`` on pre-normalised rows, or ``|q|² + |p|² - 2s``),
then a **packed key**: the distance's float bits mapped to an order-preserving
int32 (``b ^ ((b >> 31) & 0x7FFFFFFF)``) in the high word, the point index in
the low word. Comparing int64 keys compares (distance, index) in one
instruction, so ties go to the lower index.

The running best ``KP`` keys per query live in registers, unsorted, as a set
(empty slots hold distinct sentinels above every real key). A tile is merged by
"replace the worst": while some row's smallest remaining tile key beats that
row's worst kept key, it takes the worst's slot. Keys enter in ascending order,
so a tile costs as many rounds as the most keys any row of the block gains from
it (1.46 on average for N = 30,907, KP = 16, ``benchmarks/triton_merge_rounds.py``)
instead of ``KP`` rounds per tile, and the loop is not unrolled (fast compiles for large ``KP``).
``tl.topk``/``tl.sort`` would also do, but are 50-100x slower under
``TRITON_INTERPRET=1`` (see shared/reference/knn.md). The host sorts the ``KP``
keys once at the end. The ``N × N`` matrix never exists: memory is ``O(M·KP)``.

Precision: ``"ieee"`` fp32 dots (default), ``"tf32"`` or ``"bf16"`` inputs
(tensor cores); stage 2 re-ranks exactly either way. On a CPU this runs only
under ``TRITON_INTERPRET=1`` (set before this module is imported), for tests.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

__all__ = ["triton_candidates", "launch_config", "pack_keys", "unpack_keys", "INTERPRET", "MAX_CANDIDATES"]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_KEY = tl.constexpr(2**63 - 1)  # a constexpr: compiled kernels may only read constexpr globals


@triton.jit
def _knn_kernel(
    q_ptr, p_ptr, qn_ptr, pn_ptr, out_ptr,
    M, N, D,
    stride_qb, stride_qm, stride_pb, stride_pn, stride_ob, stride_om,
    EXCLUDE_SELF: tl.constexpr, EUCLIDEAN: tl.constexpr, PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr, KP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)  # every address offset is int64: B·N·D may exceed 2**31
    rows = pid_m * BM + tl.arange(0, BM)
    row_ok = rows < M
    dims = tl.arange(0, BD).to(tl.int64)
    slots = tl.arange(0, KP).to(tl.int64)
    q_rows = q_ptr + b * stride_qb + rows.to(tl.int64)[:, None] * stride_qm  # [BM, 1] row starts
    best = tl.full((BM, KP), MAX_KEY, tl.int64) - slots[None, :]  # distinct sentinels above any real key
    if EUCLIDEAN:
        q_norm = tl.load(qn_ptr + (b * M + rows), mask=row_ok, other=0.0)
    for n0 in range(0, N, BN):
        cols = n0 + tl.arange(0, BN)
        col_ok = cols < N
        p_cols = p_ptr + b * stride_pb + cols.to(tl.int64)[:, None] * stride_pn  # [BN, 1]
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for d0 in range(0, D, BD):
            d_ok = d0 + dims < D
            q = tl.load(q_rows + (d0 + dims)[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            p = tl.load(p_cols + (d0 + dims)[None, :], mask=col_ok[:, None] & d_ok[None, :], other=0.0)
            if EMULATE_BF16:  # the interpreter's bf16 dot is broken: round, then multiply in fp32
                q = q.to(tl.bfloat16).to(tl.float32)
                p = p.to(tl.bfloat16).to(tl.float32)
                acc += tl.dot(q, tl.trans(p), input_precision="ieee")
            elif PRECISION == "bf16":
                acc += tl.dot(q.to(tl.bfloat16), tl.trans(p.to(tl.bfloat16)))
            else:
                acc += tl.dot(q, tl.trans(p), input_precision=PRECISION)
        if EUCLIDEAN:
            p_norm = tl.load(pn_ptr + (b * N + cols), mask=col_ok, other=0.0)
            dist = tl.maximum(q_norm[:, None] + p_norm[None, :] - 2.0 * acc, 0.0)
        else:
            dist = 1.0 - acc
        invalid = ~col_ok[None, :] | ~row_ok[:, None]
        if EXCLUDE_SELF:
            invalid = invalid | (rows[:, None] == cols[None, :])
        bits = dist.to(tl.int32, bitcast=True)
        mono = bits ^ ((bits >> 31) & 0x7FFFFFFF)
        keys = (mono.to(tl.int64) << 32) | cols[None, :].to(tl.int64)
        worst = tl.max(best, axis=1)
        keys = tl.where(invalid | (keys >= worst[:, None]), MAX_KEY, keys)
        low = tl.min(keys, axis=1)
        while tl.max((low < worst).to(tl.int32), axis=0) > 0:  # some row's best tile key beats its worst
            take = low < worst
            best = tl.where(take[:, None] & (best == worst[:, None]), low[:, None], best)
            keys = tl.where(keys == low[:, None], MAX_KEY, keys)
            worst = tl.max(best, axis=1)
            low = tl.min(keys, axis=1)
    tl.store(
        out_ptr + b * stride_ob + rows.to(tl.int64)[:, None] * stride_om + slots[None, :], best, mask=row_ok[:, None]
    )  # fmt: skip


def pack_keys(dist: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Host twin of the kernel's packing: int64 keys ordered like (dist, index)."""
    bits = dist.float().contiguous().view(torch.int32)
    mono = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (mono.to(torch.int64) << 32) | index.to(torch.int64)


def unpack_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_keys`: ``(dist float32, index int64)``."""
    index = keys & 0xFFFFFFFF
    mono = (keys >> 32).to(torch.int32)
    bits = mono ^ ((mono >> 31) & 0x7FFFFFFF)
    return bits.view(torch.float32), index


MAX_CANDIDATES = 128
"""Largest candidate list (``KP``) the kernel keeps per query: beyond it the
running list spills registers or overflows shared memory (sm_80/sm_90, see
``benchmarks/triton_aot.py``); ``interp.knn`` then uses the torch backend."""


def launch_config(
    kc: int, metric: str, exclude_self: bool, precision: str, *, compiled: bool, block: int | None = None
) -> tuple[dict, dict]:
    """The constexprs and launch options of one kernel launch.

    ``compiled=False`` is the ``TRITON_INTERPRET=1`` launch (larger numpy steps;
    bf16 emulated). The compiled tiles were chosen from ptxas resource reports
    (``benchmarks/triton_aot.py``): 64×64 tiles on 8 warps run without register
    spills for every ``KP <= 128`` on sm_80 and sm_90, with 16-wide fp32 slices
    for ``"ieee"`` (FMA dot) and 32-wide for the tensor-core precisions.

    Returns:
        ``(constexprs, options)`` -- keyword arguments of ``_knn_kernel[grid](...)``.
    """
    kp = triton.next_power_of_2(kc)
    if kp > MAX_CANDIDATES:
        raise ValueError(
            f"backend='triton' keeps at most {MAX_CANDIDATES} candidates per query, this search needs {kc} "
            "(k above 80); use backend='torch'"
        )
    if not compiled:
        tiles, options = {"BM": 64, "BN": 64, "BD": 64}, {}  # fewer, larger numpy steps when interpreted
    else:
        tiles = {"BM": 64, "BN": 64, "BD": 16 if precision == "ieee" else 32}
        options = {"num_warps": 8, "num_stages": 3}
    if block is not None:
        if block < 16 or block & (block - 1):
            raise ValueError(f"block for backend='triton' must be a power of two >= 16, got {block}")
        tiles["BN"] = block
    constexprs = {
        "EXCLUDE_SELF": exclude_self, "EUCLIDEAN": metric == "euclidean", "PRECISION": precision,
        "EMULATE_BF16": precision == "bf16" and not compiled, "KP": kp, **tiles,
    }  # fmt: skip
    return constexprs, options


def triton_candidates(
    points: torch.Tensor,
    queries: torch.Tensor | None,
    kc: int,
    metric: str,
    exclude_self: bool,
    precision: str = "ieee",
    block: int | None = None,
    chunk_bytes: int = 1 << 30,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-1 candidates for ``B`` problems, launched in groups of problems.

    Args:
        points: ``[B, N, D]``; queries: ``[B, M, D]`` or None (self-search).
        block: overrides ``BN`` (the point-tile width; a power of two >= 16).
        chunk_bytes: bound on the normalised float32 copy made per launch (a
            group always holds at least one problem).

    Returns:
        ``(candidates [B, M, kc] int64, approx_distance [B, M, kc] float32)``.
    """
    compiled = points.device.type == "cuda" and not INTERPRET
    if not compiled and not INTERPRET:
        raise RuntimeError(
            "backend='triton' needs a CUDA tensor, or TRITON_INTERPRET=1 set before interp's Triton kernel "
            "is imported (CPU tests); on a CPU use backend='torch'"
        )
    if INTERPRET and not isinstance(tl.max, InterpretedFunction):
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after triton was first imported (torch and transformers import it), so "
            "triton's own library is in compiled mode and cannot be interpreted; set TRITON_INTERPRET=1 before "
            "importing torch: in the shell, or in the first notebook cell"
        )
    constexprs, options = launch_config(kc, metric, exclude_self, precision, compiled=compiled, block=block)
    bsz, n, d = points.shape
    m = n if queries is None else queries.shape[1]
    per_problem = 4 * d * (n + (0 if queries is None else m))
    group = max(1, chunk_bytes // max(per_problem, 1))
    keys = []
    for b0 in range(0, bsz, group):
        some_queries = None if queries is None else queries[b0 : b0 + group]
        keys.append(_launch(points[b0 : b0 + group], some_queries, metric, constexprs, options))
    keys = torch.cat(keys).sort(dim=-1).values[..., :kc]  # the kernel's slots are unsorted
    approx, index = unpack_keys(keys)
    return index, approx


def _launch(points: torch.Tensor, queries: torch.Tensor | None, metric: str, constexprs: dict, options: dict):
    """One kernel launch over a group of problems: ``[b, M, KP]`` unsorted packed keys."""
    p = points.float()
    q = p if queries is None else queries.float()
    if metric == "cosine":
        p = torch.nn.functional.normalize(p, dim=-1)
        q = p if queries is None else torch.nn.functional.normalize(q, dim=-1)
    p, q = p.contiguous(), q.contiguous()
    bsz, m, d = q.shape
    n = p.shape[1]
    if constexprs["EUCLIDEAN"]:
        p_norm = p.pow(2).sum(-1).contiguous()
        q_norm = p_norm if queries is None else q.pow(2).sum(-1).contiguous()
    else:  # the cosine kernel reads no norms
        q_norm = p_norm = p.new_empty(0)
    out = torch.empty((bsz, m, constexprs["KP"]), dtype=torch.int64, device=p.device)
    grid = (triton.cdiv(m, constexprs["BM"]), bsz)
    _knn_kernel[grid](
        q, p, q_norm, p_norm, out, m, n, d,
        q.stride(0), q.stride(1), p.stride(0), p.stride(1), out.stride(0), out.stride(1),
        **constexprs, **options,
    )  # fmt: skip
    return out
