#!/usr/bin/env bash
# What the next GPU session measures first (carry .whl), in two device calls of under 10 minutes each:
#   bash bench/gpu_next.sh profiles   # ~6 min
#   bash bench/gpu_next.sh merged     # ~7 min
# profiles: 1. the discriminator's fp16 convolutions per layer in each layout / dtype / blur variant
#              (docs/perf-notes.md §8: do the two 1024² layers get better cuDNN kernels in another layout before a
#              custom weight-gradient kernel?);
#           2. where the GPU time of LFD descriptors for fragmented meshes goes (15-17 meshes/s vs 114-125);
#           3. the discriminator part by input shape after the fused bias gradient.
# merged:   Dmain as one discriminator pass over fakes and reals (get3d.train.losses.MERGED_D_PASS, off until
#           this A/B): its CUDA tests, then training speed with and without it (A/B/B/A).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
export GET3D_CACHE_DIR=/tmp/g3c OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
case "${1:-profiles}" in
profiles)
  echo "== D convolutions per layer"
  timeout 150 python3 -u bench/d_conv_layers.py 2>&1 | tail -30
  echo "== LFD, fragmented meshes: profile"
  timeout 120 python3 -u bench/lfd_ops.py --device cuda --render --n-single 0 --n-multi 32 --batch 64 --paths new \
    --table 25 > "$OUT/lfd_multi.txt" 2>&1; grep -E "^multi" "$OUT/lfd_multi.txt"; head -40 "$OUT/lfd_multi.txt"
  echo "== D part by input shape"
  timeout 90 python3 bench/gpu_parts_profile.py --parts D --iters 10 --shapes --out "$OUT/parts" 2>&1 \
    | grep -E "^D |GPU kernel"
  ;;
merged)
  echo "== merged Dmain pass: tests on CUDA, then training A/B/B/A"
  timeout 100 python3 -m pytest -q -p no:cacheprovider tests/train/test_losses.py 2>&1 | tail -2
  timeout 330 python3 bench/train_speed_ab.py --profile paper --repeat "sep=" \
    "merged=--switch get3d.train.losses.MERGED_D_PASS=true" --json "$OUT/merged_ab.json" 2>&1 | tail -6
  ;;
*) echo "usage: bash bench/gpu_next.sh profiles|merged" >&2; exit 2 ;;
esac
