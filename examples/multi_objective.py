"""Multi-objective search: validation accuracy against parameter count.

EvoSampler on a study with two directions uses NSGA-II selection (Pareto rank,
then crowding distance), so it keeps a front of small and accurate networks
instead of one winner.

    python examples/multi_objective.py          # 40 trials on digits
    python examples/multi_objective.py --fast   # or EVOHPO_FAST=1
"""

from __future__ import annotations

import argparse
import os

import optuna
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import evohpo
from evohpo.training.config import TrainConfig
from evohpo.training.loop import train_classifier


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a tiny budget")
    args = parser.parse_args(argv)
    fast = args.fast or os.environ.get("EVOHPO_FAST", "") not in ("", "0")
    n_trials, epochs = (10, 3) if fast else (40, 20)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    X, y = load_digits(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    scaler = StandardScaler().fit(X_train)
    X_train, X_val = scaler.transform(X_train), scaler.transform(X_val)
    space = evohpo.SearchSpace(max_layers=3, units=(4, 256), batch_sizes=(32, 64))

    def objective(trial: optuna.Trial) -> tuple[float, int]:
        genome = evohpo.suggest_genome(trial, space)
        result = train_classifier(
            genome,
            X_train,
            y_train,
            X_val,
            y_val,
            n_classes=10,
            config=TrainConfig(max_epochs=epochs, patience=4, device="cpu", seed=trial.number),
        )
        return result.best_score, result.n_parameters

    study = optuna.create_study(
        directions=["maximize", "minimize"],
        sampler=evohpo.EvoSampler(population_size=4 if fast else 10, search_space=space, seed=0),
    )
    study.optimize(objective, n_trials=n_trials)

    front = sorted(study.best_trials, key=lambda t: t.values[1])
    print(f"Pareto front of {len(study.trials)} trials (accuracy vs parameters):")
    for trial in front:
        accuracy, n_parameters = trial.values
        layers = [trial.params[f"layer{i}.units"] for i in range(trial.params["n_layers"])]
        print(
            f"  trial {trial.number:>3}: accuracy {accuracy:.4f}, "
            f"{int(n_parameters):>6} parameters, layers {layers}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
