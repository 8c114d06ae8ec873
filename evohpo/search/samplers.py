"""The samplers and pruners a search can name, built from a name and options.

Study files (``[compare] samplers``, ``[sampler.<name>]``, ``[pruner]``) and
:class:`~evohpo.EvoSearchClassifier` (``sampler="ga"``) name their sampler and
pruner; this module turns the names into Optuna objects, seeded so that a
resumed study does not repeat itself.

Usage::

    sampler = build_sampler("tpe", seed=root, n_existing=len(study.trials))
    pruner = build_pruner({"name": "median", "n_warmup_steps": 3})

A caller that keeps several random streams under one root seed names the one
of the sampler with ``stream`` (``build_sampler("tpe", seed=root,
stream="sampler")``); :func:`sampler_class` and :func:`pruner_class` give the
classes whose keyword arguments a configuration may set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import optuna
from optuna.samplers import BaseSampler

from evohpo._random import derive_seed
from evohpo.exceptions import InvalidParameterError

if TYPE_CHECKING:
    from evohpo.evolution.space import SearchSpace

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "build_pruner",
    "build_sampler",
    "pruner_class",
    "sampler_class",
]

#: Samplers a search can name: evohpo's genetic algorithm, Optuna's TPE and random search.
SAMPLERS: tuple[str, ...] = ("ga", "tpe", "random")
#: Pruners a search can name, with the names of Optuna's classes.
PRUNERS: dict[str, str] = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
}


def sampler_class(name: str) -> type[BaseSampler]:
    """The class :func:`build_sampler` makes for ``name``.

    Raises
    ------
    InvalidParameterError
        If ``name`` is not one of :data:`SAMPLERS`.

    Examples
    --------
    >>> sampler_class("tpe").__name__
    'TPESampler'
    """
    if name == "ga":
        from evohpo.evolution.sampler import EvoSampler  # DEAP: only when asked for

        return EvoSampler
    if name == "tpe":
        return optuna.samplers.TPESampler
    if name == "random":
        return optuna.samplers.RandomSampler
    raise _unknown_sampler(name)


def _unknown_sampler(name: str) -> InvalidParameterError:
    listed = ", ".join(repr(s) for s in SAMPLERS)
    return InvalidParameterError(f"Unknown sampler {name!r}; the samplers are {listed}.")


def build_sampler(
    name: str,
    *,
    seed: int,
    options: Mapping[str, Any] | None = None,
    space: SearchSpace | None = None,
    n_existing: int = 0,
    stream: str | None = None,
) -> BaseSampler:
    """The sampler called ``name`` (``"ga"``, ``"tpe"`` or ``"random"``).

    ``EvoSampler`` derives every random stream from ``(seed, trial number)``
    and so resumes without repeating itself: it takes ``seed`` as it is.
    Optuna's TPE and random samplers keep one stream from their seed; they are
    seeded from ``(seed, stream, n_existing)`` instead, where ``n_existing`` is
    the number of trials already stored, so a resumed study does not replay
    its first trials.

    Parameters
    ----------
    name : str
        One of :data:`SAMPLERS`.
    seed : int
        The root seed.
    options : mapping, optional
        Keyword arguments of the sampler's class.
    space : SearchSpace, optional
        ``EvoSampler``'s ``search_space`` unless ``options`` sets one.
    n_existing : int
        Trials the study already holds.
    stream : str, optional
        Name of the TPE or random sampler's stream under ``seed``; ``name`` by
        default.

    Raises
    ------
    InvalidParameterError
        If ``name`` is unknown or an option is invalid.

    Examples
    --------
    >>> type(build_sampler("random", seed=0)).__name__
    'RandomSampler'
    """
    options = dict(options or {})
    if name == "ga":
        from evohpo.evolution.sampler import NOISY_TOURNAMENT_SIZE, EvoSampler

        options.setdefault("search_space", space)
        # Each trial trains with seeds of its own: noisy values by construction,
        # so "auto" would only spend a trial finding that out.
        options.setdefault("tournament_size", NOISY_TOURNAMENT_SIZE)
        return EvoSampler(seed=seed, **options)
    derived = derive_seed(seed, stream if stream is not None else name, n_existing) % 2**32
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=derived, **options)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=derived, **options)
    raise _unknown_sampler(name)


def pruner_class(name: str) -> type[optuna.pruners.BasePruner]:
    """Optuna's pruner class called ``name`` in :data:`PRUNERS`.

    Raises
    ------
    InvalidParameterError
        If ``name`` is not one of :data:`PRUNERS`.
    """
    if name not in PRUNERS:
        listed = ", ".join(repr(n) for n in PRUNERS)
        raise InvalidParameterError(f"Unknown pruner {name!r}; the pruners are {listed}.")
    cls: type[optuna.pruners.BasePruner] = getattr(optuna.pruners, PRUNERS[name])
    return cls


def build_pruner(settings: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """The Optuna pruner ``{"name": ..., **options}`` describes (``"none"`` by default).

    Examples
    --------
    >>> type(build_pruner({"name": "median", "n_warmup_steps": 3})).__name__
    'MedianPruner'
    """
    options = dict(settings)
    name = options.pop("name", "none")
    return pruner_class(name)(**options)
