"""Serve optuna-dashboard on a storage and point at its study-comparison page.

The server is optuna-dashboard's own WSGI application
(:func:`optuna_dashboard.wsgi`) behind the standard library's threaded WSGI
server, started in-process so that the bound port (``port=0`` picks a free
one) is known before the URL is printed.

The comparison page of optuna-dashboard is
``/dashboard/compare-studies?ids=<study id>,<study id>,...`` (the route
``url_prefix + "/compare-studies"`` of its frontend, ``url_prefix`` being
``/dashboard``); the ids are Optuna's study ids, as in ``/api/studies``.

Given an artifact store, the dashboard also lists and previews the files
attached to each study (its "Study Artifacts" card, and ``artifacts`` in
``/api/studies/<id>``); ``evohpo compare`` attaches its figures to the GA
studies in :func:`~evohpo.storage.artifacts.default_artifact_dir`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from optuna.storages import BaseStorage

from evohpo.studies.group import group_studies

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

__all__ = [
    "DashboardServer",
    "StudyGroup",
    "compare_url",
    "study_groups",
]

_logger = logging.getLogger("evohpo")

#: Samplers shown side by side on the comparison page.
COMPARED_SAMPLERS: tuple[str, ...] = ("ga", "tpe")


@dataclass(frozen=True)
class StudyGroup:
    """The evohpo studies of one study file in a storage.

    Attributes
    ----------
    name : str
        The group (the study file's ``name``).
    studies : list of (str, int, str)
        ``(study name, study id, sampler)``, sorted by sampler then seed.
    """

    name: str
    studies: list[tuple[str, int, str]]

    def ids(self, samplers: Sequence[str] | None = COMPARED_SAMPLERS) -> list[int]:
        """Study ids of the given samplers (all when ``None``)."""
        return [i for _, i, s in self.studies if samplers is None or s in samplers]

    def names(self, samplers: Sequence[str] | None = COMPARED_SAMPLERS) -> list[str]:
        """Study names of the given samplers (all when ``None``)."""
        return [n for n, _, s in self.studies if samplers is None or s in samplers]


def study_groups(storage: BaseStorage, group: str | None = None) -> list[StudyGroup]:
    """The evohpo study groups in ``storage`` (only ``group`` if given), by name."""
    found: dict[str, list[tuple[str, int, str]]] = {}
    for stored in group_studies(storage, group):
        found.setdefault(stored.group, []).append((stored.name, stored.study_id, stored.sampler))
    return [StudyGroup(name, studies) for name, studies in sorted(found.items())]


def compare_url(base_url: str, study_ids: Iterable[int]) -> str:
    """URL of optuna-dashboard's page comparing ``study_ids``.

    Examples
    --------
    >>> compare_url("http://127.0.0.1:8080", [1, 2])
    'http://127.0.0.1:8080/dashboard/compare-studies?ids=1,2'
    """
    ids = ",".join(str(int(i)) for i in study_ids)
    return f"{base_url.rstrip('/')}/dashboard/compare-studies" + (f"?ids={ids}" if ids else "")


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to the ``evohpo`` logger at debug level, not to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("dashboard: " + format, *args)


class DashboardServer:
    """optuna-dashboard serving ``storage`` on ``host:port`` (``port=0``: a free port).

    The socket is bound on construction, so :attr:`url` is valid at once. With
    an ``artifact_store`` (see :func:`~evohpo.storage.artifacts.open_artifact_store`)
    the studies' attached files are served and shown too.

    Examples
    --------
    >>> import optuna
    >>> server = DashboardServer(optuna.storages.InMemoryStorage(), port=0)
    >>> server.start()
    >>> server.url.startswith("http://127.0.0.1:")
    True
    >>> server.stop()
    """

    def __init__(
        self,
        storage: BaseStorage,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        artifact_store: ArtifactStore | None = None,
    ) -> None:
        import optuna_dashboard

        app = optuna_dashboard.wsgi(storage, artifact_store=artifact_store)
        self._server = make_server(
            host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self.host = host
        self.port = int(self._server.server_port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8080``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` or ``KeyboardInterrupt``."""
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._server.server_close()

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (if :meth:`start` was called) and close the socket; idempotent."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
