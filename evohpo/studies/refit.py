"""Refit a study's best genome and measure its test accuracy (R2 for regression).

The test rows stay unseen during the search: the best trial's genome is
trained again on the training and validation rows together and scored on
the test rows once; the result is kept in the study user attribute
:data:`TEST_ATTR`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from evohpo._interrupt import GracefulStop
from evohpo.evolution.genome import Genome
from evohpo.studies.data import PreparedData

if TYPE_CHECKING:
    from evohpo.search.objective import GenomeObjective
    from evohpo.training.config import TrainResult

__all__ = [
    "TEST_ATTR",
    "best_genome",
    "cached_test_accuracy",
    "measure_test_accuracy",
    "refit",
]

#: Study user attribute caching the test score of the best trial's refit: ``"accuracy"``,
#: or ``"r2"`` for regression.
TEST_ATTR = "evohpo.test"


def best_genome(trial: FrozenTrial) -> Genome:
    """The genome a trial trained: its ``genome`` user attribute, else its parameters."""
    stored = trial.user_attrs.get("genome")
    if isinstance(stored, str):
        return Genome.from_json(stored)
    return Genome.from_params(trial.params)


def refit(
    objective: GenomeObjective, trial: FrozenTrial, study: optuna.Study | None = None
) -> TrainResult:
    """Train ``trial``'s genome on the training and validation rows together.

    It trains for the trial's best epoch count (no early stopping: no rows are
    left to stop on) with the trial's own training seed, from the weights the
    trial started from: its seed's, or with ``inherit_weights`` those it
    inherited from its parents in ``study`` (:meth:`GenomeObjective.refit_start`).
    The returned :class:`~evohpo.training.config.TrainResult`'s model expects
    features transformed by ``objective.standardizer()``.
    """
    epochs = trial.user_attrs.get("best_epoch")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        epochs = None  # the objective finds it with one early-stopped training
    start = None if study is None else objective.refit_start(study, trial)
    return objective.fit_genome(
        best_genome(trial),
        seed=objective.trial_seed(trial.number),
        epochs=epochs,
        initial_state=start,
    )


def cached_test_accuracy(user_attrs: Mapping[str, Any], trial: int) -> float | None:
    """The test accuracy (or R2) :data:`TEST_ATTR` holds for trial number ``trial``, if any.

    Examples
    --------
    >>> cached_test_accuracy({TEST_ATTR: {"trial": 3, "accuracy": 0.9}}, 3)
    0.9
    >>> cached_test_accuracy({TEST_ATTR: {"trial": 3, "accuracy": 0.9}}, 4) is None
    True
    """
    cached = user_attrs.get(TEST_ATTR)
    if not isinstance(cached, Mapping) or cached.get("trial") != trial:
        return None
    value = cached.get("accuracy", cached.get("r2"))
    return float(value) if isinstance(value, (int, float)) else None


def measure_test_accuracy(
    study: optuna.Study,
    objective: GenomeObjective,
    data: PreparedData,
    *,
    guard: GracefulStop | None = None,
) -> float | None:
    """Refit the best trial's genome (see :func:`refit`), score it on the test rows:
    its accuracy, or for regression its R2 (predictions mapped back to the
    targets' scale).

    The result is cached in the study user attribute :data:`TEST_ATTR` for
    the best trial's number, so it is measured once.

    Returns ``None`` for a study without a completed trial.
    """
    from evohpo.training.predict import predict_logits

    try:
        trial = study.best_trial
    except ValueError:
        return None
    cached = cached_test_accuracy(study.user_attrs, trial.number)
    if cached is not None:
        return cached
    guard = guard if guard is not None else GracefulStop()
    guard.check()
    result = refit(objective, trial, study)  # stops at a training step on a signal
    logits = predict_logits(result.model, objective.standardizer().transform(data.X_test))
    target = objective.target_standardizer()
    if target is not None:
        from sklearn.metrics import r2_score

        predictions = target.inverse_transform(logits)
        y_test = np.asarray(data.y_test, dtype=np.float64).reshape(len(predictions), -1)
        score, key = float(r2_score(y_test, predictions)), "r2"
    else:
        score, key = float(np.mean(logits.argmax(axis=1) == data.y_test)), "accuracy"
    study.set_user_attr(
        TEST_ATTR,
        {"trial": trial.number, key: score, "n_test": len(data.y_test)},
    )
    return score
