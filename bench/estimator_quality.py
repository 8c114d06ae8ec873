"""Test accuracy (R2) and wall time of EvoSearchClassifier (Regressor) against scikit-learn's MLPs.

For scikit-learn's digits (a fixed stratified 75/25 split) and mnist1d
(generated offline by the ``mnist1d`` package with its default arguments: 4000
training and 1000 test signals), every method is fitted on the training part
with several seeds and scored on the test part. The regression data sets,
scikit-learn's diabetes and Friedman #1 (``make_friedman1``: 2000 rows, 10
features, unit noise, generated offline), take a fixed shuffled 75/25 split
and are scored by test R2, with ``EvoSearchRegressor`` and ``MLPRegressor``
(inputs and targets standardised) in the roles below:

* ``EvoSearchClassifier`` with its default settings and the GA (``"ga"``), TPE
  (``"tpe"``) and random (``"random"``) samplers, all at the same trial budget;
* ``MLPClassifier`` with its default settings (inputs standardised, as
  EvoSearchClassifier does internally);
* with ``--conv``, ``EvoSearchClassifier(input_shape=...)`` for the same
  samplers: convolutional genomes on digits as 1x8x8 images and on mnist1d as
  1x40 signals;
* with ``--reference-cnn``, the MNIST-1D paper's CNN (three convolutions of
  25 channels, kernels 5, 3, 3, stride 2, padding 1, ReLU, a linear layer on
  the flattened output; Adam 1e-2, batch 100, 6000 steps; 2-D convolutions on
  digits), trained alone on the same split with one torch thread.

Usage::

    python bench/estimator_quality.py            # full: 3 seeds, default budget (long)
    python bench/estimator_quality.py --fast     # smoke run: seconds
    python bench/estimator_quality.py --datasets digits --samplers ga --seeds 0
    python bench/estimator_quality.py --conv --reference-cnn --no-dense --no-mlp
    python bench/estimator_quality.py --summarize bench/results/a.csv bench/results/b.csv

Every run is one row of ``bench/results/<--out>`` (default
``estimator_quality_runs.csv``); the summary table (mean ± sd over seeds) is
printed and written to ``estimator_quality.csv`` (regression: median and
mean of the test R2, ``estimator_quality_regression.csv``; the run file's
``test_accuracy`` column holds the R2). ``--summarize`` rebuilds the summary
from run files written by separate processes.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from _common import RESULTS, machine, markdown_table, mean_std, read_runs, write_csv

os.environ.setdefault("EVOHPO_NO_PROGRESS", "1")

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def load_digits_split() -> Data:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    return X_train, X_test, y_train, y_test


def load_mnist1d() -> Data:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())  # default arguments; generated, never downloaded
    return data["x"], data["x_test"], data["y"], data["y_test"]


def _regression_split(name: str) -> Callable[[], Data]:
    def load() -> Data:
        from sklearn.model_selection import train_test_split

        from evohpo.training.datasets import load_dataset

        data = load_dataset(name)  # diabetes ships with scikit-learn; friedman1 is generated
        X_train, X_test, y_train, y_test = train_test_split(
            data.X, data.y, test_size=0.25, random_state=0
        )
        return X_train, X_test, y_train, y_test

    return load


DATASETS: dict[str, Callable[[], Data]] = {
    "digits": load_digits_split,
    "mnist1d": load_mnist1d,
    "diabetes": _regression_split("diabetes"),
    "friedman1": _regression_split("friedman1"),
}
#: The data sets with numeric targets, scored by R2.
REGRESSION = ("diabetes", "friedman1")
SAMPLERS = ("ga", "tpe", "random")
#: The shape of one row for the convolutional searches and the reference CNN.
INPUT_SHAPES: dict[str, tuple[int, ...]] = {"digits": (1, 8, 8), "mnist1d": (1, 40)}
RUN_FIELDS = ("dataset", "method", "seed", "test_accuracy", "fit_seconds", "n_trials", "detail")


def fit_evo(
    data: Data,
    sampler: str,
    seed: int,
    fast: bool,
    device: str,
    input_shape: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    from evohpo import EvoSearchClassifier, EvoSearchRegressor, SearchSpace

    X_train, X_test, y_train, y_test = data
    regression = np.asarray(y_train).dtype.kind == "f"
    settings: dict[str, Any] = {"sampler": sampler, "random_state": seed, "device": device}
    if input_shape is not None:
        settings["input_shape"] = input_shape
    if fast:
        space = {"max_layers": 1} if input_shape is None else {"max_layers": 1, "max_blocks": 1}
        settings |= {"n_trials": 3, "max_epochs": 5, "search_space": SearchSpace(**space)}
    clf = (EvoSearchRegressor if regression else EvoSearchClassifier)(**settings)
    started = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - started
    return {
        "test_accuracy": float(clf.score(X_test, y_test)),
        "fit_seconds": seconds,
        "n_trials": clf.n_trials_,
        "detail": f"val {clf.best_score_:.4f}; {clf.best_genome_.to_json()}",
    }


def fit_mlp(data: Data, seed: int, fast: bool) -> dict[str, Any]:
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, y_train, y_test = data
    settings: dict[str, Any] = {"random_state": seed, **({"max_iter": 5} if fast else {})}
    mlp: Any
    if np.asarray(y_train).dtype.kind == "f":  # regression: targets standardised too
        mlp = TransformedTargetRegressor(MLPRegressor(**settings), transformer=StandardScaler())
    else:
        mlp = MLPClassifier(**settings)
    model = make_pipeline(StandardScaler(), mlp)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, y_train)
    seconds = time.perf_counter() - started
    return {
        "test_accuracy": float(model.score(X_test, y_test)),
        "fit_seconds": seconds,
        "n_trials": 1,
        "detail": f"n_iter {getattr(mlp, 'regressor_', mlp).n_iter_}",
    }


def fit_reference_cnn(
    data: Data, seed: int, fast: bool, input_shape: tuple[int, ...]
) -> dict[str, Any]:
    """The MNIST-1D paper's small CNN, trained alone (1-D or 2-D convolutions by the shape)."""
    import torch
    from torch import nn

    X_train, X_test, y_train, y_test = data
    conv = nn.Conv1d if len(input_shape) == 2 else nn.Conv2d
    torch.manual_seed(seed)
    body = nn.Sequential(
        nn.Unflatten(1, input_shape),
        conv(input_shape[0], 25, 5, stride=2, padding=1),
        nn.ReLU(),
        conv(25, 25, 3, stride=2, padding=1),
        nn.ReLU(),
        conv(25, 25, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
    )
    n_features = body(torch.zeros(1, int(np.prod(input_shape)))).shape[1]
    model = nn.Sequential(body, nn.Linear(n_features, int(max(y_train.max(), y_test.max())) + 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.as_tensor(X_train, dtype=torch.float32)
    y = torch.as_tensor(y_train, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    steps = 50 if fast else 6000
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as EvoSearchClassifier trains on the CPU
    started = time.perf_counter()
    try:
        for _ in range(steps):
            batch = torch.randint(len(x), (100,), generator=generator)
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            predicted = model(torch.as_tensor(X_test, dtype=torch.float32)).argmax(1).numpy()
    finally:
        torch.set_num_threads(previous)
    return {
        "test_accuracy": float(np.mean(predicted == y_test)),
        "fit_seconds": time.perf_counter() - started,
        "n_trials": 1,
        "detail": f"{steps} steps, {sum(p.numel() for p in model.parameters())} parameters",
    }


def _methods(args: argparse.Namespace, name: str) -> list[tuple[str, Callable[..., Any]]]:
    """(label, fit(data, seed)) of every method the arguments ask for on data set ``name``."""
    cuda = ", cuda" if args.device != "cpu" else ""
    shape = INPUT_SHAPES.get(name)  # tabular regression data: dense searches only
    estimator = "EvoSearchRegressor" if name in REGRESSION else "EvoSearchClassifier"
    methods: list[tuple[str, Callable[..., Any]]] = []
    for sampler in args.samplers:
        if not args.no_dense:
            methods.append(
                (
                    f"{estimator}({sampler}{cuda})",
                    lambda d, s, sm=sampler: fit_evo(d, sm, s, args.fast, args.device),
                )
            )
        if args.conv and shape is not None:
            methods.append(
                (
                    f"{estimator}({sampler}, input_shape={shape}{cuda})",
                    lambda d, s, sm=sampler: fit_evo(d, sm, s, args.fast, args.device, shape),
                )
            )
    if not args.no_mlp:
        mlp = "MLPRegressor()" if name in REGRESSION else "MLPClassifier()"
        methods.append((mlp, lambda d, s: fit_mlp(d, s, args.fast)))
    if args.reference_cnn and shape is not None:
        methods.append(
            (
                "reference CNN (MNIST-1D paper)",
                lambda d, s: fit_reference_cnn(d, s, args.fast, shape),
            )
        )
    return methods


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    out = RESULTS / args.out
    RESULTS.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RUN_FIELDS)
        writer.writeheader()
        for name in args.datasets:
            data = DATASETS[name]()
            for method, fit in _methods(args, name):
                for seed in args.seeds:
                    result = fit(data, seed)
                    row = {"dataset": name, "method": method, "seed": seed, **result}
                    writer.writerow(row)
                    fh.flush()
                    runs.append(row)
                    print(
                        f"{name:8s} {method:32s} seed {seed}: test {row['test_accuracy']:.4f}, "
                        f"{row['fit_seconds']:.1f}s",
                        flush=True,
                    )
    print(f"runs: {out}")
    return runs


def summarize(runs: Sequence[dict[str, Any]], regression: bool = False) -> list[dict[str, Any]]:
    rows = []
    keys = list(dict.fromkeys((r["dataset"], r["method"]) for r in runs))
    for dataset, method in keys:
        group = [r for r in runs if r["dataset"] == dataset and r["method"] == method]
        scores = [float(r["test_accuracy"]) for r in group]
        row: dict[str, Any] = {"dataset": dataset, "method": method, "seeds": len(group)}
        if regression:  # the median over seeds is the figure the peers are held to
            row["test R2 median [min, max]"] = (
                f"{statistics.median(scores):.4f} [{min(scores):.4f}, {max(scores):.4f}]"
            )
            row["test R2 (mean ± sd)"] = mean_std(scores)
        else:
            row["test accuracy (mean ± sd)"] = mean_std(scores)
        row["fit seconds (mean ± sd)"] = mean_std([float(r["fit_seconds"]) for r in group])
        row["trials"] = int(float(group[0]["n_trials"]))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny budget: a smoke run")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--samplers", nargs="*", choices=SAMPLERS, default=list(SAMPLERS))
    parser.add_argument("--device", default="cpu", help="torch device of EvoSearchClassifier")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--no-mlp", action="store_true", help="leave MLPClassifier out")
    parser.add_argument("--no-dense", action="store_true", help="leave the dense searches out")
    parser.add_argument("--conv", action="store_true", help="add convolutional searches")
    parser.add_argument("--reference-cnn", action="store_true", help="add the reference CNN")
    parser.add_argument("--out", default="estimator_quality_runs.csv", help="run file name")
    parser.add_argument("--summarize", nargs="+", metavar="CSV", help="summarize run files")
    args = parser.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    runs = read_runs(args.summarize) if args.summarize else run(args)
    mode = "fast smoke mode" if args.fast else "default settings"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    suffix = "_fast" if args.fast else ""
    parts = (
        ([r for r in runs if r["dataset"] not in REGRESSION], False, "Classifier", ""),
        ([r for r in runs if r["dataset"] in REGRESSION], True, "Regressor", "_regression"),
    )
    for part, regression, kind, name in parts:
        if not part:
            continue
        rows = summarize(part, regression)
        print(f"\nEvoSearch{kind} ({mode}) vs MLP{kind}(), {machine()}, {usable} usable\n")
        print(markdown_table(rows))
        print(f"\nCSV: {write_csv(f'estimator_quality{name}{suffix}.csv', rows)}")


if __name__ == "__main__":
    main()
