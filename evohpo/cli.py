"""The ``evohpo`` command: run, compare, inspect and export evolutionary searches.

``main(argv)`` parses its arguments and returns the exit status, so the
command is testable in-process. Exit statuses: 0 success, 1 error (message on
stderr, traceback only with ``--debug``), 2 bad command line, 130 interrupted
(SIGINT or SIGTERM: the running trial is recorded as failed, every finished
trial is kept, and running the same command again resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import shlex
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from evohpo._interrupt import GracefulStop
from evohpo._redact import redact_url
from evohpo._version import __version__
from evohpo.exceptions import EvohpoError, InvalidParameterError
from evohpo.studies.study import DEFAULT_STORAGE_NAME, SAMPLERS

__all__ = ["main"]

_PROG = "evohpo"
#: What an interrupted command says, unless it sets its own ``interrupted`` default.
_INTERRUPTED = (
    "interrupted; finished trials are kept (a running trial is recorded as failed). "
    "Run the same command again to resume."
)

_DESCRIPTION = """\
Evolutionary neural-architecture and hyperparameter search inside Optuna.

A study file (TOML, see studies/*.toml) names the data set, search space,
training settings, budget, samplers and seeds. Every (sampler, seed) pair is
one Optuna study called <name>/<sampler>/seed<seed>, stored by default in the
SQLite file evohpo.db next to the study file. Budgets are totals: running a
command again resumes its studies up to the budget.
"""

_EPILOG = """\
examples:
  evohpo compare studies/digits.toml        GA vs TPE vs random, 3 seeds, table + plot
  evohpo dashboard --storage studies/evohpo.db
  evohpo run studies/wine.toml --sampler ga --seed 1 --n-trials 40
  evohpo run studies/digits.toml --workers 2  two worker processes on one study
  evohpo worker studies/digits.toml --storage postgresql://user@host/db
                                            one worker of many (run it on each machine)
  evohpo best studies/digits.toml --sampler ga
  evohpo export studies/digits.toml --output model-dir

storage URLs: sqlite:///path.db, postgresql://user:pw@host/db (pip install
'evohpo[postgres]'), mysql+pymysql://user:pw@host/db (pip install 'evohpo[mysql]'),
journal:///path/file.log (Optuna journal file), or a bare path ending in
.db/.sqlite/.sqlite3 (SQLite) or .log/.jsonl/.journal (journal file). best,
export and dashboard never create a SQLite or journal file.

environment: EVOHPO_NO_PROGRESS=1 turns the progress bar off (it is also off
when stderr is not a terminal).
"""


# -- argument parsing --------------------------------------------------------------------
def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port in [0, 65535], got {text!r}")
    return value


def _sampler_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in SAMPLERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"invalid sampler {', '.join(map(repr, unknown)) or repr(text)} "
            f"(choose from {', '.join(map(repr, SAMPLERS))})"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a sampler is listed twice in {text!r}")
    return names


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [_non_negative_int(part.strip()) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= 0, got {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct integers, got {text!r}")
    return seeds


def _add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Accepted before and after the command; the subcommand's copy does not
    # overwrite what was given before it.
    default: Any = False if top else argparse.SUPPRESS
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show tracebacks and debug logs",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="log progress (evohpo and Optuna messages at INFO level)",
    )


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        metavar="N",
        help="torch CPU threads (default: %(default)s; the networks searched here are "
        "small, and one thread trains them faster than several; run several processes "
        "on one storage to use more cores)",
    )


def _add_storage(parser: argparse.ArgumentParser, *, what: str) -> None:
    parser.add_argument(
        "--storage",
        metavar="URL",
        help=f"Optuna storage URL or path {what} (default: the study file's 'storage', "
        f"else {DEFAULT_STORAGE_NAME} next to the study file)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``evohpo`` command."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_common(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=textwrap.dedent(description),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common(sub, top=False)
        return sub

    run = command(
        "run",
        "run or resume one study (one sampler, one seed)",
        """\
        Run one study of a study file: one sampler and one seed. Running the same
        command again resumes the study up to the budget, which is a total (with
        --n-trials 30 a study holding 20 finished trials runs 10 more); the GA
        breeds from the population stored in the study.""",
    )
    run.add_argument("study_file", metavar="STUDY.toml", help="the study file")
    run.add_argument(
        "--sampler", choices=SAMPLERS, default="ga", help="the sampler (default: %(default)s)"
    )
    run.add_argument(
        "--seed",
        type=_non_negative_int,
        help="the seed (default: the first of the study file's seeds)",
    )
    _add_storage(run, what="")
    run.add_argument(
        "--n-trials",
        type=_positive_int,
        metavar="N",
        help="total finished trials of the study (default: the study file's budget)",
    )
    run.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="total trial time of the study (default: the study file's budget)",
    )
    _add_threads(run)
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="worker processes on this machine sharing the study (default: %(default)s); "
        "each trains with --threads threads",
    )
    run.set_defaults(handler=_cmd_run)

    worker = command(
        "worker",
        "join a study as one worker (start one per process or machine)",
        """        Run one worker on one study of a study file, for as many workers as wanted,
        on one or many machines, sharing one storage (PostgreSQL for many machines).
        The study is created if missing; every worker stops when the study holds
        its total of finished trials (a few more may finish: one per other worker
        at most). On PostgreSQL, MySQL and SQLite the trial of a killed worker is
        failed after the heartbeat's grace period (2 minutes) and run again, with
        the same genome, by another worker; on a journal file, when a worker
        starts. A database that goes away is waited for (up to 10 minutes).
        Keep passwords out of the command line: leave them out of the URL and set
        PGPASSWORD.""",
    )
    worker.add_argument("study_file", metavar="STUDY.toml", help="the study file")
    worker.add_argument(
        "--sampler", choices=SAMPLERS, default="ga", help="the sampler (default: %(default)s)"
    )
    worker.add_argument(
        "--seed",
        type=_non_negative_int,
        help="the seed (default: the first of the study file's seeds)",
    )
    _add_storage(worker, what="shared by the workers")
    worker.add_argument(
        "--n-trials",
        type=_positive_int,
        metavar="N",
        help="total finished trials of the study (default: the study file's budget)",
    )
    worker.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="seconds this worker runs at most (default: the trial time left in the "
        "study file's budget)",
    )
    worker.add_argument(
        "--stale-after",
        type=_positive_float,
        metavar="SECONDS",
        help="when starting, also fail and re-run trials running for longer than this "
        "(workers lost on other machines; journal files have no heartbeat)",
    )
    _add_threads(worker)
    worker.set_defaults(handler=_cmd_worker)

    compare = command(
        "compare",
        "compare GA, TPE and random search over several seeds",
        """\
        Run (or resume) one study per sampler and seed on the same objective (the
        same train/validation/test split), the same budget and one storage; then
        print a table (best validation accuracy, test accuracy of the best trial's
        refit, mean and spread over seeds, trials and time to reach the target) and
        write a PNG of the optimisation histories. Interrupted, it resumes where it
        stopped when run again.""",
    )
    compare.add_argument("study_file", metavar="STUDY.toml", help="the study file")
    _add_storage(compare, what="shared by all studies")
    compare.add_argument(
        "--samplers",
        type=_sampler_list,
        metavar="LIST",
        help="comma-separated samplers, e.g. ga,tpe (default: the study file's)",
    )
    compare.add_argument(
        "--seeds",
        type=_seed_list,
        metavar="LIST",
        help="comma-separated seeds, e.g. 0,1,2 (default: the study file's)",
    )
    compare.add_argument(
        "--n-trials",
        type=_positive_int,
        metavar="N",
        help="total finished trials per study (default: the study file's budget)",
    )
    compare.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="total trial time per study (default: the study file's budget)",
    )
    compare.add_argument(
        "--plot",
        metavar="PATH",
        help="where to write the PNG (default: runs/<name>/history.png next to the study file)",
    )
    compare.add_argument(
        "--no-test",
        action="store_true",
        help="skip the refit of each study's best genome and its test accuracy",
    )
    _add_threads(compare)
    compare.set_defaults(handler=_cmd_compare)

    dashboard = command(
        "dashboard",
        "serve optuna-dashboard and print the GA-vs-TPE comparison URL",
        """\
        Start optuna-dashboard on a storage and print the URL of its study-comparison
        page (/dashboard/compare-studies?ids=...) for the GA and TPE studies of each
        study file found in the storage. Stop it with Ctrl-C.""",
    )
    dashboard.add_argument(
        "study_file",
        metavar="STUDY.toml",
        nargs="?",
        help="only this study file's studies, and its storage unless --storage is given",
    )
    dashboard.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL or path (default: the study file's storage, else "
        f"studies/{DEFAULT_STORAGE_NAME} in the working directory)",
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    dashboard.add_argument(
        "--port",
        type=_port,
        default=8080,
        help="port to listen on; 0 picks a free one (default: %(default)s)",
    )
    dashboard.set_defaults(handler=_cmd_dashboard, interrupted="dashboard stopped.")

    for name, help_text, description in (
        (
            "best",
            "print the best genome (JSON)",
            """\
            Print the best completed trial of the study file's studies as JSON: study,
            trial number, validation accuracy, genome and parameters. No training.""",
        ),
        (
            "export",
            "retrain the best genome and save its weights, genome and class names",
            """\
            Retrain the best genome on the search's training and validation rows and write
            model.pt (a state_dict, loadable with torch.load(path, weights_only=True)),
            genome.json, classes.json and metadata.json (feature standardisation,
            accuracies, origin) into the output directory, and nowhere else.""",
        ),
    ):
        sub = command(name, help_text, description)
        sub.add_argument("study_file", metavar="STUDY.toml", help="the study file")
        _add_storage(sub, what="")
        sub.add_argument(
            "--sampler", choices=SAMPLERS, help="only this sampler's studies (default: all)"
        )
        sub.add_argument(
            "--seed", type=_non_negative_int, help="only this seed's studies (default: all)"
        )
        if name == "export":
            sub.add_argument(
                "--output",
                metavar="DIR",
                help="output directory (default: runs/<name>/best next to the study file)",
            )
            sub.add_argument(
                "--force", action="store_true", help="replace the files of an earlier export"
            )
            _add_threads(sub)
            sub.set_defaults(handler=_cmd_export)
        else:
            sub.set_defaults(handler=_cmd_best)
    return parser


# -- output helpers ------------------------------------------------------------------------
def _out(text: str = "") -> None:
    print(text, file=sys.stdout, flush=True)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _progress_enabled() -> bool:
    if os.environ.get("EVOHPO_NO_PROGRESS", "") not in ("", "0"):
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class _Progress:
    """A tqdm bar on stderr over trials; silent when disabled."""

    def __init__(self) -> None:
        self._enabled = _progress_enabled()
        self._bar: Any = None

    def plan(self, total: int | None) -> None:
        if not self._enabled:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, unit="trial", file=sys.stderr, dynamic_ncols=True)

    def study(self, name: str) -> None:
        if self._bar is not None:
            self._bar.set_description(name)

    def trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self._bar is None or trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return
        self._bar.update(1)
        with contextlib.suppress(ValueError):  # no completed trial yet
            self._bar.set_postfix(best=f"{study.best_value:.4f}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextlib.contextmanager
def _progress() -> Iterator[_Progress]:
    progress = _Progress()
    try:
        yield progress
    finally:
        progress.close()


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch CPU threads for the duration of a command (restored after)."""
    if n is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _logging(verbose: bool, debug: bool) -> Iterator[None]:
    """Route evohpo's log to stderr and quiet Optuna for the duration of a command."""
    logger = logging.getLogger("evohpo")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("evohpo: %(message)s"))
    old_level, old_propagate = logger.level, logger.propagate
    old_optuna = optuna.logging.get_verbosity()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    # Optuna logs every trial, and a failed trial's traceback, at INFO/WARNING.
    optuna.logging.set_verbosity(
        optuna.logging.DEBUG if debug else optuna.logging.INFO if verbose else optuna.logging.ERROR
    )
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
        optuna.logging.set_verbosity(old_optuna)


# -- commands ------------------------------------------------------------------------------
def _load(args: argparse.Namespace, *, trains: bool = True) -> tuple[Any, str]:
    """The study file and the storage URL; a command that ``trains`` checks the device.

    Commands that write make the data splits after this and before they open
    the storage: a split that cannot be made leaves no file and no study.
    """
    from evohpo.studies.study import load_study_config, resolve_storage_url

    config = load_study_config(args.study_file, check_device=trains)
    url = resolve_storage_url(args.storage) if args.storage else config.storage_url
    return config, url


@contextlib.contextmanager
def _opened(url: str, *, create: bool = True) -> Iterator[Any]:
    """The storage at ``url``, its connections closed when the command ends.

    Commands that only look at existing studies (best, export, dashboard) pass
    ``create=False``: a mistyped path is then an error, not a new empty file.
    """
    from evohpo.studies.study import close_storage, open_storage

    storage = open_storage(url, create=create)
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


def _cmd_run(args: argparse.Namespace, guard: GracefulStop) -> int:
    from evohpo.studies.export import describe_genome
    from evohpo.studies.study import (
        Budget,
        describe_storage,
        make_objective,
        open_study,
        prepare_data,
        run_study,
    )

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
            objective = make_objective(config, data, seed)
            with _progress() as progress:
                from evohpo.studies.study import remaining_budget

                n_left, _ = remaining_budget(study, budget)
                progress.plan(n_left)
                progress.study(study.study_name)
                result = run_study(
                    study, objective, budget, guard=guard, callbacks=[progress.trial]
                )
            n_before, n_after = result.n_before, result.n_after
        _out(f"study {study.study_name} in {describe_storage(url)}")
        _out(_finished(n_after, budget.n_trials, f"{n_after - n_before} run now"))
        try:
            best = study.best_trial
        except ValueError:
            _out("no completed trial yet")
            return 0
        _out(f"best validation accuracy: {best.value:.4f} (trial {best.number})")
        from evohpo.studies.compare import best_genome

        _out(f"best genome: {describe_genome(best_genome(best))}")
        return 0


def _run_in_workers(
    args: argparse.Namespace,
    guard: GracefulStop,
    config: Any,
    url: str,
    study: optuna.Study,
    budget: Any,
    seed: int,
) -> tuple[int, int]:
    """Run ``study`` in ``args.workers`` processes; finished trials before and after."""
    from evohpo.studies.study import finished_trials, remaining_budget
    from evohpo.workers.worker import run_workers, study_file_spec

    n_before = len(finished_trials(study))
    n_left, time_left = remaining_budget(study, budget)
    if n_left == 0 or (time_left is not None and time_left <= 0):
        return n_before, n_before
    # The budget's timeout counts trial time, which n workers spend n times as fast.
    timeout = None if time_left is None else time_left / args.workers
    spec = study_file_spec(
        config, args.sampler, seed, url, n_trials=budget.n_trials, timeout=timeout
    )
    with guard.interruptible():
        run_workers(spec, args.workers, threads_per_worker=args.threads)
    return n_before, len(finished_trials(study))


def _cmd_worker(args: argparse.Namespace, guard: GracefulStop) -> int:
    from evohpo.studies.study import (
        Budget,
        describe_storage,
        finished_trials,
        open_study,
        prepare_data,
        remaining_budget,
    )
    from evohpo.workers.worker import run_worker, study_file_spec

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
            )
            completed = len(run_worker(spec, guard=guard).completed)
        n_after = len(finished_trials(study))
        _out(f"study {study.study_name} in {describe_storage(url)}")
        _out(_finished(n_after, budget.n_trials, f"{completed} completed by this worker"))
        return 0


def _cmd_compare(args: argparse.Namespace, guard: GracefulStop) -> int:
    from evohpo.studies.compare import (
        default_plot_path,
        format_table,
        plot_histories,
        run_comparison,
    )
    from evohpo.studies.study import Budget, describe_storage, prepare_data

    config, url = _load(args)
    data = prepare_data(config)
    with _opened(url) as storage:
        budget = Budget(
            n_trials=args.n_trials if args.n_trials is not None else config.budget.n_trials,
            timeout=args.timeout if args.timeout is not None else config.budget.timeout,
        )
        with _progress() as progress:
            comparison = run_comparison(
                config,
                data,
                storage,
                storage_url=url,
                samplers=args.samplers,
                seeds=args.seeds,
                budget=budget,
                guard=guard,
                callbacks=[progress.trial],
                on_plan=progress.plan,
                on_study=progress.study,
                evaluate_test=not args.no_test,
            )
        _out(format_table(comparison))
        plot = Path(args.plot) if args.plot else default_plot_path(config)
        written = plot_histories(comparison, plot)
        _out("")
        _out(f"plot: {written}")
        _out(f"storage: {describe_storage(url)}")
        _out(f"wall time: {comparison.wall_seconds:.1f} s")
        hint = [_PROG, "dashboard", args.study_file]
        if args.storage:
            hint += ["--storage", redact_url(args.storage)]
        _out(f"side by side in optuna-dashboard: {shlex.join(hint)}")
        return 0


def _cmd_dashboard(args: argparse.Namespace, guard: GracefulStop) -> int:
    from evohpo.studies.dashboard import DashboardServer, compare_url, study_groups
    from evohpo.studies.study import describe_storage, load_study_config, resolve_storage_url

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
    with _opened(url, create=False) as storage:
        groups = study_groups(storage, group)
        try:
            server = DashboardServer(storage, host=args.host, port=args.port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise InvalidParameterError(
                f"The port {args.port} on {args.host} is already in use (another dashboard?): "
                "pass --port N with a free port, or --port 0 to pick one."
            ) from exc
        _out(f"optuna-dashboard for {describe_storage(url)}: {server.url}/dashboard/")
        if not groups:
            what = f"of {group!r} " if group else ""
            _out(f"no evohpo studies {what}in this storage yet: run 'evohpo compare STUDY.toml'")
        for found in groups:
            ids = found.ids()
            if ids:
                _out(
                    f"{found.name}: GA vs TPE ({len(ids)} studies): {compare_url(server.url, ids)}"
                )
            else:
                _out(f"{found.name}: all studies: {compare_url(server.url, found.ids(None))}")
        _out("press Ctrl-C to stop")
        try:
            with guard.interruptible():
                server.serve_forever()
        finally:
            server.stop()
        return 0


def _cmd_best(args: argparse.Namespace, guard: GracefulStop) -> int:
    from evohpo.studies.export import find_best

    config, url = _load(args, trains=False)
    with _opened(url, create=False) as storage:
        best = find_best(storage, config, sampler=args.sampler, seed=args.seed)
        _out(json.dumps(best.to_dict(), indent=2))
        return 0


def _cmd_export(args: argparse.Namespace, guard: GracefulStop) -> int:
    from evohpo.studies.export import export_best, find_best
    from evohpo.studies.study import prepare_data

    config, url = _load(args)
    with _opened(url, create=False) as storage:
        best = find_best(storage, config, sampler=args.sampler, seed=args.seed)
        directory = Path(args.output) if args.output else config.output_dir / "best"
        data = prepare_data(config)
        result = export_best(best, config, data, directory, overwrite=args.force, guard=guard)
        _out(
            f"best trial: {best.study.study_name} #{best.trial.number}, "
            f"validation accuracy {best.value:.4f}"
        )
        if result.test_accuracy is not None:
            _out(f"test accuracy of the refit: {result.test_accuracy:.4f}")
        for path in result.files:
            _out(f"wrote {path}")
        return 0


# -- entry point ---------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``evohpo`` command with ``argv`` (``sys.argv[1:]`` if ``None``).

    Returns
    -------
    int
        0 on success, 1 on an error, 2 on a bad command line, 130 when
        interrupted by SIGINT or SIGTERM.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, --version, or a usage error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    handler: Callable[[argparse.Namespace, GracefulStop], int] | None = getattr(
        args, "handler", None
    )
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    debug = bool(args.debug)
    with _logging(bool(args.verbose), debug):
        guard = GracefulStop()
        try:
            with guard.installed(), _torch_threads(getattr(args, "threads", None)):
                return handler(args, guard)
        except KeyboardInterrupt:
            _err(f"{_PROG}: {getattr(args, 'interrupted', _INTERRUPTED)}")
            return 130
        except (EvohpoError, OSError) as exc:
            if debug:
                traceback.print_exc(file=sys.stderr)
            _err(f"{_PROG}: error: {exc}")
            return 1
        except Exception as exc:
            if debug:
                traceback.print_exc(file=sys.stderr)
            _err(
                f"{_PROG}: unexpected error: {type(exc).__name__}: {exc}"
                + ("" if debug else " (run with --debug for the traceback)")
            )
            return 1
