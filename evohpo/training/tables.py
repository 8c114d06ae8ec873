"""A table of your own as a data set: a CSV file with a header row.

Every row is a sample. One column holds the target (``target``: the last
column by default), the others the features (``features``: every other column
by default). For classification the target's distinct values are the classes,
named by their text and ordered as numbers when all of them are numbers
(``2 < 10``), else as text; for regression the target must be numeric.

Features must be numeric (booleans count as 0 and 1) and complete: a network
cannot train on text or on missing cells, and neither is guessed at here. A
message names the columns at fault and how many cells; encode or impute them
first, or leave such columns out with ``features``.
"""

from __future__ import annotations

import csv
import difflib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evohpo.exceptions import InvalidParameterError
from evohpo.training.datasets import Dataset
from evohpo.training.task import TASKS, TaskName

__all__ = ["load_csv"]

_logger = logging.getLogger("evohpo")

#: Cells that mean "no value" in a feature column (so does "none" and an empty cell).
_MISSING_MARKERS: tuple[str, ...] = ("nan", "na", "n/a", "null")


def load_csv(
    path: str | os.PathLike[str],
    *,
    target: str | None = None,
    features: Sequence[str] | None = None,
    delimiter: str = ",",
    task: TaskName = "classification",
) -> Dataset:
    """Read a CSV file with a header row into a :class:`~evohpo.training.datasets.Dataset`.

    Parameters
    ----------
    path : path
        The file.
    target : str, optional
        The column to predict; the last column by default.
    features : sequence of str, optional
        The columns to predict it from; every column but the target by default.
    delimiter : str
        The character between cells (``","``; ``";"`` or ``"\\t"`` for other files).
    task : {"classification", "regression"}
        Classes or numbers.

    Raises
    ------
    InvalidParameterError
        If the file cannot be read, a named column is missing, the target is
        also a feature, a feature is not numeric or a cell is missing, a
        regression target is not numeric, or fewer than two classes or rows
        are left. The message names the column(s).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "t.csv").write_text("a,b,label\\n1,2,x\\n3,4,y\\n5,6,x\\n")
    >>> data = load_csv(folder / "t.csv")
    >>> data.X.shape, data.y.tolist(), data.class_names
    ((3, 2), [0, 1, 0], ['x', 'y'])
    """
    import pandas as pd

    where = f"CSV file {os.fspath(path)!r}"
    if task not in TASKS:
        raise InvalidParameterError(f"'task' must be one of {list(TASKS)}, got {task!r}.")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise InvalidParameterError(
            f"'delimiter' must be one character (',', ';', '\\t', ...), got {delimiter!r}."
        )
    try:
        # Cells stay text until the columns are chosen: the target's classes keep
        # their spelling ("01" stays "01"), and a feature's type is checked below.
        table = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InvalidParameterError(f"{where} cannot be read: {exc}") from exc
    header = _header(path, delimiter)
    if len(header) != len(set(header)):  # pandas would rename the second one "name.1"
        twice = sorted({c for c in header if header.count(c) > 1})
        raise InvalidParameterError(f"{where}: the header names {twice} more than once.")
    table.columns = columns = [str(c).strip() for c in table.columns]
    unnamed = [i + 1 for i, name in enumerate(header) if not name]
    if unnamed and (features is None or (target is None and unnamed[-1] == len(header))):
        raise InvalidParameterError(
            f"{where}: column(s) {unnamed} have no name in the header (an index written by "
            "pandas' to_csv?). Name them in the header, or name the columns to use in "
            "'target' and 'features'."
        )
    target = _target_column(target, columns, where)
    features = _feature_columns(features, target, columns, where)
    if len(table) < 2:
        raise InvalidParameterError(
            f"{where} holds {len(table)} row(s) below its header; a search needs more."
        )
    X = _numeric_features(table, features, where)
    labels = table[target].str.strip()
    missing = int((labels == "").sum())
    if missing:
        raise InvalidParameterError(
            f"{where}: the target column {target!r} is empty in {missing} row(s) "
            f"(the first is data row {int(np.flatnonzero(labels == '')[0]) + 1}). Drop "
            "those rows or fill them in."
        )
    name = Path(path).name
    described = f"{name}: {len(features)} feature(s), target {target!r}"
    if task == "regression":
        y = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(y)
        if bad.any():
            raise InvalidParameterError(
                f"{where}: regression needs a numeric target, but column {target!r} holds "
                f"{_examples(labels[bad])} in {int(bad.sum())} row(s)."
            )
        return Dataset(
            name=name,
            X=X,
            y=y,
            class_names=[],
            description=described,
            task="regression",
            feature_names=tuple(features),
        )
    classes = _ordered_classes(labels.unique().tolist())
    markers = [c for c in classes if c.lower() in _MISSING_MARKERS]
    if markers:
        # Features refuse these as missing; a class may really be called so: say it.
        counts = ", ".join(f"{c!r} in {int((labels == c).sum())} row(s)" for c in markers)
        _logger.warning(
            "%s: the target column %r holds %s, read as a class; if these are missing "
            "values, drop those rows.",
            where,
            target,
            counts,
        )
    if len(classes) < 2:
        raise InvalidParameterError(
            f"{where}: the target column {target!r} holds one class only ({classes[0]!r}); "
            "classification needs at least two."
        )
    index = {c: i for i, c in enumerate(classes)}
    y = labels.map(index).to_numpy(dtype=np.int64)
    return Dataset(
        name=name,
        X=X,
        y=y,
        class_names=classes,
        description=described,
        feature_names=tuple(features),
    )


def _header(path: str | os.PathLike[str], delimiter: str) -> list[str]:
    """The header row's names, as written."""
    with open(path, newline="", encoding="utf-8-sig") as file:
        return [name.strip() for name in next(csv.reader(file, delimiter=delimiter), [])]


def _target_column(target: Any, columns: list[str], where: str) -> str:
    if target is None:
        if len(columns) < 2:
            raise InvalidParameterError(
                f"{where} has {len(columns)} column(s); it needs a target and at least one "
                "feature (is 'delimiter' right?)."
            )
        return columns[-1]
    if not isinstance(target, str) or target not in columns:
        raise InvalidParameterError(
            f"'target' must be a column of {where}, one of {columns}; got {target!r}."
            + _did_you_mean(target, columns)
        )
    return target


def _feature_columns(features: Any, target: str, columns: list[str], where: str) -> list[str]:
    if features is None:
        return [c for c in columns if c != target]
    if (
        isinstance(features, str)
        or not isinstance(features, Sequence)
        or not features
        or not all(isinstance(c, str) for c in features)
    ):
        raise InvalidParameterError(
            f"'features' must be a non-empty list of column names of {where}; got {features!r}."
        )
    unknown = [c for c in features if c not in columns]
    if unknown:
        raise InvalidParameterError(
            f"'features' names {unknown}, which {where} does not have; its columns are "
            f"{columns}." + _did_you_mean(unknown[0], columns)
        )
    if target in features:
        raise InvalidParameterError(
            f"'features' holds the target column {target!r}: a network would see the answer."
        )
    if len(set(features)) != len(features):
        raise InvalidParameterError(f"'features' names a column twice: {list(features)}.")
    return list(features)


def _numeric_features(table: Any, features: list[str], where: str) -> np.ndarray:
    """The feature columns as float32; text and missing cells are errors naming the columns."""
    import pandas as pd

    values = np.empty((len(table), len(features)), dtype=np.float32)
    empty: dict[str, int] = {}
    text: dict[str, str] = {}
    for j, column in enumerate(features):
        cells = table[column].str.strip()
        lowered = cells.str.lower()
        cells = cells.mask(lowered == "true", "1").mask(lowered == "false", "0")
        blank = (cells == "") | lowered.isin((*_MISSING_MARKERS, "none"))
        numbers = pd.to_numeric(cells.mask(blank, "nan"), errors="coerce")
        wrong = numbers.isna() & ~blank
        finite = np.isfinite(numbers.to_numpy(dtype=np.float64)) | numbers.isna()
        wrong |= ~finite
        if wrong.any():
            text[column] = _examples(cells[wrong])
        elif blank.any():
            empty[column] = int(blank.sum())
        else:
            values[:, j] = numbers.to_numpy(dtype=np.float32)
    if text:
        listed = "; ".join(f"{c!r}: {e}" for c, e in text.items())
        raise InvalidParameterError(
            f"{where}: features must be numbers, but {len(text)} column(s) are not ({listed}). "
            "Encode them as numbers first, or leave them out with 'features'."
        )
    if empty:
        listed = ", ".join(f"{c!r} ({n} cell(s))" for c, n in empty.items())
        raise InvalidParameterError(
            f"{where}: missing values in {listed}. Fill them in or drop those rows first, or "
            "leave the column(s) out with 'features'."
        )
    return values


def _ordered_classes(values: list[str]) -> list[str]:
    """Numeric labels in numeric order (``2`` before ``10``), others in text order."""
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return sorted(values)
    if not all(np.isfinite(numbers)):  # "nan" or "inf" as a class: no numeric order
        return sorted(values)
    return [v for _, v in sorted(zip(numbers, values, strict=True))]


def _did_you_mean(name: Any, columns: list[str]) -> str:
    by_lower = {c.lower(): c for c in columns}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1)
    return f" Did you mean {by_lower[close[0]]!r}?" if close else ""


def _examples(cells: Any) -> str:
    """A few distinct offending cells, quoted."""
    distinct = list(dict.fromkeys(cells.tolist()))
    shown = ", ".join(repr(v) for v in distinct[:3])
    return shown + (", ..." if len(distinct) > 3 else "")
