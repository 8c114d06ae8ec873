"""The commands: each takes the parsed arguments and a stop guard and returns the exit status."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import mimetypes
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from evohpo._interrupt import GracefulStop
from evohpo._redact import redact_url
from evohpo.cli.output import out, trial_progress
from evohpo.cli.parser import PROG
from evohpo.evolution.describe import describe_genome
from evohpo.exceptions import EvohpoError, InvalidParameterError
from evohpo.search.inheritance import STUDY_BYTES_ATTR
from evohpo.storage import close_storage, describe_storage, open_storage, resolve_storage_url
from evohpo.storage.artifacts import (
    default_artifact_dir,
    open_artifact_store,
    replace_study_artifact,
)
from evohpo.studies.compare import Comparison, run_comparison
from evohpo.studies.config import DEFAULT_STORAGE_NAME, Budget, StudyConfig, load_study_config
from evohpo.studies.dashboard import DashboardServer, compare_url, study_groups
from evohpo.studies.data import prepare_data
from evohpo.studies.export import export_best, find_best
from evohpo.studies.group import check_study, open_study, study_name
from evohpo.studies.lineage_plot import (
    LINEAGE_SUFFIXES,
    default_lineage_path,
    study_lineage,
    write_lineage,
)
from evohpo.studies.plots import check_plot_path, default_plot_path, plot_histories
from evohpo.studies.refit import best_genome
from evohpo.studies.report import format_table
from evohpo.studies.run import (
    finished_trials,
    make_objective,
    remaining_budget,
    run_study,
    study_batch_trials,
)
from evohpo.studies.workers import study_file_spec
from evohpo.workers import run_worker, run_workers

__all__ = ["COMMANDS", "Command"]

#: A command: ``command(args, guard)`` returns the exit status.
Command = Callable[[argparse.Namespace, GracefulStop], int]


def _load(args: argparse.Namespace, *, trains: bool = True) -> tuple[StudyConfig, str]:
    """The study file and the storage URL; a command that ``trains`` checks the device.

    Commands that write make the data splits after this and before they open
    the storage: a split that cannot be made leaves no file and no study.
    """
    config = load_study_config(args.study_file, check_device=trains)
    url = resolve_storage_url(args.storage) if args.storage else config.storage_url
    return config, url


@contextlib.contextmanager
def _opened(url: str, *, create: bool = True, track: bool = True) -> Iterator[BaseStorage]:
    """The storage at ``url``, its connections closed when the command ends.

    Commands that only look at existing studies (best, export, dashboard) pass
    ``create=False``: a mistyped path is then an error, not a new empty file.
    ``track=False``: a plain Optuna storage (what the proxy serves).
    """
    storage = open_storage(url, create=create, track=track)
    try:
        yield storage
    finally:
        close_storage(storage)


def _finished(n_after: int, total: int | None, note: str) -> str:
    """``finished trials: 3 of 5 (...)``; a study past its total says so."""
    if total is None:
        return f"finished trials: {n_after} ({note})"
    if n_after > total:
        return f"finished trials: {n_after}, more than the total of {total} asked for ({note})"
    return f"finished trials: {n_after} of {total} ({note})"


def run_command(args: argparse.Namespace, guard: GracefulStop) -> int:
    """``evohpo run``: run or resume one study, here or in ``--workers`` processes."""
    config, url = _load(args)
    seed = args.seed if args.seed is not None else config.seeds[0]
    budget = Budget(
        n_trials=args.n_trials if args.n_trials is not None else config.budget.n_trials,
        timeout=args.timeout if args.timeout is not None else config.budget.timeout,
    )
    data = prepare_data(config)
    with _opened(url) as storage:
        study = open_study(storage, config, args.sampler, seed, storage_url=url)
        if args.workers > 1:
            n_before, n_after = _run_in_workers(args, guard, config, url, study, budget, seed)
        else:
            objective = make_objective(config, data, seed, url)
            batch_trials = study_batch_trials(
                config, study.sampler, budget.n_trials, args.batch_trials, objective=objective
            )
            with trial_progress() as progress:
                n_left, _ = remaining_budget(study, budget)
                progress.plan(n_left)
                progress.describe(study.study_name)
                result = run_study(
                    study,
                    objective,
                    budget,
                    guard=guard,
                    callbacks=[progress],
                    batch_trials=batch_trials,
                )
            n_before, n_after = result.n_before, result.n_after
        out(f"study {study.study_name} in {describe_storage(url)}")
        out(_finished(n_after, budget.n_trials, f"{n_after - n_before} run now"))
        try:
            best = study.best_trial
        except ValueError:
            out("no completed trial yet")
            return 0
        out(f"best validation {config.score_label}: {best.value:.4f} (trial {best.number})")
        out(f"best genome: {describe_genome(best_genome(best))}")
        kept = study.user_attrs.get(STUDY_BYTES_ATTR) if config.inherit_weights else None
        if isinstance(kept, int):
            out(f"trained weights kept: {kept / 1e6:.1f} MB in {config.weights_store(url)}")
        return 0


def _run_in_workers(
    args: argparse.Namespace,
    guard: GracefulStop,
    config: StudyConfig,
    url: str,
    study: optuna.Study,
    budget: Budget,
    seed: int,
) -> tuple[int, int]:
    """Run ``study`` in ``args.workers`` processes; finished trials before and after."""
    n_before = len(finished_trials(study))
    n_left, time_left = remaining_budget(study, budget)
    if n_left == 0 or (time_left is not None and time_left <= 0):
        return n_before, n_before
    # The budget's timeout counts trial time, which n workers spend n times as fast.
    timeout = None if time_left is None else time_left / args.workers
    spec = study_file_spec(
        config,
        args.sampler,
        seed,
        url,
        n_trials=budget.n_trials,
        timeout=timeout,
        batch_trials=args.batch_trials,
        workers=args.workers,
    )
    # This process is one of the workers: it trains while the others start.
    run_workers(
        spec, args.workers, threads_per_worker=args.threads, in_this_process=True, guard=guard
    )
    return n_before, len(finished_trials(study))


def worker_command(args: argparse.Namespace, guard: GracefulStop) -> int:
    """``evohpo worker``: one worker on one study, until the study holds its budget."""
    config, url = _load(args)
    seed = args.seed if args.seed is not None else config.seeds[0]
    budget = Budget(n_trials=args.n_trials or config.budget.n_trials, timeout=config.budget.timeout)
    prepare_data(config)  # only a check here: each worker makes the splits itself
    with _opened(url) as storage:
        study = open_study(storage, config, args.sampler, seed, storage_url=url)
        n_left, time_left = remaining_budget(study, budget)
        timeout = args.timeout if args.timeout is not None else time_left
        completed = 0
        if n_left != 0 and (timeout is None or timeout > 0):
            spec = study_file_spec(
                config,
                args.sampler,
                seed,
                url,
                n_trials=budget.n_trials,
                timeout=timeout,
                stale_after=args.stale_after,
                batch_trials=args.batch_trials,
            )
            completed = len(run_worker(spec, guard=guard).completed)
        n_after = len(finished_trials(study))
        out(f"study {study.study_name} in {describe_storage(url)}")
        out(_finished(n_after, budget.n_trials, f"{completed} completed by this worker"))
        return 0


def compare_command(args: argparse.Namespace, guard: GracefulStop) -> int:
    """``evohpo compare``: every sampler and seed, then the table and the plot."""
    config, url = _load(args)
    plot = check_plot_path(args.plot if args.plot else default_plot_path(config))
    data = prepare_data(config)
    with _opened(url) as storage:
        budget = Budget(
            n_trials=args.n_trials if args.n_trials is not None else config.budget.n_trials,
            timeout=args.timeout if args.timeout is not None else config.budget.timeout,
        )
        with trial_progress() as progress:
            comparison = run_comparison(
                config,
                data,
                storage,
                storage_url=url,
                samplers=args.samplers,
                seeds=args.seeds,
                budget=budget,
                guard=guard,
                callbacks=[progress],
                on_plan=progress.plan,
                on_study=progress.describe,
                evaluate_test=not args.no_test,
                batch_trials=args.batch_trials,
            )
        out(format_table(comparison))
        written = plot_histories(comparison, plot)
        lineages = _draw_lineages(comparison, storage)
        out("")
        out(f"plot: {written}")
        for path in lineages.values():
            out(f"lineage: {path}")
        artifacts = _attach_figures(storage, url, lineages, written)
        if artifacts is not None:
            out(f"figures attached to the GA studies (optuna-dashboard artifacts): {artifacts}")
        out(f"storage: {describe_storage(url)}")
        out(f"wall time: {comparison.wall_seconds:.1f} s")
        hint = [PROG, "dashboard", args.study_file]
        if args.storage:
            hint += ["--storage", redact_url(args.storage)]
        out(f"side by side in optuna-dashboard: {shlex.join(hint)}")
        return 0


def _value_label(config: StudyConfig) -> str:
    """The y axis of the figures of a study file's studies."""
    return f"validation {config.score_label}"


def _draw_lineages(comparison: Comparison, storage: BaseStorage) -> dict[str, Path]:
    """Write the lineage PNG of each GA study of ``comparison``: study name -> file."""
    written: dict[str, Path] = {}
    for result in comparison.results.get("ga", []):
        study = optuna.load_study(study_name=result.name, storage=storage)
        try:
            graph = study_lineage(study)
        except InvalidParameterError:  # no trial yet (a budget spent before the first)
            continue
        path = default_lineage_path(comparison.config, result.seed)
        label = _value_label(comparison.config)
        written[result.name] = write_lineage(graph, path, value_label=label)
    return written


def _attach_figures(
    storage: BaseStorage, url: str, lineages: dict[str, Path], history: Path
) -> Path | None:
    """Attach each GA study's lineage and the history plot to it as Optuna artifacts.

    Only where the storage has a folder for them (a SQLite or journal file);
    returns that folder, or ``None`` when nothing was attached. Figures of an
    earlier run are replaced, not added again.
    """
    folder = default_artifact_dir(url)
    if folder is None or not lineages:
        return None
    store = open_artifact_store(folder)
    for name, lineage in lineages.items():
        study = optuna.load_study(study_name=name, storage=storage)
        for path in (lineage, history):
            mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            replace_study_artifact(store, study, path, mimetype=mimetype)
    return folder


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def lineage_command(args: argparse.Namespace, guard: GracefulStop) -> int:
    """``evohpo lineage``: draw one GA study's family tree."""
    config, url = _load(args, trains=False)
    seed = args.seed if args.seed is not None else config.seeds[0]
    name = study_name(config.name, "ga", seed)
    path = Path(args.out) if args.out else default_lineage_path(config, seed)
    check_plot_path(path, "--out", LINEAGE_SUFFIXES)
    with _opened(url, create=False) as storage:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise InvalidParameterError(
                f"No study {name!r} in {describe_storage(url)}: run "
                f"'{PROG} run {args.study_file} --sampler ga --seed {seed}' or "
                f"'{PROG} compare {args.study_file}' first."
            ) from None
        graph = study_lineage(study)
        written = write_lineage(graph, path, value_label=_value_label(config))
        out(f"lineage of {name}: {len(graph.nodes)} trials over {graph.generations} generations")
        if graph.best is not None:
            best = graph.nodes[graph.best]
            out(
                f"best trial {best.number} ({_value_label(config)} {best.value:.4f}, generation "
                f"{best.generation}) has {_count(len(graph.ancestry) - 1, 'ancestor')}"
            )
        out(f"wrote {written}")
        return 0


def dashboard_command(args: argparse.Namespace, guard: GracefulStop) -> int:
    """``evohpo dashboard``: serve optuna-dashboard until interrupted."""
    group = None
    if args.study_file is not None:
        config = load_study_config(args.study_file, check_device=False)
        group = config.name
        url = resolve_storage_url(args.storage) if args.storage else config.storage_url
    elif args.storage:
        url = resolve_storage_url(args.storage)
    else:
        default = Path("studies") / DEFAULT_STORAGE_NAME
        if not default.is_file():
            raise EvohpoError(
                f"No storage given and no {default} in the working directory: pass "
                "--storage URL or a study file."
            )
        url = resolve_storage_url(str(default))
    artifact_dir = Path(args.artifact_dir) if args.artifact_dir else default_artifact_dir(url)
    # The default folder is only used once something made it: a dashboard creates no files
    # next to a storage unless asked to.
    if artifact_dir is not None and not (args.artifact_dir or artifact_dir.is_dir()):
        artifact_dir = None
    with _opened(url, create=False) as storage:
        groups = study_groups(storage, group)
        store = open_artifact_store(artifact_dir) if artifact_dir is not None else None
        try:
            server = DashboardServer(storage, host=args.host, port=args.port, artifact_store=store)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise InvalidParameterError(
                f"The port {args.port} on {args.host} is already in use (another dashboard?): "
                "pass --port N with a free port, or --port 0 to pick one."
            ) from exc
        out(f"optuna-dashboard for {describe_storage(url)}: {server.url}/dashboard/")
        if artifact_dir is not None:
            out(f"study artifacts (attached files) from {artifact_dir}")
        if not groups:
            what = f"of {group!r} " if group else ""
            out(f"no evohpo studies {what}in this storage yet: run 'evohpo compare STUDY.toml'")
        for found in groups:
            ids = found.ids()
            if ids:
                studies = f"{len(ids)} stud{'y' if len(ids) == 1 else 'ies'}"
                out(f"{found.name}: GA vs TPE ({studies}): {compare_url(server.url, ids)}")
            else:
                out(f"{found.name}: all studies: {compare_url(server.url, found.ids(None))}")
        out("press Ctrl-C to stop")
        try:
            with guard.interruptible():
                server.serve_forever()
        finally:
            server.stop()
        return 0


def best_command(args: argparse.Namespace, guard: GracefulStop) -> int:
    """``evohpo best``: the best trial of the stored studies, as JSON."""
    config, url = _load(args, trains=False)
    with _opened(url, create=False) as storage:
        best = find_best(storage, config, sampler=args.sampler, seed=args.seed)
        out(json.dumps(best.to_dict(), indent=2))
        return 0


def export_command(args: argparse.Namespace, guard: GracefulStop) -> int:
    """``evohpo export``: retrain the best genome and write it to a directory."""
    config, url = _load(args)
    with _opened(url, create=False) as storage:
        best = find_best(storage, config, sampler=args.sampler, seed=args.seed)
        # The refit trains on the file's data and stores its test score with the
        # study: a file changed since the search would make both wrong.
        check_study(storage, config, best.sampler, best.seed, storage_url=url)
        directory = Path(args.output) if args.output else config.output_dir / "best"
        data = prepare_data(config)
        result = export_best(
            best, config, data, directory, overwrite=args.force, guard=guard, storage_url=url
        )
        out(
            f"best trial: {best.study.study_name} #{best.trial.number}, "
            f"validation {config.score_label} {best.value:.4f}"
        )
        if result.test_accuracy is not None:
            out(f"test {config.score_label} of the refit: {result.test_accuracy:.4f}")
        for path in result.files:
            out(f"wrote {path}")
        return 0


def proxy_command(args: argparse.Namespace, guard: GracefulStop) -> int:
    """``evohpo proxy``: Optuna's gRPC storage proxy in front of a storage, until interrupted."""
    import socket

    from evohpo.storage.grpc import check_port_free, require_grpc, servable, serve_storage

    url = resolve_storage_url(args.storage)
    servable(url)
    require_grpc()
    if args.port == 0:
        raise InvalidParameterError("The proxy needs a fixed port for its clients: pass --port N.")
    check_port_free(args.host, args.port)
    # Listening on every interface: clients reach it by this machine's name.
    reach = socket.gethostname() if args.host in ("0.0.0.0", "::", "") else args.host
    with _opened(url, track=False) as storage:
        out(
            f"gRPC storage proxy for {describe_storage(url)}: storage URL "
            f"grpc://{reach}:{args.port}"
        )
        out("press Ctrl-C to stop")
        with guard.interruptible():
            serve_storage(storage, host=args.host, port=args.port)
    return 0


#: The commands by name, as ``build_parser`` names them.
COMMANDS: dict[str, Command] = {
    "run": run_command,
    "worker": worker_command,
    "compare": compare_command,
    "dashboard": dashboard_command,
    "best": best_command,
    "export": export_command,
    "lineage": lineage_command,
    "proxy": proxy_command,
}
