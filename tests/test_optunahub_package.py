"""The OptunaHub registry package in ``package/samplers/evohpo`` loads and works.

The package lives outside the wheel; these tests load it the way the registry
does (``optunahub.load_local_module``) from this checkout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import optuna
import optunahub
import pytest
from optuna.testing.pytest_samplers import BasicSamplerTestCase
from optuna.trial import TrialState

import evohpo

REPO = Path(__file__).resolve().parents[1]
REGISTRY_ROOT = REPO / "package"
PACKAGE_DIR = REGISTRY_ROOT / "samplers" / "evohpo"
#: Front-matter keys the registry's package template asks for.
FRONT_MATTER_KEYS = ("author", "title", "description", "tags", "optuna_versions", "license")


def load_hub_module() -> ModuleType:
    return optunahub.load_local_module(package="samplers/evohpo", registry_root=str(REGISTRY_ROOT))


def test_loaded_module_exports_the_library_sampler() -> None:
    module = load_hub_module()
    assert module.EvoSampler is evohpo.EvoSampler
    assert module.__all__ == ["EvoSampler"]


def test_loaded_sampler_optimizes() -> None:
    sampler = load_hub_module().EvoSampler(population_size=4, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", -5, 5) - 1) ** 2, n_trials=30)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len(study.trials) == 30
    assert study.best_value <= study.trials[0].value
    assert study.best_value < 1.0


def _front_matter(text: str) -> dict[str, object]:
    lines = text.splitlines()
    assert lines[0] == "---", "README.md must start with YAML front matter"
    end = lines.index("---", 1)
    block = "\n".join(lines[1:end])
    try:
        import yaml
    except ImportError:
        # Every key of the registry's template is on one line: "key: value".
        return dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition(":") for line in block.splitlines())
        )
    parsed = yaml.safe_load(block)
    assert isinstance(parsed, dict)
    return parsed


def test_readme_front_matter_has_registry_keys() -> None:
    meta = _front_matter((PACKAGE_DIR / "README.md").read_text(encoding="utf-8"))
    for key in FRONT_MATTER_KEYS:
        assert meta.get(key), f"front matter lacks {key!r}"
    # The registry requires the tag "sampler" under package/samplers/.
    assert "sampler" in str(meta["tags"])
    assert "MIT" in str(meta["license"])


def test_package_files_present() -> None:
    for name in ("__init__.py", "README.md", "LICENSE", "requirements.txt", "example.py"):
        assert (PACKAGE_DIR / name).is_file(), name
    requirements = (PACKAGE_DIR / "requirements.txt").read_text(encoding="utf-8").split()
    assert "evohpo" in requirements


def test_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(PACKAGE_DIR / "example.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "best value" in result.stdout


class TestHubSamplerConformance(BasicSamplerTestCase):
    """Optuna's sampler conformance suite, run on the class the hub loader returns."""

    @pytest.fixture
    def sampler(self):  # type: ignore[no-untyped-def]
        hub_sampler = load_hub_module().EvoSampler
        return lambda: hub_sampler(population_size=4, seed=1)
