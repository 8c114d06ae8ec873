"""The package's layers: nothing imports upward, and each side keeps its heavy dependency out.

Layers, bottom to top (a module may import its own layer and the layers below):

0. the private helpers and exceptions (``evohpo/_*.py``, ``evohpo/exceptions.py``);
1. ``evohpo.storage`` (Optuna, no torch) and ``evohpo.training`` (torch, no Optuna),
   which do not import each other;
2. ``evohpo.evolution`` (no torch);
3. ``evohpo.search``;
4. ``evohpo.workers``;
5. ``evohpo.studies`` and ``evohpo.estimator``, which do not import each other;
6. ``evohpo.cli``, ``evohpo/__init__.py`` and ``evohpo/__main__.py``.

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "evohpo"

#: The layer of each first-level part of the package.
LAYERS: dict[str, int] = {
    "exceptions": 0,
    "_version": 0,
    "_validation": 0,
    "_random": 0,
    "_redact": 0,
    "_interrupt": 0,
    "_progress": 0,
    "_paths": 0,
    "storage": 1,
    "training": 1,
    "evolution": 2,
    "search": 3,
    "workers": 4,
    "studies": 5,
    "estimator": 5,
    "cli": 6,
    "__init__": 6,
    "__main__": 6,
}

#: Parts of one layer that must not import each other.
SEPARATE = [{"storage", "training"}, {"studies", "estimator"}]

#: Third-party packages a part must never import.
FORBIDDEN: dict[str, str] = {
    "torch": "storage evolution exceptions _version _validation _random _redact _interrupt "
    "_progress _paths",
    "optuna": "training",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    """The first-level part of ``evohpo.<part>...``; ``__init__`` for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    base = PACKAGE_DIR / relative
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.append((node.lineno, target if is_module(target) else base))
    return sorted(set(found))


def package_modules() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    unknown = {module_name(p) for p in package_modules() if part_of(module_name(p)) not in LAYERS}
    assert not unknown, f"modules missing from the layer table: {sorted(unknown)}"


def test_nothing_imports_a_higher_layer_or_a_separate_sibling() -> None:
    violations: list[str] = []
    for path in package_modules():
        importer = module_name(path)
        own = part_of(importer)
        if own not in LAYERS:
            continue
        for line, target in imports_of(path):
            if target != "evohpo" and not target.startswith("evohpo."):
                continue
            other = part_of(target)
            where = f"{path.relative_to(PACKAGE_DIR.parent)}:{line} imports {target}"
            if LAYERS.get(other, 99) > LAYERS[own]:
                violations.append(f"{where} (layer {LAYERS.get(other)} > {LAYERS[own]})")
            elif other != own and any({own, other} <= pair for pair in SEPARATE):
                violations.append(f"{where} ({own} and {other} must not import each other)")
    assert not violations, "\n".join(violations)


def test_no_part_imports_its_forbidden_dependency() -> None:
    violations: list[str] = []
    for path in package_modules():
        own = part_of(module_name(path))
        for line, target in imports_of(path):
            top = target.split(".")[0]
            if own in FORBIDDEN.get(top, "").split():
                violations.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{line} imports {target}")
    assert not violations, "\n".join(violations)


# -- what importing really loads -------------------------------------------------------------
_LOAD_SCRIPT = textwrap.dedent(
    """
    import importlib, sys, types
    # A bare package object: evohpo/__init__.py is not run, so only what the
    # modules themselves import gets loaded.
    package = types.ModuleType("evohpo")
    package.__path__ = [{package_dir!r}]
    sys.modules["evohpo"] = package
    for name in {modules!r}:
        importlib.import_module(name)
        loaded = sorted(m for m in {forbidden!r} if m in sys.modules)
        if loaded:
            sys.exit(f"importing {{name}} loaded {{loaded}}")
    """
)


@pytest.mark.parametrize(
    ("part", "forbidden"),
    [
        ("evolution", ["torch", "deap.creator"]),
        ("storage", ["torch"]),
        ("training", ["optuna"]),
    ],
)
def test_importing_a_side_loads_nothing_forbidden(part: str, forbidden: list[str]) -> None:
    modules = sorted(module_name(p) for p in package_modules() if part_of(module_name(p)) == part)
    assert len(modules) > 1, modules
    script = _LOAD_SCRIPT.format(package_dir=str(PACKAGE_DIR), modules=modules, forbidden=forbidden)
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_sampler_loads_no_torch_through_the_package() -> None:
    # The real package __init__ this time: what `import evohpo.evolution.sampler` costs a user.
    code = (
        "import sys, evohpo.evolution.sampler; assert 'torch' not in sys.modules, 'torch'; "
        "assert 'deap.creator' not in sys.modules, 'deap.creator'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE_DIR.parent, timeout=300)
