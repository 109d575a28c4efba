#!/usr/bin/env bash
# One command for the accelerator benchmark (benchmarks/gpu.py): step-time ratios of fSGLD,
# fSGHMC, RWP-AdamW and SAM against their base optimizers on ResNet-18/34 at batch 128, the
# random-number throughput of the key implementations, and the memory of n = 8 perturbations.
#
#   bash benchmarks/gpu.sh            # full run on the accelerator JAX finds
#   bash benchmarks/gpu.sh --quick    # seconds, on any machine (the test suite runs it)
#
# Extra arguments go to `python -m benchmarks.gpu` (--out DIR, --no-progress). Set PYTHON to
# choose the interpreter (default: python). Results: benchmarks/results/gpu/gpu_<device>.{json,md}.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"
# Let XLA allocate on demand, so the device's peak use reflects the step, not a preallocation.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
"$PYTHON" -c "import jax; print('JAX', jax.__version__, 'devices:', jax.devices())"
exec "$PYTHON" -m benchmarks.gpu "$@"
