"""A CSV file of the user's own as a study file's data (``dataset = "csv"``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from sklearn.datasets import load_diabetes, load_wine

from evohpo.cli import main
from evohpo.exceptions import InvalidParameterError, StudyConfigError
from evohpo.studies.config import load_study_config
from evohpo.studies.data import prepare_data
from evohpo.training.tables import load_csv

WriteStudy = Callable[..., Path]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- load_csv -----------------------------------------------------------------------------------
def test_classes_are_the_target_texts_and_the_rest_are_features(tmp_path: Path) -> None:
    csv = write(tmp_path / "t.csv", "a, b ,kind\n1,2.5,dog\n3, 4 ,cat\n5,-6e-1,dog\n")
    data = load_csv(csv)
    assert data.class_names == ["cat", "dog"]
    assert data.y.tolist() == [1, 0, 1]
    assert data.X.dtype == np.float32
    np.testing.assert_allclose(data.X, [[1, 2.5], [3, 4], [5, -0.6]], rtol=1e-6)
    assert data.feature_names == ("a", "b")
    assert data.task == "classification"


def test_numeric_classes_in_numeric_order_keeping_their_spelling(tmp_path: Path) -> None:
    csv = write(tmp_path / "t.csv", "x,label\n1,10\n2,2\n3,07\n4,10\n")
    data = load_csv(csv)
    assert data.class_names == ["2", "07", "10"]
    assert data.y.tolist() == [2, 0, 1, 2]


def test_a_class_spelled_like_a_missing_value_is_kept_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv = write(tmp_path / "t.csv", "x,label\n1,A\n2,NA\n3,B\n4,NA\n5,None\n")
    with caplog.at_level("WARNING", logger="evohpo"):
        data = load_csv(csv)
    assert "NA" in data.class_names
    assert "'NA' in 2 row(s), read as a class; if these are missing values" in caplog.text
    assert "'None'" not in caplog.text  # a plausible class name ("no disease")


def test_many_numeric_classes_in_few_rows_suggest_regression(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    rows = "\n".join(f"{i},{i * 1.5 + 0.25}" for i in range(40))
    write(tmp_path / "prices.csv", "size,price\n" + rows + "\n")
    study = write_study(tmp_path, CSV_STUDY, data={"path": "prices.csv", "target": None})
    with pytest.raises(StudyConfigError, match=r"40 classes in 40 rows.*task = \"regression\""):
        prepare_data(load_study_config(study))


def test_target_features_and_delimiter_choose_the_columns(tmp_path: Path) -> None:
    csv = write(tmp_path / "t.csv", "id;label;f1;note;f2\n7;a;1;x;true\n8;b;2;y;FALSE\n")
    data = load_csv(csv, target="label", features=["f2", "f1"], delimiter=";")
    assert data.feature_names == ("f2", "f1")
    assert data.X.tolist() == [[1.0, 1.0], [0.0, 2.0]]
    assert data.class_names == ["a", "b"]


def test_regression_targets_are_numbers(tmp_path: Path) -> None:
    csv = write(tmp_path / "t.csv", "x,y\n1,0.5\n2,-1.25\n3,1e3\n")
    data = load_csv(csv, task="regression")
    assert data.task == "regression"
    assert data.class_names == []
    assert data.y.dtype == np.float64
    assert data.y.tolist() == [0.5, -1.25, 1000.0]


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("a,b,y\n1,x,p\n2,3,q\n", {}, r"features must be numbers.*'b': 'x'"),
        ("a,b,y\n1,,p\n2,3,q\n", {}, r"missing values in 'b' \(1 cell\(s\)\)"),
        ("a,b,y\n1,NaN,p\n2,3,q\n", {}, r"missing values in 'b'"),
        ("a,b,y\n1,inf,p\n2,3,q\n", {}, r"features must be numbers.*'b': 'inf'"),
        ("a,y\n1,p\n2,p\n", {}, r"one class only \('p'\)"),
        ("a,y\n1,p\n2,\n", {}, r"target column 'y' is empty in 1 row\(s\)"),
        ("a,y\n1,p\n", {}, r"holds 1 row\(s\)"),
        ("a;y\n1;p\n2;q\n", {}, r"has 1 column\(s\).*delimiter"),
        ("a,y\n1,p\n2,q\n", {"target": "Y"}, r"'target' must be a column.*Did you mean 'y'\?"),
        ("a,y\n1,p\n2,q\n", {"features": ["b"]}, r"'features' names \['b'\]"),
        ("a,y\n1,p\n2,q\n", {"features": ["a", "y"]}, r"holds the target column 'y'"),
        ("a,y\n1,p\n2,q\n", {"features": "a"}, r"'features' must be a non-empty list"),
        ("a,y\n1,p\n2,q\n", {"task": "regression"}, r"numeric target.*'p', 'q' in 2 row"),
        ("a,y\n1,p\n2,q\n", {"delimiter": ";;"}, r"'delimiter' must be one character"),
        ("a,a,y\n1,2,p\n2,3,q\n", {}, r"names \['a'\] more than once"),
        (",a,y\n0,1,p\n1,2,q\n", {}, r"column\(s\) \[1\] have no name.*to_csv"),
        ("a,y,\n1,p,0\n2,q,1\n", {"features": ["a"]}, r"column\(s\) \[3\] have no name"),
    ],
)
def test_bad_tables_are_named(
    tmp_path: Path, text: str, kwargs: dict[str, Any], message: str
) -> None:
    csv = write(tmp_path / "t.csv", text)
    with pytest.raises(InvalidParameterError, match=message):
        load_csv(csv, **kwargs)


def test_an_unnamed_column_is_left_out_when_the_columns_are_named(tmp_path: Path) -> None:
    csv = write(tmp_path / "t.csv", ",a,y\n0,1,p\n1,2,q\n")
    data = load_csv(csv, features=["a"])
    assert data.X.tolist() == [[1.0], [2.0]]
    assert data.class_names == ["p", "q"]


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="cannot be read"):
        load_csv(tmp_path / "none.csv")


# -- study files --------------------------------------------------------------------------------
@pytest.fixture
def wine_csv(tmp_path: Path) -> Path:
    frame = load_wine(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    path = tmp_path / "data" / "wine.csv"
    path.parent.mkdir()
    frame.to_csv(path, index=False)
    return path


CSV_STUDY: dict[str, Any] = {
    "name": "mine",
    "data": {"dataset": "csv", "path": "data/wine.csv", "target": "target"},
    "train": {"device": "cpu", "max_epochs": 3},
    "budget": {"n_trials": 3},
}


def test_a_study_file_reads_the_csv_next_to_it(
    tmp_path: Path, wine_csv: Path, write_study: WriteStudy
) -> None:
    config = load_study_config(write_study(tmp_path, CSV_STUDY))
    data = prepare_data(config)
    assert data.class_names == ["barbera", "barolo", "grignolino"]
    assert data.X_train.shape[1] == 13
    assert data.feature_names is not None
    assert data.feature_names[0] == "alcohol"
    rows = len(data.y_train) + len(data.y_val) + len(data.y_test)
    assert rows == 178
    # the splits are stratified: every class in every part
    for part in (data.y_train, data.y_val, data.y_test):
        assert set(part.tolist()) == {0, 1, 2}


def test_run_and_export_on_a_csv(
    tmp_path: Path,
    wine_csv: Path,
    write_study: WriteStudy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    study = write_study(tmp_path, CSV_STUDY)
    assert main(["run", str(study), "--sampler", "ga"]) == 0
    loaded = optuna.load_study(
        study_name="mine/ga/seed0", storage=f"sqlite:///{tmp_path}/evohpo.db"
    )
    assert len([t for t in loaded.trials if t.state.is_finished()]) == 3
    out = tmp_path / "model"
    assert main(["export", str(study), "--output", str(out)]) == 0
    assert json.loads((out / "classes.json").read_text()) == ["barbera", "barolo", "grignolino"]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["dataset"] == "data/wine.csv"
    assert metadata["features"] == [c for c in load_wine().feature_names]
    assert metadata["n_features"] == 13


def test_another_target_is_another_study_and_nothing_stored_changes(
    tmp_path: Path, wine_csv: Path, write_study: WriteStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_study(tmp_path, CSV_STUDY)
    assert main(["run", str(study), "--sampler", "tpe"]) == 0
    url = f"sqlite:///{tmp_path}/evohpo.db"
    before = [t.params for t in optuna.load_study(study_name="mine/tpe/seed0", storage=url).trials]
    write_study(tmp_path, CSV_STUDY, data={"features": ["alcohol", "hue"]})
    capsys.readouterr()
    assert main(["run", str(study), "--sampler", "tpe"]) == 1
    assert "different settings (data)" in capsys.readouterr().err
    after = [t.params for t in optuna.load_study(study_name="mine/tpe/seed0", storage=url).trials]
    assert after == before


def test_edited_rows_are_refused_and_an_older_study_resumes(
    tmp_path: Path, wine_csv: Path, write_study: WriteStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_study(tmp_path, CSV_STUDY, budget={"n_trials": 2})
    assert main(["run", str(study), "--sampler", "tpe"]) == 0
    url = f"sqlite:///{tmp_path}/evohpo.db"
    lines = wine_csv.read_text().splitlines(keepends=True)
    wine_csv.write_text("".join(lines[:1] + lines[2:]))  # one row fewer
    capsys.readouterr()
    assert main(["run", str(study), "--sampler", "tpe", "--n-trials", "3"]) == 1
    err = capsys.readouterr().err
    assert "different settings (data_digest)" in err
    stored = optuna.load_study(study_name="mine/tpe/seed0", storage=url)
    assert len(stored.trials) == 2
    # A study stored before the digest was recorded resumes on the file as it is.
    identity = dict(stored.user_attrs["evohpo.study"])
    del identity["data_digest"]
    stored.set_user_attr("evohpo.study", identity)
    assert main(["run", str(study), "--sampler", "tpe", "--n-trials", "3"]) == 0
    assert len(optuna.load_study(study_name="mine/tpe/seed0", storage=url).trials) == 3


def test_a_csv_regression_study(tmp_path: Path, write_study: WriteStudy) -> None:
    frame = load_diabetes(as_frame=True).frame
    frame.to_csv(tmp_path / "diabetes.tsv", sep="\t", index=False)
    study = write_study(
        tmp_path,
        CSV_STUDY,
        task="regression",
        data={"path": "diabetes.tsv", "target": None, "delimiter": "\t"},
    )
    config = load_study_config(study)
    assert config.task == "regression"
    data = prepare_data(config)
    assert data.task == "regression"
    assert data.class_names == []
    assert data.X_train.shape[1] == 10
    assert main(["run", str(study), "--sampler", "random"]) == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"path": None}, r"\[data\] 'path' must be the CSV file"),
        ({"path": "nowhere.csv"}, r"'path' = 'nowhere.csv': there is no file"),
        ({"target": "taget"}, r"\[data\]: 'target' must be a column.*Did you mean 'target'\?"),
        ({"features": []}, r"'features' must be a non-empty list"),
        ({"delimiter": 1}, r"'delimiter' must be one character"),
    ],
)
def test_bad_csv_settings_are_named(
    tmp_path: Path, wine_csv: Path, write_study: WriteStudy, data: dict[str, Any], message: str
) -> None:
    study = write_study(tmp_path, CSV_STUDY, data=data)
    with pytest.raises(StudyConfigError, match=message):
        prepare_data(load_study_config(study))


def test_csv_settings_belong_to_csv_data(tmp_path: Path, write_study: WriteStudy) -> None:
    study = write_study(tmp_path, {"data": {"dataset": "iris", "path": "x.csv"}})
    with pytest.raises(StudyConfigError, match=r"'path' is a setting of a CSV file only"):
        load_study_config(study)
