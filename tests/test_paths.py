from __future__ import annotations

import os
from pathlib import Path

import pytest

from evohpo._paths import UnsafePathError, safe_join


def test_plain_parts_stay_inside(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "study", "trial-3/model.pt") == (
        tmp_path.resolve() / "study" / "trial-3" / "model.pt"
    )
    assert safe_join(tmp_path) == tmp_path.resolve()
    assert safe_join(tmp_path, "a/../b") == tmp_path.resolve() / "b"


@pytest.mark.parametrize("part", ["..", "../x", "a/../../x", "a/b/../../../x"])
def test_dot_dot_cannot_climb_out(tmp_path: Path, part: str) -> None:
    with pytest.raises(UnsafePathError, match="leaves the directory"):
        safe_join(tmp_path / "base", part)


@pytest.mark.parametrize("part", ["/etc/passwd", "/", str(Path.home())])
def test_absolute_parts_are_refused(tmp_path: Path, part: str) -> None:
    with pytest.raises(UnsafePathError, match="is absolute"):
        safe_join(tmp_path, "ok", part)


def test_nul_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError, match="NUL"):
        safe_join(tmp_path, "a\x00b")


def test_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "artifacts"
    outside = tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    (base / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="leaves the directory"):
        safe_join(base, "escape", "model.pt")


def test_symlink_inside_and_symlinked_base_are_fine(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "runs").mkdir(parents=True)
    (real / "latest").symlink_to(real / "runs", target_is_directory=True)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert safe_join(link, "latest", "m.pt") == real.resolve() / "runs" / "m.pt"


def test_pathlike_parts(tmp_path: Path) -> None:
    assert safe_join(str(tmp_path), Path("a"), os.path.join("b", "c")) == (
        tmp_path.resolve() / "a" / "b" / "c"
    )
