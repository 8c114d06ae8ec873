"""The refit: which trials join the ensemble, how each is retrained, how they vote."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from optuna.trial import FrozenTrial
from torch import nn

from evohpo._random import derive_seed
from evohpo.estimator.results import rank_key
from evohpo.evolution.genome import Genome
from evohpo.search.objective import GenomeObjective
from evohpo.search.splits import Standardizer
from evohpo.training.predict import predict_logits, predict_proba

__all__ = [
    "Ensemble",
    "affordable_members",
    "ensemble_members",
    "kept_members",
    "mean_log_proba",
    "mean_prediction",
    "mean_proba",
    "refit_ensemble",
    "refit_epochs",
    "refit_seconds",
    "refit_seed",
]

#: A member the deadline cut short keeps its place only with this share of its epochs:
#: averaging in a barely trained network costs the ensemble more than leaving it out.
MIN_TRAINED_SHARE = 0.75

#: Regression: a member whose validation MSE is more than this multiple of the best
#: member's stays out. The mean of two predictors with MSEs ``a <= b`` has MSE
#: ``(a + b + 2 cov) / 4``, below ``a`` only if ``b < 3a`` even when their errors are
#: uncorrelated: such a member can only pull the average away from the best.
MAX_MSE_RATIO = 3.0


@dataclass(frozen=True)
class Ensemble:
    """The refitted members, best first, the scaler their inputs need and, for
    regression, the one that maps their outputs back to the targets."""

    models: list[nn.Sequential]
    scaler: Standardizer
    seconds: float
    target: Standardizer | None = None
    #: Epochs each member trained, in order (fewer than planned when the deadline cut it).
    epochs_run: tuple[int, ...] = ()


def ensemble_members(
    complete: list[FrozenTrial], size: int, task: str = "classification"
) -> list[FrozenTrial]:
    """The ``size`` best complete trials, one per distinct set of parameters.

    A GA re-evaluates some genomes (an elite, a child equal to its parent): a
    repeat adds nothing an ensemble needs, a different network does. For
    regression, trials whose validation MSE exceeds :data:`MAX_MSE_RATIO` times
    the best member's are passed over (a short search can have few good ones).
    """
    members: list[FrozenTrial] = []
    seen: set[str] = set()
    for trial in sorted(complete, key=rank_key, reverse=True):
        key = json.dumps(trial.params, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        if members and task == "regression" and _far_worse(trial, members[0]):
            continue
        members.append(trial)
        if len(members) == size:
            break
    return members


def _far_worse(trial: FrozenTrial, best: FrozenTrial) -> bool:
    """Whether ``trial``'s validation MSE exceeds :data:`MAX_MSE_RATIO` times ``best``'s."""
    loss, best_loss = trial.user_attrs.get("val_loss"), best.user_attrs.get("val_loss")
    if not isinstance(loss, (int, float)) or not isinstance(best_loss, (int, float)):
        return False  # not recorded: nothing to judge by
    return loss > MAX_MSE_RATIO * best_loss


def refit_epochs(trial: FrozenTrial, objective: GenomeObjective) -> int:
    """As many passes over every row as the trial's best epoch made over its training
    rows: scaled up to the larger data (x1.25 for a 0.2 holdout)."""
    best_epoch = max(1, int(trial.user_attrs.get("best_epoch", 1)))
    return max(1, round(best_epoch * objective.n_samples / objective.train_size))


def refit_seconds(trial: FrozenTrial, objective: GenomeObjective) -> float:
    """Estimated training seconds of ``trial``'s genome at the refit.

    The trial's own seconds per epoch (folds added up under cross-validation),
    scaled to all the rows (an epoch of the refit passes over
    ``n_samples / train_size`` times as many) and to :func:`refit_epochs`.
    """
    epochs_run = max(1, int(trial.user_attrs.get("epochs_run", 1)))
    per_epoch = float(trial.user_attrs.get("train_seconds", 0.0)) / epochs_run
    rows = objective.n_samples / objective.train_size
    return per_epoch * rows * refit_epochs(trial, objective)


def affordable_members(
    members: Sequence[FrozenTrial], objective: GenomeObjective, seconds: float
) -> list[FrozenTrial]:
    """The best members (in the order given) whose refits fit in ``seconds`` together.

    The first member always stays, even when it alone does not fit: a fitted
    estimator needs a model, and the deadline then cuts its training short.
    """
    kept = list(members[:1])
    spent = sum(refit_seconds(trial, objective) for trial in kept)
    for trial in members[1:]:
        spent += refit_seconds(trial, objective)
        if spent > seconds:
            break
        kept.append(trial)
    return kept


def kept_members(epochs_run: Sequence[int], planned: Sequence[int]) -> list[int]:
    """Ranks of the refitted members to keep: the best, and every other that
    trained at least :data:`MIN_TRAINED_SHARE` of its ``planned`` epochs."""
    return [
        rank
        for rank, (run, epochs) in enumerate(zip(epochs_run, planned, strict=True))
        if rank == 0 or run >= MIN_TRAINED_SHARE * epochs
    ]


def refit_seed(root: int, rank: int) -> int:
    """Training seed of the member at ``rank`` (0 is the best)."""
    # The best member keeps the seed a single refit had, so its model is unchanged.
    return derive_seed(root, "refit") if rank == 0 else derive_seed(root, "refit", rank)


def refit_ensemble(
    objective: GenomeObjective,
    genomes: Sequence[Genome],
    epochs: Sequence[int],
    root: int,
    *,
    max_train_time: float | None = None,
    initial_states: Sequence[Mapping[str, Any] | None] | None = None,
) -> Ensemble:
    """Train every genome on all the rows of ``objective`` for its number of epochs.

    The members train together (dense ones as one stack); ``max_train_time``
    seconds cut that short, each member keeping the weights it has then. A
    member with an initial state (the weights its trial inherited) starts
    from it instead of from its seed's weights.
    """
    started = time.perf_counter()
    seeds = [refit_seed(root, rank) for rank in range(len(genomes))]
    results = objective.fit_genomes(
        genomes,
        seeds=seeds,
        epochs=epochs,
        max_train_time=max_train_time,
        initial_states=initial_states,
    )
    models = [result.model for result in results]
    seconds = time.perf_counter() - started
    return Ensemble(
        models,
        objective.standardizer(),
        seconds,
        objective.target_standardizer(),
        tuple(result.epochs_run for result in results),
    )


def mean_proba(models: Sequence[nn.Module], X: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The members' class probabilities, averaged."""
    proba: npt.NDArray[np.float64] = predict_proba(models[0], X)
    for model in models[1:]:
        proba += predict_proba(model, X)
    proba /= len(models)
    return proba


def mean_prediction(
    models: Sequence[nn.Module], X: npt.NDArray[np.float32], target: Standardizer
) -> npt.NDArray[np.float64]:
    """The members' regression outputs, averaged, on the targets' scale
    (``[rows, n_targets]``)."""
    outputs = predict_logits(models[0], X).astype(np.float64)
    for model in models[1:]:
        outputs += predict_logits(model, X)
    outputs /= len(models)
    return target.inverse_transform(outputs)


def mean_log_proba(
    models: Sequence[nn.Module], X: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    """Logarithm of :func:`mean_proba`, computed stably from the logits."""
    # log(mean_m softmax(z_m)) = logsumexp_m(log_softmax(z_m)) - log(M)
    members = np.stack([_log_softmax(predict_logits(m, X)) for m in models])
    top = members.max(axis=0)
    log_proba: npt.NDArray[np.float64] = top + np.log(np.exp(members - top).mean(axis=0))
    return log_proba


def _log_softmax(logits: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z
