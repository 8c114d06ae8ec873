"""The argument parser of the ``evohpo`` command and the types of its arguments."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from evohpo._version import __version__
from evohpo.search.samplers import SAMPLERS
from evohpo.studies.config import DEFAULT_STORAGE_NAME

__all__ = ["PROG", "build_parser"]

#: The command's name, as its messages give it.
PROG = "evohpo"

#: What ``add_subparsers`` returns (its class is private to argparse).
_Commands = Any

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
  evohpo run studies/digits.toml --batch-trials 1
                                            one trial at a time (no stacked training)
  evohpo worker studies/digits.toml --storage postgresql://user@host/db
                                            one worker of many (run it on each machine)
  evohpo best studies/digits.toml --sampler ga
  evohpo lineage studies/digits.toml --seed 1  the GA study's family tree as a PNG
  evohpo export studies/digits.toml --output model-dir
  evohpo proxy --storage postgresql://user@host/db --host 0.0.0.0 --port 13000
                                            a gRPC storage proxy; workers use grpc://host:13000

storage URLs: sqlite:///path.db, postgresql://user:pw@host/db (pip install
'evohpo[postgres]'), mysql+pymysql://user:pw@host/db (pip install 'evohpo[mysql]'),
journal:///path/file.log (Optuna journal file), grpc://host:port (a gRPC storage
proxy, 'evohpo proxy'; pip install 'evohpo[grpc]'), or a bare path ending in
.db/.sqlite/.sqlite3 (SQLite) or .log/.jsonl/.journal (journal file). best,
export, lineage and dashboard never create a SQLite or journal file.

environment: EVOHPO_NO_PROGRESS=1 turns the progress bar off (it is also off
when stderr is not a terminal).
"""


# -- argument types --------------------------------------------------------------------------
def _int_at_least(text: str, low: int) -> int:
    """``text`` as an int >= ``low``, with one message for a non-integer and a small one."""
    message = f"expected an integer >= {low}, got {text!r}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    if value < low:
        raise argparse.ArgumentTypeError(message)
    return value


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _positive_int(text: str) -> int:
    # --n-trials 0 is refused as [budget] n_trials = 0 is: a total of no trials runs nothing.
    return _int_at_least(text, 1)


def _positive_int_or_auto(text: str) -> int | str:
    if text.strip() == "auto":
        return "auto"
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 1 or 'auto', got {text!r}"
        ) from None


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
        type=_positive_int_or_auto,
        default="auto",
        metavar="N",
        help="torch CPU threads a training may use (default: %(default)s, the cores shared "
        "among --workers): small dense networks train with one (a second gains nothing "
        "there), larger ones and convolutional genomes with up to N",
    )


def _add_batch_trials(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-trials",
        type=_positive_int_or_auto,
        metavar="N|auto",
        help="trials asked and trained together, their dense networks as one stack "
        "(default: the study file's [train] batch_trials, else auto: 8 on the CPU, 16 on "
        "CUDA, at most the GA's population and the trials to run; 1 for conv spaces and, "
        "on the CPU, for spaces of networks above 65,536 multiply-adds per row)",
    )


def _add_storage(parser: argparse.ArgumentParser, *, what: str) -> None:
    parser.add_argument(
        "--storage",
        metavar="URL",
        help=f"Optuna storage URL or path {what} (default: the study file's 'storage', "
        f"else {DEFAULT_STORAGE_NAME} next to the study file)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``evohpo`` command.

    The chosen command is ``args.command`` (``None`` when none was given).

    Examples
    --------
    >>> build_parser().parse_args(["run", "studies/wine.toml", "--seed", "1"]).seed
    1
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_common(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(commands)
    _add_worker(commands)
    _add_compare(commands)
    _add_dashboard(commands)
    _add_best_and_export(commands)
    _add_lineage(commands)
    _add_proxy(commands)
    return parser


def _command(
    commands: _Commands, name: str, help_text: str, description: str
) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help_text,
        description=textwrap.dedent(description),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(sub, top=False)
    return sub


def _add_one_study(parser: argparse.ArgumentParser, *, storage_what: str) -> None:
    """Arguments naming one study of a study file and its total: ``run`` and ``worker``."""
    parser.add_argument("study_file", metavar="STUDY.toml", help="the study file")
    parser.add_argument(
        "--sampler", choices=SAMPLERS, default="ga", help="the sampler (default: %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=_non_negative_int,
        help="the seed (default: the first of the study file's seeds)",
    )
    _add_storage(parser, what=storage_what)
    parser.add_argument(
        "--n-trials",
        type=_positive_int,
        metavar="N",
        help="total finished trials of the study (default: the study file's budget)",
    )


def _add_run(commands: _Commands) -> None:
    """The ``run`` command: one study, in this process or in worker processes."""
    run = _command(
        commands,
        "run",
        "run or resume one study (one sampler, one seed)",
        """\
        Run one study of a study file: one sampler and one seed. Running the same
        command again resumes the study up to the budget, which is a total (with
        --n-trials 30 a study holding 20 finished trials runs 10 more); the GA
        breeds from the population stored in the study.""",
    )
    _add_one_study(run, storage_what="")
    run.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="total trial time of the study (default: the study file's budget)",
    )
    _add_batch_trials(run)
    _add_threads(run)
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="workers on this machine sharing the study, this process and N-1 more "
        "(default: %(default)s); each trains with up to --threads threads",
    )


def _add_worker(commands: _Commands) -> None:
    """The ``worker`` command: one worker of many on one study."""
    worker = _command(
        commands,
        "worker",
        "join a study as one worker (start one per process or machine)",
        """\
        Run one worker on one study of a study file, for as many workers as wanted,
        on one or many machines, sharing one storage (PostgreSQL for many machines).
        The study is created if missing; every worker stops when the study holds
        its total of finished trials (a few more may finish: one per other worker
        at most). On PostgreSQL, MySQL, SQLite and a gRPC proxy (grpc://, see
        'evohpo proxy') the trial of a killed worker is failed after the heartbeat's
        grace period (2 minutes) and run again, with the same genome, by another
        worker; on a journal file, when a worker starts. A database that goes away is
        waited for (up to 10 minutes). Keep passwords out of the command line: leave
        them out of the URL and set PGPASSWORD.""",
    )
    _add_one_study(worker, storage_what="shared by the workers")
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
    _add_batch_trials(worker)
    _add_threads(worker)


def _add_compare(commands: _Commands) -> None:
    """The ``compare`` command: every sampler and seed of a study file."""
    compare = _command(
        commands,
        "compare",
        "compare GA, TPE and random search over several seeds",
        """\
        Run (or resume) one study per sampler and seed on the same objective (the
        same train/validation/test split), the same budget and one storage; then
        print a table (best validation accuracy, test accuracy of the best trial's
        refit, mean and spread over seeds, trials and time to reach the target) and
        write a PNG of the optimisation histories and one of each GA study's lineage.
        On a SQLite or journal file these PNGs are also attached to the GA studies
        (in the folder <storage file>.artifacts), where 'evohpo dashboard' shows
        them. Interrupted, it resumes where it stopped when run again.""",
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
        help="where to write the figure: .png, .svg or .pdf (default: runs/<name>/history.png "
        "next to the study file)",
    )
    compare.add_argument(
        "--no-test",
        action="store_true",
        help="skip the refit of each study's best genome and its test accuracy",
    )
    _add_batch_trials(compare)
    _add_threads(compare)


def _add_dashboard(commands: _Commands) -> None:
    """The ``dashboard`` command: optuna-dashboard on a storage."""
    dashboard = _command(
        commands,
        "dashboard",
        "serve optuna-dashboard and print the GA-vs-TPE comparison URL",
        """\
        Start optuna-dashboard on a storage and print the URL of its study-comparison
        page (/dashboard/compare-studies?ids=...) for the GA and TPE studies of each
        study file found in the storage. The figures 'evohpo compare' attached to a
        study are listed under Study Artifacts on its page. Stop it with Ctrl-C.""",
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
    dashboard.add_argument(
        "--artifact-dir",
        metavar="DIR",
        help="folder of the studies' artifacts (files attached to them), created if "
        "missing (default: <storage file>.artifacts next to a SQLite or journal file, "
        "when it exists)",
    )
    dashboard.set_defaults(interrupted="dashboard stopped.")


def _add_best_and_export(commands: _Commands) -> None:
    """The ``best`` and ``export`` commands: the best trial of stored studies."""
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
            genome.json, classes.json (classification) and metadata.json (output width,
            feature standardisation, scores, origin) into the output directory, and nowhere
            else.""",
        ),
    ):
        sub = _command(commands, name, help_text, description)
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


def _add_lineage(commands: _Commands) -> None:
    """The ``lineage`` command: a GA study's family tree."""
    lineage = _command(
        commands,
        "lineage",
        "draw a GA study's family tree (trials, parents, operators)",
        """\
        Draw the lineage of one GA study of a study file: every trial at its generation
        (x) and validation accuracy (y), joined to its parents, with the variation
        operators that made it; the best trial and its ancestors in red; random,
        bred, repeated and enqueued trials with their own markers. A .png, .svg or
        .pdf file is drawn with matplotlib; an .html file is an interactive plotly
        figure (hover a trial for its parents and operators). No training.""",
    )
    lineage.add_argument("study_file", metavar="STUDY.toml", help="the study file")
    lineage.add_argument(
        "--seed",
        type=_non_negative_int,
        help="the GA study's seed (default: the first of the study file's seeds)",
    )
    _add_storage(lineage, what="")
    lineage.add_argument(
        "--out",
        metavar="FILE",
        help="where to write the figure: .png, .svg, .pdf or .html (default: "
        "runs/<name>/lineage-seed<seed>.png next to the study file)",
    )


def _add_proxy(commands: _Commands) -> None:
    """The ``proxy`` command: Optuna's gRPC storage proxy in front of a storage."""
    proxy = _command(
        commands,
        "proxy",
        "serve a storage to many workers through Optuna's gRPC storage proxy",
        """\
        Serve a storage (PostgreSQL, MySQL or SQLite; not a journal file) with Optuna's
        gRPC storage proxy, so that many workers share the proxy's database connections.
        Workers, study files and the estimator then use the storage URL
        grpc://HOST:PORT. Their trials keep owners and heartbeats through the proxy: a
        killed worker's trial is run again, with the same genome, by another worker.
        The proxy has no authentication or encryption: listen on a trusted network
        only. Needs pip install 'evohpo[grpc]'. Stop it with Ctrl-C.""",
    )
    proxy.add_argument(
        "--storage",
        metavar="URL",
        required=True,
        help="the storage to serve: postgresql://..., mysql+pymysql://..., sqlite:///file.db",
    )
    proxy.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)",
    )
    proxy.add_argument(
        "--port", type=_port, default=13000, help="port to listen on (default: %(default)s)"
    )
    proxy.set_defaults(interrupted="proxy stopped.")
