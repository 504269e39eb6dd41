#!/usr/bin/env bash
# The checks only a GPU can make, in one run (planned for under 8 minutes on one H100/H200; not yet
# run on hardware):
#   bash benchmarks/gpu_checks.sh [OUT_DIR]            # on a CUDA machine
#   bash benchmarks/gpu_checks.sh --dry-run [OUT_DIR]  # the same code paths on the CPU, tiny sizes
# 1. pytest -m gpu (precision choice, deterministic resume on CUDA, nvjpeg decode, the batched crops'
#    bytes on CUDA = the CPU's) and the CUDA train-step tests; 2. SIGTERM preemption of a CUDA run
#    (exit 75) and its rerun; 3. benchmarks/gpu_checks.py: one step under
#    torch.cuda.set_sync_debug_mode("error"), nvjpeg decode, and the A/B of PIL views vs the device
#    path vs the device path + device decode, compile off/on, ResNet-50 batch 128 bf16 on real JPEGs,
#    written to benchmarks/results/gpu_checks_<gpu>.{json,md}.
set -uo pipefail
dry=0
if [[ "${1:-}" == "--dry-run" ]]; then dry=1; shift; fi
out=${1:-runs/gpu_checks}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
py=${PYTHON:-python3}
if (( dry )); then
    "$py" benchmarks/gpu_checks.py --dry-run --data "$out/jpegs" --out "$out/gpu_checks_dry_run.json" 2>&1 | tail -12
    exit "${PIPESTATUS[0]}"
fi
nvidia-smi -L
"$py" -c "import torch; print('torch', torch.__version__, 'native bf16', torch.cuda.is_bf16_supported(including_emulation=False))"
timeout 150 "$py" -m pytest -q -p no:cacheprovider -m gpu tests/ 2>&1 | tail -6
timeout 60 "$py" -m pytest -q -p no:cacheprovider tests/test_train_step.py -k cuda 2>&1 | tail -2
run=("$py" -m gsg_zoo pretrain demo --out "$out/preempt" --no-progress --set train.device=cuda
     --set train.epochs=30 --set train.log_every=5 --set monitor.every=-1)
"${run[@]}" > "$out/preempt.log" 2>&1 & pid=$!
sleep 20; kill -TERM $pid; wait $pid; echo "preempted run exit code: $?"
grep -E "SIGTERM|resumed" "$out/preempt.log" | tail -2
"${run[@]}" > "$out/rerun.log" 2>&1; echo "rerun exit code: $?"
grep -E "resumed|done:" "$out/rerun.log" | tail -2
gpu=$("$py" -c "import torch; print(torch.cuda.get_device_name(0).split()[-1].lower())")
timeout 330 "$py" benchmarks/gpu_checks.py --data "$out/jpegs" --out "benchmarks/results/gpu_checks_${gpu}.json" 2>&1 | tail -16
