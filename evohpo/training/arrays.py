"""The one check of feature matrices and label vectors, for the trainer and the objective.

Both functions return a fresh C-contiguous array of a fixed dtype or raise
:class:`~evohpo.exceptions.InvalidParameterError` with the package's message
template, describing the array (its dtype, shape or values) instead of
printing it.

Examples
--------
>>> check_features([[1, 2], [3, 4]], "X", "fit").dtype
dtype('float32')
>>> check_labels([0, 2, 1], "y", "fit", n_rows=3, n_classes=2)
Traceback (most recent call last):
...
evohpo.exceptions.InvalidParameterError: The 'y' parameter of fit must be class indices in ...
"""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from evohpo._validation import raise_invalid
from evohpo.exceptions import InvalidParameterError

__all__ = ["check_features", "check_labels"]

_NUMBERS = "a 2-D array of numbers"


def check_features(
    X: Any,
    name: str,
    owner: str,
    *,
    n_features: int | None = None,
    dtype: type[np.floating[Any]] = np.float32,
) -> npt.NDArray[Any]:
    """``X`` as a C-contiguous matrix of ``dtype``, finite in that dtype, or raise.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Booleans, integers or floats (an object array of numbers too), at
        least one row and one column.
    name, owner : str
        The parameter and its function or class, named in the error.
    n_features : int, optional
        The number of columns ``X`` must have.
    dtype : numpy floating type, default=numpy.float32
        The dtype of the result; values beyond its range are refused as not
        finite.
    """
    try:
        array = np.asarray(X)
    except (TypeError, ValueError, RuntimeError):
        raise_invalid(name, owner, _NUMBERS, X)
    if array.dtype.kind == "O":
        try:
            array = array.astype(dtype)
        except (TypeError, ValueError):
            _raise(name, owner, _NUMBERS, f"dtype {array.dtype}")
    if array.dtype.kind not in "biuf":
        _raise(name, owner, _NUMBERS, f"dtype {array.dtype}")
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        _raise(name, owner, "a non-empty 2-D array", f"shape {array.shape}")
    if n_features is not None and array.shape[1] != n_features:
        _raise(name, owner, f"an array with {n_features} columns", f"shape {array.shape}")
    with np.errstate(over="ignore"):
        result = np.ascontiguousarray(array, dtype=dtype)
    if not np.isfinite(result).all():
        expected = f"finite (in {np.dtype(dtype).name})"
        _raise(name, owner, expected, "an array with NaN or infinite values")
    return result


def check_labels(
    y: Any, name: str, owner: str, *, n_rows: int, n_classes: int | None = None
) -> npt.NDArray[np.int64]:
    """``y`` as an int64 vector of ``n_rows`` class indices, or raise.

    Parameters
    ----------
    y : array-like of shape (n_rows,)
        Integer class indices, ``>= 0``.
    name, owner : str
        The parameter and its function or class, named in the error.
    n_rows : int
        The length ``y`` must have (the rows of its features).
    n_classes : int, optional
        When given, every index must be below it.
    """
    try:
        array = np.asarray(y)
    except (TypeError, ValueError, RuntimeError):
        raise_invalid(name, owner, "a 1-D array of class indices", y)
    if array.dtype.kind not in "iu":
        _raise(name, owner, "a 1-D array of integer class indices", f"dtype {array.dtype}")
    if array.shape != (n_rows,):
        _raise(name, owner, f"a 1-D array of {n_rows} labels", f"shape {array.shape}")
    if array.size == 0:
        return array.astype(np.int64)
    low, high = int(array.min()), int(array.max())
    if low < 0 or (n_classes is not None and high >= n_classes):
        expected = "class indices >= 0"
        if n_classes is not None:
            expected = f"class indices in [0, {n_classes - 1}] (n_classes={n_classes})"
        _raise(name, owner, expected, f"values in [{low}, {high}]")
    return np.ascontiguousarray(array, dtype=np.int64)


def _raise(name: str, owner: str, expected: str, got: str) -> NoReturn:
    # The package's message template, with a description instead of the array's repr.
    raise InvalidParameterError(
        f"The {name!r} parameter of {owner} must be {expected}. Got {got} instead."
    )
