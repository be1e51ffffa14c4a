#!/usr/bin/env bash
# Every GPU measurement of the project, as one script (issues 4 and 5). Steps:
#   tests     the fused kernels and train.fit's GPU settings on CUDA (tests/test_kernels.py,
#             test_losses.py, test_bench_pipeline.py; the interpreter tests are left to CI:
#             Triton 3.6's interpreter cannot take a run-time loop bound with a recent numpy)
#   pipeline  python -m rkd_tutorial.bench pipeline   -> bench-pipeline-<device>.json: train.fit
#             with its defaults vs the conventional loop (16 and 2 workers), the goal's number;
#             then fit with torch.compile(mode="reduce-overhead") (CUDA graphs) vs 16 workers
#             -> bench-pipeline-<device>-compile-reduce-overhead.json
#   losses    python -m rkd_tutorial.bench losses     -> bench-losses-<device>.json
#   tune      python -m rkd_tutorial.kernels.tune     -> tune-angle-<device>.json
#   full      the full-profile runs, 3 seeds each of metric (every student size) and classify,
#             as six concurrent processes on the one GPU (small models leave it mostly idle
#             otherwise), merged into metric-full.json/.md and classify-full.json/.md; the
#             step's wall time is the time of both runs together.
#
# Usage, on the device (a copy of the working tree):
#   bash scripts/gpu_run.sh --prepare           # HERE, before: fills .carry/ (data files, commit)
#   OUT=$OUT STEPS="tests pipeline" bash scripts/gpu_run.sh   # one device call: the pipeline files, ~4-6 min
#   OUT=$OUT STEPS="losses tune" bash scripts/gpu_run.sh       # ~2-3 min
#   OUT=$OUT STEPS="full" bash scripts/gpu_run.sh              # ~5-6 min
#   OUT=$OUT bash scripts/gpu_run.sh                           # all steps: more than one device call's 10 min
# with the device tool's carry=[".carry"]. Each step has its own time limit (T_TESTS, T_PIPE,
# T_PIPE_COMPILE, T_LOSSES, T_TUNE, T_FULL seconds) and later steps run even when an earlier one fails; the
# log ($OUT/gpu-log.txt) says what happened. SEEDS (default "0 1 2") are the full step's seeds.
# Without a network the Fashion-MNIST .gz files must be in $FMNIST (default .carry/fashion-mnist,
# else Debian's /usr/share/datasets/fashion-mnist). tests/test_gpu_run.py walks the full step on
# a CPU at smoke scale (RKD_SMOKE=1 SEEDS=0).
set -u
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p .carry/fashion-mnist
    src=/usr/share/datasets/fashion-mnist
    [ -d "$src" ] || { echo "no $src: sudo apt-get install -y dataset-fashion-mnist" >&2; exit 1; }
    cp "$src"/*.gz .carry/fashion-mnist/
    git rev-parse HEAD > .carry/COMMIT
    git diff --quiet HEAD || echo "note: the working tree has uncommitted changes; .carry/COMMIT is HEAD"
    ls -la .carry .carry/fashion-mnist
    exit 0
fi

OUT=${OUT:-results}
mkdir -p "$OUT"
PY=${PY:-python3}
STEPS=${STEPS:-tests pipeline losses tune full}
LOG="$OUT/gpu-log.txt"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 MPLBACKEND=Agg
export RKD_DATA=${RKD_DATA:-/tmp/rkd_data}
if [ -d "${FMNIST:-.carry/fashion-mnist}" ]; then export RKD_FASHION_MNIST_DEBIAN=${FMNIST:-.carry/fashion-mnist}; fi
[ -f .carry/COMMIT ] && export RKD_COMMIT=$(cat .carry/COMMIT)
T0=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
want() { case " $STEPS " in *" $1 "*) return 0;; *) return 1;; esac; }
{
step "device (steps: $STEPS)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
$PY -c "from rkd_tutorial.data import load_fashion_mnist as l; print('fashion-mnist', tuple(l(train=True)[0].shape), tuple(l(train=False)[0].shape))"

if want tests; then
    step "tests on CUDA"
    if timeout ${T_TESTS:-120} $PY -m pytest -o addopts="" -p no:cacheprovider -q -k "not interpreter" \
            tests/test_kernels.py tests/test_losses.py tests/test_bench_pipeline.py; then
        echo "CUDA tests passed"
    else
        echo "CUDA TESTS FAILED: the steps below use the chunked PyTorch path (RKD_DISABLE_TRITON=1)"
        export RKD_DISABLE_TRITON=1
    fi
fi

if want pipeline; then
    step "pipeline benchmark: train.fit (defaults) vs the conventional loop"
    timeout ${T_PIPE:-150} $PY -m rkd_tutorial.bench pipeline --out "$OUT" --workers 16 2 --epochs 2 \
        || echo "pipeline benchmark failed or timed out"
    step "pipeline benchmark: train.fit with torch.compile(mode='reduce-overhead') vs 16 workers"
    timeout ${T_PIPE_COMPILE:-240} $PY -m rkd_tutorial.bench pipeline --out "$OUT" --workers 16 --epochs 2 \
        --compile reduce-overhead || echo "compiled pipeline benchmark failed or timed out"
fi

if want losses; then
    step "losses benchmark"
    timeout ${T_LOSSES:-110} $PY -m rkd_tutorial.bench losses --out "$OUT" --check --budget-s 1 || echo "losses benchmark failed or timed out"
fi

if want tune; then
    step "angle kernel launch settings"
    timeout ${T_TUNE:-100} $PY -m rkd_tutorial.kernels.tune --n 128 1024 4096 --out "$OUT" || echo "tune failed or timed out"
fi

if want full; then
    step "full-profile runs: seeds ${SEEDS:-0 1 2} x (metric, classify), concurrently"
    PARTS=${PARTS:-/tmp/rkd_parts}; rm -rf "$PARTS"; mkdir -p "$PARTS"
    FULL0=$(date +%s)
    pids=()
    for seed in ${SEEDS:-0 1 2}; do
        for exp in metric classify; do
            OMP_NUM_THREADS=2 timeout ${T_FULL:-420} $PY -m rkd_tutorial $exp --profile full --seed $seed \
                --out "$PARTS" --no-progress > "$PARTS/$exp-$seed.log" 2>&1 &
            pids+=($!)
        done
    done
    for p in "${pids[@]}"; do wait $p || echo "a run exited with $? (124: timed out; its rows so far are kept)"; done
    echo "both full runs together: $(( $(date +%s) - FULL0 )) s wall"
    for exp in metric classify; do
        echo "--- $exp"; tail -n 30 "$PARTS"/$exp-*.log
        # metric-full-seed0.json ... (metric-full-smoke-seed0.json under RKD_SMOKE=1) -> metric-full.json
        parts=("$PARTS"/$exp-full*-seed*.json)
        if [ -e "${parts[0]}" ]; then
            stem=$(basename "${parts[0]}" .json)
            $PY -m rkd_tutorial merge "${parts[@]}" -o "$OUT/${stem%-seed*}.json" || echo "merging $exp failed"
        else
            echo "no $exp results"
        fi
    done
fi
step "done"
} 2>&1 | tee "$LOG"
