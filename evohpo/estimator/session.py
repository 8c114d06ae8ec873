"""The study behind a fit: where it lives, loading or creating it, and running its trials."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import optuna
import sqlalchemy.exc
from optuna.samplers import BaseSampler, RandomSampler
from optuna.storages import BaseStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState
from sklearn.utils import check_random_state

from evohpo._progress import SearchProgress, progress_disabled
from evohpo._random import derive_seed, fresh_root_seed
from evohpo._redact import redact_text, redact_url
from evohpo._validation import raise_invalid
from evohpo.estimator.params import Settings
from evohpo.estimator.record import SEARCH_ATTR, check_resumable, search_record
from evohpo.estimator.refit import ensemble_members, refit_seconds
from evohpo.estimator.results import FINISHED
from evohpo.exceptions import StorageError
from evohpo.search import batched
from evohpo.search.batch_size import BatchTrials, resolve_batch_trials
from evohpo.search.inheritance import WeightInheritance
from evohpo.search.objective import GenomeObjective
from evohpo.search.samplers import build_sampler
from evohpo.storage import JOURNAL_PREFIX, close_storage, open_storage, recover_orphaned_trials
from evohpo.storage.artifacts import default_artifact_dir
from evohpo.storage.drivers import missing_driver
from evohpo.training.config import TrainConfig
from evohpo.training.threads import current_thread_budget

__all__ = ["Search", "rebuild_study", "run_search", "study_ref", "verbose_logging"]

logger = logging.getLogger("evohpo")

#: EvoSampler's population when only a timeout bounds the search.
_TIME_BUDGET_POPULATION = 10


@dataclass(frozen=True)
class Search:
    """A finished search: its study, finished trials (by number), objective and root seed."""

    study: optuna.Study
    trials: list[FrozenTrial]
    objective: GenomeObjective
    root: int
    deadline: float | None = None  # time.monotonic() at which the whole fit ends
    #: The weights the ensemble's candidates that inherited theirs started from, by
    #: trial number (read while a temporary weight store still exists).
    start_states: Mapping[int, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class _SearchStorage:
    """Where a fit's study lives: ``storage`` for Optuna, ``url`` for worker processes."""

    url: str | None
    storage: str | BaseStorage | None
    temporary: bool


def run_search(
    settings: Settings,
    X: npt.NDArray[np.float64],
    y: npt.NDArray[Any],
    classes: npt.NDArray[Any] | None,
    *,
    started: float | None = None,
) -> Search:
    """Load or create the study, check that it belongs to this search, run its missing trials.

    ``y`` holds labels encoded as indices of ``classes``, or with
    ``settings.task == "regression"`` (``classes`` ``None``) the targets, one
    column per output. ``timeout`` counts
    from ``started`` (``time.monotonic()``; now by default): the time spent
    opening the study and checking it is spent. With ``refit``, the search
    stops early enough to leave the refit its estimated time
    (:class:`RefitReserve`), and no trial trains past the deadline.
    """
    started = time.monotonic() if started is None else started
    with _search_storage(settings) as storage, _weight_inheritance(settings, storage) as inherit:
        existing = _load_existing_study(storage, settings)
        stored = existing.user_attrs.get(SEARCH_ATTR) if existing is not None else None
        root = _root_seed(settings.random_state, stored if isinstance(stored, Mapping) else None)
        objective_factory = functools.partial(
            GenomeObjective,
            X,
            y,
            space=settings.space,
            train_config=TrainConfig(
                max_epochs=settings.max_epochs,
                patience=settings.patience,
                device=settings.device,
                task=settings.task,
            ),
            validation_fraction=settings.validation_fraction,
            cv=settings.cv,
            seed=derive_seed(root, "objective"),
            scoring=settings.scoring,
            n_classes=None if classes is None else len(classes),
            input_shape=settings.input_shape,
            inheritance=inherit,
        )
        objective = objective_factory()
        fit_deadline = None if settings.timeout is None else started + settings.timeout
        objective.deadline = fit_deadline
        record = search_record(settings, classes, X, y, root)
        if existing is not None:
            check_resumable(existing, record)
            study = existing
        else:
            study = _create_study(storage, settings, record)
        # Known only now: how many trials a resumed study already holds.
        study.sampler = _make_sampler(settings, root, len(study.get_trials(deepcopy=False)))
        if settings.timeout is not None:
            left = settings.timeout - (time.monotonic() - started)
            settings = dataclasses.replace(settings, timeout=max(left, 0.0))
        _optimize(study, storage, objective, objective_factory, settings)
        trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        starts = _start_states(study, trials, objective, settings) if inherit else {}
        if storage.temporary:
            study = _in_memory_copy(study)
    return Search(study, trials, objective, root, fit_deadline, starts)


def _start_states(
    study: optuna.Study, trials: list[FrozenTrial], objective: GenomeObjective, settings: Settings
) -> dict[int, dict[str, Any]]:
    """The start of every possible ensemble member that inherited its weights
    (:meth:`GenomeObjective.refit_start`), so that its refit starts there too."""
    if not settings.refit:
        return {}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    starts = {}
    for trial in ensemble_members(complete, settings.ensemble_size, settings.task):
        state = objective.refit_start(study, trial)
        if state is not None:
            starts[trial.number] = state
    return starts


@contextmanager
def verbose_logging(verbose: int) -> Iterator[None]:
    """Make ``verbose`` output visible when the application configured no logging.

    The search logs on the ``"evohpo"`` logger. Where no handler would show
    INFO records (a plain script or notebook), one on standard error is added
    for the fit; a configured application keeps its own.
    """
    if verbose < 1:
        yield
        return
    previous_level = logger.level
    handler: logging.Handler | None = None
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    if not logger.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(previous_level)


# -- where the study lives ---------------------------------------------------------------------
@contextmanager
def _search_storage(settings: Settings) -> Iterator[_SearchStorage]:
    """Where this fit's study lives.

    In memory unless ``storage`` is given; a search in worker processes
    (``n_jobs > 1``) without one runs in a temporary journal file, which the
    study is copied out of before it is removed.
    """
    if settings.n_jobs == 1 and settings.storage is None:
        yield _SearchStorage(url=None, storage=None, temporary=False)
        return
    with contextlib.ExitStack() as stack:
        url = settings.storage
        if url is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="evohpo-search-"))
            url = f"{JOURNAL_PREFIX}{Path(directory) / 'search.log'}"
        opened = open_storage(url)
        stack.callback(close_storage, opened)
        yield _SearchStorage(url=url, storage=opened, temporary=settings.storage is None)


@contextmanager
def _weight_inheritance(
    settings: Settings, storage: _SearchStorage
) -> Iterator[WeightInheritance | None]:
    """Where this fit keeps trained weights with ``inherit_weights`` (``None``: off).

    ``weights_dir``, else the folder next to the storage's file, else (in
    memory, or a temporary journal) a temporary folder removed after the fit.
    """
    if not settings.inherit_weights:
        yield None
        return
    # Keep at least two populations' worth: every possible parent keeps its weights.
    keep = max(20, 2 * int(getattr(settings.sampler, "population_size", 10)))
    store = settings.weights_dir
    if store is None and storage.url is not None and not storage.temporary:
        store = default_artifact_dir(storage.url)
        if store is None:
            raise_invalid(
                "weights_dir",
                settings.owner,
                "a folder or artifact store every worker reaches, with a database server",
                None,
            )
    with contextlib.ExitStack() as stack:
        if store is None:
            store = stack.enter_context(tempfile.TemporaryDirectory(prefix="evohpo-weights-"))
        yield WeightInheritance(store, keep_best=keep, keep_recent=keep)


def _storage_error(storage: Any, exc: BaseException) -> StorageError:
    url = str(storage)
    missing = missing_driver(url, exc)
    if missing is not None:
        return StorageError(f"Cannot open the Optuna storage {redact_url(url)!r}: {missing}")
    return StorageError(
        f"Cannot open the Optuna storage {redact_url(url)!r}: "
        f"{redact_text(str(exc))}. Check the URL (e.g. 'sqlite:///search.db') and that the "
        "database is reachable."
    )


def _load_existing_study(storage: _SearchStorage, settings: Settings) -> optuna.Study | None:
    """The stored study to resume, if ``storage`` holds one named ``study_name``."""
    name = settings.study_name
    if storage.storage is None or storage.temporary or name is None:
        return None
    try:
        study = optuna.load_study(
            study_name=name,
            storage=storage.storage,
            sampler=RandomSampler(seed=0),  # a placeholder
            pruner=settings.pruner,
        )
    except KeyError:
        return None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        raise _storage_error(storage.url, exc) from exc
    if not settings.resume:
        raise optuna.exceptions.DuplicatedStudyError(
            f"The storage {redact_url(str(storage.url))!r} already holds a study "
            f"named {name!r} and resume=False. Set resume=True to continue it, or "
            "choose another study_name."
        )
    return study


def _create_study(
    storage: _SearchStorage, settings: Settings, record: dict[str, Any]
) -> optuna.Study:
    """A new study for this search; its sampler is set by the caller."""
    try:
        study = optuna.create_study(
            storage=storage.storage,
            study_name=settings.study_name,
            direction="maximize",
            sampler=RandomSampler(seed=0),  # a placeholder
            pruner=settings.pruner,
        )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        raise _storage_error(storage.url, exc) from exc
    study.set_user_attr(SEARCH_ATTR, record)
    return study


def _in_memory_copy(study: optuna.Study) -> optuna.Study:
    """The finished trials and user attributes of ``study`` in an in-memory study."""
    copy_ = optuna.create_study(
        direction="maximize", study_name=study.study_name, sampler=study.sampler
    )
    copy_.add_trials([t for t in study.get_trials() if t.state.is_finished()])
    for key, value in study.user_attrs.items():
        copy_.set_user_attr(key, value)
    return copy_


# -- seeds and samplers ------------------------------------------------------------------------
def _root_seed(
    random_state: int | np.random.RandomState | None, stored: Mapping[str, Any] | None
) -> int:
    """The root of every random choice; a resumed study keeps its own by default."""
    if random_state is None:
        seed = None if stored is None else stored.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return seed
        return fresh_root_seed()
    if isinstance(random_state, np.random.RandomState):
        return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    return int(random_state)


def _make_sampler(settings: Settings, root: int, n_existing: int) -> BaseSampler:
    """The sampler of this fit, for a study already holding ``n_existing`` trials.

    EvoSampler draws every trial's randomness from ``(seed, trial number)``,
    so one seed serves a fresh and a resumed study alike. TPE and random
    sampling keep one random stream: a resumed study gets a stream of its own
    (keyed by ``n_existing``), or it would repeat the first run's trials.
    """
    if isinstance(settings.sampler, BaseSampler):
        return _copy_sampler(settings.sampler)
    if settings.sampler == "ga":
        population = (
            _TIME_BUDGET_POPULATION
            if settings.n_trials is None
            else min(20, max(4, settings.n_trials // 3))
        )
        return build_sampler(
            "ga",
            seed=derive_seed(root, "sampler"),
            options={"population_size": population},
            space=settings.space,
        )
    return build_sampler(settings.sampler, seed=root, stream="sampler", n_existing=n_existing)


def _copy_sampler(sampler: BaseSampler) -> BaseSampler:
    """A private copy, so that ``fit`` leaves the user's sampler as it was."""
    try:
        return copy.deepcopy(sampler)
    except (TypeError, copy.Error):
        logger.warning(
            "The sampler %r cannot be copied; fit uses it as it is, so its state "
            "(random generator, caches) carries over between fits.",
            sampler,
        )
        return sampler


# -- running the trials ------------------------------------------------------------------------
def study_batch_trials(settings: Settings, sampler: BaseSampler, objective: GenomeObjective) -> int:
    """The trials each process trains together: the setting, or the ``"auto"`` choice
    (:func:`evohpo.search.batch_size.resolve_batch_trials`)."""
    setting: BatchTrials = "auto" if settings.batch_trials is None else settings.batch_trials
    return resolve_batch_trials(
        setting,
        settings.device.type,
        sampler,
        settings.n_trials,
        workers=settings.n_jobs,
        largest_macs=objective.largest_network_macs(),
    )


class RefitReserve:
    """Keeps the end of a timed fit for the refit.

    Trials train until the objective's deadline: ``fit_deadline`` less the
    refit's estimated time. Until a trial completes that estimate is
    :data:`FIRST_RESERVE` of the timeout; after each trial it is the refit of
    the current ensemble as its members' own trials predict it
    (:func:`~evohpo.estimator.refit.refit_seconds`: their seconds per epoch,
    scaled to all the rows and to the refit's epochs). Members train together
    at the refit as in the search, so the shares of time that ``train_seconds``
    holds add up to the refit's wall time. The search stops once the deadline
    has passed.
    """

    #: Share of the timeout kept for the refit before any estimate exists.
    FIRST_RESERVE = 0.2

    def __init__(
        self, objective: GenomeObjective, ensemble_size: int, fit_deadline: float, timeout: float
    ) -> None:
        self.objective = objective
        self.ensemble_size = ensemble_size
        self.fit_deadline = fit_deadline
        objective.deadline = fit_deadline - self.FIRST_RESERVE * timeout

    def estimate(self, study: optuna.Study) -> float:
        """Seconds the refit of the current ensemble would take."""
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        members = ensemble_members(complete, self.ensemble_size, self.objective.task.name)
        return sum(refit_seconds(trial, self.objective) for trial in members)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            self.objective.deadline = self.fit_deadline - self.estimate(study)
        deadline = self.objective.deadline
        if deadline is not None and time.monotonic() >= deadline:
            logger.info("Stopping the search to leave its time to the refit.")
            study.stop()


def _optimize(
    study: optuna.Study,
    storage: _SearchStorage,
    objective: GenomeObjective,
    objective_factory: Callable[[], GenomeObjective],
    settings: Settings,
) -> None:
    """Run the trials still missing: in this process, or in ``n_jobs`` workers."""
    recover_orphaned_trials(study)  # trials of killed processes: failed and re-enqueued
    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    remaining = None if settings.n_trials is None else settings.n_trials - done
    if settings.timeout == 0.0:
        if settings.verbose >= 1:
            logger.info("The timeout is spent before the first trial; no new trial.")
        return
    if remaining is not None and remaining <= 0:
        if settings.verbose >= 1:
            logger.info(
                "Study %r already holds %d finished trials (n_trials=%d); no new trial.",
                study.study_name,
                done,
                settings.n_trials,
            )
        return
    if settings.verbose >= 1:
        _log_start(study, settings, remaining, done)
    progress = SearchProgress(
        remaining,
        bar=settings.verbose >= 1 and not progress_disabled(),
        log_trials=settings.verbose >= 2,
        desc=settings.owner,
    )
    try:
        if settings.n_jobs == 1:
            # MaxTrialsCallback stops at the total also when other processes add trials.
            callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [progress]
            if settings.n_trials is not None:
                callbacks.append(MaxTrialsCallback(settings.n_trials, states=FINISHED))
            if objective.deadline is not None and settings.refit:
                assert settings.timeout is not None
                callbacks.append(
                    RefitReserve(
                        objective, settings.ensemble_size, objective.deadline, settings.timeout
                    )
                )
            batched.optimize(
                study,
                objective,
                batch_trials=study_batch_trials(settings, study.sampler, objective),
                n_trials=remaining,
                timeout=settings.timeout,
                callbacks=callbacks,
            )
        else:
            _run_workers(study, storage, objective, objective_factory, settings, progress)
    finally:
        progress.close()


def _log_start(study: optuna.Study, settings: Settings, remaining: int | None, done: int) -> None:
    budget = [] if remaining is None else [f"{remaining} trial{'' if remaining == 1 else 's'}"]
    if settings.timeout is not None:
        budget.append(
            f"for at most {settings.timeout:.1f} s" if budget else f"for {settings.timeout:.1f} s"
        )
    logger.info(
        "Searching %s (%d trials already done) in study %r with %s, %s%s.",
        " ".join(budget),
        done,
        study.study_name,
        type(study.sampler).__name__,
        f"{settings.cv}-fold cross-validation"
        if settings.cv is not None
        else f"{settings.validation_fraction:g} of the data validating",
        f", in {settings.n_jobs} workers (this process and {settings.n_jobs - 1} more)"
        if settings.n_jobs > 1
        else "",
    )


def _run_workers(
    study: optuna.Study,
    storage: _SearchStorage,
    objective: GenomeObjective,
    objective_factory: Callable[[], GenomeObjective],
    settings: Settings,
    progress: SearchProgress,
) -> None:
    """Run the trials in ``settings.n_jobs`` workers on the study's storage: this
    process and ``n_jobs - 1`` worker processes.

    Each worker builds the same objective (same splits) and its own copy of
    the sampler; the GA breeds from whatever has finished (see
    :mod:`evohpo.workers`). ``progress`` follows the storage.
    """
    from evohpo.workers import Heartbeat, WorkerSpec, run_workers

    assert storage.url is not None
    # The workers' deadline is the fit's, less the refit's first reserve (their
    # trials' refit estimate would need the callback of one process), on the wall
    # clock, which other processes share: a worker starts seconds after this.
    deadline = objective.deadline
    if deadline is not None and settings.refit:
        assert settings.timeout is not None
        deadline -= RefitReserve.FIRST_RESERVE * settings.timeout
    wall_deadline = None if deadline is None else time.time() + (deadline - time.monotonic())
    spec = WorkerSpec(
        study_name=study.study_name,
        storage_url=storage.url,
        objective_factory=functools.partial(_objective_until, objective_factory, wall_deadline),
        sampler_factory=functools.partial(copy.deepcopy, study.sampler),
        pruner_factory=functools.partial(copy.deepcopy, settings.pruner),
        n_trials=settings.n_trials,
        deadline=wall_deadline,
        heartbeat=None if storage.temporary else Heartbeat(),
        counted_states=FINISHED,
        batch_trials=study_batch_trials(settings, study.sampler, objective),
    )
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def follow() -> None:
        for trial in study.get_trials(deepcopy=False):
            if trial.state.is_finished() and trial.number not in seen:
                seen.add(trial.number)
                progress(study, trial)

    # Workers stop their trials at their deadline. One still starting then, or whose
    # step outlasts it, is stopped a quarter of the refit's reserve later (its trial
    # fails), so that the refit keeps most of its time.
    wait = None
    if deadline is not None and objective.deadline is not None:
        until = deadline + 0.25 * (objective.deadline - deadline)
        wait = max(0.0, until - time.monotonic())
    try:
        # This process is one of the n_jobs workers: it trains while the others start.
        run_workers(
            spec,
            settings.n_jobs,
            threads_per_worker=current_thread_budget() or 1,
            timeout=wait,
            on_wait=follow,
            log_level=None if settings.verbose >= 1 else logging.WARNING,
            in_this_process=True,
        )
    except TimeoutError:
        logger.info("Stopped the worker processes still training at the fit's timeout.")
    follow()


def _objective_until(
    factory: Callable[[], GenomeObjective], wall_deadline: float | None
) -> GenomeObjective:
    """A worker's objective, whose training stops at ``wall_deadline`` (``time.time()``)."""
    objective = factory()
    if wall_deadline is not None:
        objective.deadline = time.monotonic() + (wall_deadline - time.time())
    return objective


# -- the study of a pickled estimator ----------------------------------------------------------
def study_ref(study: optuna.Study, storage: str | None) -> dict[str, Any]:
    """What a pickle keeps of ``study``: its name and storage, or its trials if in memory."""
    ref: dict[str, Any] = {"study_name": study.study_name, "storage": storage}
    if storage is None:
        ref["trials"] = [t for t in study.get_trials() if t.state.is_finished()]
        ref["user_attrs"] = dict(study.user_attrs)
    return ref


def rebuild_study(ref: dict[str, Any]) -> optuna.Study:
    """The study :func:`study_ref` describes (a plain random sampler)."""
    if ref["storage"] is not None:
        storage = open_storage(ref["storage"], create=False)
        return optuna.load_study(study_name=ref["study_name"], storage=storage)
    study = optuna.create_study(direction="maximize", study_name=ref["study_name"])
    study.add_trials(ref["trials"])
    for key, value in ref["user_attrs"].items():
        study.set_user_attr(key, value)
    return study
