#!/usr/bin/env bash
# The checks only a GPU can make, in one short run (about 5 minutes on one H200):
#   bash benchmarks/gpu_checks.sh OUT_DIR
# 1. pytest -m gpu (precision choice on real hardware, deterministic mid-epoch resume on CUDA) and the
#    CUDA train-step tests; 2. SIGTERM preemption of a CUDA run (exit 75) and its rerun; 3. the device
#    half of the ImageNet views (resizes, colour and blur) per batch on the GPU.
set -uo pipefail
out=${1:-runs/gpu_checks}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'native bf16', torch.cuda.is_bf16_supported(including_emulation=False))"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cluster.py 2>&1 | tail -4
python3 -m pytest -q -p no:cacheprovider tests/test_train_step.py -k cuda 2>&1 | tail -2
run=(python3 -m gsg_zoo pretrain demo --out "$out/preempt" --no-progress --set train.device=cuda
     --set train.epochs=30 --set train.log_every=5 --set monitor.every=-1)
"${run[@]}" > "$out/preempt.log" 2>&1 & pid=$!
sleep 20; kill -TERM $pid; wait $pid; echo "preempted run exit code: $?"
grep -E "SIGTERM|resumed" "$out/preempt.log" | tail -2
"${run[@]}" > "$out/rerun.log" 2>&1; echo "rerun exit code: $?"
grep -E "resumed|done:" "$out/rerun.log" | tail -2
python3 benchmarks/bench_imagenet_views.py --images 128 --batch 128 --device cuda \
    --data "$out/jpegs" --out "$out/imagenet_views_h200.json" 2>&1 | tail -12
