"""Progress reporting for long searches: a tqdm bar and quiet Optuna logging.

The bar is drawn on standard error when its caller asks for it (the
estimator with ``verbose >= 1``, the command line on a terminal); callers
leave it off when the environment variable ``EVOHPO_NO_PROGRESS`` is set to a
non-empty value other than ``0`` (for tests and CI logs).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial, TrialState
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
        Trials the search will run; ``None`` when unknown (only a timeout ends
        it, or :meth:`plan` tells later).
    bar : bool
        Draw a tqdm bar on standard error. Callers decide, e.g. with
        :func:`progress_disabled`.
    log_trials : bool, default=False
        Log one INFO line per finished trial on the ``"evohpo"`` logger.
    desc : str, default=""
        Label of the bar; :meth:`describe` changes it.
    counted : collection of TrialState, optional
        The trial states that advance the bar; every finished trial by default.

    Examples
    --------
    >>> with SearchProgress(3, bar=False, desc="search") as progress:
    ...     progress.plan(5)
    ...     progress.describe("digits/ga/seed0")
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        bar: bool,
        log_trials: bool = False,
        desc: str = "",
        counted: Collection[TrialState] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._log_trials = log_trials
        self._counted = None if counted is None else frozenset(counted)
        self._bar = tqdm(total=total, desc=desc, unit="trial", disable=not bar, dynamic_ncols=True)

    def __enter__(self) -> SearchProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def plan(self, total: int | None) -> None:
        """Start the count again, towards ``total`` trials (``None``: unknown)."""
        with self._lock:
            self._bar.reset(total=total)

    def describe(self, desc: str) -> None:
        """Label the bar with ``desc``, e.g. the study now running."""
        with self._lock:
            self._bar.set_description(desc)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        counts = self._counted is None or trial.state in self._counted
        if counts and not self._bar.disable:
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
