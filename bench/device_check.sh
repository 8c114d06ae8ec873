#!/usr/bin/env bash
# The CUDA checks of population-batched training, for a machine with an NVIDIA GPU whose
# Python already holds torch, numpy, pandas and scikit-learn but not evohpo's other
# dependencies (no network there).
#
#   bash bench/device_check.sh wheels   # where pip works: those dependencies' wheels into .whl/
#   bash bench/device_check.sh run      # on the GPU machine, .whl/ copied beside this repo
#   bash bench/device_check.sh search   # there too: the 20-trial searches
#   bash bench/device_check.sh all      # there too: a shorter run and search, in about 8 minutes
#   bash bench/device_check.sh quick    # there too: tests/test_devices.py, bench/training_pass.py
#
# `run` installs the wheels into /tmp/site, runs the tests that train networks (those of
# the trainers, the estimators, the objective and weight inheritance: on a machine with
# CUDA the estimators' device "auto" is the GPU, and tests/test_devices.py runs each of
# its checks on both devices), then bench/throughput.py (matmul rate, trainer rate, time
# per trial, stacked trainer) and bench/solo_step.py (one network's step, a stack's rows)
# on CUDA: about 8 minutes on one H200. `search` runs a 20-trial digits search over small
# networks on CUDA, one trial at a time against batches of 8 and 16 (two seeds, about 4
# minutes). `all` fits a short lease: the tests, throughput's sections 1, 2 and 4 with 3
# repeats, and the search with one seed, each step cut off at its time limit. Output goes
# to $OUT (or bench/results/) as text files.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PY_VERSION=${PY_VERSION:-3.12}

out=${OUT:-bench/results}

setup() {
    mkdir -p "$out"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    "$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.cuda.get_device_name())' | tee "$out/device.txt"
}

# The tests that train networks, within $1 seconds. With CUDA present the estimators'
# device "auto" is the GPU, so these run their searches there.
device_tests() {
    set -o pipefail
    timeout "$1" "$PYTHON" -m pytest -p no:cacheprovider -p no:benchmark -q -n 12 -rfEs --timeout 120 \
        tests/test_devices.py tests/test_estimator.py tests/test_regressor.py tests/test_nn.py \
        tests/test_train.py tests/test_conv_nn.py tests/test_flat.py tests/test_population.py \
        tests/test_stacked_training.py tests/test_batched_search.py tests/test_inheritance.py \
        tests/test_morphisms.py tests/test_objective.py tests/test_transfer.py \
        tests/test_refit_budget.py 2>&1 | tee "$out/tests.txt"
}

case "${1:-}" in
wheels)
    # The versions this repo is tested with; the device image's Python is 3.12.
    rm -rf .whl && mkdir -p .whl
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
        --python-version "$PY_VERSION" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl deap==1.4.4 optuna==5.1.0 alembic==1.20.1 SQLAlchemy==2.1.9 \
        colorlog==6.12.0 Mako==1.4.3 greenlet moocore==0.3.2 cffi==2.1.1 pycparser==3.12 \
        platformdirs==4.14.9
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    ls .whl
    ;;
run)
    setup
    # A failed test still lets the benchmarks run; the script's status reports it.
    tests=0
    device_tests 400 || tests=$?
    timeout 300 "$PYTHON" bench/throughput.py --device cuda 2>&1 | tee "$out/throughput.txt" || true
    timeout 120 "$PYTHON" bench/solo_step.py --device cuda --genomes 8 --repeats 2 \
        2>&1 | tee "$out/solo_step.txt" || true
    exit "$tests"
    ;;
all)
    setup
    tests=0
    device_tests 170 || tests=$?
    timeout 150 "$PYTHON" bench/throughput.py --device cuda --sections 24 --stack-repeats 3 \
        2>&1 | tee "$out/throughput.txt" || true
    timeout 150 "$PYTHON" bench/batched_search.py --device cuda --space small --seeds 0 \
        --batches 1 8 16 2>&1 | tee "$out/batched_search.txt" || true
    exit "$tests"
    ;;
quick)
    # The device tests and the training pass's tables alone: about 2 minutes.
    setup
    tests=0
    timeout 120 "$PYTHON" -m pytest -p no:cacheprovider -p no:benchmark -q -n 4 -rfEs \
        tests/test_devices.py 2>&1 | tee "$out/tests.txt" || tests=$?
    timeout 120 "$PYTHON" bench/training_pass.py --device cuda --epochs 4 --repeats 3 \
        2>&1 | tee "$out/training_pass.txt" || true
    exit "$tests"
    ;;
search)
    setup
    timeout 270 "$PYTHON" bench/batched_search.py --device cuda --space small --seeds 0 1 \
        --batches 1 8 16 2>&1 | tee "$out/batched_search.txt"
    ;;
*)
    echo "usage: bash bench/device_check.sh wheels|run|search|all|quick" >&2
    exit 2
    ;;
esac
