"""Every script in examples/ runs in its fast mode (EVOHPO_FAST=1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))

#: What each example must print in fast mode.
EXPECTED = {
    "conv_search.py": "best body:",
    "evosampler_own_objective.py": "trials were bred from the population",
    "ga_vs_tpe.py": "tpe: mean best validation accuracy",
    "multi_objective.py": "Pareto front of 10 trials",
    "resume_study.py": "bred from trials",
}


def test_the_examples_are_there() -> None:
    assert set(EXPECTED) <= {path.name for path in EXAMPLES}


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_in_fast_mode(path: Path) -> None:
    env = dict(os.environ, EVOHPO_FAST="1", EVOHPO_NO_PROGRESS="1", PYTHONWARNINGS="error")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        cwd=path.parent.parent,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    if path.name in EXPECTED:
        assert EXPECTED[path.name] in done.stdout, done.stdout
    print(f"{path.name}: {seconds:.1f} s")
