#!/usr/bin/env bash
# Every GPU measurement of the project, as one script (issues 4 and 5):
#   1. the fused kernels' correctness on CUDA (tests/test_kernels.py),
#   2. python -m rkd_tutorial.bench losses   -> bench-losses-<device>.json
#   3. python -m rkd_tutorial.bench pipeline -> bench-pipeline.json
#   4. the full-profile runs, 3 seeds each of metric and classify, as six concurrent
#      processes on the one GPU (small models leave it mostly idle otherwise), merged
#      into metric-full.json/.md and classify-full.json/.md.
# Usage: OUT=results/ bash scripts/gpu_run.sh   (each step has its own time limit and
# the later steps run even when an earlier one fails; the log says what happened).
# Needs the Fashion-MNIST .gz files in $FMNIST (default: .carry/fashion-mnist, or
# Debian's /usr/share/datasets/fashion-mnist) when there is no network.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-results}
mkdir -p "$OUT"
PY=${PY:-python3}
LOG="$OUT/gpu-log.txt"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 MPLBACKEND=Agg
export RKD_DATA=${RKD_DATA:-/tmp/rkd_data}
if [ -d "${FMNIST:-.carry/fashion-mnist}" ]; then export RKD_FASHION_MNIST_DEBIAN=${FMNIST:-.carry/fashion-mnist}; fi
[ -f .carry/COMMIT ] && export RKD_COMMIT=$(cat .carry/COMMIT)
T0=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
{
step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
$PY -c "from rkd_tutorial.data import load_fashion_mnist as l; print('fashion-mnist', tuple(l(train=True)[0].shape), tuple(l(train=False)[0].shape))"

step "1. kernel tests on CUDA"
if timeout ${T_TESTS:-90} $PY -m pytest -o addopts="" -p no:cacheprovider -q -x tests/test_kernels.py tests/test_losses.py; then
    echo "kernel tests passed"
else
    echo "KERNEL TESTS FAILED: the runs below use the chunked PyTorch path (RKD_DISABLE_TRITON=1)"
    export RKD_DISABLE_TRITON=1
fi

step "2. losses benchmark"
timeout ${T_LOSSES:-110} $PY -m rkd_tutorial.bench losses --out "$OUT" --check --budget-s 1 || echo "losses benchmark failed or timed out"

step "3. pipeline benchmark"
timeout ${T_PIPE:-100} $PY -m rkd_tutorial.bench pipeline --out "$OUT" --workers 16 2 --epochs 2 || echo "pipeline benchmark failed or timed out"

step "4. full-profile runs: 3 seeds x (metric, classify), concurrently"
PARTS=/tmp/rkd_parts; rm -rf "$PARTS"; mkdir -p "$PARTS"
pids=()
for seed in 0 1 2; do
    for exp in metric classify; do
        OMP_NUM_THREADS=2 timeout ${T_FULL:-290} $PY -m rkd_tutorial $exp --profile full --seed $seed \
            --out "$PARTS" --no-progress > "$PARTS/$exp-$seed.log" 2>&1 &
        pids+=($!)
    done
done
for p in "${pids[@]}"; do wait $p || echo "a run exited with $? (124: timed out; its rows so far are kept)"; done
for exp in metric classify; do
    echo "--- $exp"; tail -n 30 "$PARTS"/$exp-*.log
    ls "$PARTS"/$exp-full-seed*.json >/dev/null 2>&1 && \
        $PY -m rkd_tutorial merge "$PARTS"/$exp-full-seed*.json -o "$OUT/$exp-full.json" || echo "no $exp results"
done
step "done"
} 2>&1 | tee "$LOG"
