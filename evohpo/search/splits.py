"""Training/validation splits of a data set, each standardised with its own training rows.

A stratified holdout split, stratified k-fold, or the caller's own
validation set; features are standardised (mean and standard deviation) with
statistics of each training split only, so no validation row leaks into
training. Regression targets have no classes to stratify: their rows are
shuffled and cut (holdout or k-fold), and the targets standardised like the
features, with the training rows' statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from evohpo._random import derive_seed
from evohpo._validation import check_int, raise_invalid
from evohpo.exceptions import InvalidParameterError

__all__ = [
    "Split",
    "Standardizer",
    "make_splits",
    "shuffled_holdout",
    "shuffled_kfold",
    "stratified_holdout",
    "stratified_kfold",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Standardizer:
    """Per-feature mean and scale; constant features keep a scale of 1.

    Examples
    --------
    >>> import numpy as np
    >>> s = Standardizer.fit(np.array([[0.0, 5.0], [2.0, 5.0]]))
    >>> s.transform(np.array([[1.0, 5.0]])).tolist()
    [[0.0, 0.0]]
    """

    mean: FloatArray
    scale: FloatArray

    @classmethod
    def fit(cls, X: npt.ArrayLike) -> Standardizer:
        """Statistics of the rows of ``X`` (computed in float64).

        Any finite data work, values near the float64 limit included: the
        statistics are computed on the data divided by each feature's largest
        magnitude, then scaled back.
        """
        data = np.asarray(X, dtype=np.float64)
        peak = np.abs(data).max(axis=0)
        peak[peak == 0.0] = 1.0
        mean = (data / peak).mean(axis=0) * peak
        scale = (data / peak).std(axis=0) * peak
        # Constant (or numerically constant) features: centre them, do not blow them up.
        tiny = scale <= np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
        scale[tiny] = 1.0
        return cls(mean=mean, scale=scale)

    def transform(self, X: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """``(X - mean) / scale`` as a C-contiguous float32 array (a new array).

        Values beyond float32's range (rows far outside the fitted data) are
        clipped to it, so the result is finite wherever ``X`` is.
        """
        data = np.asarray(X, dtype=np.float64)
        # Halves first: the difference of two finite float64 values can overflow.
        with np.errstate(over="ignore"):
            out = (data * 0.5 - self.mean * 0.5) / self.scale * 2.0
        limit = float(np.finfo(np.float32).max)
        np.clip(out, -limit, limit, out=out)
        return np.ascontiguousarray(out, dtype=np.float32)

    def inverse_transform(self, Z: npt.ArrayLike) -> FloatArray:
        """``Z * scale + mean`` in float64: standardised values mapped back."""
        data = np.asarray(Z, dtype=np.float64)
        with np.errstate(over="ignore"):
            out: FloatArray = data * self.scale + self.mean
        return out


@dataclass(frozen=True)
class Split:
    """One training/validation pair, standardised with its training statistics.

    Regression splits also hold the statistics of the training targets
    (``target``): ``y_train`` and ``y_val`` are standardised with them, and
    ``y_val_raw`` holds the validation targets as given, for scorers.
    """

    X_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[Any]
    X_val: npt.NDArray[np.float32]
    y_val: npt.NDArray[Any]
    target: Standardizer | None = None
    y_val_raw: FloatArray | None = None


def make_splits(
    X: FloatArray,
    y: npt.NDArray[Any],
    *,
    seed: int,
    validation_fraction: float,
    cv: int | None,
    validation_data: tuple[FloatArray, npt.NDArray[Any]] | None,
    regression: bool = False,
) -> list[Split]:
    """The standardised training/validation pairs a trial trains on.

    ``validation_data`` when given (one pair: all of ``X`` trains), else a
    stratified k-fold split when ``cv`` is given, else a stratified holdout
    of ``validation_fraction``; the split is drawn from ``seed``. With
    ``regression`` (``y`` a float matrix, one column per target) the rows are
    shuffled instead of stratified, and the targets standardised too.
    """
    if validation_data is not None:
        pairs = [(X, y, *validation_data)]
    else:
        rng = np.random.default_rng(derive_seed(seed, "split"))
        if regression:
            if cv is None:
                index_pairs = [shuffled_holdout(len(y), validation_fraction, rng)]
            else:
                index_pairs = shuffled_kfold(len(y), cv, rng)
        elif cv is None:
            train, val = stratified_holdout(y, validation_fraction, rng)
            index_pairs = [(train, val)]
        else:
            index_pairs = stratified_kfold(y, cv, rng)
        pairs = [(X[train], y[train], X[val], y[val]) for train, val in index_pairs]
    splits = []
    for X_train, y_train, X_val, y_val in pairs:
        scaler = Standardizer.fit(X_train)
        X_train_scaled, X_val_scaled = scaler.transform(X_train), scaler.transform(X_val)
        if not regression:
            splits.append(Split(X_train_scaled, y_train, X_val_scaled, y_val))
            continue
        target = Standardizer.fit(y_train)
        splits.append(
            Split(
                X_train_scaled,
                target.transform(y_train),
                X_val_scaled,
                target.transform(y_val),
                target=target,
                y_val_raw=np.asarray(y_val, dtype=np.float64),
            )
        )
    return splits


def shuffled_holdout(
    n_rows: int, fraction: float, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Training and validation row indices: ``fraction`` of the rows, shuffled, validate.

    At least one row validates and one trains.

    Examples
    --------
    >>> import numpy as np
    >>> train, val = shuffled_holdout(10, 0.2, np.random.default_rng(0))
    >>> len(train), len(val)
    (8, 2)
    """
    if n_rows < 2:
        raise InvalidParameterError(
            f"A validation split needs at least 2 samples; got {n_rows} sample."
        )
    order = rng.permutation(n_rows)
    n_val = min(max(1, round(fraction * n_rows)), n_rows - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def shuffled_kfold(
    n_rows: int, n_folds: int, rng: np.random.Generator
) -> list[tuple[IntArray, IntArray]]:
    """``n_folds`` (train, validation) index pairs of shuffled rows; fold sizes
    differ by at most one."""
    n_folds = check_int(n_folds, "n_folds", "shuffled_kfold", low=2)
    if n_folds > n_rows:
        expected = f"an int in the range [2, {n_rows}] (the number of samples)"
        raise_invalid("n_folds", "shuffled_kfold", expected, n_folds)
    fold_of = np.empty(n_rows, dtype=np.int64)
    fold_of[rng.permutation(n_rows)] = np.arange(n_rows) % n_folds
    return [(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(n_folds)]


def stratified_holdout(
    y: IntArray, fraction: float, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Training and validation row indices, ``fraction`` of every class validating.

    Every class keeps at least one training row, and every class with two rows
    or more has at least one validation row; a class with a single row has
    none in validation. At least one row validates.

    Examples
    --------
    >>> import numpy as np
    >>> train, val = stratified_holdout(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), 0.5,
    ...                                 np.random.default_rng(0))
    >>> len(train), len(val)
    (5, 5)
    """
    train: list[IntArray] = []
    val: list[IntArray] = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        rng.shuffle(rows)
        # Every class that can spare a row validates: scorers such as
        # neg_log_loss need every class among the validation labels.
        n_val = min(max(1, round(fraction * len(rows))), len(rows) - 1)
        val.append(rows[:n_val])
        train.append(rows[n_val:])
    if sum(len(v) for v in val) == 0:
        largest = max(range(len(train)), key=lambda i: len(train[i]))
        if len(train[largest]) < 2:
            raise InvalidParameterError(
                f"A validation split needs a class with at least 2 samples; got {len(y)} "
                "samples, one of each class."
            )
        val[largest], train[largest] = train[largest][:1], train[largest][1:]
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def stratified_kfold(
    y: IntArray, n_folds: int, rng: np.random.Generator
) -> list[tuple[IntArray, IntArray]]:
    """``n_folds`` (train, validation) index pairs; every class spread over the folds.

    Rows are dealt to the folds in turn, class after class in a shuffled order,
    so fold sizes differ by at most one and a class with fewer rows than folds
    is missing from some validation folds (no warning, no error).
    """
    expected = f"an int in the range [2, {len(y)}] (the number of samples)"
    n_folds = check_int(n_folds, "n_folds", "stratified_kfold", low=2)
    if n_folds > len(y):
        raise_invalid("n_folds", "stratified_kfold", expected, n_folds)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    fold_of = np.empty(len(y), dtype=np.int64)
    fold_of[order] = np.arange(len(y)) % n_folds
    return [(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(n_folds)]
