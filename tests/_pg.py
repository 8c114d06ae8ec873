"""A throwaway PostgreSQL server for tests: real binaries, 127.0.0.1, a free port.

``PostgresServer.start()`` runs ``initdb`` in a new temporary directory,
starts the server on 127.0.0.1 (its Unix socket in that directory too) and
creates a password-protected role; :meth:`PostgresServer.create_database`
gives each test its own database and URL. :meth:`PostgresServer.stop` and
:meth:`PostgresServer.start_again` simulate an outage; :meth:`close` stops the
server and deletes everything.

The binaries are looked up on ``PATH`` (``initdb``, ``pg_ctl``), then in
``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql`` package), the
newest first. ``initdb`` refuses to run as root: as root, the commands run as
the ``postgres`` user (``runuser``, else ``su``).

Missing binaries raise :class:`PostgresUnavailable` with what to install: the
tests that use this helper fail, they are never skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PostgresServer", "PostgresUnavailable", "find_postgres_bin", "free_port"]

_SUPERUSER = "postgres"
_ROLE = "evohpo"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are missing or the server cannot start."""


def find_postgres_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or ``None``."""
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(initdb).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """A PostgreSQL server in a temporary directory; see the module docstring."""

    def __init__(self, bindir: Path, root: Path, port: int, run_as: str | None) -> None:
        self.bindir = bindir
        self.root = root
        self.port = port
        self.run_as = run_as
        self.password = "pw-" + secrets.token_hex(8)
        self.data = root / "data"
        self.log = root / "server.log"
        self.running = False

    # -- life cycle ----------------------------------------------------------------------
    @classmethod
    def start(cls) -> PostgresServer:
        """Initialise and start a new server; the caller must :meth:`close` it."""
        bindir = find_postgres_bin()
        if bindir is None:
            raise PostgresUnavailable(
                "PostgreSQL server binaries not found (no initdb/pg_ctl on PATH nor in "
                "/usr/lib/postgresql/*/bin). Install them, e.g. `apt-get install postgresql` "
                "(.ci/run does this); these tests must not be skipped."
            )
        run_as = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(_SUPERUSER)
            except KeyError:
                raise PostgresUnavailable(
                    "Running as root, and initdb refuses root: create a 'postgres' user "
                    "(`useradd --system postgres`) or run the tests as another user."
                ) from None
            run_as = _SUPERUSER
        root = Path(tempfile.mkdtemp(prefix="evohpo-pg-"))
        if run_as is not None:
            shutil.chown(root, user=run_as)
        server = cls(bindir, root, free_port(), run_as)
        try:
            server._initdb()
            server.start_again()
            server._create_role()
        except BaseException:
            server.close()
            raise
        return server

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            _SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start_again(self) -> None:
        """Start the (stopped) server on the same port and data."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        self.running = True

    def stop(self) -> None:
        """Stop the server at once (``-m fast``: open connections are cut)."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.running = False

    def close(self) -> None:
        """Stop the server and delete its directory."""
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @classmethod
    @contextlib.contextmanager
    def running_server(cls) -> Iterator[PostgresServer]:
        """``with PostgresServer.running_server() as server:`` start, yield, close."""
        server = cls.start()
        try:
            yield server
        finally:
            server.close()

    # -- databases -----------------------------------------------------------------------
    def url(self, database: str, *, password: str | None = None) -> str:
        """URL of ``database`` as the password-protected role.

        The plain ``postgresql://`` form users type (SQLAlchemy picks the driver:
        psycopg 3, from evohpo's ``postgres`` extra), not a ``+driver`` form that
        would hide a missing driver.
        """
        secret = self.password if password is None else password
        return f"postgresql://{_ROLE}:{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create a database owned by the test role; its URL."""
        name = name or "db_" + secrets.token_hex(6)
        self._execute(f'CREATE DATABASE "{name}" OWNER {_ROLE}')
        return self.url(name)

    def _create_role(self) -> None:
        self._execute(f"CREATE ROLE {_ROLE} LOGIN PASSWORD '{self.password}'")

    def _execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host=str(self.root),
            port=self.port,
            user=_SUPERUSER,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(sql.encode())

    # -- commands ------------------------------------------------------------------------
    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self.run_as is not None:
            if shutil.which("runuser"):
                command = ["runuser", "-u", self.run_as, "--", *command]
            else:
                command = ["su", self.run_as, "-s", "/bin/sh", "-c", shlex.join(command)]
        started = time.monotonic()
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=self.root, timeout=120, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresUnavailable(
                f"{program} failed after {time.monotonic() - started:.1f} s "
                f"(status {result.returncode}): {result.stderr.strip()}\n{log}"
            )
