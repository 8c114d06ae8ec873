"""The ``evohpo`` command: run, compare, inspect and export evolutionary searches.

``main(argv)`` parses its arguments and returns the exit status, so the
command is testable in-process. Exit statuses: 0 success, 1 error (message on
stderr, traceback only with ``--debug``), 2 bad command line, 130 interrupted
(SIGINT or SIGTERM: the running trial is recorded as failed, every finished
trial is kept, and running the same command again resumes).

* :mod:`~evohpo.cli.parser`: the arguments, their types and help texts;
* :mod:`~evohpo.cli.commands`: one function per command;
* :mod:`~evohpo.cli.output`: printing, logging and the progress bar.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from evohpo._interrupt import GracefulStop
from evohpo.cli.commands import COMMANDS
from evohpo.cli.output import command_logging, err, torch_threads
from evohpo.cli.parser import PROG, build_parser
from evohpo.exceptions import EvohpoError

__all__ = ["build_parser", "main", "run"]

#: What an interrupted command says, unless it sets its own ``interrupted`` default.
_INTERRUPTED = (
    "interrupted; finished trials are kept (a running trial is recorded as failed). "
    "Run the same command again to resume."
)


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
    command = COMMANDS.get(args.command) if args.command is not None else None
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    debug = bool(args.debug)
    with command_logging(bool(args.verbose), debug):
        guard = GracefulStop()
        try:
            with guard.installed(), torch_threads(args):
                return command(args, guard)
        except KeyboardInterrupt:
            err(f"{PROG}: {getattr(args, 'interrupted', _INTERRUPTED)}")
            return 130
        except (EvohpoError, OSError) as exc:
            if debug:
                traceback.print_exc(file=sys.stderr)
            err(f"{PROG}: error: {exc}")
            return 1
        except Exception as exc:
            if debug:
                traceback.print_exc(file=sys.stderr)
            err(
                f"{PROG}: unexpected error: {type(exc).__name__}: {exc}"
                + ("" if debug else " (run with --debug for the traceback)")
            )
            return 1


def run() -> NoReturn:
    """The ``evohpo`` console command (and ``python -m evohpo``): :func:`main`, then exit.

    Once torch is loaded, the interpreter's own teardown takes most of a second
    (freeing the objects torch's import made), on every command. The command has
    closed its storages and files when :func:`main` returns, so it flushes its
    output and leaves with ``os._exit``.
    """
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (| head)
            stream.flush()
    os._exit(code)
