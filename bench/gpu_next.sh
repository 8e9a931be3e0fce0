#!/usr/bin/env bash
# What the next GPU session measures first (carry .whl), one device call each (under 10 minutes):
#   bash bench/gpu_next.sh lfd      # ~3 min: where the GPU time of LFD descriptors for fragmented meshes goes
#                                   #   (15-17 meshes/s vs 114-125 single-part); then the D part by input shape
#   bash bench/gpu_next.sh bias     # ~7 min: the half-precision bias_act forward (mask index, 8 warps) in training,
#                                   #   A/B/B/A twice: the fifth session's runs were within the machines' spread
#   bash bench/gpu_next.sh export   # ~5 min: export throughput at the paper setting (tet 90, 1024² textures) with
#                                   #   its parts; the GPU bake test (needs the xatlas + trimesh wheels in .whl)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
export GET3D_CACHE_DIR=/tmp/g3c OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
K=get3d.nn.ops.bias_act_triton
case "${1:-lfd}" in
lfd)
  echo "== LFD, fragmented meshes: profile"
  timeout 120 python3 -u bench/lfd_ops.py --device cuda --render --n-single 0 --n-multi 32 --batch 64 --paths new \
    --table 25 > "$OUT/lfd_multi.txt" 2>&1; grep -E "^multi" "$OUT/lfd_multi.txt"; head -40 "$OUT/lfd_multi.txt"
  echo "== D part by input shape"
  timeout 90 python3 bench/gpu_parts_profile.py --parts D --iters 10 --shapes --out "$OUT/parts" 2>&1 \
    | grep -E "^D |GPU kernel"
  ;;
bias)
  echo "== bias_act forward: kernels, then training A/B/B/A"
  timeout 40 python3 -u bench/bias_act_kernels.py --reps 50 --variant new= \
    --variant old=$K.MASK_INDEX=false+$K.FWD_WARPS_HALF=4 2>&1 | grep forward
  timeout 360 python3 bench/train_speed_ab.py --profile paper --repeat "new=" \
    "old=--switch $K.MASK_INDEX=false --switch $K.FWD_WARPS_HALF=4" --json "$OUT/bias_ab.json" 2>&1 | tail -6
  ;;
export)
  echo "== export: GPU bake test, then throughput"
  timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/export 2>&1 | tail -3
  timeout 420 python3 -u bench/export_speed.py --paper --gpu-shapes 64 2>&1 | tail -8
  ;;
*) echo "usage: bash bench/gpu_next.sh lfd|bias|export" >&2; exit 2 ;;
esac
