#!/usr/bin/env bash
# Measurements owed to the next GPU session (docs/perf-notes.md §7, end), in one device call (~5 min on an H100;
# carry .whl and .lfdbase):   bash bench/gpu_pending.sh
# 0. the kernel tests on CUDA (the bias_act kernels' shared activation helper and the synthesis inference path's
#    fallback order changed after the last GPU run; interpreter-tested only);
# 1. the Triton flood-fill sweep kernel: its test on CUDA, then LFD descriptors with and without it;
# 2. LFD after the sweep-pair convergence check and the dense pixel counts (both landed, not yet timed on a GPU).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
export GET3D_CACHE_DIR=/tmp/g3c
echo "== kernel and graph tests (CUDA)"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/nn tests/train/test_graphs.py 2>&1 | tail -2
echo "== Triton sweep kernel vs the PyTorch sweep (CUDA)"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/metrics/test_lfd_sweep_triton.py tests/metrics/test_lfd_batched.py 2>&1 | tail -2
P=old,new
for sw in torch triton torch triton; do
  echo "== LFD descriptors, SWEEP_KERNEL=$sw (batch 64, the paper profile's lfd_batch_meshes)"
  timeout 120 python3 -u bench/lfd_ops.py --device cuda --render --n-single 128 --n-multi 32 --batch 64 --paths $P \
    --old-file .lfdbase/lfd_old.py --switch get3d.metrics.lfd.SWEEP_KERNEL=$sw 2>&1 | grep -E "^single|^multi|codes"
  [ "$sw" = triton ] && P=new  # codes compared with the old path once for each kernel
done
