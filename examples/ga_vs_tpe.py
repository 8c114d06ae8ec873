"""GA vs TPE on the same objective, the same budget and the same seeds.

The objective is evohpo's GenomeObjective: it asks for a network through
``evohpo.suggest_genome``, so Optuna's TPE and evohpo's EvoSampler answer the
very same questions and see the very same data. (``evohpo compare
studies/digits.toml`` does this with study files, storage, a table and a plot.)

    python examples/ga_vs_tpe.py          # 2 samplers x 3 seeds x 20 trials, a few minutes
    python examples/ga_vs_tpe.py --fast   # or EVOHPO_FAST=1: seconds
"""

from __future__ import annotations

import argparse
import os
import statistics

import optuna
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import evohpo
from evohpo.search.objective import GenomeObjective
from evohpo.training.config import TrainConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a tiny budget")
    args = parser.parse_args(argv)
    fast = args.fast or os.environ.get("EVOHPO_FAST", "") not in ("", "0")
    n_trials, seeds, epochs = (6, [0], 3) if fast else (20, [0, 1, 2], 20)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # small networks train fastest on one thread
    X, y = load_digits(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    space = evohpo.SearchSpace(max_layers=3, units=(16, 256), batch_sizes=(32, 64, 128))
    config = TrainConfig(max_epochs=epochs, patience=4, device="cpu")

    best: dict[str, list[float]] = {"ga": [], "tpe": []}
    for seed in seeds:
        # Same rows for both samplers: an explicit validation set.
        objective = GenomeObjective(
            X_train,
            y_train,
            space=space,
            train_config=config,
            validation_data=(X_val, y_val),
            seed=seed,
        )
        samplers = {
            "ga": evohpo.EvoSampler(
                population_size=4 if fast else 8, search_space=space, seed=seed
            ),
            "tpe": optuna.samplers.TPESampler(n_startup_trials=4 if fast else 8, seed=seed),
        }
        for name, sampler in samplers.items():
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.optimize(objective, n_trials=n_trials)
            best[name].append(study.best_value)
            print(f"seed {seed} {name:>3}: best validation accuracy {study.best_value:.4f}")

    for name, values in best.items():
        spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        print(f"{name:>3}: mean best validation accuracy {statistics.fmean(values):.4f}{spread}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
