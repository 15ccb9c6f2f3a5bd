"""The machine line every benchmark prints: CPU model, cores, torch and its BLAS.

Numbers in docs/performance.md are only comparable on the same CPU: fp32 GEMM through MKL, for
one, runs several times slower on an AMD EPYC than on an Intel Xeon of the same core count.
"""

from __future__ import annotations

import os
import platform

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """``"AMD EPYC (x86_64), 2 cores, torch 2.13.0+cpu (2 threads)"`` (+ the GPU when there is one)."""
    text = f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} cores, torch {torch.__version__} "
    text += f"({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text
