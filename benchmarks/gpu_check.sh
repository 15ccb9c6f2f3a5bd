#!/usr/bin/env bash
# One-shot GPU check for a session that is lent a CUDA machine (see issue 3):
# compiled Triton kernel and torch-on-CUDA against the float64 reference, then the kNN benchmark.
# Usage (repository root, venv with torch+triton for CUDA):  bash benchmarks/gpu_check.sh [python]
set -euo pipefail
PY=${1:-python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
TRITON_INTERPRET=0 HF_HUB_OFFLINE=1 "$PY" -m pytest -q -p no:cacheprovider tests/neighbors/test_knn.py -k cuda
"$PY" benchmarks/knn.py --case single --device cuda
"$PY" benchmarks/knn.py --case batched --device cuda
