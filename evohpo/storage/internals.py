"""The one module that reaches into Optuna's private storage API.

Optuna 5 removed ``Trial.set_system_attr``; a sampler writes trial system
attributes through the study's storage, as Optuna's own GA samplers do. A
running trial's cached attributes miss what was written after it was created,
recovery of dead processes' trials writes states of trials it does not run,
and caches key on the study's storage and trial ids. Every such access is a
function here, which bounds the cost of a future Optuna change.

:func:`write_trial_records` writes a batch of a running trial's intermediate
values and user attributes in one database transaction (RDB storages) or one
journal append, where ``trial.report`` and ``trial.set_user_attr`` commit once
each; on a SQLite file or a server each commit costs a sync or a round trip.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.storages.journal import BaseJournalBackend, JournalStorage
from optuna.storages.journal._storage import UNUPDATABLE_MSG, JournalOperation
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from evohpo.storage.records import FAIL_REASON_ATTR

__all__ = [
    "optimizing",
    "fail_trial",
    "get_trial",
    "get_trials",
    "set_trial_state",
    "set_trial_system_attr",
    "set_trial_user_attr",
    "study_id",
    "study_storage",
    "trial_id",
    "trial_id_of_number",
    "trial_user_attrs",
    "write_running_trial_records",
    "write_trial_records",
]

#: The default of the optional mappings: empty and read-only.
_NOTHING: Mapping[Any, Any] = MappingProxyType({})


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage object ``study`` reads and writes (Optuna's cache around an RDB storage)."""
    return study._storage


def study_id(study: optuna.Study | FrozenStudy) -> int:
    """The id of a study in its storage."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage id of a trial (not its number, which counts within its study)."""
    return trial._trial_id


def trial_id_of_number(study: optuna.Study, number: int) -> int:
    """The storage id of the study's trial ``number`` (KeyError if there is none)."""
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


def get_trial(study: optuna.Study, trial_id: int) -> FrozenTrial:
    """The trial of storage id ``trial_id``, read from storage."""
    return study._storage.get_trial(trial_id)


def get_trials(
    study: optuna.Study, states: Container[TrialState] | None = None
) -> Sequence[FrozenTrial]:
    """The study's trials without deep copies (read-only), from Optuna's cache."""
    return study._get_trials(deepcopy=False, states=states, use_cache=True)


def set_trial_system_attr(study: optuna.Study, trial_id: int, key: str, value: Any) -> None:
    """Write a system attribute of a running trial (JSON-serialisable ``value``)."""
    study._storage.set_trial_system_attr(trial_id, key, value)


def set_trial_user_attr(study: optuna.Study, trial_id: int, key: str, value: Any) -> None:
    """Write a user attribute of a running trial from outside the objective."""
    study._storage.set_trial_user_attr(trial_id, key, value)


def set_trial_state(
    study: optuna.Study,
    trial_id: int,
    state: TrialState,
    values: Sequence[float] | None = None,
) -> bool:
    """Record the state (and values) of a trial; False if it was already in that state.

    Raises
    ------
    optuna.exceptions.UpdateFinishedTrialError
        If the trial is finished already (another process recorded it).
    """
    return bool(study._storage.set_trial_state_values(trial_id, state, values))


def fail_trial(study: optuna.Study, trial_id: int, reason: str) -> bool:
    """Fail a running trial, with ``reason`` in :data:`FAIL_REASON_ATTR`.

    Returns
    -------
    bool
        False if another process finished the trial first (nothing changed).
    """
    try:
        set_trial_system_attr(study, trial_id, FAIL_REASON_ATTR, reason)
        return set_trial_state(study, trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


def trial_user_attrs(trial: optuna.trial.BaseTrial) -> dict[str, Any]:
    """Current user attributes of ``trial``, read from storage for a running trial.

    What a sampler wrote after the trial was created is missing from the
    running trial's cached ``user_attrs``.
    """
    if isinstance(trial, FrozenTrial):
        return dict(trial.user_attrs)
    if isinstance(trial, optuna.Trial):
        return dict(trial.study._storage.get_trial_user_attrs(trial._trial_id))
    return {}


def write_trial_records(
    study: optuna.Study,
    trial_id: int,
    *,
    intermediate: Mapping[int, float] = _NOTHING,
    user_attrs: Mapping[str, Any] = _NOTHING,
) -> None:
    """Write intermediate values and user attributes of a running trial, in one commit.

    They read back (``study.trials``, ``storage.get_trial``) exactly as if
    written by ``storage.set_trial_intermediate_value`` and
    ``storage.set_trial_user_attr`` one at a time, which is what
    ``trial.report`` and ``trial.set_user_attr`` call: steps as ints, values as
    floats (NaN and infinities kept), a step or key written before overwritten.
    An RDB storage (behind Optuna's cache or not) writes them in one
    transaction, a journal storage in one append; any other storage (in
    memory, a gRPC proxy, a subclass that overrides those two methods) one call
    at a time. Nothing is written when both mappings are empty.

    This writes to storage only: the ``optuna.Trial`` an objective holds keeps
    its own copy of itself, which :func:`write_running_trial_records` updates.

    Parameters
    ----------
    study : optuna.Study
        The trial's study.
    trial_id : int
        The storage id of the trial (:func:`trial_id`), which must be running.
    intermediate : mapping of int to float, optional
        Intermediate values by step (``step >= 0``).
    user_attrs : mapping of str to JSON-serialisable, optional
        User attributes.

    Raises
    ------
    optuna.exceptions.UpdateFinishedTrialError
        If the trial is finished; an RDB or journal storage then writes nothing.
    KeyError
        If there is no trial ``trial_id``.
    TypeError, ValueError
        If a step or value is not what ``trial.report`` accepts.
    """
    steps = _intermediate_values(intermediate)
    attrs = dict(user_attrs)
    if not steps and not attrs:
        return
    storage = study._storage
    backend = storage._backend if isinstance(storage, _CachedStorage) else storage
    if isinstance(backend, RDBStorage) and _writes_as(backend, RDBStorage):
        # _CachedStorage keeps no copy of a running trial: writing behind it is safe.
        _write_rdb(backend, trial_id, steps, attrs)
    elif (
        isinstance(backend, JournalStorage)
        and isinstance(backend._backend, BaseJournalBackend)
        and _writes_as(backend, JournalStorage)
    ):
        _write_journal(backend, trial_id, steps, attrs)
    else:
        for step, value in steps.items():
            storage.set_trial_intermediate_value(trial_id, step, value)
        for key, attr in attrs.items():
            storage.set_trial_user_attr(trial_id, key, attr)


def write_running_trial_records(
    trial: optuna.Trial,
    *,
    intermediate: Mapping[int, float] = _NOTHING,
    user_attrs: Mapping[str, Any] = _NOTHING,
) -> None:
    """:func:`write_trial_records` for the trial an objective runs, as ``trial.report`` would.

    ``trial.should_prune()`` and ``trial.user_attrs`` read the trial's own copy
    of itself, which ``trial.report`` and ``trial.set_user_attr`` update after
    writing; this updates it too, so the pruner sees the values written. As
    ``trial.report`` does, a step the trial reported already is ignored with
    Optuna's warning, and a multi-objective study refuses intermediate values.

    Raises
    ------
    NotImplementedError
        If the study has several objectives and ``intermediate`` is not empty.
    optuna.exceptions.UpdateFinishedTrialError
        If the trial is finished (nothing is written).
    """
    own = trial._cached_frozen_trial
    steps: dict[int, float] = {}
    for step, value in _intermediate_values(intermediate).items():
        if step in own.intermediate_values or step in steps:
            warnings.warn(
                f"The reported value is ignored because this `{step=}` is already reported.",
                stacklevel=2,
            )
            continue
        steps[step] = value
    if steps and len(trial.study.directions) > 1:
        raise NotImplementedError("Trial.report is not supported for multi-objective optimization.")
    write_trial_records(trial.study, trial._trial_id, intermediate=steps, user_attrs=user_attrs)
    own.intermediate_values.update(steps)
    own.user_attrs.update(user_attrs)


def _intermediate_values(values: Mapping[int, float]) -> dict[int, float]:
    """``values`` with int steps and float values, checked as ``trial.report`` checks them."""
    checked: dict[int, float] = {}
    for step, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"The `value` argument is of type '{type(value)}' but supposed to be a float."
            ) from None
        try:
            index = int(step)
        except (TypeError, ValueError):
            raise TypeError(
                f"The `step` argument is of type '{type(step)}' but supposed to be an int."
            ) from None
        if index < 0:
            raise ValueError(f"`step={index}` must be non-negative.")
        checked[index] = number
    return checked


def _writes_as(storage: BaseStorage, base: type[BaseStorage]) -> bool:
    """True if ``storage`` writes values and user attributes with ``base``'s own methods.

    A subclass that overrides them may do more than Optuna does, which a batch
    written behind its back would skip.
    """
    kind = type(storage)
    return (
        kind.set_trial_intermediate_value is base.set_trial_intermediate_value
        and kind.set_trial_user_attr is base.set_trial_user_attr
    )


def _write_rdb(
    storage: RDBStorage, trial_id: int, steps: Mapping[int, float], attrs: Mapping[str, Any]
) -> None:
    """The writes of ``set_trial_intermediate_value`` and ``set_trial_user_attr``, one transaction.

    The trial's row is locked first (``FOR UPDATE``; SQLite locks the whole
    file on the first write instead), so no other process finishes the trial
    halfway through. An integrity error, which the per-call methods ignore
    (another process wrote the same key), is raised: ignoring it here would
    drop the whole batch.
    """
    from optuna.storages._rdb import models

    with _create_scoped_session(storage.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
        storage.check_trial_is_updatable(trial_id, trial.state)
        for step, value in steps.items():
            storage._set_trial_intermediate_value_without_commit(session, trial_id, step, value)
        for key, attr in attrs.items():
            storage._set_trial_attr_without_commit(
                session, models.TrialUserAttributeModel, trial_id, key, attr
            )


def _write_journal(
    storage: JournalStorage, trial_id: int, steps: Mapping[int, float], attrs: Mapping[str, Any]
) -> None:
    """One append of the logs ``set_trial_intermediate_value`` and ``set_trial_user_attr`` write."""
    replay = storage._replay_result
    with storage._thread_lock:
        storage._sync_with_backend()
        trial = replay.get_trial(trial_id)  # KeyError if there is none, as per call
        if trial.state.is_finished():
            # Per call, the log would be written and refused on replay; write none.
            raise UpdateFinishedTrialError(UNUPDATABLE_MSG.format(trial_number=trial.number))
        worker = replay.worker_id
        logs: list[dict[str, Any]] = [
            {
                "op_code": JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE,
                "worker_id": worker,
                "trial_id": trial_id,
                "step": step,
                "intermediate_value": value,
            }
            for step, value in steps.items()
        ]
        logs += [
            {
                "op_code": JournalOperation.SET_TRIAL_USER_ATTR,
                "worker_id": worker,
                "trial_id": trial_id,
                "user_attr": {key: attr},
            }
            for key, attr in attrs.items()
        ]
        storage._backend.append_logs(logs)
        _replay_each(storage)


def _replay_each(storage: JournalStorage) -> None:
    """Read the journal's new logs, each one even after another raised; raise the first error.

    Replaying a log of this thread for a trial another process finished in the
    meantime raises. Optuna's own sync would stop there and meet this batch's
    next log again on the storage's next call, failing an unrelated operation.
    """
    replay = storage._replay_result
    first: Exception | None = None
    for log in storage._backend.read_logs(replay.log_number_read):
        try:
            replay.apply_logs([log])
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first


@contextmanager
def optimizing(study: optuna.Study) -> Iterator[Callable[[], bool]]:
    """Run a loop of trials that is not ``study.optimize`` as if it were.

    Inside, ``study.stop()`` from a callback is allowed (it sets the flag the
    yielded function reads) and ``study.ask()`` does not warn that heartbeats
    belong to ``study.optimize``; nesting in ``study.optimize`` is refused, as
    Optuna refuses it.
    """
    local = study._thread_local
    if local.in_optimize_loop:
        raise RuntimeError("Nested invocation of `Study.optimize` method isn't allowed.")
    study._stop_flag = False
    local.in_optimize_loop = True
    try:
        yield lambda: bool(study._stop_flag)
    finally:
        local.in_optimize_loop = False
