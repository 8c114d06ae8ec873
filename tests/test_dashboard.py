"""optuna-dashboard started by ``evohpo dashboard`` on a storage filled by ``evohpo compare``."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from evohpo.cli import main
from evohpo.storage import open_storage
from evohpo.studies.dashboard import DashboardServer, compare_url, study_groups

pytestmark = pytest.mark.slow

GA, TPE, RANDOM = "dash/ga/seed0", "dash/tpe/seed0", "dash/random/seed0"


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, write_study: Callable[..., Path]) -> Path:
    """A study file whose storage holds a finished comparison."""
    path = write_study(
        tmp_path_factory.mktemp("dashboard"),
        filename="dash.toml",
        name="dash",
        space={"batch_sizes": [16, 32]},
        train={"device": "cpu"},
        compare={"samplers": ["ga", "tpe", "random"], "seeds": [0], "target": 0.5},
        sampler={"tpe": {"n_startup_trials": 2}},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", io.StringIO())
        assert main(["compare", str(path), "--no-test"]) == 0
    return path


def _read_lines(stream: Any, lines: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)


@pytest.fixture(scope="module")
def dashboard(filled: Path) -> Iterator[dict[str, Any]]:
    """``python -m evohpo dashboard`` on a free port of 127.0.0.1, as a user starts it."""
    env = dict(os.environ, EVOHPO_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "evohpo", "dashboard", str(filled), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    printed: list[str] = []
    deadline = time.monotonic() + 120
    while not any("Ctrl-C" in line for line in printed):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the dashboard did not start: {printed} {process.stderr.read()}")  # type: ignore[union-attr]
        try:
            printed.append(lines.get(timeout=0.5))
        except queue.Empty:
            continue
    text = "".join(printed)
    base = re.search(r"(http://127\.0\.0\.1:\d+)/dashboard/", text)
    compare = re.search(r"GA vs TPE \(2 studies\): (\S+)", text)
    assert base is not None, text
    assert compare is not None, text
    yield {"base": base.group(1), "compare": compare.group(1), "printed": text, "process": process}
    try:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:  # a failed check must not leave it running
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    # Ctrl-C is how a dashboard stops: no word of trials kept or resuming.
    assert err.strip().endswith("evohpo: dashboard stopped."), err
    assert "resume" not in err


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read().decode("utf-8"))


def test_the_printed_url_is_the_comparison_page_of_ga_and_tpe(
    filled: Path, dashboard: dict[str, Any]
) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{filled.parent / 'evohpo.db'}")
    ids = [storage.get_study_id_from_name(GA), storage.get_study_id_from_name(TPE)]
    assert (
        dashboard["compare"]
        == f"{dashboard['base']}/dashboard/compare-studies?ids={ids[0]},{ids[1]}"
    )
    assert dashboard["base"].startswith("http://127.0.0.1:")
    with urllib.request.urlopen(dashboard["compare"], timeout=30) as response:
        assert response.status == 200
        assert "text/html" in response.headers["Content-Type"]


def test_api_lists_the_studies_with_trials_and_lineage(dashboard: dict[str, Any]) -> None:
    summaries = _get_json(f"{dashboard['base']}/api/studies")["study_summaries"]
    by_name = {s["study_name"]: s for s in summaries}
    assert {GA, TPE, RANDOM} <= set(by_name)
    for name, sampler in ((GA, "ga"), (TPE, "tpe")):
        summary = by_name[name]
        assert summary["directions"] == ["maximize"]
        attrs = {a["key"]: a["value"] for a in summary["user_attrs"]}
        identity = json.loads(attrs["evohpo.study"])
        assert identity["sampler"] == sampler
        assert identity["dataset"] == "iris"

        study = _get_json(f"{dashboard['base']}/api/studies/{summary['study_id']}")
        assert study["name"] == name
        trials = study["trials"]
        assert [t["number"] for t in trials] == [0, 1, 2, 3]
        assert all(t["state"] == "Complete" for t in trials)
        lineages = []
        for trial in trials:
            attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
            assert "genome" in attrs
            assert "n_parameters" in attrs
            if sampler == "ga":
                lineages.append(json.loads(attrs["evohpo"]))
        if sampler == "ga":
            origins = [lineage["origin"] for lineage in lineages]
            assert origins[:2] == ["random", "random"]
            assert "bred" in origins[2:]
            bred = [lineage for lineage in lineages if lineage["origin"] == "bred"]
            assert all(lineage["parents"] for lineage in bred)
            assert all(lineage["generation"] >= 1 for lineage in bred)


def _chromium(*args: str, profile: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return subprocess.run(
        [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=20000",
            "--window-size=1400,1000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.browser
def test_chromium_renders_the_comparison(dashboard: dict[str, Any], tmp_path: Path) -> None:
    page = _chromium("--dump-dom", dashboard["compare"], profile=tmp_path / "profile-dom")
    assert page.returncode == 0, page.stderr[-2000:]
    dom = page.stdout
    assert "Compare Studies" in dom
    # Both studies are drawn: the history plot's legend names each of them.
    for name in (GA, TPE):
        assert f"Best Value of {name}" in dom, f"{name} is not plotted"
    assert f"Best Value of {RANDOM}" not in dom

    directory = Path(os.environ.get("EVOHPO_SCREENSHOT_DIR", str(tmp_path)))
    directory.mkdir(parents=True, exist_ok=True)
    screenshot = directory / "dashboard-compare-studies.png"
    shot = _chromium(
        f"--screenshot={screenshot}", dashboard["compare"], profile=tmp_path / "profile-png"
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # a rendered page, not a blank one
    print(f"screenshot: {screenshot}")


def test_server_in_process_on_a_free_port(filled: Path) -> None:
    storage = open_storage(f"sqlite:///{filled.parent / 'evohpo.db'}")
    server = DashboardServer(storage, port=0)
    server.start()
    try:
        summaries = _get_json(f"{server.url}/api/studies")["study_summaries"]
        assert {GA, TPE} <= {s["study_name"] for s in summaries}
    finally:
        server.stop()
    (group,) = study_groups(storage, "dash")
    assert group.names() == [GA, TPE]
    assert group.names(None) == [GA, TPE, RANDOM]
    assert compare_url(server.url, group.ids()).endswith(
        f"compare-studies?ids={','.join(map(str, group.ids()))}"
    )


def _study_ids(filled: Path) -> dict[str, int]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{filled.parent / 'evohpo.db'}")
    return {name: storage.get_study_id_from_name(name) for name in (GA, TPE)}


def test_api_lists_the_figures_compare_attached_to_the_ga_study(
    filled: Path, dashboard: dict[str, Any]
) -> None:
    assert (
        f"study artifacts (attached files) from {filled.parent / 'evohpo.db.artifacts'}"
        in (dashboard["printed"])
    )
    ids = _study_ids(filled)
    study = _get_json(f"{dashboard['base']}/api/studies/{ids[GA]}")
    artifacts = {a["filename"]: a for a in study["artifacts"]}
    assert set(artifacts) == {"lineage-seed0.png", "history.png"}
    for artifact in artifacts.values():
        assert artifact["mimetype"] == "image/png"
        url = f"{dashboard['base']}/artifacts/{ids[GA]}/{artifact['artifact_id']}"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "image/png"
            assert response.read()[:8] == b"\x89PNG\r\n\x1a\n"
    # Only GA studies have a family tree; the others get no figures.
    assert _get_json(f"{dashboard['base']}/api/studies/{ids[TPE]}")["artifacts"] == []


@pytest.mark.browser
def test_chromium_shows_the_ga_studys_artifacts(
    filled: Path, dashboard: dict[str, Any], tmp_path: Path
) -> None:
    study_id = _study_ids(filled)[GA]
    study = _get_json(f"{dashboard['base']}/api/studies/{study_id}")
    page = _chromium(
        "--dump-dom",
        f"{dashboard['base']}/dashboard/studies/{study_id}",
        profile=tmp_path / "profile-artifacts",
    )
    assert page.returncode == 0, page.stderr[-2000:]
    dom = page.stdout
    assert "Study Artifacts" in dom
    for artifact in study["artifacts"]:
        assert artifact["filename"] in dom, f"{artifact['filename']} is not listed"
        # Previewed: an <img> whose source is the artifact.
        assert f'src="/artifacts/{study_id}/{artifact["artifact_id"]}"' in dom
