"""Training/validation splits of a data set, each standardised with its own training rows.

A stratified holdout split, stratified k-fold, or the caller's own
validation set; features are standardised (mean and standard deviation) with
statistics of each training split only, so no validation row leaks into
training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from evohpo._random import derive_seed
from evohpo._validation import check_int, raise_invalid
from evohpo.exceptions import InvalidParameterError

__all__ = ["Split", "Standardizer", "make_splits", "stratified_holdout", "stratified_kfold"]

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


@dataclass(frozen=True)
class Split:
    """One training/validation pair, standardised with its training statistics."""

    X_train: npt.NDArray[np.float32]
    y_train: IntArray
    X_val: npt.NDArray[np.float32]
    y_val: IntArray


def make_splits(
    X: FloatArray,
    y: IntArray,
    *,
    seed: int,
    validation_fraction: float,
    cv: int | None,
    validation_data: tuple[FloatArray, IntArray] | None,
) -> list[Split]:
    """The standardised training/validation pairs a trial trains on.

    ``validation_data`` when given (one pair: all of ``X`` trains), else a
    stratified k-fold split when ``cv`` is given, else a stratified holdout
    of ``validation_fraction``; the split is drawn from ``seed``.
    """
    if validation_data is not None:
        pairs = [(X, y, *validation_data)]
    else:
        rng = np.random.default_rng(derive_seed(seed, "split"))
        if cv is None:
            train, val = stratified_holdout(y, validation_fraction, rng)
            index_pairs = [(train, val)]
        else:
            index_pairs = stratified_kfold(y, cv, rng)
        pairs = [(X[train], y[train], X[val], y[val]) for train, val in index_pairs]
    splits = []
    for X_train, y_train, X_val, y_val in pairs:
        scaler = Standardizer.fit(X_train)
        splits.append(Split(scaler.transform(X_train), y_train, scaler.transform(X_val), y_val))
    return splits


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
