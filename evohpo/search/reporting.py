"""Per-epoch reports of one trial to its pruner, written to storage in batches.

``trial.report(value, epoch)`` followed by ``trial.should_prune()`` after
every epoch commits once per epoch, and each ``trial.set_user_attr`` once
more; on a SQLite file or a database server each commit costs a sync to disk
or a round trip. When an epoch takes milliseconds (small networks, many
trials trained at once) these commits dominate a trial.

:class:`EpochReports` keeps the epochs' values in memory and writes them all,
with one commit, every ``every`` epochs (epochs ``every``, ``2 * every``,
...), then asks the pruner. So:

* every epoch's value is still stored (Optuna's intermediate values), and
  learning curves (``optuna-dashboard``, ``plot_intermediate_values``) are
  complete once the trial ends;
* the pruner decides at those epochs only, seeing all values reported so far;
  a trial it would have stopped earlier trains up to ``every - 1`` more
  epochs. A pruner that only decides at some steps (``interval_steps``,
  ``n_warmup_steps``) decides at the epochs both allow;
* other processes see a running trial's values up to ``every - 1`` epochs
  late. Optuna's pruners do not depend on it: median and percentile compare
  with completed trials, successive halving and Hyperband with the rung
  records they write as they decide (a rung is recorded at the first
  decision at or past it, with that epoch's value).

With ``every=1`` it does what ``report`` and ``should_prune`` do every epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import optuna

from evohpo._validation import check_int
from evohpo.storage.internals import write_running_trial_records

__all__ = ["DEFAULT_REPORT_EVERY", "EpochReports"]

#: Epochs between two writes (and pruning decisions).
DEFAULT_REPORT_EVERY = 5

_OWNER = "EpochReports"


class EpochReports:
    """The per-epoch values one trial reports, written and judged every ``every`` epochs.

    Parameters
    ----------
    trial : optuna.Trial
        The running trial of the objective (single-objective study).
    every : int, default=DEFAULT_REPORT_EVERY
        Epochs between two writes; the pruner is asked after each write.

    Notes
    -----
    Cost: a trial of ``n`` epochs commits ``n // every`` times while it
    trains and once in :meth:`flush` (the values left and the final user
    attributes), where per-epoch reports commit ``n`` times plus once per user
    attribute. Measured with 30 epochs and 8 user attributes (NopPruner), the
    reporting of a trial took 163 ms per epoch on a SQLite file, 51 ms with
    ``every=5`` and 35 ms with ``every=10``; 18, 4.4 and 2.6 ms on a journal
    file. ``DEFAULT_REPORT_EVERY`` is 5: most of the saving, while a pruned
    trial trains at most 4 epochs more than it would have.

    Examples
    --------
    >>> def objective(trial):  # doctest: +SKIP
    ...     reports = EpochReports(trial, every=5)
    ...     for epoch in range(1, 31):
    ...         accuracy = train_one_epoch()
    ...         if reports.report(epoch, accuracy):
    ...             reports.flush({"stop_reason": "pruned"})
    ...             raise optuna.TrialPruned()
    ...     reports.flush({"stop_reason": "max_epochs"})
    ...     return accuracy
    """

    def __init__(self, trial: optuna.Trial, *, every: int = DEFAULT_REPORT_EVERY) -> None:
        self.every = check_int(every, "every", _OWNER, low=1)
        if len(trial.study.directions) > 1:
            raise NotImplementedError(
                "Trial.report is not supported for multi-objective optimization."
            )
        self._trial = trial
        self._pending: dict[int, float] = {}

    @property
    def pending(self) -> Mapping[int, float]:
        """The values reported since the last write, by epoch (read-only)."""
        return MappingProxyType(self._pending)

    def report(self, epoch: int, value: float) -> bool:
        """Keep ``value`` of ``epoch``; at every ``every``-th epoch write and ask the pruner.

        Parameters
        ----------
        epoch : int
            The step, ``>= 0`` (evohpo counts epochs from 1).
        value : float
            The value to report (NaN and infinities allowed, as Optuna does).

        Returns
        -------
        bool
            ``trial.should_prune()`` after writing, at epochs that are multiples
            of ``every``; False at the others, with no storage access.
        """
        epoch = check_int(epoch, "epoch", f"{_OWNER}.report", low=0)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"The `value` argument is of type '{type(value)}' but supposed to be a float."
            ) from None
        if epoch in self._pending:  # trial.report keeps the first value too
            warnings.warn(
                f"The reported value is ignored because this `step={epoch}` is already reported.",
                stacklevel=2,
            )
        else:
            self._pending[epoch] = number
        if epoch % self.every:
            return False
        self.flush()
        return self._trial.should_prune()

    def flush(self, user_attrs: Mapping[str, Any] = MappingProxyType({})) -> None:
        """Write the values kept so far and ``user_attrs`` with one commit.

        Call it when the trial ends, pruned or not, with the trial's final user
        attributes; nothing is written if there is nothing to write.

        Raises
        ------
        optuna.exceptions.UpdateFinishedTrialError
            If the trial is finished already.
        """
        pending, self._pending = self._pending, {}
        try:
            write_running_trial_records(self._trial, intermediate=pending, user_attrs=user_attrs)
        except BaseException:
            # Kept for a retry of the write (a storage outage); the trial's copy is unchanged.
            self._pending = {**pending, **self._pending}
            raise
