"""Stage 1's similarity blocks ``X_I X_Jᵀ``, with oneDNN's float32 GEMM on a CPU.

torch multiplies dense float32 CPU matrices with Intel MKL, which re-packs both operands
on every call. Its bundled oneDNN multiplies matrices held in oneDNN's own blocked layout
(``Tensor.to_mkldnn()``, then ``F.linear``): :class:`BlockGemm` converts every block of
points once and reuses it for all the block's products. On a 2-core AMD EPYC (Zen 4) that
makes the whole symmetric search 10-25 % faster than MKL (``docs/performance.md``); NumPy's
OpenBLAS, tried too, fights torch's OpenMP threads with its own spinning pool between
GEMMs and was 2-3x slower in place. GPUs, and CPU builds without oneDNN, use torch's
matmul.

Both are float32 GEMMs with float32 accumulation -- or the reduced precision a user set
with ``torch.backends.mkldnn.matmul.fp32_precision``, which both follow and the
certification bound reads (:func:`interp.neighbors.api.torch_matmul_precision`) -- so
:func:`interp.neighbors.exact.stage1_tolerance` holds for either (it allows any summation
order), and stage 2 makes the neighbours exact and the same whichever ran.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["BlockGemm", "ONEDNN_COPY_BYTES"]

#: blocks given dense (views of the caller's tensors) are multiplied with oneDNN only while its copy of them
#: is at most this many bytes; torch's matmul works on the views and needs no copy at all
ONEDNN_COPY_BYTES = 256 * 2**20


class BlockGemm:
    """Products of row blocks: ``gemm(i, j)`` is ``left[i] @ right[j].T``, a dense float32 tensor.

    Args:
        left: ``[r_i, D]`` float32 blocks; right: ``[c_j, D]`` blocks (default: ``left``, for
            self-search, converted once).
        library: ``"onednn"`` or ``"torch"`` (its dense matmul: MKL on a CPU, cuBLAS on a
            GPU); default: oneDNN on a CPU where torch has it, else torch.

    :meth:`gathered` builds the blocks from row indices without a reordered copy of the points.
    """

    def __init__(self, left: list[torch.Tensor], right: list[torch.Tensor] | None = None, library: str | None = None):
        if library is None:  # oneDNN copies dense blocks: only while that copy is small
            dense = [b for b in left + (right or []) if not b.is_mkldnn]
            if sum(b.numel() * b.element_size() for b in dense) > ONEDNN_COPY_BYTES:
                library = "torch"
        self.library = self.choose(left[0], library)
        self.left = [self._convert(block) for block in left]
        self.right = self.left if right is None else [self._convert(block) for block in right]

    @classmethod
    def gathered(cls, points: torch.Tensor, rows: list[torch.Tensor], library: str | None = None) -> BlockGemm:
        """Self-search blocks ``points[rows[i]]``.

        For oneDNN every block is gathered into one reused buffer and converted from there, so
        the only extra copy of the points is oneDNN's (a reordered dense copy would be a second;
        with torch's matmul the gathered dense blocks are that one copy).
        """
        library = cls.choose(points, library)
        if library == "torch":
            return cls([points[r] for r in rows], library="torch")
        buffer = points.new_empty((max(len(r) for r in rows), points.shape[1]))
        blocks = []
        for r in rows:
            part = buffer[: len(r)]
            torch.index_select(points, 0, r, out=part)
            blocks.append(part.to_mkldnn())
        return cls(blocks, library="onednn")

    @staticmethod
    def choose(example: torch.Tensor, library: str | None) -> str:
        """``library``, or the default for tensors like ``example``; a clear error for unknown names."""
        if library is None:
            on_cpu = example.device.type == "cpu"
            return "onednn" if on_cpu and torch.backends.mkldnn.is_available() else "torch"
        if library not in ("onednn", "torch"):
            raise ValueError(f"library must be 'onednn' or 'torch', got {library!r}")
        return library

    def _convert(self, block: torch.Tensor) -> torch.Tensor:
        if self.library == "onednn" and not block.is_mkldnn:
            return block.contiguous().to_mkldnn()
        return block

    def __call__(self, i: int, j: int) -> torch.Tensor:
        if self.library == "onednn":
            return F.linear(self.left[i], self.right[j]).to_dense()
        return self.left[i] @ self.right[j].T
