#!/usr/bin/env bash
# One call on the GPU machine: environment check, GPU tests, raster agreement, metrics benchmarks.
# Usage (device tool, carry .whl):  bash bench/gpu_verify.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
export GET3D_CACHE_DIR=/tmp/g3c OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
timeout 120 python3 -u bench/gpu_env_check.py 2>&1 | tail -4
echo "== GPU tests"
timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider tests/nn tests/raster tests/evaluate tests/train tests/metrics \
  tests/geometry 2>&1 | tail -8
echo "== Triton kernels vs their references (not marked gpu: they also run on the CPU under TRITON_INTERPRET=1)"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/nn/test_ops_*.py tests/metrics/test_lfd_sweep_triton.py \
  tests/train/test_graphs.py 2>&1 | tail -3
echo "== bias_act kernels (bias gradient fused vs separate)"
timeout 100 python3 -u bench/bias_act_kernels.py 2>&1 | tail -14
echo "== raster agreement + timing"
timeout 200 python3 -u bench/gpu_raster.py --json "$OUT/raster.json" > "$OUT/raster.log" 2>&1; tail -28 "$OUT/raster.log"
echo "== metrics"
timeout 240 python3 -u bench/gpu_metrics.py --quick --json "$OUT/metrics.json" > "$OUT/metrics.log" 2>&1; tail -20 "$OUT/metrics.log"
echo "== fid50k (extrapolated)"
timeout 200 python3 -u bench/gpu_fid50k.py --n 256 --batch 32 2>&1 | tail -6
