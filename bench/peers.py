"""EvoSearchClassifier and EvoSearchRegressor against the peers, at the same wall clock.

On scikit-learn's digits, wine and breast_cancer (a fixed stratified 75/25
split) and mnist1d (generated offline, its canonical 1000-row test split),
every method searches on the training part for ``--budget`` seconds and its
refitted best model is scored on the test part (accuracy). The regression
data sets, scikit-learn's diabetes and Friedman #1 (``make_friedman1``, 2000
rows, generated offline; a fixed shuffled 75/25 split), run the same methods
for regression and score test R2 (``--datasets diabetes friedman1``):
``EvoSearchRegressor``, and the peers over ``MLPRegressor`` (their targets
standardised as evohpo does inside, candidates scored by R2 on a shuffled
80/20 hold-out), and ``MLPRegressor()`` with its default settings (inputs and
targets standardised); ``--methods MLPClassifier`` names that row too.


* ``EvoSearchClassifier`` with the GA (``"ga"``), TPE (``"tpe"``) and random
  (``"random"``) samplers, default settings, ``n_trials=None, timeout=budget``;
* scikit-learn-genetic-opt's ``GASearchCV`` (population 10, stopped by its
  ``TimerStopping`` callback, checked after each generation) and
  optuna-integration's ``OptunaSearchCV`` (TPE, ``timeout=budget``), both over
  scikit-learn's ``MLPClassifier`` in a space equivalent to evohpo's default
  one: 1 to 3 hidden layers of 32 to 512 units each (log scale), activation,
  L2 penalty ``alpha`` over the weight-decay range, learning rate and batch
  size over the same ranges, inputs standardised, at most 100 epochs;
* scikit-learn's ``MLPClassifier()`` with its default settings (one fit).

The two peers score each candidate on one stratified 80/20 hold-out split of
the training part, as evohpo does (``validation_fraction=0.2``), so the budget
buys them as many candidates as it can. Every library runs single-threaded
(``--threads``), so that runs compare on equal hardware and do not disturb
each other. The peers are installed by the ``bench`` extra:
``pip install -e '.[bench]'``.

Usage::

    python bench/peers.py                          # full: 4 data sets, 3 seeds, 60 s
    python bench/peers.py --fast                   # smoke run: seconds
    python bench/peers.py --datasets digits --methods ga GASearchCV --budget 300
    python bench/peers.py --resume                 # skip runs already in the run file
    python bench/peers.py --datasets diabetes --methods ga --cv 5   # evohpo with 5-fold CV
    python bench/peers.py --summarize bench/results/peers_runs.csv

Every run is one row of ``bench/results/<--out>`` (default ``peers_runs.csv``;
its ``test_accuracy`` column holds the test R2 of regression runs); the
summary table (median test accuracy with the range over seeds, median trials
and wall time) is printed and written to ``peers.csv``, and for regression
data sets a second one (median test R2) to ``peers_regression.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from _common import RESULTS, machine, markdown_table, read_runs, write_csv
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.compose import TransformedTargetRegressor
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit, train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

os.environ.setdefault("EVOHPO_NO_PROGRESS", "1")

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
RUN_FIELDS = ("dataset", "method", "seed", "test_accuracy", "trials", "wall_seconds", "detail")
EVO_METHODS = {"ga": "evohpo GA", "tpe": "evohpo TPE", "random": "evohpo random"}
PEER_METHODS = ("GASearchCV", "OptunaSearchCV", "MLPClassifier")
#: The labels of the peers' rows (the default MLP is an MLPRegressor on regression data).
PEER_LABELS = (*PEER_METHODS, "MLPRegressor")
METHODS = (*EVO_METHODS, *PEER_METHODS)
#: The evohpo methods whose median is held against every peer's.
CHALLENGER = "ga"


# -- data ------------------------------------------------------------------------------
def load_split(name: str) -> Data:
    from evohpo.training.datasets import load_dataset

    data = load_dataset(name)
    if data.test_index is not None:  # mnist1d ships its own test split
        test = np.zeros(len(data.y), dtype=bool)
        test[data.test_index] = True
        return data.X[~test], data.X[test], data.y[~test], data.y[test]
    stratify = None if is_regression(name) else data.y
    X_train, X_test, y_train, y_test = train_test_split(
        data.X, data.y, test_size=0.25, stratify=stratify, random_state=0
    )
    return X_train, X_test, y_train, y_test


CLASSIFICATION_DATASETS = ("digits", "wine", "breast_cancer", "mnist1d")
REGRESSION_DATASETS = ("diabetes", "friedman1")
DATASETS = (*CLASSIFICATION_DATASETS, *REGRESSION_DATASETS)


def is_regression(name: str) -> bool:
    return name in REGRESSION_DATASETS


# -- the peers' search space -----------------------------------------------------------
class _Layered(BaseEstimator):
    """A scikit-learn MLP with depth and per-layer widths as separate parameters.

    Search libraries sample flat parameters, not tuples: ``n_layers`` picks how
    many of ``log2_units_1..3`` are used, each a width on a log2 scale, which
    mirrors evohpo's layer-wise genome. Inputs are standardised first.
    """

    def __init__(
        self,
        n_layers: int = 1,
        log2_units_1: float = 7.0,
        log2_units_2: float = 7.0,
        log2_units_3: float = 7.0,
        activation: str = "relu",
        alpha: float = 1e-4,
        learning_rate_init: float = 1e-3,
        batch_size: int = 64,
        max_iter: int = 100,
        random_state: int | None = None,
    ) -> None:
        self.n_layers = n_layers
        self.log2_units_1 = log2_units_1
        self.log2_units_2 = log2_units_2
        self.log2_units_3 = log2_units_3
        self.activation = activation
        self.alpha = alpha
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.random_state = random_state

    def hidden_layer_sizes(self) -> tuple[int, ...]:
        widths = (self.log2_units_1, self.log2_units_2, self.log2_units_3)
        return tuple(round(2.0**w) for w in widths[: int(self.n_layers)])

    def _mlp(self) -> Any:
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        return {
            "hidden_layer_sizes": self.hidden_layer_sizes(),
            "activation": self.activation,
            "alpha": self.alpha,
            "learning_rate_init": self.learning_rate_init,
            "batch_size": int(self.batch_size),
            "max_iter": self.max_iter,
            "random_state": self.random_state,
        }

    def fit(self, X: Any, y: Any) -> Any:
        from sklearn.exceptions import ConvergenceWarning

        self.pipeline_ = make_pipeline(StandardScaler(), self._mlp())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.pipeline_.fit(X, y)
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.pipeline_.predict(X)


class LayeredMLP(ClassifierMixin, _Layered):
    """``MLPClassifier`` searched layer by layer (see :class:`_Layered`)."""

    def _mlp(self) -> Any:
        return MLPClassifier(**self._settings())

    def fit(self, X: Any, y: Any) -> LayeredMLP:
        super().fit(X, y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.pipeline_.predict_proba(X)


class LayeredMLPRegressor(RegressorMixin, _Layered):
    """``MLPRegressor`` searched layer by layer, its targets standardised (as
    EvoSearchRegressor does inside), predictions mapped back."""

    def _mlp(self) -> Any:
        return TransformedTargetRegressor(
            MLPRegressor(**self._settings()), transformer=StandardScaler()
        )


# Ranges copied from evohpo's DEFAULT_SEARCH_SPACE (units, weight decay as alpha,
# learning rate, batch sizes); activations are the ones MLPClassifier offers.
N_LAYERS = (1, 3)
LOG2_UNITS = (5.0, 9.0)  # 32 to 512
ACTIVATIONS = ["relu", "tanh", "logistic"]
ALPHA = (1e-6, 1e-2)
LEARNING_RATE = (1e-4, 1e-2)
BATCH_SIZES = [32, 64, 128]


def holdout(seed: int, regression: bool = False) -> StratifiedShuffleSplit | ShuffleSplit:
    if regression:
        return ShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)
    return StratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)


def peer_estimator(data: Data, seed: int, fast: bool) -> tuple[_Layered, str, bool]:
    """The peers' estimator, scoring and task for ``data``: regression on float targets."""
    regression = np.asarray(data[2]).dtype.kind == "f"
    estimator_class = LayeredMLPRegressor if regression else LayeredMLP
    estimator = estimator_class(random_state=seed, max_iter=3 if fast else 100)
    return estimator, "r2" if regression else "accuracy", regression


# -- methods ---------------------------------------------------------------------------
def fit_evo(
    data: Data, sampler: str, seed: int, budget: float, fast: bool, cv: int | None = None
) -> dict[str, Any]:
    from evohpo import EvoSearchClassifier, EvoSearchRegressor

    X_train, X_test, y_train, y_test = data
    settings: dict[str, Any] = {}
    if fast:
        settings = {"max_epochs": 3, "search_space": {"max_layers": 1, "units": (8, 32)}}
    regression = np.asarray(y_train).dtype.kind == "f"
    estimator = EvoSearchRegressor if regression else EvoSearchClassifier
    clf = estimator(
        n_trials=None,  # the budget is the timeout
        timeout=budget,
        sampler=sampler,
        random_state=seed,
        device="cpu",
        cv=cv,
        **settings,
    )
    started = time.perf_counter()
    clf.fit(X_train, y_train)
    wall = time.perf_counter() - started
    return {
        "test_accuracy": float(clf.score(X_test, y_test)),
        "trials": clf.n_trials_,
        "wall_seconds": wall,
        "detail": f"val {clf.best_score_:.4f}; {clf.best_genome_.to_json()}",
    }


def fit_gasearchcv(data: Data, seed: int, budget: float, fast: bool) -> dict[str, Any]:
    from sklearn_genetic import GASearchCV
    from sklearn_genetic.callbacks import TimerStopping
    from sklearn_genetic.space import Categorical, Continuous, Integer

    X_train, X_test, y_train, y_test = data
    estimator, scoring, regression = peer_estimator(data, seed, fast)
    space = {
        "n_layers": Integer(*N_LAYERS),
        "log2_units_1": Continuous(*LOG2_UNITS),
        "log2_units_2": Continuous(*LOG2_UNITS),
        "log2_units_3": Continuous(*LOG2_UNITS),
        "activation": Categorical(ACTIVATIONS),
        "alpha": Continuous(*ALPHA, distribution="log-uniform"),
        "learning_rate_init": Continuous(*LEARNING_RATE, distribution="log-uniform"),
        "batch_size": Categorical(BATCH_SIZES),
    }
    search = GASearchCV(
        estimator,
        cv=holdout(seed, regression),
        param_grid=space,
        scoring=scoring,
        population_size=4 if fast else 10,
        generations=10_000,  # the budget is the timer
        n_jobs=1,
        verbose=False,
    )
    # DEAP and the space's scipy draws use the global generators; seed them
    # for a reproducible run.
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002
    started = time.perf_counter()
    search.fit(X_train, y_train, callbacks=[TimerStopping(total_seconds=budget)])
    wall = time.perf_counter() - started
    return {
        "test_accuracy": float(search.score(X_test, y_test)),
        "trials": len(search.cv_results_["params"]),
        "wall_seconds": wall,
        "detail": f"val {search.best_score_:.4f}; {search.best_params_}",
    }


def fit_optunasearchcv(data: Data, seed: int, budget: float, fast: bool) -> dict[str, Any]:
    import optuna
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna_integration import OptunaSearchCV

    X_train, X_test, y_train, y_test = data
    estimator, scoring, regression = peer_estimator(data, seed, fast)
    space = {
        "n_layers": IntDistribution(*N_LAYERS),
        "log2_units_1": FloatDistribution(*LOG2_UNITS),
        "log2_units_2": FloatDistribution(*LOG2_UNITS),
        "log2_units_3": FloatDistribution(*LOG2_UNITS),
        "activation": CategoricalDistribution(ACTIVATIONS),
        "alpha": FloatDistribution(*ALPHA, log=True),
        "learning_rate_init": FloatDistribution(*LEARNING_RATE, log=True),
        "batch_size": CategoricalDistribution(BATCH_SIZES),
    }
    search = OptunaSearchCV(
        estimator,
        space,
        cv=holdout(seed, regression),
        n_trials=None,  # the budget is the timeout
        timeout=budget,
        random_state=seed,
        scoring=scoring,
        verbose=0,
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        search.fit(X_train, y_train)
    wall = time.perf_counter() - started
    return {
        "test_accuracy": float(search.score(X_test, y_test)),
        "trials": len(search.trials_),
        "wall_seconds": wall,
        "detail": f"val {search.best_score_:.4f}; {search.best_params_}",
    }


def fit_default_mlp(data: Data, seed: int, budget: float, fast: bool) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning

    X_train, X_test, y_train, y_test = data
    settings: dict[str, Any] = {"random_state": seed, **({"max_iter": 3} if fast else {})}
    if np.asarray(y_train).dtype.kind == "f":  # regression: targets standardised too
        mlp: Any = TransformedTargetRegressor(
            MLPRegressor(**settings), transformer=StandardScaler()
        )
    else:
        mlp = MLPClassifier(**settings)
    model = make_pipeline(StandardScaler(), mlp)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, y_train)
    wall = time.perf_counter() - started
    return {
        "test_accuracy": float(model.score(X_test, y_test)),
        "trials": 1,
        "wall_seconds": wall,
        "detail": f"n_iter {getattr(model[-1], 'regressor_', model[-1]).n_iter_}",
    }


def method_runner(
    method: str, cv: int | None = None
) -> Callable[[Data, int, float, bool], dict[str, Any]]:
    if method in EVO_METHODS:
        return lambda data, seed, budget, fast: fit_evo(data, method, seed, budget, fast, cv)
    runners = {
        "GASearchCV": fit_gasearchcv,
        "OptunaSearchCV": fit_optunasearchcv,
        "MLPClassifier": fit_default_mlp,
    }
    return runners[method]


def label(method: str, dataset: str | None = None, cv: int | None = None) -> str:
    if method == "MLPClassifier" and dataset is not None and is_regression(dataset):
        return "MLPRegressor"
    if method in EVO_METHODS and cv is not None:
        return f"{EVO_METHODS[method]} cv={cv}"
    return EVO_METHODS.get(method, method)


# -- running and summarising -----------------------------------------------------------
def limit_threads(n: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(n)


def warm_up() -> None:
    """Pay the one-off costs (imports, torch's first kernels) before any timed run."""
    from evohpo import EvoSearchClassifier

    X, y = np.random.default_rng(0).normal(size=(40, 4)), np.arange(40) % 2
    EvoSearchClassifier(n_trials=2, max_epochs=1, random_state=0, device="cpu").fit(X, y)
    LayeredMLP(max_iter=1).fit(X, y)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    warm_up()
    out = RESULTS / args.out
    RESULTS.mkdir(parents=True, exist_ok=True)
    done = read_runs([out]) if args.resume and out.exists() else []
    seen = {(r["dataset"], r["method"], int(r["seed"])) for r in done}
    runs = list(done)
    with out.open("a" if done else "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RUN_FIELDS)
        if not done:
            writer.writeheader()
        for name in args.datasets:
            data = load_split(name)
            # Seeds outermost: a passing burst of load on the machine then
            # falls on every method rather than on one.
            for seed in args.seeds:
                for method in args.methods:
                    method_label = label(method, name, args.cv)
                    if (name, method_label, seed) in seen:
                        continue
                    result = method_runner(method, args.cv)(data, seed, args.budget, args.fast)
                    row = {"dataset": name, "method": method_label, "seed": seed, **result}
                    writer.writerow(row)
                    fh.flush()
                    runs.append(row)
                    print(
                        f"{name:13s} {method_label:15s} seed {seed}: "
                        f"test {row['test_accuracy']:.4f}, {row['trials']} trials, "
                        f"{row['wall_seconds']:.1f}s",
                        flush=True,
                    )
    print(f"runs: {out}")
    return runs


def median_range(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.4f} [{min(values):.4f}, {max(values):.4f}]"


def summarize(runs: Sequence[dict[str, Any]], metric: str = "accuracy") -> list[dict[str, Any]]:
    rows = []
    order = {name: i for i, name in enumerate([*DATASETS, *map(label, METHODS), "MLPRegressor"])}
    keys = dict.fromkeys((r["dataset"], r["method"]) for r in runs)
    for dataset, method in sorted(keys, key=lambda k: (order.get(k[0], 99), order.get(k[1], 99))):
        group = [r for r in runs if r["dataset"] == dataset and r["method"] == method]
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "seeds": len(group),
                f"test {metric} median [min, max]": median_range(
                    [float(r["test_accuracy"]) for r in group]
                ),
                "trials (median)": f"{statistics.median(int(r['trials']) for r in group):g}",
                "wall s (median)": "{:.1f}".format(
                    statistics.median(float(r["wall_seconds"]) for r in group)
                ),
            }
        )
    return rows


def verdicts(runs: Sequence[dict[str, Any]]) -> list[str]:
    """One line per data set: is the GA's median at or above every peer's?"""
    lines = []
    challenger = label(CHALLENGER)
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        medians = {
            method: statistics.median(
                float(r["test_accuracy"])
                for r in runs
                if r["dataset"] == dataset and r["method"] == method
            )
            for method in dict.fromkeys(r["method"] for r in runs if r["dataset"] == dataset)
        }
        if challenger not in medians:
            continue
        ours = medians.pop(challenger)
        peers = {m: v for m, v in medians.items() if m in PEER_LABELS}
        behind = [f"{m} {v:.4f}" for m, v in peers.items() if v > ours]
        verdict = "at or above every peer" if not behind else "behind " + ", ".join(behind)
        lines.append(f"{dataset}: {challenger} median {ours:.4f}: {verdict}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny budget and networks: a smoke run")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--budget", type=float, default=None, help="seconds per search run")
    parser.add_argument("--threads", type=int, default=1, help="threads of torch and BLAS")
    parser.add_argument("--out", default=None, help="run file name under bench/results")
    parser.add_argument("--resume", action="store_true", help="keep runs already in the file")
    parser.add_argument("--summarize", nargs="+", metavar="CSV", help="summarize run files")
    parser.add_argument(
        "--cv", type=int, default=None, help="evohpo's cv folds (default: its 0.2 hold-out)"
    )
    args = parser.parse_args()
    if args.cv is not None and args.cv < 2:
        parser.error(f"--cv must be at least 2, got {args.cv}")
    # The fast mode is a smoke run of every code path, not a measurement.
    args.datasets = args.datasets or (["wine"] if args.fast else list(DATASETS))
    args.seeds = args.seeds or ([0] if args.fast else [0, 1, 2])
    args.budget = args.budget if args.budget is not None else (1.0 if args.fast else 60.0)
    args.out = args.out or ("peers_runs_fast.csv" if args.fast else "peers_runs.csv")
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    # OptunaSearchCV's internals use Optuna's deprecated terminator module.
    warnings.filterwarnings("ignore", ".*terminator.*", FutureWarning)
    warnings.filterwarnings("ignore", ".*TerminatorCallback.*", UserWarning)
    # Tiny folds in the fast mode: MLPClassifier clips its batch size.
    warnings.filterwarnings("ignore", ".*batch_size.*", UserWarning)
    limit_threads(args.threads)
    runs = read_runs(args.summarize) if args.summarize else run(args)
    mode = "fast smoke mode" if args.fast else f"{args.budget:g} s per run"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\npeers at the same wall-clock budget ({mode}), {machine()}, {args.threads} thread(s)")
    print(f"load average at the end: {load}")
    print(f"torch {__import__('torch').__version__}\n")
    classification = [r for r in runs if not is_regression(r["dataset"])]
    regression = [r for r in runs if is_regression(r["dataset"])]
    suffix = "_fast" if args.fast else ""
    for part, metric, name in (
        (classification, "accuracy", f"peers{suffix}.csv"),
        (regression, "R2", f"peers_regression{suffix}.csv"),
    ):
        if not part:
            continue
        rows = summarize(part, metric)
        print(markdown_table(rows))
        print()
        for line in verdicts(part):
            print(line)
        print(f"\nCSV: {write_csv(name, rows)}\n")


if __name__ == "__main__":
    main()
