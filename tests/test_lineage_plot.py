"""The family tree of a GA study: its data, its files, the ``lineage`` command, its artifacts."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from evohpo import EvoSampler
from evohpo.cli import main
from evohpo.evolution.lineage import LINEAGE_ATTR, Lineage
from evohpo.exceptions import InvalidParameterError
from evohpo.storage import internals
from evohpo.storage.artifacts import (
    default_artifact_dir,
    open_artifact_store,
    replace_study_artifact,
)
from evohpo.studies.dashboard import DashboardServer
from evohpo.studies.lineage_plot import (
    LineageGraph,
    lineage_graph,
    study_lineage,
    write_lineage,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -3.0, 3.0)
    n = trial.suggest_int("n", 1, 5)
    act = trial.suggest_categorical("act", ["relu", "tanh"])
    return -((x - 1.0) ** 2) - 0.1 * abs(n - 3) + (0.2 if act == "relu" else 0.0)


def _ga_study(n_trials: int, *, population_size: int = 6, seed: int = 0) -> optuna.Study:
    study = optuna.create_study(
        study_name=f"cheap/ga/seed{seed}",
        direction="maximize",
        sampler=EvoSampler(population_size=population_size, seed=seed),
    )
    study.enqueue_trial({"x": 0.0, "n": 3, "act": "tanh"})
    study.optimize(_objective, n_trials=n_trials)
    return study


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    return _ga_study(40)


@pytest.fixture(scope="module")
def graph(study: optuna.Study) -> LineageGraph:
    return study_lineage(study)


def test_every_trial_is_a_node_at_its_generation_and_value(
    study: optuna.Study, graph: LineageGraph
) -> None:
    assert graph.study_name == "cheap/ga/seed0"
    assert list(graph.nodes) == [t.number for t in study.trials]
    for trial in study.trials:
        lineage = Lineage.from_attr(trial.user_attrs[LINEAGE_ATTR])
        assert lineage is not None
        node = graph.nodes[trial.number]
        assert (node.origin, node.generation) == (lineage.origin, lineage.generation)
        assert (node.parents, node.operators) == (lineage.parents, lineage.operators)
        assert node.value == trial.value == node.y
        assert abs(node.x - node.generation) <= 0.35 + 1e-9
    # The enqueued trial, the random start, the repeats measuring the noise, the bred.
    origins = {n.origin for n in graph.nodes.values()}
    assert origins == {"enqueued", "random", "repeat", "bred"}
    assert graph.nodes[0].origin == "enqueued"
    assert graph.generations == 1 + max(n.generation for n in graph.nodes.values())


def test_edges_run_from_each_child_to_its_parents_with_its_operators(
    graph: LineageGraph,
) -> None:
    expected = {(n.number, p) for n in graph.nodes.values() for p in n.parents if p in graph.nodes}
    assert {(e.child, e.parent) for e in graph.edges} == expected
    assert expected  # a GA of 40 trials breeds
    for edge in graph.edges:
        child = graph.nodes[edge.child]
        if child.origin == "repeat":
            assert edge.label == "repeat"
        else:
            assert edge.label == ", ".join(child.operators)
    crossed = [e for e in graph.edges if "crossover" in e.label or "mutate" in e.label]
    assert crossed


def test_the_best_trials_ancestry_is_highlighted(study: optuna.Study, graph: LineageGraph) -> None:
    assert graph.best == study.best_trial.number
    assert graph.best in graph.ancestry
    # Closed under parents: every ancestor's parents are ancestors too.
    for number in graph.ancestry:
        assert set(graph.nodes[number].parents) <= graph.ancestry
    # Nothing else: each ancestor is reached from the best trial through parents.
    reached, todo = set(), [graph.best]
    while todo:
        number = todo.pop()
        if number not in reached:
            reached.add(number)
            todo += graph.nodes[number].parents
    assert reached == graph.ancestry
    assert len(graph.ancestry) > 1
    assert graph.highlighted_edges == {
        (e.child, e.parent) for e in graph.edges if e.child in graph.ancestry
    }


def test_minimize_picks_the_lowest_value_and_valueless_trials_lie_below(
    study: optuna.Study,
) -> None:
    trials = list(study.trials)
    failed = optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL,
        params=trials[-1].params,
        distributions=trials[-1].distributions,
        user_attrs=dict(trials[-1].user_attrs),
    )
    failed.number = len(trials)
    graph = lineage_graph([*trials, failed], study_name="s", direction="minimize")
    lowest = min(trials, key=lambda t: (t.value, t.number))
    assert graph.best == lowest.number
    node = graph.nodes[failed.number]
    assert node.value is None
    assert node.state == "FAIL"
    assert node.y < min(t.value for t in trials if t.value is not None)


def test_a_study_without_lineage_is_an_error_naming_it() -> None:
    tpe = optuna.create_study(study_name="cheap/tpe/seed0", direction="maximize")
    tpe.optimize(_objective, n_trials=3)
    with pytest.raises(InvalidParameterError, match=r"'cheap/tpe/seed0'.*EvoSampler"):
        study_lineage(tpe)


def test_files_png_svg_html_and_a_wrong_suffix(graph: LineageGraph, tmp_path: Path) -> None:
    png = write_lineage(graph, tmp_path / "a" / "tree.png")
    assert png.read_bytes()[:8] == PNG
    svg = write_lineage(graph, tmp_path / "tree.svg")
    assert "<svg" in svg.read_text(encoding="utf-8")[:500]
    html = write_lineage(graph, tmp_path / "tree.html", value_label="accuracy").read_text(
        encoding="utf-8"
    )
    assert "plotly" in html.lower()
    assert f"trial {graph.best}" in html  # hover text
    with pytest.raises(InvalidParameterError, match=r"\.png"):
        write_lineage(graph, tmp_path / "tree.txt")


def test_hundreds_of_trials(tmp_path: Path) -> None:
    big = _ga_study(300, population_size=30, seed=1)
    graph = study_lineage(big)
    assert len(graph.nodes) == 300
    assert graph.best == big.best_trial.number
    png = write_lineage(graph, tmp_path / "big.png")
    assert png.read_bytes()[:8] == PNG
    assert write_lineage(graph, tmp_path / "big.html").stat().st_size > 0


# -- artifacts --------------------------------------------------------------------------------
def test_default_artifact_dir_is_next_to_a_storage_file(tmp_path: Path) -> None:
    assert default_artifact_dir(f"sqlite:///{tmp_path}/x.db") == tmp_path / "x.db.artifacts"
    assert default_artifact_dir(f"journal://{tmp_path}/j.log") == tmp_path / "j.log.artifacts"
    assert default_artifact_dir("postgresql://me@host/db") is None
    assert default_artifact_dir("sqlite:///:memory:") is None
    folder = tmp_path / "deep" / "x.db.artifacts"
    open_artifact_store(folder)
    assert folder.is_dir()


def test_an_artifact_of_the_same_name_is_replaced(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'a.db'}"
    study = optuna.create_study(storage=storage, study_name="s")
    store = open_artifact_store(tmp_path / "a.db.artifacts")
    figure = tmp_path / "figure.png"
    figure.write_bytes(b"first")
    first = replace_study_artifact(store, study, figure, mimetype="image/png")
    figure.write_bytes(b"second")
    assert replace_study_artifact(store, study, figure, mimetype="image/png") == first
    metas = optuna.artifacts.get_all_artifact_meta(study)
    assert [(m.artifact_id, m.filename, m.mimetype) for m in metas] == [
        (first, "figure.png", "image/png")
    ]
    assert (tmp_path / "a.db.artifacts" / first).read_bytes() == b"second"
    # optuna-dashboard deletes one by writing null in its place: not in the way.
    internals.study_storage(study).set_study_system_attr(
        internals.study_id(study), f"artifacts:{first}", json.dumps(None)
    )
    other = replace_study_artifact(store, study, figure, mimetype="image/png")
    assert other != first


# -- the command ------------------------------------------------------------------------------
TINY: dict[str, Any] = {
    "name": "fam",
    "space": {"batch_sizes": [16, 32]},
    "train": {"device": "cpu"},
    "budget": {"n_trials": 5},
    "compare": {"samplers": ["ga"], "seeds": [0], "target": 0.5},
    "sampler": {"ga": {"population_size": 2}},
}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory, write_study: Callable[..., Path]) -> Path:
    """A study file whose GA study ``evohpo compare`` ran."""
    path = write_study(tmp_path_factory.mktemp("lineage"), TINY, filename="fam.toml")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", io.StringIO())
        assert main(["compare", str(path), "--no-test"]) == 0
    return path


def _ga(path: Path) -> optuna.Study:
    return optuna.load_study(
        study_name="fam/ga/seed0", storage=f"sqlite:///{path.parent}/evohpo.db"
    )


def test_lineage_command_draws_the_ga_study(
    compared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["lineage", str(compared)], capsys)
    assert code == 0, err
    default = compared.parent / "runs" / "fam" / "lineage-seed0.png"
    assert "lineage of fam/ga/seed0: 5 trials over" in out
    best = _ga(compared).best_trial.number
    assert f"best trial {best} (validation accuracy" in out
    assert f"wrote {default}" in out
    assert default.read_bytes()[:8] == PNG

    code, out, err = _run(["lineage", str(compared), "--out", str(tmp_path / "t.html")], capsys)
    assert code == 0, err
    assert "plotly" in (tmp_path / "t.html").read_text(encoding="utf-8").lower()


def test_lineage_command_errors(compared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["lineage", str(compared), "--seed", "7"], capsys)
    assert code == 1
    assert "No study 'fam/ga/seed7'" in err
    assert "--sampler ga --seed 7" in err
    code, _, err = _run(["lineage", str(compared), "--out", "tree.txt"], capsys)
    assert code == 1
    assert "--out 'tree.txt': the file name must end in .png, .svg, .pdf, .html" in err
    folder = compared.parent / "tree.png"
    folder.mkdir(exist_ok=True)
    code, _, err = _run(["lineage", str(compared), "--out", str(folder)], capsys)
    assert code == 1
    assert f"--out {str(folder)!r}: it is a directory" in err
    # Only a GA study has a family tree: a TPE study stored under the GA's name has none.
    storage = f"sqlite:///{compared.parent}/evohpo.db"
    other = compared.parent / "other.toml"
    other.write_text(compared.read_text().replace('"fam"', '"other"'), encoding="utf-8")
    optuna.create_study(study_name="other/ga/seed0", storage=storage).optimize(
        _objective, n_trials=1
    )
    code, _, err = _run(["lineage", str(other)], capsys)
    assert code == 1
    assert "'other/ga/seed0'" in err
    assert "lineage" in err
    code, _, err = _run(
        ["lineage", str(compared), "--storage", str(compared.parent / "no.db")], capsys
    )
    assert code == 1
    assert not (compared.parent / "no.db").exists()


def test_compare_attaches_the_figures_to_the_ga_study(
    compared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = compared.parent / "evohpo.db.artifacts"

    def attached() -> dict[str, str]:
        metas = optuna.artifacts.get_all_artifact_meta(_ga(compared))
        assert all(m.mimetype == "image/png" for m in metas)
        return {m.filename: m.artifact_id for m in metas}

    first = attached()
    assert set(first) == {"lineage-seed0.png", "history.png"}
    for artifact_id in first.values():
        assert (folder / artifact_id).read_bytes()[:8] == PNG
    # Run again (a resumed comparison): the same artifacts, updated, not doubled.
    code, out, err = _run(["compare", str(compared), "--no-test"], capsys)
    assert code == 0, err
    assert f"lineage: {compared.parent / 'runs' / 'fam' / 'lineage-seed0.png'}" in out
    assert f"optuna-dashboard artifacts): {folder}" in out
    assert attached() == first


def test_help_names_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "lineage" in capsys.readouterr().out
    assert main(["lineage", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: evohpo lineage" in out
    assert "--out FILE" in out


def test_dashboard_serves_the_artifact_folder_only_when_there_is_one(
    compared: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    served: list[object] = []
    real = DashboardServer

    def server(*args: Any, **kwargs: Any) -> Any:
        served.append(kwargs.get("artifact_store"))
        return real(*args, **kwargs)

    def stop_at_once(self: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("evohpo.cli.commands.DashboardServer", server)
    monkeypatch.setattr(real, "serve_forever", stop_at_once)
    # compare made the folder next to the storage: the dashboard shows it.
    assert main(["dashboard", str(compared), "--port", "0"]) == 130
    out = capsys.readouterr().out
    assert f"study artifacts (attached files) from {compared.parent}/evohpo.db.artifacts" in out
    assert served[-1] is not None
    # A storage without one: no folder is made unless asked for.
    optuna.create_study(study_name="x", storage=f"sqlite:///{tmp_path}/bare.db")
    assert main(["dashboard", "--storage", str(tmp_path / "bare.db"), "--port", "0"]) == 130
    assert "artifacts" not in capsys.readouterr().out
    assert served[-1] is None
    assert not (tmp_path / "bare.db.artifacts").exists()
    chosen = tmp_path / "chosen"
    argv = ["dashboard", "--storage", str(tmp_path / "bare.db"), "--port", "0"]
    assert main([*argv, "--artifact-dir", str(chosen)]) == 130
    assert f"from {chosen}" in capsys.readouterr().out
    assert chosen.is_dir()
    assert served[-1] is not None
