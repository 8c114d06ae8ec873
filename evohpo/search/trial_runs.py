"""One trial's run inside :class:`~evohpo.search.objective.GenomeObjective`.

:class:`TrialRun` holds what a running trial trains (genome, config, inherited
weights) and writes (its buffered epoch reports, its pruning and final
attributes); :class:`Folds` gathers its per-fold results under cross-validation.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import optuna

from evohpo.evolution.genome import Genome
from evohpo.search.reporting import EpochReports
from evohpo.training.config import TrainConfig, TrainResult

__all__ = ["Folds", "TrialRun", "finite_or_none"]


@dataclass
class TrialRun:
    """What one trial of :meth:`~evohpo.search.objective.GenomeObjective.train_trials`
    trains and has reported."""

    trial: optuna.Trial
    genome: Genome
    config: TrainConfig
    reports: EpochReports
    started: float = field(default_factory=time.perf_counter)
    sharing: int = 1  # trials trained at the same time, to share the wall time among
    best_epoch: int = 0
    best_accuracy: float = -math.inf
    value: float | None = None
    error: Exception | None = None
    #: Inherited weights it starts from (``None``: its seed's).
    initial_state: dict[str, Any] | None = None
    #: Attributes written with its final ones (its stored weights' record).
    extra_attrs: dict[str, Any] = field(default_factory=dict)
    #: The attribute of its best validation score (:attr:`Task.score_attr`).
    score_attr: str = "val_accuracy"

    def report_epoch(self, epoch: int, accuracy: float) -> None:
        """After an epoch of a holdout: report the trainer's validation score
        (accuracy, or negative MSE); raise ``TrialPruned`` if the pruner says so."""
        if accuracy > self.best_accuracy:
            self.best_epoch, self.best_accuracy = epoch, accuracy
        if self.reports.report(epoch, accuracy):
            raise self.prune(
                f"Pruned after epoch {epoch} (validation score {accuracy:.4f}).",
                train_seconds=(time.perf_counter() - self.started) / self.sharing,
                best_epoch=int(self.best_epoch),
                epochs_run=epoch,
                stop_reason="pruned",
                **{self.score_attr: float(self.best_accuracy)},
            )

    def report_fold(self, fold: int, running: float, *, last: bool) -> bool:
        """After a fold: report the running mean; whether the pruner stops the trial."""
        prune = self.reports.report(fold, running)
        return prune and not last

    def prune(self, message: str, **attrs: Any) -> optuna.TrialPruned:
        """Write what is left and the final attributes; the trial's outcome is pruned."""
        self.reports.flush(attrs)
        self.error = optuna.TrialPruned(message)
        return self.error

    def finish(self, **attrs: Any) -> None:
        """Write what is left and the final attributes of a trial that ran to its end."""
        self.reports.flush({**self.extra_attrs, **attrs})

    @property
    def done(self) -> bool:
        """Whether the trial has its outcome (a value, or the error that ended it)."""
        return self.error is not None or self.value is not None

    def outcome(self) -> float | Exception:
        if self.error is not None:
            return self.error
        assert self.value is not None
        return self.value


@dataclass
class Folds:
    """The per-fold results of one trial under cross-validation."""

    score_attr: str = "val_accuracy"
    scores: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    epochs_run: int = 0
    seconds: float = 0.0
    n_parameters: int = 0

    def add(self, result: TrainResult, score: float) -> None:
        self.scores.append(score)
        self.epochs.append(result.best_epoch)
        self.accuracies.append(result.best_score)
        self.losses.append(result.best_val_loss)
        self.reasons.append(result.stop_reason)
        self.epochs_run += result.epochs_run
        self.seconds += result.train_seconds
        self.n_parameters = result.n_parameters

    def attrs(self) -> dict[str, Any]:
        if "pruned" in self.reasons:
            reason = "pruned"
        elif "diverged" in self.reasons:
            reason = "diverged"
        else:
            reason = Counter(self.reasons).most_common(1)[0][0]
        return {
            "train_seconds": self.seconds,
            "best_epoch": int(statistics.median_low(self.epochs)),
            "epochs_run": self.epochs_run,
            "stop_reason": reason,
            self.score_attr: statistics.fmean(self.accuracies),
            "val_loss": finite_or_none(statistics.fmean(self.losses)),
            "fold_scores": list(self.scores),
            "fold_best_epochs": list(self.epochs),
        }


def finite_or_none(value: float) -> float | None:
    """``value``, or ``None`` when it is not finite (JSON has no NaN)."""
    return value if math.isfinite(value) else None
