from __future__ import annotations

import logging
import os

import optuna
import pytest

optuna.logging.set_verbosity(optuna.logging.WARNING)
os.environ.setdefault("EVOHPO_NO_PROGRESS", "1")


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("evohpo").setLevel(logging.INFO)
