#!/usr/bin/env bash
# Every GPU measurement of docs/performance.md, on a CUDA machine with the project installed:
#
#   bash bench/run_gpu.sh                 # all groups (~25 min on an H100)
#   bash bench/run_gpu.sh train fid50k    # some groups
#
# Groups: check tests train fid50k metrics raster kernels export.  Logs and JSON go to $OUT (default bench-out/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"

run() {  # run NAME CMD...: the command's output to $OUT/NAME.log, its tail here
  local name=$1
  shift
  echo "== $name: $*"
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-25}" "$OUT/$name.log"
  [ "$rc" -eq 0 ] || echo "!! $name failed (exit $rc): $OUT/$name.log"
  return 0
}

check() { run env_check "$PY" -u bench/gpu_env_check.py; }
tests() {
  run gpu_tests "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/nn tests/raster tests/evaluate tests/train \
    tests/metrics tests/geometry
  run kernel_tests "$PY" -m pytest -q -p no:cacheprovider tests/nn/test_ops_bias_act.py tests/nn/test_ops_conv.py \
    tests/nn/test_ops_point_mlp.py tests/nn/test_ops_triplane.py tests/nn/test_ops_upsample.py \
    tests/nn/test_ops_modulate.py tests/nn/test_ops_fir.py \
    tests/metrics/test_lfd_sweep_triton.py tests/geometry/test_march_triton.py tests/train/test_graphs.py \
    tests/train/test_losses.py
}
train() { run train_speed "$PY" -u bench/train_speed.py --profile paper --json "$OUT/train_speed.json"; }
fid50k() { run fid50k "$PY" -u bench/gpu_fid50k.py --n 1024 --batch 32; }
metrics() {
  run cd "$PY" -u bench/gpu_cd.py --json "$OUT/cd.json"
  run lfd "$PY" -u bench/lfd_ops.py --device cuda --render --n-single 64 --n-multi 32 --batch 32 --paths new
}
raster() { run raster "$PY" -u bench/gpu_raster.py --json "$OUT/raster.json"; }
export_() {
  run export_tests "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/export
  run export_speed "$PY" -u bench/export_speed.py --paper --gpu-shapes 64
}
kernels() {
  run r1 "$PY" -u bench/gpu_r1.py --out "$OUT/r1"
  run point_mlp "$PY" -u bench/point_mlp_kernel.py
  run bias_act "$PY" -u bench/bias_act_kernels.py
  run fir "$PY" -u bench/fir_kernel.py
  run d_conv "$PY" -u bench/d_conv_layers.py
  run marching "$PY" -u bench/marching_speed.py
}

groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(check tests train fid50k metrics raster kernels export)
for g in "${groups[@]}"; do
  case "$g" in
    check|tests|train|fid50k|metrics|raster|kernels) "$g" ;;
    export) export_ ;;
    *) echo "unknown group '$g'; groups: check tests train fid50k metrics raster kernels export" >&2; exit 2 ;;
  esac
done
