#!/usr/bin/env bash
# Measurements still owed (docs/perf-notes.md §6), in one device call (~6 min on an H100; carry .whl):
#   bash bench/gpu_pending.sh
# 1. the graphed-gradient tests that replay the training loop's pattern;
# 2. polyphase FIR upsampling (off by default until measured): parts, then the training step A/B/B/A;
# 3. bf16 discriminator autocast together with CUDA graphs (never run on a GPU): a few steps must finish.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
export GET3D_CACHE_DIR=/tmp/g3c OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
echo "== graphed passes vs eager (GPU tests)"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/train/test_graphs.py 2>&1 | tail -4
echo "== polyphase upsampling: parts"
timeout 150 python3 -u bench/gpu_parts_profile.py --parts Gtrain,Ggen --no-profile \
  --variant poly=get3d.nn.layers.UPSAMPLE_POLYPHASE=true 2>&1 | tail -6
echo "== polyphase upsampling: training step"
timeout 300 python3 -u bench/train_speed_ab.py --profile paper "ref=" \
  "poly=--switch get3d.nn.layers.UPSAMPLE_POLYPHASE=true" --repeat --json "$OUT/ab_poly.json" 2>&1 | tail -5
echo "== bf16 + CUDA graphs"
timeout 150 python3 -u bench/train_speed.py --profile paper --precision bf16 --steps 4 --warmup 2 2>&1 | tail -4
