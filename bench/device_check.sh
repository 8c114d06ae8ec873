#!/usr/bin/env bash
# The CUDA checks of population-batched training, for a machine with an NVIDIA GPU whose
# Python already holds torch, numpy, pandas and scikit-learn but not evohpo's other
# dependencies (no network there).
#
#   bash bench/device_check.sh wheels   # where pip works: those dependencies' wheels into .whl/
#   bash bench/device_check.sh run      # on the GPU machine, .whl/ copied beside this repo
#
# `run` installs the wheels into /tmp/site, runs the tests that take a device
# (tests/test_devices.py and the CUDA tests of the estimators and devices), then
# bench/throughput.py on CUDA (matmul rate, trainer rate, time per trial, stacked
# trainer) and a 20-trial digits search over small networks, one trial at a time
# against batches of 8 and 16. Output goes to $OUT (or bench/results/) as text files.
# About 10 minutes on one H200; DEVICE_CHECK_QUICK=1 runs the tests and a shortened
# throughput run only.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PY_VERSION=${PY_VERSION:-3.12}

case "${1:-}" in
wheels)
    # The versions this repo is tested with; the device image's Python is 3.12.
    rm -rf .whl && mkdir -p .whl
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
        --python-version "$PY_VERSION" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl deap==1.4.4 optuna==5.1.0 alembic==1.20.1 SQLAlchemy==2.1.9 \
        colorlog==6.12.0 Mako==1.4.3 greenlet
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    ls .whl
    ;;
run)
    out=${OUT:-bench/results}
    mkdir -p "$out"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    "$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.cuda.get_device_name())' | tee "$out/device.txt"
    # A failed test still lets the benchmarks run; the script's status reports it.
    tests=0
    "$PYTHON" -m pytest -p no:cacheprovider -q -n 4 -rs tests/test_devices.py \
        tests/test_estimator.py tests/test_regressor.py tests/test_nn.py -k "cuda or devices" \
        2>&1 | tee "$out/tests.txt" || tests=$?
    if [[ "${DEVICE_CHECK_QUICK:-0}" == 1 ]]; then
        timeout 240 "$PYTHON" bench/throughput.py --device cuda --trials 8 --max-epochs 20 \
            2>&1 | tee "$out/throughput.txt"
    else
        timeout 330 "$PYTHON" bench/throughput.py --device cuda 2>&1 | tee "$out/throughput.txt"
        timeout 240 "$PYTHON" bench/batched_search.py --device cuda --space small --seeds 0 1 \
            --batches 1 8 16 2>&1 | tee "$out/batched_search.txt"
    fi
    exit "$tests"
    ;;
*)
    echo "usage: bash bench/device_check.sh wheels|run" >&2
    exit 2
    ;;
esac
