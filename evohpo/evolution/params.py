"""Variation of plain Optuna parameter dicts, for objectives with names of their own.

:func:`mutate_params` perturbs each parameter according to its distribution
(DEAP's ``mutGaussian`` for numbers, a different choice for categoricals);
:func:`crossover_params` mixes two parents uniformly (DEAP's ``cxUniform``)
over the union of their keys, so conditional parameters are inherited rather
than dropped. Randomness comes only from the ``rng`` argument; inputs are
never modified.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import Any

from deap import tools
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from evohpo._random import seeded_global_random
from evohpo._validation import check_float, check_probability, check_rng, raise_invalid
from evohpo.evolution._variation import MAX_FORCED, gaussian_step, reflect, step_float
from evohpo.exceptions import InvalidParameterError

__all__ = ["crossover_params", "mutate_params"]


def mutate_params(
    params: Mapping[str, Any],
    distributions: Mapping[str, BaseDistribution],
    rng: random.Random,
    gene_prob: float,
    *,
    sigma: float = 0.1,
    ensure_change: bool = True,
) -> tuple[dict[str, Any], list[str]]:
    """A mutated copy of an Optuna parameter dict.

    For objectives with their own parameter names (conditional ones
    included). Each parameter is perturbed with probability ``gene_prob``:
    a float or int by a Gaussian step of ``sigma`` times its range (of the
    logarithm if ``log=True``; DEAP's ``mutGaussian``), mirrored at the
    bounds and snapped to its ``step``; a categorical by drawing a different
    choice. A numeric step too small to reach another grid value moves one
    grid step instead. If nothing changed and ``ensure_change`` is true, one
    random mutable parameter is perturbed for certain.

    Only the parameters in ``params`` are mutated: pass those the parent
    actually used, so that every reported mutation is one the child can
    express (a conditional parameter the parent never asked for is not
    worth a mutation).

    Parameters
    ----------
    params : mapping of str to value
        The parent's parameters (external representation, as in
        ``FrozenTrial.params``).
    distributions : mapping of str to BaseDistribution
        A distribution for every key of ``params`` (more keys are ignored).
    rng : random.Random
        The only source of randomness.
    gene_prob : float
        Per-parameter mutation probability in ``[0, 1]``.
    sigma : float, optional
        Step size as a fraction of each numeric range, ``> 0``.
    ensure_change : bool, default=True
        Whether a child equal to ``params`` is perturbed until it differs;
        ``False`` when other genes of the same child already changed.

    Returns
    -------
    child : dict
        Same keys, every value inside its distribution (a parent value
        outside it is first moved into it).
    operators : list of str
        ``"mutate:<name>"`` for each mutated parameter, in ``params`` order.

    Examples
    --------
    >>> import random
    >>> from optuna.distributions import FloatDistribution
    >>> child, ops = mutate_params({"x": 0.5}, {"x": FloatDistribution(0.0, 1.0)},
    ...                            random.Random(0), gene_prob=1.0)
    >>> ops, 0.0 <= child["x"] <= 1.0, child["x"] != 0.5
    (['mutate:x'], True, True)
    """
    owner = "mutate_params"
    check_rng(rng, owner)
    gene_prob = check_probability(gene_prob, "gene_prob", owner)
    sigma = check_float(sigma, "sigma", owner, low=0.0, low_open=True)
    if not isinstance(ensure_change, bool):
        raise_invalid("ensure_change", owner, "a bool", ensure_change)
    missing = [name for name in params if name not in distributions]
    if missing:
        raise InvalidParameterError(
            f"The 'distributions' parameter of {owner} must map every parameter to a "
            f"distribution. Got none for {missing}."
        )
    dists = {name: distributions[name] for name in params}
    start = {name: _project(name, value, dists[name], rng) for name, value in params.items()}
    child = dict(start)
    mutable = [name for name, dist in dists.items() if _is_mutable(dist)]
    changed = _perturb(child, dists, mutable, rng, gene_prob, sigma)
    changed = {name for name in changed if child[name] != start[name]}
    if ensure_change and mutable and not changed:
        changed |= _force_change(child, start, dists, mutable, rng, sigma)
    return child, [f"mutate:{name}" for name in params if name in changed]


def _perturb(
    child: dict[str, Any],
    dists: Mapping[str, BaseDistribution],
    mutable: list[str],
    rng: random.Random,
    gene_prob: float,
    sigma: float,
) -> set[str]:
    """Perturb each of ``mutable`` in ``child`` with probability ``gene_prob``; the touched."""
    numeric = [name for name in mutable if not isinstance(dists[name], CategoricalDistribution)]
    before = [_Numeric(dists[name]).to_search(child[name]) for name in numeric]
    after = list(before)
    sigmas = [sigma * _Numeric(dists[name]).width for name in numeric]
    with seeded_global_random(rng):
        tools.mutGaussian(after, mu=0.0, sigma=sigmas, indpb=gene_prob)
    touched: set[str] = set()
    for name, old, new in zip(numeric, before, after, strict=True):
        if new != old:
            child[name] = _Numeric(dists[name]).step_to(child[name], new - old)
            touched.add(name)
    for name in mutable:
        dist = dists[name]
        if isinstance(dist, CategoricalDistribution) and rng.random() < gene_prob:
            child[name] = _other_category(child[name], dist, rng)
            touched.add(name)
    return touched


def _force_change(
    child: dict[str, Any],
    start: Mapping[str, Any],
    dists: Mapping[str, BaseDistribution],
    mutable: list[str],
    rng: random.Random,
    sigma: float,
) -> set[str]:
    """Perturb random parameters of ``mutable`` until one differs from ``start``."""
    for _ in range(MAX_FORCED):
        name = rng.choice(mutable)
        dist = dists[name]
        if isinstance(dist, CategoricalDistribution):
            child[name] = _other_category(child[name], dist, rng)
        else:
            numeric_dist = _Numeric(dist)
            step = gaussian_step(sigma * numeric_dist.width, rng)
            child[name] = numeric_dist.step_to(child[name], step)
        if child[name] != start[name]:
            return {name}
    return set()


def crossover_params(
    a: Mapping[str, Any], b: Mapping[str, Any], rng: random.Random
) -> dict[str, Any]:
    """Uniform crossover of two parameter dicts over the union of their keys.

    A key of both parents takes either parent's value with equal probability
    (DEAP's ``cxUniform``); a key of only one parent (a conditional parameter
    the other did not use) is inherited from it.

    Parameters
    ----------
    a, b : mapping of str to value
        The parents' parameters.
    rng : random.Random
        The only source of randomness.

    Returns
    -------
    dict
        The child: ``a``'s keys in order, then ``b``'s other keys.

    Examples
    --------
    >>> import random
    >>> child = crossover_params({"x": 1, "y": 2}, {"x": 3, "z": 4}, random.Random(0))
    >>> sorted(child), child["x"] in (1, 3), child["y"], child["z"]
    (['x', 'y', 'z'], True, 2, 4)
    """
    check_rng(rng, "crossover_params")
    shared = [name for name in a if name in b]
    values_a = [a[name] for name in shared]
    values_b = [b[name] for name in shared]
    with seeded_global_random(rng):
        tools.cxUniform(values_a, values_b, indpb=0.5)
    child = dict(a)
    child.update(zip(shared, values_a, strict=True))
    child.update((name, value) for name, value in b.items() if name not in a)
    return child


def _is_mutable(dist: BaseDistribution) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return len(dist.choices) > 1
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        return not dist.single()
    return False  # an unknown distribution type: left as it is


class _Numeric:
    """Moves within a Float/IntDistribution: search space, grid and bounds.

    The search space is where Gaussian steps are taken: the values
    themselves, or their logarithms for ``log=True``.
    """

    def __init__(self, dist: BaseDistribution) -> None:
        assert isinstance(dist, (FloatDistribution, IntDistribution))
        self.dist = dist
        self.is_int = isinstance(dist, IntDistribution)
        self.step = dist.step
        self.low: float = dist.low
        self.high: float = dist.high
        transform: Callable[[float], float] = math.log if dist.log else float
        self.search_low = transform(dist.low)
        self.search_high = transform(dist.high)
        self.width = self.search_high - self.search_low

    def to_search(self, value: Any) -> float:
        return math.log(value) if self.dist.log else float(value)

    def from_search(self, x: float) -> Any:
        """The grid value nearest to search point ``x`` (folded into the bounds)."""
        x = reflect(x, self.search_low, self.search_high)
        raw = math.exp(x) if self.dist.log else x
        return self.snap(raw)

    def snap(self, raw: float) -> Any:
        low, high = self.low, self.high
        raw = min(high, max(low, raw))
        if self.step is None and not self.is_int:
            return float(raw)
        step = self.step if self.step is not None else 1
        n_steps = round((high - low) / step)
        k = min(n_steps, max(0, round((raw - low) / step)))
        return self.grid(k)

    def grid(self, k: int) -> Any:
        step = self.step if self.step is not None else 1
        if self.is_int:
            return int(self.low) + k * int(step)
        return float(min(self.high, self.low + k * step))

    def step_to(self, value: Any, step: float) -> Any:
        """``value`` moved by ``step`` in search space; one grid step at least."""
        if self.step is None and not self.is_int:
            return step_float(float(value), step, (self.low, self.high), log=self.dist.log)
        new = self.from_search(self.to_search(value) + step)
        if new != value:
            return new
        grid_step = self.step if self.step is not None else 1
        k = round((value - self.low) / grid_step)
        n_steps = round((self.high - self.low) / grid_step)
        direction = 1 if step >= 0 else -1
        k = k + direction if 0 <= k + direction <= n_steps else k - direction
        return self.grid(min(n_steps, max(0, k)))


def _project(name: str, value: Any, dist: BaseDistribution, rng: random.Random) -> Any:
    """``value`` if it lies in ``dist``, else the nearest value that does."""
    try:
        if dist._contains(dist.to_internal_repr(value)):
            return value
    except (ValueError, TypeError):
        pass
    if isinstance(dist, CategoricalDistribution):
        return rng.choice(dist.choices)
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        try:
            raw = float(value)
        except (TypeError, ValueError):
            raw = math.nan
        if math.isnan(raw) or isinstance(value, bool):
            raise_invalid(f"params[{name}]", "mutate_params", "a number", value)
        return _Numeric(dist).snap(raw)
    return value


def _other_category(value: Any, dist: CategoricalDistribution, rng: random.Random) -> Any:
    current = dist.to_internal_repr(value)
    index = rng.choice([i for i in range(len(dist.choices)) if i != current])
    return dist.choices[index]
