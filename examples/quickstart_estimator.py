"""Quickstart: let EvoSearchClassifier find a network for scikit-learn's digits.

    python examples/quickstart_estimator.py          # default settings, about a minute
    python examples/quickstart_estimator.py --fast   # a few seconds (also: EVOHPO_FAST=1)

The estimator searches layer-wise networks with a genetic algorithm (20 trials by
default), retrains the best one on all the training data and then behaves like
any scikit-learn classifier.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from evohpo import EvoSearchClassifier


def main(argv: Sequence[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fast",
        action="store_true",
        default=os.environ.get("EVOHPO_FAST", "") not in ("", "0"),
        help="a tiny search budget, for a smoke run",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    budget = {"n_trials": 3, "max_epochs": 5} if args.fast else {}
    clf = EvoSearchClassifier(random_state=0, verbose=1, **budget)  # sampler="ga" by default
    clf.fit(X_train, y_train)

    accuracy = clf.score(X_test, y_test)
    print(f"\ntest accuracy: {accuracy:.4f}")
    print(f"best genome:   {clf.best_genome_.to_json()}")
    print(
        f"ensemble:      trials {clf.ensemble_trials_}, refit for {clf.refit_epochs_} epochs "
        f"on all {len(y_train)} training rows\n"
    )
    columns = ["number", "mean_test_score", "rank_test_score", "n_parameters", "mean_fit_time"]
    trials = pd.DataFrame(clf.cv_results_)[columns].sort_values("rank_test_score")
    print(trials.head().to_string(index=False))
    return accuracy


if __name__ == "__main__":
    main()
