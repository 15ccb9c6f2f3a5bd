"""Stage 1 as one fused Triton kernel: distance tiles + running top-k in registers.

One program owns ``BM`` queries of one problem (grid = query blocks × B
problems). It sweeps the points in tiles of ``BN``: a ``tl.dot`` over ``BD``-wide
slices of the feature dimension gives the ``[BM, BN]`` similarity tile, which
becomes a distance (``1 - s`` on pre-normalised rows, or ``|q|² + |p|² - 2s``),
then a **packed key**: the distance's float bits mapped to an order-preserving
int32 (``b ^ ((b >> 31) & 0x7FFFFFFF)``) in the high word, the point index in
the low word. Comparing int64 keys compares (distance, index) in one
instruction, so ties go to the lower index.

The running best ``KP`` keys per query live in registers. A tile is merged
only if one of its keys beats the current worst (most tiles are skipped once
the list has filled); the merge takes ``KP`` rounds of ``tl.min`` over
(best ∪ tile), masking each winner -- ``tl.topk``/``tl.sort`` would do, but are
50-100x slower under ``TRITON_INTERPRET=1`` (see shared/reference/knn.md).
The ``N × N`` matrix never exists: memory is ``O(M·KP)``.

Precision: ``"ieee"`` fp32 dots (default), ``"tf32"`` or ``"bf16"`` inputs
(tensor cores); stage 2 re-ranks exactly either way. On a CPU this runs only
under ``TRITON_INTERPRET=1`` (set before this module is imported), for tests.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["triton_candidates", "pack_keys", "unpack_keys", "INTERPRET"]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_KEY = 2**63 - 1


@triton.jit
def _knn_kernel(
    q_ptr, p_ptr, qn_ptr, pn_ptr, out_ptr,
    M, N, D,
    stride_qb, stride_qm, stride_pb, stride_pn, stride_ob, stride_om,
    EXCLUDE_SELF: tl.constexpr, EUCLIDEAN: tl.constexpr, PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr, KP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    b = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    row_ok = rows < M
    dims = tl.arange(0, BD)
    slots = tl.arange(0, KP)
    best = tl.full((BM, KP), MAX_KEY, tl.int64)
    if EUCLIDEAN:
        q_norm = tl.load(qn_ptr + b * M + rows, mask=row_ok, other=0.0)
    for n0 in range(0, N, BN):
        cols = n0 + tl.arange(0, BN)
        col_ok = cols < N
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for d0 in range(0, D, BD):
            d_ok = d0 + dims < D
            q = tl.load(
                q_ptr + b * stride_qb + rows[:, None] * stride_qm + (d0 + dims)[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0,
            )  # fmt: skip
            p = tl.load(
                p_ptr + b * stride_pb + cols[:, None] * stride_pn + (d0 + dims)[None, :],
                mask=col_ok[:, None] & d_ok[None, :], other=0.0,
            )  # fmt: skip
            if EMULATE_BF16:  # the interpreter's bf16 dot is broken: round, then multiply in fp32
                q = q.to(tl.bfloat16).to(tl.float32)
                p = p.to(tl.bfloat16).to(tl.float32)
                acc += tl.dot(q, tl.trans(p), input_precision="ieee")
            elif PRECISION == "bf16":
                acc += tl.dot(q.to(tl.bfloat16), tl.trans(p.to(tl.bfloat16)))
            else:
                acc += tl.dot(q, tl.trans(p), input_precision=PRECISION)
        if EUCLIDEAN:
            p_norm = tl.load(pn_ptr + b * N + cols, mask=col_ok, other=0.0)
            dist = tl.maximum(q_norm[:, None] + p_norm[None, :] - 2.0 * acc, 0.0)
        else:
            dist = 1.0 - acc
        invalid = ~col_ok[None, :]
        if EXCLUDE_SELF:
            invalid = invalid | (rows[:, None] == cols[None, :])
        bits = dist.to(tl.int32, bitcast=True)
        mono = bits ^ ((bits >> 31) & 0x7FFFFFFF)
        keys = (mono.to(tl.int64) << 32) | cols[None, :].to(tl.int64)
        worst = tl.max(best, axis=1)
        keys = tl.where(invalid | (keys >= worst[:, None]), MAX_KEY, keys)
        if tl.min(tl.min(keys, axis=1), axis=0) < MAX_KEY:
            merged = tl.full((BM, KP), MAX_KEY, tl.int64)
            for r in tl.static_range(KP):
                low = tl.minimum(tl.min(keys, axis=1), tl.min(best, axis=1))
                merged = tl.where(slots[None, :] == r, low[:, None], merged)
                keys = tl.where(keys == low[:, None], MAX_KEY, keys)
                best = tl.where(best == low[:, None], MAX_KEY, best)
            best = merged
    tl.store(
        out_ptr + b * stride_ob + rows[:, None] * stride_om + slots[None, :], best, mask=row_ok[:, None]
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


def _config(device: torch.device) -> dict:
    if INTERPRET or device.type != "cuda":
        return {"BM": 64, "BN": 64, "BD": 64}  # fewer, larger numpy steps when interpreted
    return {"BM": 64, "BN": 64, "BD": 32, "num_warps": 4, "num_stages": 3}


def triton_candidates(
    points: torch.Tensor,
    queries: torch.Tensor | None,
    kc: int,
    metric: str,
    exclude_self: bool,
    precision: str = "ieee",
    block: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-1 candidates for ``B`` problems at once.

    Args:
        points: ``[B, N, D]``; queries: ``[B, M, D]`` or None (self-search).
        block: overrides ``BN`` (the point-tile width; a power of two >= 16).

    Returns:
        ``(candidates [B, M, kc] int64, approx_distance [B, M, kc] float32)``.
    """
    if points.device.type != "cuda" and not INTERPRET:
        raise RuntimeError(
            "backend='triton' needs a CUDA tensor, or TRITON_INTERPRET=1 set before interp's Triton kernel "
            "is imported (CPU tests); on a CPU use backend='torch'"
        )
    p = points.float()
    q = p if queries is None else queries.float()
    if metric == "cosine":
        p = torch.nn.functional.normalize(p, dim=-1)
        q = p if queries is None else torch.nn.functional.normalize(q, dim=-1)
    p, q = p.contiguous(), q.contiguous()
    bsz, m, d = q.shape
    n = p.shape[1]
    q_norm = q.pow(2).sum(-1).contiguous()
    p_norm = p.pow(2).sum(-1).contiguous()
    kp = triton.next_power_of_2(kc)
    out = torch.empty((bsz, m, kp), dtype=torch.int64, device=p.device)
    config = _config(p.device)
    if block is not None:
        if block < 16 or block & (block - 1):
            raise ValueError(f"block for backend='triton' must be a power of two >= 16, got {block}")
        config["BN"] = block
    grid = (triton.cdiv(m, config["BM"]), bsz)
    _knn_kernel[grid](
        q, p, q_norm, p_norm, out, m, n, d,
        q.stride(0), q.stride(1), p.stride(0), p.stride(1), out.stride(0), out.stride(1),
        EXCLUDE_SELF=exclude_self, EUCLIDEAN=metric == "euclidean",
        PRECISION=precision,
        EMULATE_BF16=precision == "bf16" and (INTERPRET or p.device.type != "cuda"),
        KP=kp, **config,
    )  # fmt: skip
    approx, index = unpack_keys(out[..., :kc])
    return index, approx
