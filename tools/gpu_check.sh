#!/usr/bin/env bash
# One command for a machine with a GPU: builds the CUDA extension, benchmarks TransNeXt-T against torchvision's Swin-T
# at batch 2, 800 x 1216, float32 and bfloat16, with every attn_impl, plus a torch.profiler table of each training
# step (the transnext_auto rows make attn_impl='auto''s decisions there, each backend verified against the reference,
# timed and its memory taken: auto_decisions.md), runs every GPU test (the CUDA kernels, the Triton kernels compiled,
# autocast), then the GPU-memory planner's count of the same steps (its max_memory_allocated rows beside the measured
# ones). Each step has a time limit (GPU_CHECK_*_LIMIT, seconds), so that a lent GPU's minutes cover them all.
# Everything lands in one folder (default: $OUT/gpu_check where $OUT is set, else work_dirs/gpu_check).
#
#   bash tools/gpu_check.sh [RESULTS_DIR]
#
# A GPU machine without mmengine / mmcv (such as the lent H200, which reaches no registry) installs them from
# wheels in .whl/ that travel with the tree: run `bash tools/gpu_wheels.sh` where pip reaches PyPI first.
#   MMTRANSNEXT_PYTHON    the interpreter (default: python3, the one with torch and Triton there)
#   GPU_CHECK_REPEATS     timed repeats per benchmark row (default 5)
#   GPU_CHECK_STEPS       the steps to run, of: benchmark tests compile planner (default: all; the build always runs).
#                         compile: torch.compile with inductor on the GPU (tests/test_pytorch2_cuda.py: training and
#                         inference at dynamic sizes, each attn_impl, float32 and bf16), then benchmark.py's
#                         eager / torch.compile rows for TransNeXt-T and Swin-T at batch 1 (compile_benchmark.md)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="${1:-${OUT:-$ROOT/work_dirs}/gpu_check}"
PY="${MMTRANSNEXT_PYTHON:-python3}"
REPEATS="${GPU_CHECK_REPEATS:-5}"
# each step's limit in seconds (a lent GPU is held for minutes): a step that overruns is cut and the next one runs
TESTS_LIMIT="${GPU_CHECK_TESTS_LIMIT:-240}" BENCH_LIMIT="${GPU_CHECK_BENCH_LIMIT:-240}"
PLANNER_LIMIT="${GPU_CHECK_PLANNER_LIMIT:-120}" BUILD_LIMIT="${GPU_CHECK_BUILD_LIMIT:-300}"
COMPILE_TESTS_LIMIT="${GPU_CHECK_COMPILE_TESTS_LIMIT:-180}" COMPILE_BENCH_LIMIT="${GPU_CHECK_COMPILE_BENCH_LIMIT:-360}"
STEPS=" ${GPU_CHECK_STEPS:-benchmark tests compile planner} "
wanted() { [[ "$STEPS" == *" $1 "* ]]; }
log() { echo "[gpu_check $(date +%T)] $*" >&2; }
timed() { local limit="$1"; shift; timeout --signal=INT --kill-after=10 "$limit" "$@"; }
failed() { status=1; log "FAILED: $1 (exit status $2)"; }  # the run goes on; its exit status says one step failed
# run_step NAME LIMIT OUTPUT COMMAND...: the command under its time limit, its output shown and kept in OUTPUT
run_step() {
    local name="$1" limit="$2" output="$3" code
    shift 3
    log "$name"
    timed "$limit" "$@" 2>&1 | tee "$output"
    code="${PIPESTATUS[0]}"
    [[ "$code" == 0 ]] || failed "$name" "$code"
}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no GPU is visible to torch in $PY (or torch is missing there): nothing to check on this machine." >&2
    echo "  The CPU checks are README's test command (the Triton kernels run there in Triton's interpreter)." >&2
    exit 2
fi
mkdir -p "$RESULTS"
cd "$ROOT"

if ! "$PY" -c 'import mmengine, mmcv' 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        log "mmengine / mmcv are missing and there are no wheels in .whl/: run 'bash tools/gpu_wheels.sh' on a" \
            "machine that reaches PyPI, then carry .whl"
        exit 1
    fi
    log "installing mmengine, mmcv-lite and their dependencies from .whl/"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mmtransnext-site \
        .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/mmtransnext-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" - <<'PYEOF' | tee "$RESULTS/environment.txt"
import torch, triton
print(f'{torch.cuda.get_device_name()}; torch {torch.__version__}; Triton {triton.__version__}; '
      f'CUDA {torch.version.cuda}')
PYEOF

log "building mmtransnext._ext with its CUDA kernels"
status=0
arch="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
# a failed build is reported and the rest still runs: the Triton and PyTorch rows need no extension
if ! FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$arch}" MAX_JOBS="$(nproc)" \
        timed "$BUILD_LIMIT" "$PY" setup.py build_ext --inplace > "$RESULTS/build.log" 2>&1; then
    tail -n 40 "$RESULTS/build.log"
    failed "the CUDA extension's build (whole log: $RESULTS/build.log)" 1
elif ! "$PY" -c 'from mmtransnext.ops import ext_available; assert ext_available("cuda"), "built without CUDA"'; then
    failed "the CUDA extension's build (no CUDA kernels in it)" 1
fi

# attn_impl='auto' on this GPU: the benchmark's transnext_auto rows decide as a training run's first step does (each
# backend verified against the reference, timed, its memory taken); backends.py prints those decisions afterwards
export MMTRANSNEXT_CACHE_DIR="$RESULTS/backend_cache"
if wanted benchmark; then
    for amp in none bf16; do
        run_step "benchmark, autocast $amp" "$BENCH_LIMIT" "$RESULTS/benchmark_$amp.md" \
            "$PY" tools/analysis/benchmark.py --sizes 800x1216 --batch 2 --repeats "$REPEATS" --amp "$amp" \
            --rows transnext_pytorch transnext_auto transnext_ext transnext_triton swin --profile "$RESULTS"
    done
    # (it reads the cache file the benchmark wrote)
    run_step "attn_impl='auto' decisions on this GPU" 60 "$RESULTS/auto_decisions.md" "$PY" tools/analysis/backends.py
fi
if wanted tests; then
    run_step "GPU tests" "$TESTS_LIMIT" "$RESULTS/tests.log" "$PY" -m pytest -q -p no:cacheprovider -ra -o addopts='' \
        tests/test_ops.py tests/test_pooled_attention.py tests/test_backbone_exactness.py tests/test_reliability.py \
        tests/test_triton_ops.py -k 'cuda or triton or autocast'
fi
if wanted compile; then
    run_step "torch.compile tests on the GPU" "$COMPILE_TESTS_LIMIT" "$RESULTS/compile_tests.log" \
        "$PY" -m pytest -q -p no:cacheprovider -ra -o addopts='' --durations=0 tests/test_pytorch2_cuda.py
    run_step "benchmark, eager against torch.compile" "$COMPILE_BENCH_LIMIT" "$RESULTS/compile_benchmark.md" \
        "$PY" tools/analysis/benchmark.py --sizes 800x1216 512x512 --batch 1 --repeats "$REPEATS" \
        --rows transnext_auto swin --runtimes eager compile
fi
# the planner's count of the same rows (tools/analysis/gpu_memory.py, meta tensors) beside the measured ones above
wanted planner && run_step "GPU memory counted on meta tensors, for the benchmark's rows" "$PLANNER_LIMIT" \
    "$RESULTS/gpu_memory_counted.md" "$PY" tools/analysis/gpu_memory.py --benchmark-rows
log "done (status $status): $RESULTS"
exit "$status"
