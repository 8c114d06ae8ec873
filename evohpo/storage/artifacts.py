"""Where the files attached to a storage's studies live: Optuna's artifact store.

Optuna keeps an artifact's description (file name, MIME type) in the storage
and its bytes in an artifact store; the storage does not say where that store
is. evohpo puts it next to a SQLite or journal file, in a folder named after
the file (``evohpo.db`` -> ``evohpo.db.artifacts``), so that every command
finds it from the storage URL alone. Server databases and in-memory storage
have no default: there the caller names a folder or goes without.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from evohpo.storage import internals
from evohpo.storage.urls import storage_file

__all__ = [
    "ARTIFACT_DIR_SUFFIX",
    "default_artifact_dir",
    "open_artifact_store",
    "replace_study_artifact",
]

#: Appended to a storage file's name to name its artifact folder.
ARTIFACT_DIR_SUFFIX = ".artifacts"
#: Prefix of the study system attributes that describe its artifacts (Optuna's).
_META_PREFIX = "artifacts:"


def default_artifact_dir(storage_url: str) -> Path | None:
    """The artifact folder of a SQLite or journal storage; ``None`` for servers and memory.

    The folder is not created here.

    Examples
    --------
    >>> default_artifact_dir("sqlite:////data/study.db").as_posix()
    '/data/study.db.artifacts'
    >>> default_artifact_dir("journal:///data/log.jsonl").as_posix()
    '/data/log.jsonl.artifacts'
    >>> default_artifact_dir("postgresql://me@db.example/evohpo") is None
    True
    >>> default_artifact_dir("sqlite:///:memory:") is None
    True
    """
    path = storage_file(storage_url)
    if path is None:
        return None
    return path.with_name(path.name + ARTIFACT_DIR_SUFFIX)


def open_artifact_store(path: str | os.PathLike[str]) -> FileSystemArtifactStore:
    """Optuna's file-system artifact store on ``path``, creating the folder if needed."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(folder)


def replace_study_artifact(
    store: FileSystemArtifactStore,
    study: optuna.Study,
    file_path: str | os.PathLike[str],
    *,
    mimetype: str | None = None,
) -> str:
    """Attach ``file_path`` to ``study``, replacing the bytes of a same-named artifact.

    A command that runs again (a resumed comparison) then updates its figures
    instead of adding a copy each time. Returns the artifact id.
    """
    path = Path(file_path)
    for meta in _study_artifacts(study):
        if meta.get("filename") == path.name and meta.get("mimetype") == (
            mimetype or meta.get("mimetype")
        ):
            # The description in the storage stays; only the stored bytes change.
            artifact_id = str(meta["artifact_id"])
            with path.open("rb") as content:
                store.write(artifact_id, content)
            return artifact_id
    return upload_artifact(
        artifact_store=store, file_path=str(path), study_or_trial=study, mimetype=mimetype
    )


def _study_artifacts(study: optuna.Study) -> list[dict[str, object]]:
    """The artifact descriptions of ``study``.

    Read here rather than with ``optuna.artifacts.get_all_artifact_meta``,
    which fails on the ``null`` optuna-dashboard leaves when one is deleted.
    """
    storage = internals.study_storage(study)
    found = []
    for key, value in storage.get_study_system_attrs(internals.study_id(study)).items():
        if not key.startswith(_META_PREFIX) or not isinstance(value, str):
            continue
        try:
            meta = json.loads(value)
        except ValueError:
            continue
        if isinstance(meta, dict) and "artifact_id" in meta:
            found.append(meta)
    return found
