"""One message template for every parameter check.

Messages follow scikit-learn's shape: they name the parameter, say what it
accepts and what was received, e.g. ``The 'dropout' parameter of SearchSpace
must be a float in [0.0, 1.0). Got 1.5 instead.``
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from evohpo.exceptions import InvalidParameterError

__all__ = [
    "check_choice",
    "check_float",
    "check_input_shape",
    "check_int",
    "check_probability",
    "check_rng",
    "raise_invalid",
]


def raise_invalid(
    name: str,
    owner: str,
    expected: str,
    got: Any,
    error: type[InvalidParameterError] = InvalidParameterError,
) -> NoReturn:
    """Raise ``error`` with the one message template of the package."""
    raise error(f"The {name!r} parameter of {owner} must be {expected}. Got {got!r} instead.")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(
    value: Any,
    name: str,
    owner: str,
    *,
    low: int | None = None,
    high: int | None = None,
    error: type[InvalidParameterError] = InvalidParameterError,
) -> int:
    """Return ``value`` as an int within ``[low, high]`` or raise."""
    expected = "an int" + _range_text(low, high, closed_high=True)
    is_int = isinstance(value, int) or (_is_numpy_number(value) and value.dtype.kind in "iu")
    if isinstance(value, bool) or not is_int:
        raise_invalid(name, owner, expected, value, error)
    result = int(value)
    if (low is not None and result < low) or (high is not None and result > high):
        raise_invalid(name, owner, expected, value, error)
    return result


def check_float(
    value: Any,
    name: str,
    owner: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    error: type[InvalidParameterError] = InvalidParameterError,
) -> float:
    """Return ``value`` as a finite float within the given bounds or raise."""
    expected = "a float" + _range_text(low, high, low_open=low_open, closed_high=not high_open)
    if not _is_number(value) and not _is_numpy_number(value):
        raise_invalid(name, owner, expected, value, error)
    result = float(value)
    if not math.isfinite(result):
        raise_invalid(name, owner, expected, value, error)
    if low is not None and (result < low or (low_open and result == low)):
        raise_invalid(name, owner, expected, value, error)
    if high is not None and (result > high or (high_open and result == high)):
        raise_invalid(name, owner, expected, value, error)
    return result


def check_probability(value: Any, name: str, owner: str) -> float:
    """Return ``value`` as a probability in ``[0, 1]`` or raise."""
    return check_float(value, name, owner, low=0.0, high=1.0)


def check_rng(value: Any, owner: str) -> random.Random:
    """Return ``value`` if it is a ``random.Random`` (the ``rng`` parameter) or raise."""
    if not isinstance(value, random.Random):
        raise_invalid("rng", owner, "a random.Random", value)
    return value


def check_choice(
    value: Any,
    name: str,
    owner: str,
    choices: Iterable[Any],
    error: type[InvalidParameterError] = InvalidParameterError,
) -> Any:
    """Return ``value`` if it is one of ``choices`` or raise with a hint."""
    options = list(choices)
    if value not in options:
        listed = ", ".join(repr(c) for c in options)
        raise_invalid(name, owner, f"one of {{{listed}}}", value, error)
    return value


def _is_numpy_number(value: Any) -> bool:
    # numpy scalars are accepted without importing numpy here.
    kind = type(value).__module__
    return kind == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "iuf"


def _is_numpy_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "ndim") and hasattr(value, "dtype")


def _range_text(
    low: float | None,
    high: float | None,
    *,
    low_open: bool = False,
    closed_high: bool = True,
) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" {'<=' if closed_high else '<'} {high}"
    left = "(" if low_open else "["
    right = "]" if closed_high else ")"
    return f" in the range {left}{low}, {high}{right}"


def check_input_shape(value: Any, name: str, owner: str) -> tuple[int, ...]:
    """``value`` as a shape of 2 or 3 positive ints: (channels, length) or (channels, h, w)."""
    expected = "a tuple of 2 or 3 positive ints: (channels, length) or (channels, height, width)"
    if _is_numpy_array(value) and value.ndim == 1:
        value = list(value)  # np.array([1, 8, 8]): numpy ints, checked below
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise_invalid(name, owner, expected, value)

    def is_int(dim: Any) -> bool:
        numpy_int = _is_numpy_number(dim) and dim.dtype.kind in "iu"
        return not isinstance(dim, bool) and (isinstance(dim, int) or numpy_int)

    if len(value) not in (2, 3) or any(not is_int(dim) or dim < 1 for dim in value):
        raise_invalid(name, owner, expected, tuple(value))
    return tuple(int(dim) for dim in value)
