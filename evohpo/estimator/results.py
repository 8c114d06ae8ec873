"""What a fitted search reports: the trials' ranking and ``cv_results_``."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt
from optuna.trial import FrozenTrial, TrialState

from evohpo.exceptions import EvohpoError
from evohpo.storage import COUNTED_STATES

__all__ = ["FINISHED", "complete_trials", "cv_results", "rank_key", "trial_value"]

#: Trial states that count towards ``n_trials``.
FINISHED = COUNTED_STATES

#: ``cv_results_`` columns read from every trial's user attributes.
_ATTR_COLUMNS = {
    "mean_fit_time": "train_seconds",
    "n_parameters": "n_parameters",
    "best_epoch": "best_epoch",
    "epochs_run": "epochs_run",
    "stop_reason": "stop_reason",
    "val_accuracy": "val_accuracy",
    "val_loss": "val_loss",
    "genome": "genome",
}


def trial_value(trial: FrozenTrial) -> float:
    """The score of a complete trial."""
    assert trial.value is not None
    return float(trial.value)


def rank_key(trial: FrozenTrial) -> tuple[float, float, int]:
    """Order of complete trials: score, then lower validation loss, then earlier."""
    loss = trial.user_attrs.get("val_loss")
    loss = math.inf if not isinstance(loss, (int, float)) else float(loss)
    return (trial_value(trial), -loss, -trial.number)


def complete_trials(
    study_name: str, trials: list[FrozenTrial], timeout: float | None, n_jobs: int = 1
) -> list[FrozenTrial]:
    """The complete ones among the finished ``trials``.

    Raises
    ------
    EvohpoError
        If none completed: the message counts the trials of every state.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        states = Counter(t.state.name for t in trials)
        ran = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        if states.get("FAIL"):
            advice = (
                "Optuna's warnings above say why trials failed: an error in the objective "
                "or the scorer, or a score that is NaN or infinite."
            )
        elif states.get("PRUNED"):
            advice = "Give the search a less aggressive pruner, or more trials or time."
        elif not trials and n_jobs > 1 and timeout is not None:
            advice = (
                f"With n_jobs={n_jobs} no worker finished a trial in time (the worker "
                "processes beside this one take a few seconds to start: each imports "
                "torch): give a longer timeout, or n_jobs=1."
            )
        else:
            advice = "Give the search more trials or time."
        raise EvohpoError(
            f"No trial of the study {study_name!r} completed ({ran or 'none ran'}"
            f", timeout={timeout}); nothing to refit. {advice}"
        )
    return complete


def cv_results(
    trials: list[FrozenTrial], cv: int | None, score_attr: str = "val_accuracy"
) -> dict[str, Any]:
    """One column per key, one row per trial (sorted by number).

    ``score_attr`` is the trials' attribute of the trainer's validation score
    (:attr:`evohpo.training.task.Task.score_attr`), a column of that name.
    """
    scores = np.array(
        [trial_value(t) if t.state == TrialState.COMPLETE else math.nan for t in trials],
        dtype=np.float64,
    )
    names = sorted({name for t in trials for name in t.params})
    results: dict[str, Any] = {
        "number": [t.number for t in trials],
        "state": [t.state.name for t in trials],
        "params": [dict(t.params) for t in trials],
    }
    for name in names:
        results[f"param_{name}"] = [t.params.get(name) for t in trials]
    results["mean_test_score"] = scores
    fold_scores = [t.user_attrs.get("fold_scores") for t in trials]
    if cv is not None:
        for k in range(cv):
            results[f"split{k}_test_score"] = np.array(
                [f[k] if f is not None and len(f) > k else math.nan for f in fold_scores]
            )
    results["std_test_score"] = np.array(
        [
            statistics.pstdev(f)
            if f and t.state == TrialState.COMPLETE
            else (0.0 if t.state == TrialState.COMPLETE else math.nan)
            for f, t in zip(fold_scores, trials, strict=True)
        ]
    )
    results["rank_test_score"] = _ranks(scores)
    for key, attr in _ATTR_COLUMNS.items():
        if attr == "val_accuracy":
            key = attr = score_attr
        results[key] = [t.user_attrs.get(attr) for t in trials]
    return results


def _ranks(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.int32]:
    """Rank 1 is the best; trials without a value rank last ("min" method on ties)."""
    finite = np.where(np.isnan(scores), -np.inf, scores)
    n_valued = int((~np.isnan(scores)).sum())
    return np.array(
        [
            int((finite > s).sum()) + 1 if not math.isnan(v) else n_valued + 1
            for s, v in zip(finite, scores, strict=True)
        ],
        dtype=np.int32,
    )
