"""Worker processes: starting one, and what runs inside it.

Each worker is a new Python interpreter (not forked, which is unsafe once
torch has started its threads). It is started with :data:`BOOTSTRAP`, reads
all of its standard input at once, before importing anything (the parent
writes the next worker's input only when this one has taken its own, and
unpickling imports torch: seconds), then from it a header (the parent's
import path) and its pickled :class:`Launch`, and sends its
:class:`~evohpo.workers.WorkerReport` back,
pickled, through a pipe whose descriptor is its first argument. Unlike
:mod:`multiprocessing`'s spawn, it runs the calling script again only when the
spec names something defined in it (:class:`_SpecUnpickler`).

A worker process ignores SIGINT. Ctrl-C in a terminal reaches the whole
process group, and a worker still importing torch (seconds) would die of it
with a traceback; the parent, which gets it too, stops its workers with
SIGTERM (:meth:`~evohpo.workers.WorkerPool.terminate`), which a worker handles
at its next training step once it runs, and which ends it quietly before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import sys
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import optuna

from evohpo._interrupt import GracefulStop
from evohpo._redact import install_redaction, redact_exception, redact_text
from evohpo.workers.spec import WorkerReport, WorkerSpec
from evohpo.workers.worker import run_worker, set_threads

__all__ = [
    "BOOTSTRAP",
    "THREAD_VARIABLES",
    "Launch",
    "launch_header",
    "spawn",
    "worker_process_main",
]

_logger = logging.getLogger("evohpo")


def _configure_worker_logging(index: int, level: int, optuna_level: int) -> None:
    logger = logging.getLogger("evohpo")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"evohpo worker {index}: %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    optuna.logging.set_verbosity(optuna_level)
    install_redaction()


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# A worker process starts with this program. It takes the parent's import path
# first (a header of plain lists and strings), so that everything the spec
# names imports as it does in the parent.
BOOTSTRAP = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "import io, pickle, sys; given = io.BytesIO(sys.stdin.buffer.read()); "
    "header = pickle.load(given); sys.path[:0] = header['path']; "
    "from evohpo.workers.process import worker_process_main; worker_process_main(header, given)"
)


@dataclass(frozen=True)
class Launch:
    """What a worker process reads from its standard input after the header."""

    spec: WorkerSpec
    index: int
    threads: int | None
    log_level: int  # of the "evohpo" logger
    optuna_level: int  # Optuna's verbosity


def launch_header() -> dict[str, Any]:
    """The import path, and the file of ``__main__`` should the spec name it."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    path = getattr(spec, "origin", None) or getattr(main, "__file__", None)
    return {"path": list(sys.path), "main": path if isinstance(path, str) else None}


# The name the parent's script runs under in a worker, where one is needed.
_MAIN_NAME = "__evohpo_main__"


class _SpecUnpickler(pickle.Unpickler):
    """Unpickles a spec; what it names in ``__main__`` comes from the parent's script.

    That script is run (under another name, as :mod:`multiprocessing` does)
    only when the spec needs it, so a script whose factories live in modules
    needs no ``if __name__ == "__main__"`` guard.
    """

    def __init__(self, file: BinaryIO, main_path: str | None) -> None:
        super().__init__(file)
        self._main_path = main_path

    def find_class(self, module: str, name: str) -> Any:
        if module == "__main__":
            return getattr(self._main_module(), name)
        return super().find_class(module, name)

    def _main_module(self) -> Any:
        loaded = sys.modules.get(_MAIN_NAME)
        if loaded is not None:
            return loaded
        if self._main_path is None:
            raise pickle.UnpicklingError(
                "the spec names objects of an interactive __main__, which a new process "
                "cannot import; define the factories in a module"
            )
        module = types.ModuleType(_MAIN_NAME)
        module.__file__ = self._main_path
        sys.modules[_MAIN_NAME] = module
        code = compile(Path(self._main_path).read_bytes(), self._main_path, "exec")
        exec(code, module.__dict__)
        return module


def worker_process_main(header: dict[str, Any], given: BinaryIO) -> None:
    """Entry point of a worker process (see :data:`BOOTSTRAP`): ``given`` holds
    the pickled :class:`Launch`.

    The report goes back, pickled, through the pipe whose descriptor is the
    first argument; the exit status is 0, 1 on an error, 130 when stopped.
    """
    with os.fdopen(int(sys.argv[1]), "wb") as out:
        try:
            launch = _SpecUnpickler(given, header.get("main")).load()
        except Exception as exc:
            report = WorkerReport(
                -1,
                os.getpid(),
                error=(
                    "the worker process cannot rebuild its spec "
                    f"({type(exc).__name__}: {redact_text(str(exc))}); objective_factory, "
                    "sampler_factory and pruner_factory must be picklable and importable "
                    "by a new Python process"
                ),
                exitcode=1,
            )
        else:
            report = _run_worker_process(launch)
        pickle.dump(report, out)
    # Leave without the interpreter's teardown, as multiprocessing's children do:
    # with torch loaded it takes about a second, which the parent (a timed fit)
    # waits for. The storage is closed and the report sent; only the streams are left.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(report.exitcode or 0)


def _run_worker_process(launch: Launch) -> WorkerReport:
    index = launch.index
    _configure_worker_logging(index, launch.log_level, launch.optuna_level)
    set_threads(launch.threads)
    started = time.monotonic()
    guard = GracefulStop(force_on_repeat=False)
    try:
        with guard.installed():
            return run_worker(launch.spec, index=index, threads=launch.threads, guard=guard)
    except KeyboardInterrupt:
        return WorkerReport(index, os.getpid(), error="interrupted", exitcode=130)
    except BaseException as exc:
        _logger.debug("worker %d failed", index, exc_info=True)
        return WorkerReport(
            index,
            os.getpid(),
            seconds=time.monotonic() - started,
            error=redact_exception(exc),
            exitcode=1,
        )


def spawn(
    header: bytes, launch: Launch, env: Mapping[str, str]
) -> tuple[subprocess.Popen[bytes], BinaryIO]:
    """Start one worker process; it and the pipe its report comes back through.

    The pipe becomes readable when the worker reports or dies.
    """
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", BOOTSTRAP, str(write_end)],
            stdin=subprocess.PIPE,
            pass_fds=(write_end,),
            env=dict(env),
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    pipe = os.fdopen(read_end, "rb")
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # it died: its report says why
        process.stdin.write(header + pickle.dumps(launch))
        process.stdin.close()
    return process, pipe
