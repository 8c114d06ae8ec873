from __future__ import annotations

import json
import logging
import math
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest

optuna.logging.set_verbosity(optuna.logging.WARNING)
os.environ.setdefault("EVOHPO_NO_PROGRESS", "1")

# The signal tests send SIGINT to this process and to the commands it starts. A
# process started in the background by a shell without job control (a CI job)
# inherits SIGINT ignored, which evohpo keeps ignored; give the suite, and the
# processes it starts, Python's usual handler whatever started it.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("evohpo").setLevel(logging.INFO)


# -- study files ------------------------------------------------------------------------------
#: The study file :func:`write_study` starts from: iris, two small layers, two
#: epochs, four trials, GA and TPE over two seeds.
BASE_STUDY: dict[str, Any] = {
    "name": "tiny",
    "data": {"dataset": "iris", "test_fraction": 0.2},
    "space": {"max_layers": 2, "units": [4, 16]},
    "train": {"max_epochs": 2},
    "budget": {"n_trials": 4},
    "compare": {"samplers": ["ga", "tpe"], "seeds": [0, 1], "target": 0.9},
    "sampler": {"ga": {"population_size": 2}},
}

WriteStudy = Callable[..., Path]


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, tables key by key; ``None`` removes a key."""
    merged = dict(base)
    for key, value in overrides.items():
        if value is None:
            if key not in merged:
                raise KeyError(f"cannot remove {key!r}: the study file does not set it")
            del merged[key]
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r} in a study file")


def render_toml(document: Mapping[str, Any], prefix: str = "") -> str:
    """``document`` as TOML: its values, then each table under its dotted header."""
    return "\n\n".join(_sections(document, prefix)) + "\n"


def _sections(document: Mapping[str, Any], prefix: str) -> list[str]:
    lines = [f"{k} = {_toml_value(v)}" for k, v in document.items() if not isinstance(v, Mapping)]
    tables = {k: v for k, v in document.items() if isinstance(v, Mapping)}
    if prefix and (lines or not tables):
        lines.insert(0, f"[{prefix}]")
    sections = ["\n".join(lines)] if lines else []
    for key, table in tables.items():
        sections += _sections(table, f"{prefix}.{key}" if prefix else key)
    return sections


@pytest.fixture(scope="session")
def write_study() -> WriteStudy:
    """Write a study file: :data:`BASE_STUDY` with overrides, in a directory.

    ``write_study(tmp_path, budget={"n_trials": 9}, train={"device": "cpu"})``
    writes ``tmp_path / "study.toml"`` and returns its path. Each keyword is a
    top-level key of the file (``name``, ``storage``, ``data``, ``space``,
    ``train``, ``budget``, ``compare``, ``sampler``, ``pruner``, ...); tables
    merge key by key and ``None`` removes a key. ``filename`` names the file.

    Mappings given after the directory are layers of overrides merged in turn
    before the keywords: ``write_study(tmp_path, TINY, budget={"n_trials": None})``
    writes a module's own study (``TINY``) less a setting that it sets.
    """

    def write(
        directory: Path,
        /,
        *layers: Mapping[str, Any],
        filename: str = "study.toml",
        **overrides: Any,
    ) -> Path:
        document = dict(BASE_STUDY)
        for layer in (*layers, overrides):
            document = merge(document, layer)
        path = Path(directory) / filename
        path.write_text(render_toml(document), encoding="utf-8")
        return path

    return write


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread: on a busy 2-core machine two make tiny networks slower (restored after)."""
    from evohpo.training.threads import torch_threads

    with torch_threads(1):
        yield
