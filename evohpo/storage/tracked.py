"""Optuna storages that record who runs each trial and keep heartbeats through outages.

:func:`evohpo.storage.open_storage` returns one of these. When a trial starts
in this process (``study.ask`` creates it, or takes up a waiting one, such as
a retry) they write the owner record
(:func:`evohpo.storage.ownership.owner_record`) on it and tell an optional
listener, which workers use to settle their trials after an outage. The RDB
one also skips, with one warning, a heartbeat that cannot be written while
the database is away, instead of ending the heartbeat thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import BaseJournalBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from evohpo._redact import redact_exception
from evohpo.storage.errors import is_storage_outage
from evohpo.storage.ownership import owner_record
from evohpo.storage.records import OWNER_ATTR

__all__ = ["TrackedJournalStorage", "TrackedRDBStorage", "TrialStartListener"]

_logger = logging.getLogger("evohpo")

#: Called with the storage id of each trial that starts in this process.
TrialStartListener = Callable[[int], None]


class _OwnerRecording(BaseStorage):
    """Writes the owner record of each trial that starts in this process.

    Mixed in before an Optuna storage class; ``_init_owner`` runs before that
    class's ``__init__``.
    """

    _owner_extra: dict[str, Any]
    _listener: TrialStartListener | None

    def _init_owner(
        self, owner_extra: Mapping[str, Any] | None, listener: TrialStartListener | None
    ) -> None:
        self._owner_extra = dict(owner_extra or {})
        self._listener = listener

    def __getstate__(self) -> dict[Any, Any]:
        state: dict[Any, Any] = dict(cast("dict[Any, Any]", super().__getstate__()))
        # A listener belongs to this process; a copy elsewhere (pickled) has none.
        state["_listener"] = None
        return state

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        # The storage class this is mixed into implements it.
        changed = super().set_trial_state_values(trial_id, state, values)  # type: ignore[safe-super]
        if changed and state == TrialState.RUNNING:  # a waiting trial (a retry) taken up
            self._start(trial_id)
        return changed

    def _running_template(self) -> FrozenTrial:
        """A new running trial that carries this process's owner record.

        Created from this template, the trial and its owner record are one write
        (one transaction, one journal log): a process killed right after creating
        a trial cannot leave it running without an owner, which no rule would
        ever recover (it has no heartbeat either).
        """
        return FrozenTrial(
            number=-1,
            state=TrialState.RUNNING,
            value=None,
            values=None,
            datetime_start=datetime.now(),
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={},
            system_attrs={OWNER_ATTR: owner_record(**self._owner_extra)},
            intermediate_values={},
            trial_id=-1,
        )

    def _create_owned_trial(self, study_id: int, template_trial: FrozenTrial | None) -> int:
        """``create_new_trial``, a new trial created with its owner record."""
        if template_trial is not None:  # a waiting trial (a retry), an added one: not started
            return int(super().create_new_trial(study_id, template_trial))  # type: ignore[safe-super]
        trial_id = int(super().create_new_trial(study_id, self._running_template()))  # type: ignore[safe-super]
        self._tell_listener(trial_id)
        return trial_id

    def _tell_listener(self, trial_id: int) -> None:
        if self._listener is not None:
            self._listener(trial_id)

    def _start(self, trial_id: int) -> dict[str, Any]:
        """A trial started here: tell the listener first (an outage may follow), then record."""
        self._tell_listener(trial_id)
        record = owner_record(**self._owner_extra)
        self.set_trial_system_attr(trial_id, OWNER_ATTR, record)
        return record


class TrackedRDBStorage(_OwnerRecording, RDBStorage):
    """``RDBStorage`` that records trial owners and survives outages in its heartbeats.

    Parameters
    ----------
    url : str
        A SQLAlchemy URL.
    owner_extra : mapping, optional
        Keys added to every owner record (a worker's number).
    listener : callable, optional
        Called with the id of each trial that starts in this process.
    **kwargs
        Passed to ``RDBStorage``.
    """

    def __init__(
        self,
        url: str,
        *,
        owner_extra: Mapping[str, Any] | None = None,
        listener: TrialStartListener | None = None,
        **kwargs: Any,
    ) -> None:
        self._init_owner(owner_extra, listener)
        self._heartbeat_down = False
        super().__init__(url, **kwargs)

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        # Optuna's cached storage calls this one, and create_new_trial calls it too.
        if template_trial is not None:
            return super()._create_new_trial(study_id, template_trial)
        trial = super()._create_new_trial(study_id, self._running_template())
        self._tell_listener(trial._trial_id)
        return trial

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            if not is_storage_outage(exc):
                raise
            if not self._heartbeat_down:
                _logger.warning(
                    "heartbeat of a running trial not recorded (storage unavailable: %s); "
                    "trying again in %s s",
                    redact_exception(exc),
                    self.heartbeat_interval,
                )
            self._heartbeat_down = True
        else:
            self._heartbeat_down = False


class TrackedJournalStorage(_OwnerRecording, JournalStorage):
    """``JournalStorage`` that records trial owners; see :class:`TrackedRDBStorage`."""

    def __init__(
        self,
        backend: BaseJournalBackend,
        *,
        owner_extra: Mapping[str, Any] | None = None,
        listener: TrialStartListener | None = None,
    ) -> None:
        self._init_owner(owner_extra, listener)
        super().__init__(backend)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._create_owned_trial(study_id, template_trial)
