"""Run EvoSampler through OptunaHub's loader on a small pure-Python objective.

Loads the package from this checkout (``load_local_module``); once the package
is in the registry, ``optunahub.load_module("samplers/evohpo")`` does the same.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import optunahub

# package/samplers/evohpo/example.py -> package/
REGISTRY_ROOT = Path(__file__).resolve().parents[2]


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    depth = trial.suggest_int("depth", 1, 8)
    activation = trial.suggest_categorical("activation", ["relu", "tanh", "sigmoid"])
    # Best: x = 1, lr = 1e-3, depth = 4, relu.
    penalty = 0.0 if activation == "relu" else 1.0
    return (x - 1.0) ** 2 + (math.log10(lr) + 3.0) ** 2 + (depth - 4) ** 2 / 4 + penalty


def main() -> None:
    module = optunahub.load_local_module(
        package="samplers/evohpo", registry_root=str(REGISTRY_ROOT)
    )
    sampler = module.EvoSampler(population_size=6, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=30)
    print(f"best value {study.best_value:.4f} with {study.best_params}")


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    main()
