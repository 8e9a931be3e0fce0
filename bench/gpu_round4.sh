#!/usr/bin/env bash
# Round 4, first device call (carry .whl and .fidw): owed graph tests, synthesis precision / layout / polyphase
# variants per part, and fid50k through the evaluation path with the FID effect of each precision.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
export GET3D_CACHE_DIR=/tmp/g3c OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "== GPU tests: graphed passes, reduced-precision synthesis"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/train/test_graphs.py tests/nn/test_triplane_precision.py 2>&1 | tail -6
echo "== parts"
timeout 220 python3 -u bench/gpu_parts_profile.py --parts Gtrain,Ggen --no-profile --iters 5 \
  --variant poly=get3d.nn.layers.UPSAMPLE_POLYPHASE=true \
  --variant cl=get3d.nn.triplane.CHANNELS_LAST=always \
  --variant cl+poly=get3d.nn.triplane.CHANNELS_LAST=always+get3d.nn.layers.UPSAMPLE_POLYPHASE=true \
  --variant bf16x4=g_num_fp16_res=4 \
  --variant bf16x4poly=g_num_fp16_res=4+get3d.nn.layers.UPSAMPLE_POLYPHASE=true \
  --variant fp16x4=g_num_fp16_res=4:float16 \
  --variant bf16all=g_num_fp16_res=7 2>&1 | tail -20
echo "== fid50k"
timeout 200 python3 -u bench/gpu_fid50k.py --n 512 --batch 32 --variant fp32=0 --variant bf16x4=4 \
  --variant fp16x4=4:float16 --variant bf16all=7 --quality 1024 --inception-params .fidw/inception_fp16.pt 2>&1 | tail -16
