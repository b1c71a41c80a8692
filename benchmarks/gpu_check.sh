#!/usr/bin/env bash
# One command for a CUDA machine: (1) the Triton kernel tests on the real GPU (TRITON_INTERPRET=0, so the kernels
# are compiled for the device, not interpreted), (2) the kernel board on the GPU at a reduced repeat count, which
# writes leaderboards/results/kernels/gpu.json and re-renders leaderboards/kernels.md. About 3-6 minutes on an
# H100; each step has a time limit so that the whole stays under 8 minutes. Exits 2 on bad arguments or without a
# CUDA device, 1 if a step failed, 0 otherwise. Run from anywhere; uses .venv/bin/python unless PYTHON is set.
set -u -o pipefail

usage() {
    cat <<'EOF'
usage: benchmarks/gpu_check.sh [--repeats N] [--results DIR] [--skip-tests] [--skip-board] [-h|--help]

  --repeats N     timed rounds per variant on the GPU board (default 5; the board's own default is 20)
  --results DIR   write gpu.json and a board rendered from DIR's results (DIR/kernels.md) into DIR, instead
                  of leaderboards/results/kernels/gpu.json and leaderboards/kernels.md
  --skip-tests    only the board
  --skip-board    only the Triton tests
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPEATS=5
RESULTS=""
RUN_TESTS=1
RUN_BOARD=1
TEST_LIMIT_S=200
BOARD_LIMIT_S=260

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --repeats)
            if [ $# -lt 2 ] || ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
                echo "gpu_check.sh: --repeats needs a positive integer, got '${2-}'" >&2; usage >&2; exit 2
            fi
            REPEATS="$2"; shift 2 ;;
        --results)
            if [ $# -lt 2 ] || [ -z "$2" ]; then
                echo "gpu_check.sh: --results needs a folder" >&2; usage >&2; exit 2
            fi
            RESULTS="$2"; shift 2 ;;
        --skip-tests) RUN_TESTS=0; shift ;;
        --skip-board) RUN_BOARD=0; shift ;;
        *) echo "gpu_check.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
if [ "$RUN_TESTS" = 0 ] && [ "$RUN_BOARD" = 0 ]; then
    echo "gpu_check.sh: --skip-tests and --skip-board together leave nothing to run" >&2; exit 2
fi

PY="${PYTHON:-$ROOT/.venv/bin/python}"
if [ ! -x "$PY" ]; then
    echo "gpu_check.sh: no Python at $PY (run make setup, or set PYTHON)" >&2; exit 2
fi
cd "$ROOT" || exit 2
export TRITON_INTERPRET=0

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: no CUDA device is present (torch.cuda.is_available() is False); nothing was run" >&2
    exit 2
fi
"$PY" -c "import torch; print('gpu_check.sh: ' + torch.cuda.get_device_name() + ', torch ' + torch.__version__)"

failed=()
if [ "$RUN_TESTS" = 1 ]; then
    echo "== 1/2 Triton kernel tests on the GPU (limit ${TEST_LIMIT_S} s)"
    timeout "$TEST_LIMIT_S" "$PY" -m pytest -q -p no:cacheprovider -rs \
        tests/kernels/test_triton_backend.py tests/kernels/test_moe_ffn.py tests/kernels/test_kernels_fp64.py \
        -k "triton or gpu or cuda"
    rc=$?
    [ "$rc" = 124 ] && echo "gpu_check.sh: the tests ran past ${TEST_LIMIT_S} s" >&2
    [ "$rc" != 0 ] && failed+=("triton tests (exit $rc)")
fi

if [ "$RUN_BOARD" = 1 ]; then
    echo "== 2/2 kernel board on the GPU, median of $REPEATS (limit ${BOARD_LIMIT_S} s)"
    board_args=(run --device cuda --repeats "$REPEATS" --no-progress)
    results_dir="leaderboards/results/kernels"
    board_md="leaderboards/kernels.md"
    if [ -n "$RESULTS" ]; then
        results_dir="$RESULTS"
        board_md="$RESULTS/kernels.md"
        board_args+=(--results "$results_dir" --board "$board_md")
    fi
    timeout "$BOARD_LIMIT_S" "$PY" benchmarks/kernels_board.py "${board_args[@]}"
    rc=$?
    [ "$rc" = 124 ] && echo "gpu_check.sh: the board ran past ${BOARD_LIMIT_S} s" >&2
    if [ "$rc" = 0 ]; then
        echo "gpu_check.sh: figures in $results_dir/gpu.json, board rendered in $board_md"
    else
        failed+=("GPU board (exit $rc)")
    fi
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_check.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "gpu_check.sh: all steps passed"
