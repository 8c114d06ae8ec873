"""Progress reporting for long searches: a tqdm bar and quiet Optuna logging.

The bar is drawn on standard error only when asked for (``verbose >= 1``) and
never when the environment variable ``EVOHPO_NO_PROGRESS`` is set to a
non-empty value other than ``0`` (for tests and CI logs).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial
from tqdm.auto import tqdm

__all__ = ["NO_PROGRESS_ENV", "SearchProgress", "progress_disabled", "quiet_optuna"]

#: Environment variable that turns every progress bar off when set (not to "0").
NO_PROGRESS_ENV = "EVOHPO_NO_PROGRESS"

logger = logging.getLogger("evohpo")

TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


def progress_disabled() -> bool:
    """Whether :data:`NO_PROGRESS_ENV` silences progress bars."""
    return os.environ.get(NO_PROGRESS_ENV, "") not in ("", "0")


class SearchProgress:
    """A study callback that advances a progress bar and logs finished trials.

    Parameters
    ----------
    total : int or None
        Trials this search will run; ``None`` when only a timeout ends it.
    bar : bool
        Draw a tqdm bar (unless :func:`progress_disabled`).
    log_trials : bool
        Log one INFO line per finished trial on the ``"evohpo"`` logger.
    desc : str
        Label of the bar.
    """

    def __init__(self, total: int | None, *, bar: bool, log_trials: bool, desc: str) -> None:
        self._lock = threading.Lock()
        self._log_trials = log_trials
        self._bar = tqdm(
            total=total, desc=desc, unit="trial", disable=not bar or progress_disabled()
        )

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with self._lock:
            self._bar.update(1)
            best = _best_value(study)
            if best is not None:
                self._bar.set_postfix(best=f"{best:.4f}", refresh=False)
        if self._log_trials:
            attrs = trial.user_attrs
            logger.info(
                "Trial %d %s: value=%s, best_epoch=%s, stop_reason=%s, %.1fs",
                trial.number,
                trial.state.name.lower(),
                "n/a" if trial.value is None else f"{trial.value:.4f}",
                attrs.get("best_epoch", "n/a"),
                attrs.get("stop_reason", "n/a"),
                float(attrs.get("train_seconds", 0.0)),
            )

    def close(self) -> None:
        """Close the bar."""
        self._bar.close()


def _best_value(study: optuna.Study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:  # no complete trial yet
        return None


@contextmanager
def quiet_optuna(enabled: bool = True) -> Iterator[None]:
    """Lower Optuna's log level to WARNING for the block (restored afterwards).

    Optuna logs every finished trial at INFO level; an estimator's ``fit`` should
    not. The level is process-wide, so concurrent code sees the change.
    """
    if not enabled:
        yield
        return
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(previous, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)
