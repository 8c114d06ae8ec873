"""How many trials train together: the ``batch_trials`` setting and its ``"auto"`` choice.

:func:`evohpo.search.batched.optimize` asks ``batch_trials`` trials at once and
trains their dense networks as one stack. ``"auto"`` takes the size measured
best on the device (:data:`AUTO_BATCH_TRIALS`, see docs/benchmarks.md), at
most the GA's population (a batch larger than the population would breed
children of parents that have not finished yet) and at most the trials to run.
The estimator and study files resolve the setting here, so both choose alike.
"""

from __future__ import annotations

from typing import Any, Literal

from evohpo._validation import check_int, raise_invalid
from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import InvalidParameterError
from evohpo.training.population import CPU_STACK_MAX_MACS

__all__ = [
    "AUTO_BATCH_TRIALS",
    "BatchTrials",
    "auto_batch_trials",
    "check_batch_trials",
    "largest_network_macs",
    "resolve_batch_trials",
]

#: ``batch_trials="auto"`` per device type; other device types take the CPU's.
AUTO_BATCH_TRIALS: dict[str, int] = {"cpu": 8, "cuda": 16}

#: The setting: trials trained together, or ``"auto"``.
BatchTrials = int | Literal["auto"]


def check_batch_trials(value: Any, name: str, owner: str) -> BatchTrials:
    """``value`` if it is an int >= 1 (not a bool) or ``"auto"``; else raise.

    Raises
    ------
    InvalidParameterError
        Naming ``name`` and ``owner``.

    Examples
    --------
    >>> import numpy as np
    >>> check_batch_trials("auto", "batch_trials", "demo"), check_batch_trials(np.int64(4), "b", "")
    ('auto', 4)
    """
    if isinstance(value, str) and value == "auto":
        return "auto"
    try:
        return check_int(value, name, owner, low=1)  # numpy ints too (a GridSearchCV grid)
    except InvalidParameterError:
        raise_invalid(name, owner, "an int >= 1 or 'auto'", value)


def largest_network_macs(space: SearchSpace, n_features: int, n_outputs: int) -> int | None:
    """Multiply-adds per row of the widest, deepest dense network ``space`` builds.

    ``None`` for a space with an input shape (its genomes may have a
    convolutional body, and those train one by one).

    Examples
    --------
    >>> largest_network_macs(SearchSpace(max_layers=2, units=(8, 64)), 10, 3)
    4928
    """
    if space.input_shape is not None:
        return None
    units = space.units[1]
    return n_features * units + (space.max_layers - 1) * units * units + units * n_outputs


def auto_batch_trials(
    device_type: str,
    population_size: int | None = None,
    n_trials: int | None = None,
    workers: int = 1,
    largest_macs: int | None = 0,
) -> int:
    """The ``"auto"`` choice: the device's size, capped by the population and the trials.

    Parameters
    ----------
    device_type : str
        ``torch.device(...).type``: ``"cpu"``, ``"cuda"``, ...
    population_size : int, optional
        The GA's population; ``None`` for samplers without one.
    n_trials : int, optional
        Trials to run; ``None`` when only a timeout bounds the search.
    workers : int, default=1
        Processes that run trials of the study at once: together they keep
        at most a population of trials running.
    largest_macs : int or None, default=0
        :func:`largest_network_macs` of the search space. A space with
        convolutional bodies (``None``; they train one by one) gets 1 on every
        device; on the CPU so does one whose networks can exceed
        :data:`~evohpo.training.population.CPU_STACK_MAX_MACS` (arithmetic-bound
        steps, measured no faster in stacks).

    Examples
    --------
    >>> auto_batch_trials("cpu"), auto_batch_trials("cuda", 10), auto_batch_trials("cpu", None, 3)
    (8, 10, 3)
    """
    if largest_macs is None:
        return 1
    if device_type != "cuda" and largest_macs > CPU_STACK_MAX_MACS:
        return 1
    size = AUTO_BATCH_TRIALS.get(device_type, AUTO_BATCH_TRIALS["cpu"])
    if population_size is not None:
        size = min(size, max(1, population_size // max(1, workers)))
    if n_trials is not None:
        size = min(size, n_trials)
    return max(1, size)


def resolve_batch_trials(
    setting: BatchTrials,
    device_type: str,
    sampler: object = None,
    n_trials: int | None = None,
    workers: int = 1,
    largest_macs: int | None = 0,
) -> int:
    """``setting`` if it is a number, else :func:`auto_batch_trials` for ``sampler``.

    ``sampler``'s ``population_size`` attribute (an :class:`~evohpo.EvoSampler`'s)
    caps the ``"auto"`` choice; other samplers have none.

    Examples
    --------
    >>> from evohpo import EvoSampler
    >>> resolve_batch_trials("auto", "cpu", EvoSampler(population_size=4))
    4
    >>> resolve_batch_trials(3, "cuda")
    3
    """
    if setting != "auto":
        return int(setting)
    population = getattr(sampler, "population_size", None)
    if not isinstance(population, int) or isinstance(population, bool):
        population = None
    return auto_batch_trials(device_type, population, n_trials, workers, largest_macs)
