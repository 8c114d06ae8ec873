"""The refit under a timeout: what it is expected to cost, which members it can afford,
and which it keeps when the deadline cuts them short."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from sklearn.datasets import make_regression

import evohpo.estimator.base as estimator_base
from evohpo import EvoSearchRegressor
from evohpo.estimator.refit import (
    MAX_MSE_RATIO,
    MIN_TRAINED_SHARE,
    affordable_members,
    ensemble_members,
    kept_members,
    refit_ensemble,
    refit_epochs,
    refit_seconds,
)
from evohpo.evolution.genome import Genome, LayerGene
from evohpo.search.objective import GenomeObjective
from evohpo.training.config import TrainConfig

SPACE = {
    "max_layers": 1,
    "units": (8, 16),
    "dropout": (0.0, 0.1),
    "optimizers": ("adam",),
    "learning_rate": (1e-2, 3e-2),
    "batch_sizes": (32,),
}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_regression(n_samples=200, n_features=5, noise=0.1, random_state=0)
    return X, y


@pytest.fixture(scope="module")
def objective(data: tuple[np.ndarray, np.ndarray]) -> GenomeObjective:
    X, y = data
    config = TrainConfig(max_epochs=5, device="cpu", task="regression")
    return GenomeObjective(X, y, train_config=config, validation_fraction=0.2, seed=0)


def finished(number: int, best_epoch: int, epochs_run: int, seconds: float):
    trial = optuna.trial.create_trial(
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0.0, 1.0)},
        value=1.0 - number / 10,
        user_attrs={"best_epoch": best_epoch, "epochs_run": epochs_run, "train_seconds": seconds},
    )
    trial.number = number
    return trial


def scored(number: int, value: float, val_loss: float | None):
    attrs = {} if val_loss is None else {"val_loss": val_loss}
    trial = optuna.trial.create_trial(
        params={"x": number / 10},
        distributions={"x": FloatDistribution(0.0, 1.0)},
        value=value,
        user_attrs=attrs,
    )
    trial.number = number
    return trial


def test_a_regression_ensemble_passes_over_members_far_worse_than_the_best():
    best = scored(0, 0.98, 0.02)
    close = scored(1, 0.95, 0.02 * MAX_MSE_RATIO)  # at the limit: kept
    poor = scored(2, 0.40, 0.6)
    unrecorded = scored(3, 0.30, None)  # nothing to judge by: kept
    trials = [poor, close, unrecorded, best]
    assert [t.number for t in ensemble_members(trials, 3, "regression")] == [0, 1, 3]
    # Classification keeps the best k whatever their losses; so does a regression
    # ensemble whose members are alike.
    assert [t.number for t in ensemble_members(trials, 3)] == [0, 1, 2]
    alike = [scored(i, 0.5 - i / 100, 0.5 + i / 100) for i in range(4)]
    assert len(ensemble_members(alike, 5, "regression")) == 4


def test_refit_seconds_scale_to_all_the_rows_and_the_refit_epochs(objective):
    assert objective.n_samples == 200
    assert objective.train_size == 160
    trial = finished(0, best_epoch=8, epochs_run=10, seconds=2.0)
    assert refit_epochs(trial, objective) == 10  # 8 epochs over 160 rows, 10 over 200
    # 0.2 s per epoch of 160 rows, 0.25 s per epoch of 200, 10 epochs
    assert refit_seconds(trial, objective) == pytest.approx(2.5)
    assert refit_seconds(finished(1, 8, 10, 0.0), objective) == 0.0


def test_affordable_members_are_the_best_that_fit_together(objective):
    # estimates 2.5, 1.25 and 0.5 s
    members = [finished(0, 8, 10, 2.0), finished(1, 8, 10, 1.0), finished(2, 4, 10, 0.8)]
    numbers = lambda seconds: [t.number for t in affordable_members(members, objective, seconds)]  # noqa: E731
    assert numbers(10.0) == [0, 1, 2]
    assert numbers(4.25) == [0, 1, 2]
    assert numbers(3.9) == [0, 1]  # the third would not fit after the second
    assert numbers(3.0) == [0]  # a prefix of the ranking: no weaker member jumps the queue
    assert numbers(0.1) == [0]  # the best always trains
    assert affordable_members([], objective, 1.0) == []


def test_kept_members_leave_out_those_cut_short():
    planned = [20, 20, 8, 8]
    assert kept_members([20, 20, 8, 8], planned) == [0, 1, 2, 3]
    assert kept_members([1, 15, 6, 5], planned) == [0, 1, 2]  # 5 < 0.75 * 8
    assert kept_members([1, 1, 1, 1], planned) == [0]
    assert MIN_TRAINED_SHARE * 8 == 6.0


def test_a_refit_cut_by_its_deadline_reports_the_epochs_it_trained(objective):
    genomes = [
        Genome([LayerGene(16, "relu", 0.0)], "adam", 1e-2, 0.0, 32),
        Genome([LayerGene(8, "tanh", 0.0)], "adam", 1e-2, 0.0, 32),
    ]
    full = refit_ensemble(objective, genomes, [6, 4], root=0)
    assert full.epochs_run == (6, 4)
    cut = refit_ensemble(objective, genomes, [400, 400], root=0, max_train_time=1e-4)
    assert len(cut.epochs_run) == 2
    assert max(cut.epochs_run) < 400
    assert kept_members(cut.epochs_run, [400, 400]) == [0]


def test_the_estimator_keeps_only_members_trained_long_enough(monkeypatch):
    # Noisy targets: members alike enough (validation MSEs within MAX_MSE_RATIO) to average.
    X, y = make_regression(n_samples=200, n_features=5, noise=30.0, random_state=0)
    settings = dict(n_trials=4, max_epochs=30, patience=None, search_space=SPACE)
    settings.update(device="cpu", random_state=0)
    whole = EvoSearchRegressor(**settings).fit(X, y)
    assert len(whole.ensemble_models_) > 1

    real_refit = estimator_base.refit_ensemble

    def cut_refit(objective, genomes, epochs, root, *, max_train_time=None, initial_states=None):
        return real_refit(
            objective, genomes, epochs, root, max_train_time=1e-4, initial_states=initial_states
        )

    monkeypatch.setattr(estimator_base, "refit_ensemble", cut_refit)
    cut = EvoSearchRegressor(**settings).fit(X, y)
    assert cut.ensemble_trials_ == whole.ensemble_trials_[:1]
    assert len(cut.ensemble_models_) == len(cut.ensemble_genomes_) == len(cut.refit_epochs_) == 1
    assert cut.best_model_ is cut.ensemble_models_[0]
    assert np.isfinite(cut.predict(X)).all()
