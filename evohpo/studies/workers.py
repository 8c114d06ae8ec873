"""Worker processes on the studies of a study file (``evohpo run --workers``, ``evohpo worker``).

:func:`study_file_spec` turns a study of a study file into a
:class:`~evohpo.workers.WorkerSpec`, whose factories rebuild the objective,
the sampler and the pruner inside each worker process.
"""

from __future__ import annotations

import functools

from evohpo.search.batch_size import BatchTrials
from evohpo.search.samplers import build_pruner, build_sampler
from evohpo.studies.config import StudyConfig
from evohpo.studies.data import prepare_data
from evohpo.studies.group import study_name
from evohpo.studies.run import make_objective, study_batch_trials
from evohpo.workers import Backoff, Heartbeat, WorkerSpec
from evohpo.workers.spec import Objective

__all__ = ["study_file_objective", "study_file_spec"]


def study_file_objective(
    config: StudyConfig, seed: int, storage_url: str | None = None
) -> Objective:
    """The objective of a study file's study, built in the worker (a picklable factory).

    Use it as ``functools.partial(study_file_objective, config, seed)``: each
    worker loads (from its cache) and splits the data set itself.
    """
    return make_objective(config, prepare_data(config), seed, storage_url)


def study_file_spec(
    config: StudyConfig,
    sampler: str,
    seed: int,
    storage_url: str,
    *,
    n_trials: int | None,
    timeout: float | None = None,
    heartbeat: Heartbeat | None = None,
    backoff: Backoff | None = None,
    stale_after: float | None = None,
    batch_trials: BatchTrials | None = None,
    workers: int = 1,
) -> WorkerSpec:
    """The :class:`~evohpo.workers.WorkerSpec` of the study ``(sampler, seed)`` of a study file.

    Open the study first (``open_study`` creates it or checks that the stored
    one matches the file); then hand the spec to
    :func:`~evohpo.workers.run_workers` or :func:`~evohpo.workers.run_worker`.

    Parameters
    ----------
    config : StudyConfig
    sampler : {"ga", "tpe", "random"}
    seed : int
    storage_url : str
    n_trials : int or None
        Total finished trials of the study.
    timeout : float, optional
        Seconds each worker runs at most.
    heartbeat : Heartbeat, optional
        Heartbeats on RDB storage (SQLite included); ``Heartbeat()`` by
        default. Journal files have none.
    backoff : Backoff, optional
    stale_after : float, optional
        See :class:`~evohpo.workers.WorkerSpec`.
    batch_trials : int or "auto", optional
        Trials each worker trains together; the study file's ``batch_trials``
        by default. ``"auto"`` is resolved here, for the file's device, the
        GA's population and ``n_trials``.
    workers : int, default=1
        Workers that will run the study at once: ``"auto"`` keeps their
        batches together within one population.
    """
    sampler_factory = functools.partial(
        build_sampler,
        sampler,
        seed=seed,
        options=config.sampler_arguments(sampler),
        space=config.space,
    )
    return WorkerSpec(
        study_name=study_name(config.name, sampler, seed),
        storage_url=storage_url,
        objective_factory=functools.partial(study_file_objective, config, seed, storage_url),
        sampler_factory=sampler_factory,
        pruner_factory=functools.partial(build_pruner, dict(config.pruner)),
        n_trials=n_trials,
        timeout=timeout,
        heartbeat=heartbeat if heartbeat is not None else Heartbeat(),
        backoff=backoff if backoff is not None else Backoff(),
        stale_after=stale_after,
        batch_trials=study_batch_trials(
            config, sampler_factory(), n_trials, batch_trials, workers=workers
        ),
    )
