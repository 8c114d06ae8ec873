"""Resume a study from storage: the GA breeds from the population it stored.

EvoSampler keeps nothing that matters in memory: the population is the study's
finished trials and each child's lineage is a trial attribute. A study stopped
after 8 trials (here: a new sampler object stands for a new process) goes on
from its stored population; budgets are totals, as with ``evohpo run``.

    python examples/resume_study.py          # 12 + 12 trials on wine
    python examples/resume_study.py --fast   # or EVOHPO_FAST=1
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import optuna
import torch
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from sklearn.datasets import load_wine

import evohpo
from evohpo.search.objective import GenomeObjective
from evohpo.training.config import TrainConfig


def run(storage: str, total: int, objective: GenomeObjective, space: evohpo.SearchSpace) -> None:
    """One "process": load or create the study and run it up to ``total`` trials."""
    study = optuna.create_study(
        storage=storage,
        study_name="wine-ga",
        direction="maximize",
        sampler=evohpo.EvoSampler(population_size=4, search_space=space, seed=0),
        load_if_exists=True,
    )
    done = len(study.get_trials(states=(TrialState.COMPLETE,)))
    # n_trials counts new trials; MaxTrialsCallback stops at the total.
    study.optimize(
        objective,
        n_trials=max(0, total - done),
        callbacks=[MaxTrialsCallback(total, states=(TrialState.COMPLETE,))],
    )
    print(f"study holds {len(study.trials)} trials, best {study.best_value:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a tiny budget")
    args = parser.parse_args(argv)
    fast = args.fast or os.environ.get("EVOHPO_FAST") == "1"
    first, total = (5, 8) if fast else (12, 24)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    X, y = load_wine(return_X_y=True)
    space = evohpo.SearchSpace(max_layers=2, units=(4, 64))
    objective = GenomeObjective(
        X, y, space=space, train_config=TrainConfig(max_epochs=5 if fast else 30, device="cpu")
    )
    with tempfile.TemporaryDirectory() as directory:
        storage = f"sqlite:///{Path(directory) / 'resume.db'}"
        run(storage, first, objective, space)  # the first process stops here
        run(storage, total, objective, space)  # a later one resumes up to the total

        study = optuna.load_study(study_name="wine-ga", storage=storage)
        for trial in study.trials[first:]:
            lineage = trial.user_attrs["evohpo"]
            older = [p for p in lineage["parents"] if p < first]
            note = f" <- bred from trials {older} of the first run" if older else ""
            print(f"trial {trial.number}: {lineage['origin']}, parents {lineage['parents']}{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
