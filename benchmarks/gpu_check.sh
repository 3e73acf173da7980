#!/usr/bin/env bash
# The CUDA checks in one run (< 5 minutes on one GPU): unit tests that need CUDA, a 2-epoch
# FSDD-sized training run, prefetch overlap, NG-SGD on the device, LSTMP vs cuDNN throughput.
# Writes one JSON (default benchmarks/results/gpu_check.json); see benchmarks/gpu_check.py.
#   benchmarks/gpu_check.sh [--dry-run] [--out FILE]
# --dry-run (implied without CUDA) runs the same code on the CPU at tiny sizes.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$repo/venv/bin/python" ] && export PATH="$repo/venv/bin:$PATH"
cd "$repo"
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" exec python benchmarks/gpu_check.py "$@"
