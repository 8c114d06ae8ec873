"""What evohpo records on trials, and which trial states count towards a budget.

Every caller (study files, the estimator, workers, the dashboard) counts and
labels trials with these names, so that a study written by one is read the
same way by the others. The attribute names are stored with the trials:
changing one would orphan the records of existing studies.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

__all__ = [
    "COUNTED_STATES",
    "FAIL_REASON_ATTR",
    "HEARTBEAT_ATTR",
    "OWNER_ATTR",
    "RUN_ATTRS",
    "count_trials",
]

#: Trial states that count towards a budget of ``n_trials``: a failed trial does not.
COUNTED_STATES: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.PRUNED)
#: Trial system attribute naming the process that runs the trial
#: (see :mod:`evohpo.storage.ownership`).
OWNER_ATTR = "evohpo:worker"
#: Trial system attribute with the reason a trial failed (``"Type: message"``).
FAIL_REASON_ATTR = "fail_reason"
#: Trial system attribute holding the last heartbeat written through a gRPC proxy
#: (the writer's ``time.time()``; only its changes matter; see :mod:`evohpo.storage.grpc`).
HEARTBEAT_ATTR = "evohpo:heartbeat"
#: System attributes that describe one run of a trial, not its parameters: a retry drops them.
RUN_ATTRS: tuple[str, ...] = (OWNER_ATTR, FAIL_REASON_ATTR, HEARTBEAT_ATTR)


def count_trials(study: optuna.Study, states: tuple[TrialState, ...] = COUNTED_STATES) -> int:
    """How many trials of ``study`` are in one of ``states`` (by default: counted ones)."""
    return len(study.get_trials(deepcopy=False, states=states))
