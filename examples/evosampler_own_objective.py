"""EvoSampler on your own Optuna objective: conditional parameters, any names.

The objective below picks a scikit-learn classifier and then only the
parameters of that classifier (define-by-run, conditional). EvoSampler evolves
the union of every parameter it has seen, so a child that switches from an SVM
to k-nearest neighbours still inherits tuned neighbour settings from the
population instead of drawing them at random.

    python examples/evosampler_own_objective.py          # 60 trials, under a minute
    python examples/evosampler_own_objective.py --fast   # or EVOHPO_FAST=1: a few seconds
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import optuna
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import evohpo


def make_objective(fast: bool) -> Callable[[optuna.Trial], float]:
    X, y = load_digits(return_X_y=True)
    if fast:
        X, y = X[:500], y[:500]

    def objective(trial: optuna.Trial) -> float:
        kind = trial.suggest_categorical("classifier", ["svc", "knn", "logreg"])
        if kind == "svc":
            model = SVC(
                C=trial.suggest_float("svc.C", 1e-2, 1e3, log=True),
                gamma=trial.suggest_float("svc.gamma", 1e-4, 1e0, log=True),
            )
        elif kind == "knn":
            model = KNeighborsClassifier(
                n_neighbors=trial.suggest_int("knn.n_neighbors", 1, 30),
                weights=trial.suggest_categorical("knn.weights", ["uniform", "distance"]),
            )
        else:
            model = LogisticRegression(
                C=trial.suggest_float("logreg.C", 1e-3, 1e2, log=True), max_iter=300
            )
        pipeline = make_pipeline(StandardScaler(), model)
        return float(cross_val_score(pipeline, X, y, cv=3).mean())

    return objective


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a few trials on less data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    fast = args.fast or os.environ.get("EVOHPO_FAST", "") not in ("", "0")
    n_trials = 12 if fast else 60

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = evohpo.EvoSampler(population_size=4 if fast else 12, seed=args.seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(make_objective(fast), n_trials=n_trials)

    best = study.best_trial
    print(f"best cross-validated accuracy: {best.value:.4f} (trial {best.number})")
    print(f"best parameters: {best.params}")
    lineage = best.user_attrs["evohpo"]
    print(
        f"its lineage: origin={lineage['origin']}, generation={lineage['generation']}, "
        f"parents={lineage['parents']}, operators={lineage['operators']}"
    )
    bred = [t for t in study.trials if t.user_attrs["evohpo"]["origin"] == "bred"]
    print(f"{len(bred)} of {len(study.trials)} trials were bred from the population")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
