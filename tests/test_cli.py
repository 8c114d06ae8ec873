from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

import evohpo.cli.output
import evohpo.search.batched
from evohpo import Genome, LayerGene
from evohpo.cli import main
from evohpo.studies.config import load_study_config
from evohpo.studies.data import prepare_data
from evohpo.studies.group import STUDY_ATTR
from evohpo.training.nn import build_model

#: The module's study, over conftest's ``BASE_STUDY``: three trials on the CPU.
TINY: dict[str, Any] = {
    "space": {"batch_sizes": [16, 32]},
    "train": {"device": "cpu"},
    "budget": {"n_trials": 3},
    "compare": {"target": 0.5},
    "sampler": {"tpe": {"n_startup_trials": 2}},
}

WriteStudy = Callable[..., Path]


@pytest.fixture
def study_file(tmp_path: Path, write_study: WriteStudy) -> Path:
    return write_study(tmp_path, TINY, filename="tiny.toml")


@pytest.fixture
def rewrite(study_file: Path, write_study: WriteStudy) -> Callable[..., Path]:
    """Write ``study_file`` again: the module's study with overrides."""

    def write(**overrides: Any) -> Path:
        return write_study(study_file.parent, TINY, filename=study_file.name, **overrides)

    return write


def db_url(path: Path) -> str:
    return f"sqlite:///{path.parent / 'evohpo.db'}"


def load(path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=db_url(path))


def snapshot(url: str) -> list[Any]:
    storage = optuna.storages.RDBStorage(url)
    result = []
    for frozen in storage.get_all_studies():
        trials = storage.get_all_trials(frozen._study_id)
        result.append(
            (
                frozen.study_name,
                frozen.directions,
                frozen.user_attrs,
                [(t.number, t.state, t.params, t.values, t.user_attrs) for t in trials],
            )
        )
    return result


# -- help and usage -----------------------------------------------------------------------------
def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("run", "compare", "dashboard", "best", "export"):
        assert command in out
    assert "journal:///" in out
    assert "EVOHPO_NO_PROGRESS" in out


@pytest.mark.parametrize("command", ["run", "compare", "dashboard", "best", "export"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    assert "usage: evohpo " + command in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("evohpo ")


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: evohpo" in capsys.readouterr().err


def test_unknown_sampler_is_a_usage_error(
    study_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(study_file), "--sampler", "cmaes"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'cmaes'" in err
    assert "'ga', 'tpe', 'random'" in err
    assert not (study_file.parent / "evohpo.db").exists()


def test_unknown_sampler_in_a_list(study_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(study_file), "--samplers", "ga,nsga"]) == 2
    assert "invalid sampler 'nsga'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-trials", "0"], "expected an integer >= 1, got '0'"),
        (["--n-trials", "-3"], "expected an integer >= 1, got '-3'"),
        (["--n-trials", "abc"], "expected an integer >= 1, got 'abc'"),
        (["--n-trials", "1.5"], "expected an integer >= 1, got '1.5'"),
        (["--workers", "-1"], "expected an integer >= 1, got '-1'"),
        (["--seed", "x"], "expected an integer >= 0, got 'x'"),
        (["--seed", "-1"], "expected an integer >= 0, got '-1'"),
        (["--timeout", "soon"], "expected a number > 0, got 'soon'"),
        (["--batch-trials", "0"], "expected an integer >= 1 or 'auto', got '0'"),
        (["--batch-trials", "many"], "expected an integer >= 1 or 'auto', got 'many'"),
    ],
)
def test_bad_numbers_are_usage_errors(
    study_file: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(study_file), *args]) == 2
    assert message in capsys.readouterr().err


# -- error paths ---------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "absent.toml")]) == 1
    err = capsys.readouterr().err
    assert re.search(
        r"^evohpo: error: The study file '.*absent\.toml' does not exist\.$", err, re.M
    )
    assert "Traceback" not in err


def test_malformed_toml_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\n\n[data\ndataset = "iris"\n', encoding="utf-8")
    assert main(["compare", str(path)]) == 1
    err = capsys.readouterr().err
    assert "is not valid TOML" in err
    assert "line 3" in err
    assert "Traceback" not in err


def test_invalid_setting_is_named(
    study_file: Path, rewrite: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rewrite(budget={"n_trials": None, "n_trails": 3})
    assert main(["run", str(study_file)]) == 1
    assert "unknown setting 'n_trails' in [budget]" in capsys.readouterr().err


def test_a_directory_as_the_study_file(
    tmp_path: Path, write_study: WriteStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    write_study(tmp_path, TINY, filename="tiny.toml")
    assert main(["run", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "is a directory; give the path of a .toml file. It holds tiny.toml." in err
    assert "does not exist" not in err


def test_a_device_this_machine_lacks_is_refused_before_any_storage(
    study_file: Path, rewrite: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rewrite(train={"device": "cuda:7"})
    for command in ("run", "compare", "worker", "export"):
        assert main([command, str(study_file)]) == 1
        err = capsys.readouterr().err
        assert f"evohpo: error: {study_file}: [train] 'device' must be a device that is " in err
        assert "Got 'cuda:7' instead" in err
    assert not (study_file.parent / "evohpo.db").exists()


def test_a_study_resumes_on_another_device(
    study_file: Path, rewrite: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(study_file), "--n-trials", "1"]) == 0
    rewrite(train={"device": "auto", "eval_batch_size": 7})
    assert main(["run", str(study_file), "--n-trials", "2"]) == 0
    assert "finished trials: 2 of 2 (1 run now)" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["run", "compare", "worker"])
def test_a_split_with_too_few_rows_leaves_no_storage(
    study_file: Path,
    command: str,
    rewrite: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    rewrite(data={"validation_fraction": 0.01})
    assert main([command, str(study_file)]) == 1
    err = capsys.readouterr().err
    assert (
        f"evohpo: error: {study_file}: [data] 'validation_fraction' = 0.01 does not work on "
        "'iris': it leaves 2 validation rows of 120, fewer than the 3 classes"
    ) in err
    assert "unexpected error" not in err
    assert not (study_file.parent / "evohpo.db").exists()


def test_a_storage_under_a_file_says_so(
    study_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = study_file.parent / "afile"
    blocker.write_text("")
    for url in (f"sqlite:///{blocker}/x.db", f"journal://{blocker}/x.log"):
        assert main(["run", str(study_file), "--storage", url]) == 1
        assert f"'{blocker}' is a file, not a directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("sqlite:////nonexistent-dir/sub/x.db", "Cannot open the storage"),
        (
            "nosuchdb://user:topsecret@host/db",
            "Cannot open the storage 'nosuchdb://user:***@host/db'",
        ),
        ("journal:///nonexistent-dir/sub/x.log", "does not exist"),
        ("results.txt", "Cannot tell which storage 'results.txt' is"),
    ],
)
@pytest.mark.parametrize("command", ["run", "compare", "best", "export", "dashboard"])
def test_storage_that_cannot_be_opened(
    study_file: Path,
    command: str,
    storage: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([command, str(study_file), "--storage", storage]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "topsecret" not in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "run", str(tmp_path / "absent.toml")]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "StudyConfigError" in err
    # also accepted after the command
    assert main(["run", str(tmp_path / "absent.toml"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_unexpected_errors_are_reported_without_traceback(
    study_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("evohpo.cli.commands.prepare_data", broken)
    assert main(["run", str(study_file)]) == 1
    err = capsys.readouterr().err
    assert "unexpected error: RuntimeError: disk on fire (run with --debug" in err
    assert "Traceback" not in err


def test_interrupt_exits_130(
    study_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("evohpo.cli.commands.run_study", interrupted)
    assert main(["run", str(study_file)]) == 130
    err = capsys.readouterr().err
    assert "interrupted; finished trials are kept" in err
    assert "Traceback" not in err


def test_different_space_is_refused_and_storage_unchanged(
    study_file: Path, rewrite: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(study_file), "--sampler", "ga"]) == 0
    before = snapshot(db_url(study_file))
    rewrite(space={"units": [4, 64]})
    capsys.readouterr()
    for command in (["run", str(study_file)], ["compare", str(study_file)]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "'tiny/ga/seed0'" in err
        assert "different settings (space)" in err
        assert "space.units: stored [4, 16], now [4, 64]" in err
        assert "Nothing was changed" in err
    assert snapshot(db_url(study_file)) == before


def test_different_direction_is_refused_and_storage_unchanged(
    study_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = db_url(study_file)
    other = optuna.create_study(storage=url, study_name="tiny/tpe/seed0", direction="minimize")
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    before = snapshot(url)
    assert main(["compare", str(study_file)]) == 1
    err = capsys.readouterr().err
    assert "'tiny/tpe/seed0'" in err
    assert "direction(s) [minimize]" in err
    # compare checks every study before running any: nothing was added
    assert snapshot(url) == before


# -- run -----------------------------------------------------------------------------------------
def test_run_resumes_up_to_the_total(study_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(study_file)]) == 0
    out = capsys.readouterr().out
    assert "study tiny/ga/seed0 in sqlite:///" in out
    assert "finished trials: 3 of 3 (3 run now)" in out
    assert re.search(r"best validation accuracy: \d\.\d{4} \(trial \d\)", out)
    assert "best genome: " in out

    assert main(["run", str(study_file)]) == 0
    assert "finished trials: 3 of 3 (0 run now)" in capsys.readouterr().out

    assert main(["run", str(study_file), "--n-trials", "5"]) == 0
    assert "finished trials: 5 of 5 (2 run now)" in capsys.readouterr().out

    assert main(["run", str(study_file), "--n-trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "finished trials: 5, more than the total of 2 asked for (0 run now)" in out
    assert "5 of 2" not in out
    study = load(study_file, "tiny/ga/seed0")
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    bred = [t for t in study.trials if t.user_attrs["evohpo"]["origin"] == "bred"]
    assert bred, "the GA bred from the stored population"
    assert any(p <= 2 for t in bred if t.number >= 3 for p in t.user_attrs["evohpo"]["parents"])
    for trial in study.trials:
        assert Genome.from_json(trial.user_attrs["genome"]).depth == trial.params["n_layers"]


def test_verbose_run_logs_the_trials_left_in_words(
    study_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-v", "run", str(study_file), "--n-trials", "1"]) == 0
    err = capsys.readouterr().err
    assert "evohpo: Running tiny/ga/seed0: 1 trial left, 1 at a time." in err
    assert "no limit on" not in err


def test_run_with_sampler_seed_and_storage(
    study_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "runs.log"
    assert (
        main(
            [
                "run",
                str(study_file),
                "--sampler",
                "random",
                "--seed",
                "7",
                "--storage",
                str(journal),
                "--n-trials",
                "2",
            ]
        )
        == 0
    )
    assert f"study tiny/random/seed7 in journal://{journal}" in capsys.readouterr().out
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.load_study(study_name="tiny/random/seed7", storage=storage)
    assert len(study.trials) == 2
    assert study.user_attrs[STUDY_ATTR]["seed"] == 7
    assert not (study_file.parent / "evohpo.db").exists()


def batch_sizes(trials: list[FrozenTrial]) -> list[int]:
    """How many trials trained together, batch by batch, from their start and end times.

    The trials of a batch are all asked before the first of them is told.
    """
    sizes: list[int] = []
    first_end = None
    for trial in sorted(trials, key=lambda t: t.number):
        assert trial.datetime_start is not None
        assert trial.datetime_complete is not None
        if first_end is not None and trial.datetime_start < first_end:
            sizes[-1] += 1
        else:
            sizes.append(1)
            first_end = trial.datetime_complete
    return sizes


def test_batch_trials_of_the_file_and_a_resume_with_another(
    study_file: Path, rewrite: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rewrite(train={"batch_trials": 3}, budget={"n_trials": 5})
    assert main(["run", str(study_file)]) == 0
    assert "finished trials: 5 of 5 (5 run now)" in capsys.readouterr().out
    assert batch_sizes(load(study_file, "tiny/ga/seed0").trials) == [3, 2]

    # batch_trials is not part of the study's identity: the same study resumes.
    rewrite(train={"batch_trials": 2}, budget={"n_trials": 9})
    assert main(["run", str(study_file)]) == 0
    assert "finished trials: 9 of 9 (4 run now)" in capsys.readouterr().out
    assert optuna.get_all_study_names(db_url(study_file)) == ["tiny/ga/seed0"]
    study = load(study_file, "tiny/ga/seed0")
    assert [t.number for t in study.trials] == list(range(9))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert batch_sizes(study.trials) == [3, 2, 2, 2]
    for trial in study.trials:
        assert Genome.from_json(trial.user_attrs["genome"]).depth == trial.params["n_layers"]


def test_batch_trials_flag_overrides_the_file(
    study_file: Path, rewrite: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    rewrite(train={"batch_trials": 1})
    asked: list[int] = []
    real = evohpo.search.batched.optimize

    def spy(*args: Any, **kwargs: Any) -> None:
        asked.append(kwargs["batch_trials"])
        real(*args, **kwargs)

    monkeypatch.setattr(evohpo.search.batched, "optimize", spy)
    assert main(["run", str(study_file), "--n-trials", "1"]) == 0
    assert main(["run", str(study_file), "--n-trials", "4", "--batch-trials", "3"]) == 0
    assert main(["run", str(study_file), "--n-trials", "5", "--batch-trials", "auto"]) == 0
    # auto on the CPU: at most the GA's population of 2; one trial was left to run.
    assert asked == [1, 3, 2]
    assert batch_sizes(load(study_file, "tiny/ga/seed0").trials) == [1, 3, 1]
    # compare: the GA study holds its 3 trials already; TPE runs 3 in batches of 2.
    args = ["compare", str(study_file), "--seeds", "0", "--no-test", "--batch-trials", "2"]
    assert main(args) == 0
    assert asked == [1, 3, 2, 2]
    assert batch_sizes(load(study_file, "tiny/tpe/seed0").trials) == [2, 1]


def test_workers_take_batch_trials(
    study_file: Path, rewrite: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    specs: list[Any] = []

    def one_worker(spec: Any, guard: Any) -> Any:
        specs.append(spec)
        return types.SimpleNamespace(completed=())

    def workers(spec: Any, n: int, **kwargs: Any) -> None:
        specs.append(spec)

    monkeypatch.setattr("evohpo.cli.commands.run_worker", one_worker)
    monkeypatch.setattr("evohpo.cli.commands.run_workers", workers)
    rewrite(train={"batch_trials": 3})
    assert main(["worker", str(study_file)]) == 0
    assert main(["worker", str(study_file), "--batch-trials", "5"]) == 0
    assert main(["worker", str(study_file), "--batch-trials", "auto"]) == 0
    assert main(["run", str(study_file), "--workers", "2"]) == 0
    assert main(["run", str(study_file), "--workers", "2", "--batch-trials", "4"]) == 0
    # auto: at most the GA's population of 2
    assert [spec.batch_trials for spec in specs] == [3, 5, 2, 3, 4]


def test_a_bad_batch_trials_in_the_file_is_named(
    study_file: Path, rewrite: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rewrite(train={"batch_trials": 0})
    assert main(["run", str(study_file)]) == 1
    err = capsys.readouterr().err
    assert f"{study_file}: [train] 'batch_trials' must be an int >= 1 or 'auto'. Got 0" in err
    assert not (study_file.parent / "evohpo.db").exists()


def test_progress_bar_on_stderr(
    study_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(evohpo.cli.output, "progress_enabled", lambda: True)
    assert main(["run", str(study_file), "--sampler", "tpe"]) == 0
    captured = capsys.readouterr()
    assert "tiny/tpe/seed0" in captured.err
    assert "3/3" in captured.err
    assert "trial" in captured.err
    assert "3/3" not in captured.out


def test_progress_is_off_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    monkeypatch.setenv("EVOHPO_NO_PROGRESS", "1")
    assert not evohpo.cli.output.progress_enabled()
    monkeypatch.setenv("EVOHPO_NO_PROGRESS", "0")
    assert evohpo.cli.output.progress_enabled()
    monkeypatch.delenv("EVOHPO_NO_PROGRESS")
    assert evohpo.cli.output.progress_enabled()


def test_progress_is_off_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVOHPO_NO_PROGRESS", raising=False)
    assert not evohpo.cli.output.progress_enabled()  # pytest captures stderr: not a TTY


# -- compare --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compared_template(
    tmp_path_factory: pytest.TempPathFactory, write_study: WriteStudy
) -> tuple[Path, str]:
    """One comparison run for the module: 2 samplers x 2 seeds x 3 trials."""
    directory = tmp_path_factory.mktemp("compared")
    path = write_study(directory, TINY, filename="tiny.toml")
    with pytest.MonkeyPatch.context() as patch:
        stdout = io.StringIO()
        patch.setattr(sys, "stdout", stdout)
        assert main(["compare", str(path)]) == 0
    return directory, stdout.getvalue()


@pytest.fixture
def compared(study_file: Path, compared_template: tuple[Path, str]) -> str:
    """``study_file``'s directory holds a copy of the comparison's storage and plot."""
    directory, out = compared_template
    shutil.copy(directory / "evohpo.db", study_file.parent / "evohpo.db")
    shutil.copytree(directory / "runs", study_file.parent / "runs")
    return out.replace(str(directory), str(study_file.parent))


def test_compare_prints_the_table_and_writes_the_plot(study_file: Path, compared: str) -> None:
    out = compared
    assert "tiny: ga, tpe on iris, budget 3 trials per study, target validation accuracy 0.5" in out
    header = next(line for line in out.splitlines() if line.startswith("sampler"))
    for column in ("best val acc", "test acc", "reached", "trials to target", "time to target"):
        assert column in header
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("ga ", "tpe "))}
    assert set(rows) == {"ga", "tpe"}
    for row in rows.values():
        assert re.search(r"\s2\s+3\s+\d\.\d{4} ± \d\.\d{4}\s+\d\.\d{4} ± \d\.\d{4}", row), row
    plot = study_file.parent / "runs" / "tiny" / "history.png"
    assert f"plot: {plot}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wall time: " in out


def test_compare_stores_one_study_per_sampler_and_seed(study_file: Path, compared: str) -> None:
    names = sorted(optuna.get_all_study_names(db_url(study_file)))
    assert names == ["tiny/ga/seed0", "tiny/ga/seed1", "tiny/tpe/seed0", "tiny/tpe/seed1"]
    for name in names:
        study = load(study_file, name)
        identity = study.user_attrs[STUDY_ATTR]
        assert identity["dataset"] == "iris"
        assert identity["direction"] == "maximize"
        assert name.split("/")[1] == identity["sampler"]
        assert f"seed{identity['seed']}" == name.split("/")[2]
        assert identity["space"]["units"] == [4, 16]
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
        assert study.user_attrs["evohpo.test"]["trial"] == study.best_trial.number
        assert 0.0 <= study.user_attrs["evohpo.test"]["accuracy"] <= 1.0


def test_compare_uses_the_same_split_for_every_study(study_file: Path, compared: str) -> None:
    # The same genome gives the same validation accuracy under every sampler and seed
    # only if all studies see the same rows: check through the stored trial values.
    studies = [load(study_file, n) for n in optuna.get_all_study_names(db_url(study_file))]
    spaces = {json.dumps(s.user_attrs[STUDY_ATTR]["data"], sort_keys=True) for s in studies}
    assert len(spaces) == 1


def test_compare_again_runs_nothing_new(
    study_file: Path, compared: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(db_url(study_file))
    assert main(["compare", str(study_file), "--no-test"]) == 0
    out = capsys.readouterr().out
    assert snapshot(db_url(study_file)) == before
    # the cached test accuracies are reported again
    assert re.search(r"^ga\s.*± .*± ", out, re.M)


def test_compare_with_a_bigger_budget_resumes(
    study_file: Path, compared: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["compare", str(study_file), "--n-trials", "4", "--seeds", "0", "--samplers", "ga"])
        == 0
    )
    capsys.readouterr()
    assert len(load(study_file, "tiny/ga/seed0").trials) == 4
    assert len(load(study_file, "tiny/ga/seed1").trials) == 3
    assert len(load(study_file, "tiny/tpe/seed0").trials) == 3


def test_compare_hint_keeps_the_storage(
    study_file: Path, compared: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere" / "c.db"
    elsewhere.parent.mkdir()
    shutil.move(study_file.parent / "evohpo.db", elsewhere)
    assert main(["compare", str(study_file), "--storage", str(elsewhere), "--no-test"]) == 0
    out = capsys.readouterr().out
    expected = f"evohpo dashboard {study_file} --storage {elsewhere}"
    assert f"side by side in optuna-dashboard: {expected}" in out
    assert not (study_file.parent / "evohpo.db").exists()


def test_compare_hint_hides_the_password(
    study_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    memory = optuna.storages.InMemoryStorage()
    monkeypatch.setattr("evohpo.cli.commands.open_storage", lambda url, **_: memory)
    url = "postgresql://me:hunter2-secret@db.example/evohpo"
    args = ["compare", str(study_file), "--storage", url, "--samplers", "ga", "--seeds", "0"]
    assert main([*args, "--n-trials", "1", "--no-test"]) == 0
    out = capsys.readouterr().out
    assert "hunter2-secret" not in out
    assert f"evohpo dashboard {study_file} --storage 'postgresql://me:***@db.example/evohpo'" in out


@pytest.mark.parametrize(
    ("plot", "reason"),
    [
        ("history.txt", r"the file name must end in \.png, \.svg, \.pdf"),
        ("blocker/history.png", r"'.*blocker' is a file, not a directory"),
        ("folder.png", "it is a directory"),
    ],
)
def test_compare_refuses_a_plot_path_before_it_runs(
    study_file: Path, plot: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (study_file.parent / "blocker").write_text("a file")
    (study_file.parent / "folder.png").mkdir()
    target = study_file.parent / plot

    assert main(["compare", str(study_file), "--plot", str(target)]) == 1

    err = capsys.readouterr().err
    assert re.search(rf"--plot '.*{re.escape(plot)}': {reason}", err)
    assert not (study_file.parent / "evohpo.db").exists()  # nothing ran, nothing stored


def _two_trial_result(sampler: str, seed: int) -> Any:
    """A finished study of two trials, as a comparison reports it."""
    from evohpo.studies.compare import StudyResult

    return StudyResult(
        name=f"tiny/{sampler}/seed{seed}",
        sampler=sampler,
        seed=seed,
        n_trials=2,
        n_failed=0,
        best_value=0.5,
        best_trial=0,
        test_accuracy=None,
        history=[0.4, 0.5],
        seconds=1.0,
        trials_to_target=None,
        seconds_to_target=None,
    )


def test_the_history_plot_is_written_in_the_type_its_name_says(
    tmp_path: Path, study_file: Path
) -> None:
    from evohpo.studies.compare import Comparison
    from evohpo.studies.plots import plot_histories

    config = load_study_config(study_file)
    comparison = Comparison(
        config=config,
        results={"ga": [_two_trial_result("ga", 0)]},
        wall_seconds=1.0,
        budget=config.budget,
    )
    starts = {".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}
    for suffix, start in starts.items():
        written = plot_histories(comparison, tmp_path / "figures" / f"history{suffix.upper()}")
        assert written.read_bytes().startswith(start)


def test_plot_legend_counts_seeds_in_words(study_file: Path) -> None:
    from evohpo.studies.compare import Comparison
    from evohpo.studies.plots import history_figure

    result = _two_trial_result
    config = load_study_config(study_file)
    comparison = Comparison(
        config=config,
        results={"ga": [result("ga", 0)], "tpe": [result("tpe", 0), result("tpe", 1)]},
        wall_seconds=1.0,
        budget=config.budget,
    )
    legend = history_figure(comparison).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["ga (1 seed)", "tpe (mean of 2 seeds)"]


# -- PostgreSQL, as users type its URL ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.postgres
def test_run_and_best_on_a_plain_postgresql_url(
    study_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests._pg import PostgresServer

    with PostgresServer.running_server() as server:
        url = server.create_database()
        assert url.startswith("postgresql://")  # no +driver: the form the README advertises
        run = ["run", str(study_file), "--storage", url, "--sampler", "random", "--n-trials", "2"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(run) == 0
            assert main(["best", str(study_file), "--storage", url]) == 0
        captured = capsys.readouterr()
        assert "finished trials: 2 of 2 (2 run now)" in captured.out
        assert json.loads(captured.out[captured.out.index("{") :])["study"] == "tiny/random/seed0"
        assert "evohpo:***@127.0.0.1" in captured.out
        assert server.password not in captured.out + captured.err
        experimental = [
            str(w.message)
            for w in caught
            if issubclass(w.category, optuna.exceptions.ExperimentalWarning)
        ]
        assert experimental == []


# -- best and export -----------------------------------------------------------------------------
def test_best_prints_the_genome_as_json(
    study_file: Path, compared: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["best", str(study_file)]) == 0
    best = json.loads(capsys.readouterr().out)
    values = [
        load(study_file, n).best_value for n in optuna.get_all_study_names(db_url(study_file))
    ]
    assert best["validation_accuracy"] == max(values)
    genome = Genome.from_dict(best["genome"])
    assert genome.to_params() == best["params"]

    assert main(["best", str(study_file), "--sampler", "tpe", "--seed", "1"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["study"] == "tiny/tpe/seed1"
    assert best["validation_accuracy"] == load(study_file, "tiny/tpe/seed1").best_value


def test_best_names_the_score_of_a_regression_study(
    tmp_path: Path, write_study: WriteStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(
        tmp_path,
        TINY,
        filename="reg.toml",
        task="regression",
        data={"dataset": "diabetes"},
        compare={"target": 0.1},
    )
    assert main(["run", str(path), "--sampler", "random", "--n-trials", "1"]) == 0
    capsys.readouterr()
    assert main(["best", str(path)]) == 0
    best = json.loads(capsys.readouterr().out)
    assert "validation_accuracy" not in best
    assert best["validation_r2"] == load(path, "tiny/random/seed0").best_value


def test_best_without_trials(study_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    optuna.storages.RDBStorage(db_url(study_file))  # an empty storage
    assert main(["best", str(study_file)]) == 1
    assert "No completed trial found for 'tiny'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["best", "STUDY"],
        ["export", "STUDY"],
        ["dashboard", "STUDY", "--port", "0"],
        ["dashboard", "--storage", "typo.db", "--port", "0"],
    ],
)
def test_inspecting_commands_create_no_storage(
    study_file: Path,
    command: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(study_file.parent)
    monkeypatch.setattr("evohpo.studies.dashboard.DashboardServer.serve_forever", lambda self: None)
    before = sorted(p.name for p in study_file.parent.iterdir())
    assert main([str(study_file) if a == "STUDY" else a for a in command]) == 1
    err = capsys.readouterr().err
    assert "Cannot open the storage 'sqlite:///" in err
    assert "does not exist (nothing was created" in err
    assert sorted(p.name for p in study_file.parent.iterdir()) == before


def test_export_writes_a_safe_loadable_model(
    study_file: Path, compared: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "exported"
    assert main(["export", str(study_file), "--sampler", "ga", "--output", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "classes.json",
        "genome.json",
        "metadata.json",
        "model.pt",
    ]
    assert f"wrote {out_dir / 'model.pt'}" in out
    genome = Genome.from_json((out_dir / "genome.json").read_text())
    classes = json.loads((out_dir / "classes.json").read_text())
    metadata = json.loads((out_dir / "metadata.json").read_text())
    assert classes == ["setosa", "versicolor", "virginica"]
    assert metadata["study"].startswith("tiny/ga/")
    state = torch.load(out_dir / "model.pt", weights_only=True)
    assert metadata["n_outputs"] == metadata["n_classes"] == len(classes)
    model = build_model(genome, metadata["n_features"], metadata["n_outputs"])
    model.load_state_dict(state)
    model.eval()
    # The exported model and its standardisation reproduce the reported test accuracy.
    data = prepare_data(load_study_config(study_file))
    mean = np.asarray(metadata["standardize"]["mean"])
    scale = np.asarray(metadata["standardize"]["scale"])
    x = torch.from_numpy(((data.X_test - mean) / scale).astype(np.float32))
    with torch.no_grad():
        predicted = model(x).argmax(dim=1).numpy()
    assert float(np.mean(predicted == data.y_test)) == pytest.approx(metadata["test_accuracy"])
    # The metadata's load recipe works as written, in a new interpreter.
    recipe = (
        "import json, evohpo; m = json.load(open('metadata.json')); "
        "n_features, n_outputs = m['n_features'], m['n_outputs']; exec(m['load']); "
        "print(sum(p.numel() for p in model.parameters()))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", recipe], cwd=out_dir, capture_output=True, text=True, timeout=120
    )
    assert loaded.returncode == 0, loaded.stderr
    assert int(loaded.stdout) == sum(p.numel() for p in model.parameters())


def test_export_refuses_a_study_file_changed_since_the_search(
    study_file: Path,
    compared: str,
    rewrite: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Another split: the refit would train on other rows and store a test score of
    # those with the study.
    before = snapshot(db_url(study_file))
    rewrite(data={"dataset": "iris", "split_seed": 7})
    out_dir = tmp_path / "exported"
    assert main(["export", str(study_file), "--output", str(out_dir)]) == 1
    err = capsys.readouterr().err
    assert "different settings" in err
    assert "split_seed: stored 0, now 7" in err
    assert not out_dir.exists()
    assert snapshot(db_url(study_file)) == before


def test_export_refuses_to_overwrite_without_force(
    study_file: Path, compared: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "exported"
    assert main(["export", str(study_file), "--output", str(out_dir)]) == 0
    assert main(["export", str(study_file), "--output", str(out_dir)]) == 1
    assert "exists; use another output directory or --force" in capsys.readouterr().err
    assert main(["export", str(study_file), "--output", str(out_dir), "--force"]) == 0


def test_export_never_follows_links_out_of_the_directory(
    study_file: Path, compared: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    out_dir = tmp_path / "exported"
    out_dir.mkdir()
    (out_dir / "genome.json").symlink_to(outside)
    assert main(["export", str(study_file), "--output", str(out_dir), "--force"]) == 1
    assert "it is a link" in capsys.readouterr().err
    assert outside.read_text() == "keep me"
    assert sorted(p.name for p in out_dir.iterdir()) == ["genome.json"]


def test_export_to_a_file_path_is_refused(
    study_file: Path, compared: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "file"
    target.write_text("")
    assert main(["export", str(study_file), "--output", str(target)]) == 1
    assert "is not a directory" in capsys.readouterr().err


@pytest.fixture
def no_refit(monkeypatch: pytest.MonkeyPatch) -> None:
    """An export that reaches its refit fails the test: it should have refused first."""
    import evohpo.studies.export

    def refit(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the refit ran")

    monkeypatch.setattr(evohpo.studies.export, "refit", refit)


@pytest.mark.usefixtures("no_refit")
def test_export_under_a_file_is_refused_before_the_refit(
    study_file: Path, compared: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "file"
    target.write_text("")
    assert main(["export", str(study_file), "--output", str(target / "best")]) == 1
    assert f"Cannot make the export directory {str(target / 'best')!r}: " in (
        capsys.readouterr().err
    )


@pytest.mark.usefixtures("no_refit")
def test_export_to_a_dangling_link_is_refused_before_the_refit(
    study_file: Path, compared: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = tmp_path / "exported"
    link.symlink_to(tmp_path / "nowhere")
    assert main(["export", str(study_file), "--output", str(link)]) == 1
    assert "is a link to" in capsys.readouterr().err


def test_the_best_study_is_found_when_its_score_is_zero(tmp_path: Path) -> None:
    from evohpo.studies.export import find_best
    from evohpo.studies.group import STUDY_ATTR

    config = types.SimpleNamespace(name="g", score_key="r2")
    storage = optuna.storages.InMemoryStorage()
    genome = Genome((LayerGene(8, "relu", 0.0),), "adam", 1e-3, 0.0, 32)
    for name, value in (("g/ga/seed0", -0.5), ("g/tpe/seed0", 0.0)):
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
        sampler = name.split("/")[1]
        study.set_user_attr(STUDY_ATTR, {"group": "g", "sampler": sampler, "seed": 0})
        trial = study.ask()
        trial.set_user_attr("genome", genome.to_json())
        study.tell(trial, value)
    best = find_best(storage, config)  # type: ignore[arg-type]
    assert (best.sampler, best.value) == ("tpe", 0.0)  # was ga's -0.5: 0.0 read as no score


def test_export_default_directory(
    study_file: Path, compared: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(study_file)]) == 0
    assert (study_file.parent / "runs" / "tiny" / "best" / "model.pt").is_file()


# -- dashboard (the server itself is tested in test_dashboard.py) ---------------------------------
def test_dashboard_prints_the_comparison_url(
    study_file: Path,
    compared: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    served: list[str] = []
    monkeypatch.setattr(
        "evohpo.studies.dashboard.DashboardServer.serve_forever",
        lambda self: served.append(self.url),
    )
    assert main(["dashboard", str(study_file), "--port", "0"]) == 0
    out = capsys.readouterr().out
    assert served
    url = served[0]
    assert url.startswith("http://127.0.0.1:")
    storage = optuna.storages.RDBStorage(db_url(study_file))
    ids = [
        storage.get_study_id_from_name(f"tiny/{s}/seed{i}") for s in ("ga", "tpe") for i in (0, 1)
    ]
    expected = f"{url}/dashboard/compare-studies?ids={','.join(map(str, ids))}"
    assert f"tiny: GA vs TPE (4 studies): {expected}" in out


def test_dashboard_without_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["dashboard"]) == 1
    assert "No storage given" in capsys.readouterr().err


def test_dashboard_on_an_empty_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("evohpo.studies.dashboard.DashboardServer.serve_forever", lambda self: None)
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'empty.db'}")
    assert main(["dashboard", "--storage", str(tmp_path / "empty.db"), "--port", "0"]) == 0
    assert "no evohpo studies in this storage yet" in capsys.readouterr().out


def test_dashboard_ctrl_c_says_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(self: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("evohpo.studies.dashboard.DashboardServer.serve_forever", interrupted)
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'empty.db'}")
    assert main(["dashboard", "--storage", str(tmp_path / "empty.db"), "--port", "0"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "evohpo: dashboard stopped."
    assert "trials" not in err


def test_dashboard_on_a_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'empty.db'}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["dashboard", "--storage", str(tmp_path / "empty.db"), "--port", str(port)]
        assert main(args) == 1
    err = capsys.readouterr().err
    assert f"The port {port} on 127.0.0.1 is already in use" in err
    assert "--port N with a free port, or --port 0" in err
    assert "Errno" not in err


# -- python -m evohpo and signals --------------------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["EVOHPO_NO_PROGRESS"] = "1"
    env["PYTHONWARNINGS"] = "error::DeprecationWarning:evohpo"
    return env


def test_python_dash_m(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "evohpo", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )
    assert done.returncode == 0
    assert "usage: evohpo" in done.stdout


def test_the_command_exits_with_its_status_and_all_its_output(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    # The command leaves with os._exit: its output must be flushed first, its status kept.
    study = write_study(tmp_path, TINY, budget={"n_trials": 2}, compare={"seeds": [0]})
    command = [sys.executable, "-m", "evohpo"]
    ran = subprocess.run(
        [*command, "run", str(study)], capture_output=True, text=True, timeout=300, env=_env()
    )
    assert ran.returncode == 0, ran.stderr
    best = subprocess.run(
        [*command, "best", str(study)], capture_output=True, text=True, timeout=300, env=_env()
    )
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["trial"] in (0, 1)  # the whole JSON document arrived
    missing = subprocess.run(
        [*command, "run", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("evohpo: error:"), missing.stderr


def _count_trials(db: Path, name: str) -> dict[str, int]:
    if not db.exists():
        return {}
    with sqlite3.connect(db, timeout=30) as connection:
        try:
            rows = connection.execute(
                "SELECT t.state, COUNT(*) FROM trials t JOIN studies s ON t.study_id = s.study_id "
                "WHERE s.study_name = ? GROUP BY t.state",
                (name,),
            ).fetchall()
        except sqlite3.OperationalError:
            return {}
    return {str(state): int(n) for state, n in rows}


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_compare_cleanly_and_it_resumes(
    tmp_path: Path, signum: int, write_study: WriteStudy
) -> None:
    study = write_study(
        tmp_path,
        TINY,
        filename="resume.toml",
        space={"units": [32, 64], "batch_sizes": [8]},
        train={"max_epochs": 15, "patience": 15, "batch_trials": 2},
        budget={"n_trials": 8},
        compare={"seeds": [0]},
    )
    db = tmp_path / "evohpo.db"
    command = [sys.executable, "-m", "evohpo", "compare", str(study), "--no-test"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    ) as process:
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                counts = _count_trials(db, "tiny/ga/seed0")
                if counts.get("COMPLETE", 0) >= 4 and counts.get("RUNNING", 0) >= 1:
                    break
                if process.poll() is not None:
                    pytest.fail(f"compare ended early: {process.communicate()}")
                time.sleep(0.02)
            else:
                pytest.fail("compare made no progress")
            process.send_signal(signum)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:  # a failed check must not leave it running
                process.kill()
                process.communicate()
    assert process.returncode == 130, err
    assert "interrupted; finished trials are kept" in err
    assert "Traceback" not in err

    url = f"sqlite:///{db}"
    ga = optuna.load_study(study_name="tiny/ga/seed0", storage=url)
    before = {t.number: (t.state, t.values, t.params) for t in ga.trials}
    assert all(state != TrialState.RUNNING for state, _, _ in before.values())
    n_before = sum(state == TrialState.COMPLETE for state, _, _ in before.values())
    assert 4 <= n_before < 8
    # The trials training together when the signal came (a batch of 2) failed, no other.
    assert sum(state == TrialState.FAIL for state, _, _ in before.values()) <= 2

    done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^ga\s+1\s+8\s", done.stdout, re.M), done.stdout
    assert re.search(r"^tpe\s+1\s+8\s", done.stdout, re.M), done.stdout

    for name in ("tiny/ga/seed0", "tiny/tpe/seed0"):
        resumed = optuna.load_study(study_name=name, storage=url)
        numbers = [t.number for t in resumed.trials]
        assert numbers == list(range(len(numbers))), "no trial duplicated or lost"
        assert sum(t.state == TrialState.COMPLETE for t in resumed.trials) == 8
        assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in resumed.trials)
    resumed_ga = optuna.load_study(study_name="tiny/ga/seed0", storage=url)
    # Trials finished before the signal are kept unchanged.
    for trial in resumed_ga.trials:
        if trial.number in before and before[trial.number][0] == TrialState.COMPLETE:
            assert (trial.state, trial.values, trial.params) == before[trial.number]
    # The GA continued from the stored population: children bred after the restart
    # have parents among the trials finished before it.
    finished_before = {n for n, (s, _, _) in before.items() if s == TrialState.COMPLETE}
    after = [t for t in resumed_ga.trials if t.number not in before]
    assert after
    bred_after = [t for t in after if t.user_attrs["evohpo"]["origin"] == "bred"]
    assert bred_after
    assert any(set(t.user_attrs["evohpo"]["parents"]) & finished_before for t in bred_after)


def test_export_of_residual_dense_layers_loads_and_says_so(
    tmp_path: Path, write_study: WriteStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    from evohpo.evolution.describe import describe_genome

    # Only residual layers: whatever trial is best, its model has skips to export.
    space = {"dense_residual": [True], "max_layers": 2, "units": [4, 16]}
    path = write_study(tmp_path, TINY, filename="tiny.toml", space=space)
    assert main(["run", str(path), "--sampler", "ga", "--n-trials", "2"]) == 0
    out_dir = tmp_path / "exported"
    assert main(["export", str(path), "--sampler", "ga", "--output", str(out_dir)]) == 0
    genome = Genome.from_json((out_dir / "genome.json").read_text())
    assert all(layer.residual for layer in genome.layers)
    metadata = json.loads((out_dir / "metadata.json").read_text())
    state = torch.load(out_dir / "model.pt", weights_only=True)
    assert "hidden0.projection" in state or genome.layers[0].units == metadata["n_features"]
    model = build_model(genome, metadata["n_features"], metadata["n_classes"])
    model.load_state_dict(state)
    assert " res " in describe_genome(genome)
