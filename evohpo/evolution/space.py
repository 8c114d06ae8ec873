"""The search space: ranges and choices for every gene of a :class:`Genome`."""

from __future__ import annotations

import difflib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from evohpo._validation import check_float, check_int, raise_invalid
from evohpo.evolution.genome import (
    ACTIVATIONS,
    OPTIMIZERS,
    Genome,
    LayerGene,
    new_gene_id,
    weight_shapes,
)
from evohpo.exceptions import SearchSpaceError

__all__ = ["SearchSpace"]

_OWNER = "SearchSpace"


@dataclass(frozen=True)
class SearchSpace:
    """Ranges and choices for the genes of a layer-wise genome.

    The space validates itself on construction: every bad setting raises
    :class:`~evohpo.exceptions.SearchSpaceError` naming the setting.

    Parameters
    ----------
    min_layers, max_layers : int
        Depth range, ``1 <= min_layers <= max_layers``.
    units : (int, int)
        Range of hidden units per layer, sampled on a log scale.
    activations : sequence of str
        Activation choices, a non-empty subset of :data:`evohpo.evolution.genome.ACTIVATIONS`.
    dropout : (float, float)
        Dropout range within ``[0, 1)``.
    optimizers : sequence of str
        Optimizer choices, a non-empty subset of :data:`evohpo.evolution.genome.OPTIMIZERS`.
    learning_rate : (float, float)
        Positive learning-rate range, sampled on a log scale.
    weight_decay : (float, float)
        Positive weight-decay range, sampled on a log scale.
    batch_sizes : sequence of int
        Batch-size choices, positive integers.

    Examples
    --------
    >>> import random
    >>> space = SearchSpace(max_layers=3, units=(8, 128))
    >>> genome = space.sample(random.Random(0))
    >>> space.contains(genome)
    True
    """

    min_layers: int = 1
    max_layers: int = 4
    units: tuple[int, int] = (16, 512)
    activations: tuple[str, ...] = ACTIVATIONS
    dropout: tuple[float, float] = (0.0, 0.5)
    optimizers: tuple[str, ...] = OPTIMIZERS
    learning_rate: tuple[float, float] = (1e-4, 1e-1)
    weight_decay: tuple[float, float] = (1e-7, 1e-2)
    batch_sizes: tuple[int, ...] = (32, 64, 128, 256)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        err = SearchSpaceError
        set_(self, "min_layers", check_int(self.min_layers, "min_layers", _OWNER, low=1, error=err))
        set_(self, "max_layers", check_int(self.max_layers, "max_layers", _OWNER, low=1, error=err))
        if self.max_layers < self.min_layers:
            expected = f"an int >= min_layers ({self.min_layers})"
            raise_invalid("max_layers", _OWNER, expected, self.max_layers, err)
        set_(self, "units", _int_range(self.units, "units", low=1))
        set_(self, "dropout", _float_range(self.dropout, "dropout", 0.0, 1.0, high_open=True))
        set_(self, "learning_rate", _float_range(self.learning_rate, "learning_rate", 0.0, None))
        set_(self, "weight_decay", _float_range(self.weight_decay, "weight_decay", 0.0, None))
        set_(self, "activations", _choices(self.activations, "activations", ACTIVATIONS))
        set_(self, "optimizers", _choices(self.optimizers, "optimizers", OPTIMIZERS))
        set_(self, "batch_sizes", _int_choices(self.batch_sizes, "batch_sizes"))

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the settings (lists for tuples)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Build from a mapping of settings, e.g. the ``[space]`` table of a study file.

        Lists stand for tuples (as JSON and TOML write them). An unknown
        setting raises :class:`~evohpo.exceptions.SearchSpaceError` that lists
        the settings and suggests the closest one.

        Examples
        --------
        >>> SearchSpace.from_dict({"max_layers": 2, "units": [8, 64]}).units
        (8, 64)
        >>> SearchSpace.from_dict({"unit": [8, 64]})
        Traceback (most recent call last):
        ...
        evohpo.exceptions.SearchSpaceError: Unknown ... settings ['unit']; ... Did you mean 'units'?
        """
        if not isinstance(data, Mapping):
            raise SearchSpaceError(f"SearchSpace settings must be a mapping. Got {data!r}.")
        known = [f.name for f in fields(cls)]
        unknown = sorted((k for k in data if k not in known), key=str)
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SearchSpaceError(
                f"Unknown SearchSpace settings {unknown}; the settings are {sorted(known)}.{hint}"
            )
        converted: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**converted)

    # -- sampling and membership --------------------------------------------------
    def sample_layer(self, rng: random.Random) -> LayerGene:
        """A random layer gene with a fresh id."""
        return LayerGene(
            units=self.sample_units(rng),
            activation=rng.choice(self.activations),
            dropout=rng.uniform(*self.dropout),
            id=new_gene_id(rng),
        )

    def sample_units(self, rng: random.Random) -> int:
        """Units drawn log-uniformly over the integers of the range."""
        low, high = self.units
        value = math.exp(rng.uniform(math.log(low - 0.5 if low > 1 else low), math.log(high + 0.5)))
        return min(high, max(low, round(value)))

    def sample(self, rng: random.Random) -> Genome:
        """A random genome inside the space."""
        depth = rng.randint(self.min_layers, self.max_layers)
        layers = tuple(self.sample_layer(rng) for _ in range(depth))
        return Genome(
            layers=layers,
            optimizer=rng.choice(self.optimizers),
            learning_rate=_log_uniform(rng, self.learning_rate),
            weight_decay=_log_uniform(rng, self.weight_decay),
            batch_size=rng.choice(self.batch_sizes),
        )

    def contains(self, genome: Genome) -> bool:
        """Whether every gene of ``genome`` lies inside this space."""
        return not self.violations(genome)

    def violations(self, genome: Genome) -> list[str]:
        """Human-readable reasons why ``genome`` lies outside the space (empty if inside)."""
        problems: list[str] = []
        if not self.min_layers <= genome.depth <= self.max_layers:
            problems.append(f"depth {genome.depth} outside [{self.min_layers}, {self.max_layers}]")
        for i, layer in enumerate(genome.layers):
            if not self.units[0] <= layer.units <= self.units[1]:
                problems.append(f"layer{i}.units {layer.units} outside {list(self.units)}")
            if layer.activation not in self.activations:
                problems.append(f"layer{i}.activation {layer.activation!r} not a choice")
            if not self.dropout[0] <= layer.dropout <= self.dropout[1]:
                problems.append(f"layer{i}.dropout {layer.dropout} outside {list(self.dropout)}")
        if genome.optimizer not in self.optimizers:
            problems.append(f"optimizer {genome.optimizer!r} not a choice")
        if not self.learning_rate[0] <= genome.learning_rate <= self.learning_rate[1]:
            problems.append(f"learning_rate {genome.learning_rate} outside the range")
        if not self.weight_decay[0] <= genome.weight_decay <= self.weight_decay[1]:
            problems.append(f"weight_decay {genome.weight_decay} outside the range")
        if genome.batch_size not in self.batch_sizes:
            problems.append(f"batch_size {genome.batch_size} not a choice")
        return problems

    def repair(self, genome: Genome) -> Genome:
        """The nearest genome inside the space, deterministically.

        Numbers are clipped to their ranges, a categorical gene that is no
        longer a choice becomes the first choice, a batch size becomes the
        nearest choice, extra layers are cut from the output end and missing
        layers are copies of the last one. Genes already inside the space are
        kept, and so are the ids of layers whose weight shape (input width,
        units) the repair leaves alone; a layer whose shape it changes (its
        units clipped, or those of the layer before it) and a padded layer
        get an id derived from the old one, ``id + "+"`` (more ``+`` if that
        one is taken), since the repair draws nothing at random. The empty id
        stays empty.
        """
        if self.contains(genome):
            return genome  # nothing to repair; genomes are immutable
        layers = [
            LayerGene(
                units=_clip(layer.units, self.units),
                activation=(
                    layer.activation
                    if layer.activation in self.activations
                    else self.activations[0]
                ),
                dropout=_clip(layer.dropout, self.dropout),
                id=layer.id,
            )
            for layer in genome.layers[: self.max_layers]
        ]
        while len(layers) < self.min_layers:
            last = layers[-1]
            layers.append(LayerGene(last.units, last.activation, last.dropout, last.id))
        return Genome(
            layers=_derive_ids(layers, genome.layers),
            optimizer=(
                genome.optimizer if genome.optimizer in self.optimizers else self.optimizers[0]
            ),
            learning_rate=_clip(genome.learning_rate, self.learning_rate),
            weight_decay=_clip(genome.weight_decay, self.weight_decay),
            batch_size=min(self.batch_sizes, key=lambda b: (abs(b - genome.batch_size), b)),
        )


def _derive_ids(
    layers: Sequence[LayerGene], originals: Sequence[LayerGene]
) -> tuple[LayerGene, ...]:
    """``layers`` (repaired from ``originals``) with the genome id rule applied.

    A layer keeps its id while its weight shape is that of the original at
    its position; otherwise it gets ``id + "+"``, extended until unique.
    """
    old = weight_shapes(originals)
    new = weight_shapes(layers)
    taken = {layer.id for layer in layers}
    result: list[LayerGene] = []
    for i, layer in enumerate(layers):
        if layer.id and (i >= len(old) or new[i] != old[i]):
            gene_id = layer.id + "+"
            while gene_id in taken:
                gene_id += "+"
            taken.add(gene_id)
            layer = LayerGene(layer.units, layer.activation, layer.dropout, gene_id)
        result.append(layer)
    return tuple(result)


def _clip(value: Any, bounds: tuple[Any, Any]) -> Any:
    return min(bounds[1], max(bounds[0], value))


def _log_uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    low, high = bounds
    value = math.exp(rng.uniform(math.log(low), math.log(high)))
    # exp(log(x)) can land a rounding error outside [low, high]: clip it back.
    return float(min(high, max(low, value)))


def _pair(value: Any, name: str) -> tuple[Any, Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise_invalid(name, _OWNER, "a (low, high) pair", value, SearchSpaceError)
    return value[0], value[1]


def _int_range(value: Any, name: str, *, low: int) -> tuple[int, int]:
    lo, hi = _pair(value, name)
    lo = check_int(lo, f"{name}[0]", _OWNER, low=low, error=SearchSpaceError)
    hi = check_int(hi, f"{name}[1]", _OWNER, low=low, error=SearchSpaceError)
    if lo > hi:
        raise_invalid(name, _OWNER, "a (low, high) pair with low <= high", value, SearchSpaceError)
    return lo, hi


def _float_range(
    value: Any, name: str, low: float, high: float | None, *, high_open: bool = False
) -> tuple[float, float]:
    lo, hi = _pair(value, name)
    # Log-scaled ranges (high is None) must stay strictly positive.
    low_open = high is None
    lo = check_float(
        lo,
        f"{name}[0]",
        _OWNER,
        low=low,
        high=high,
        low_open=low_open,
        high_open=high_open,
        error=SearchSpaceError,
    )
    hi = check_float(
        hi,
        f"{name}[1]",
        _OWNER,
        low=low,
        high=high,
        low_open=low_open,
        high_open=high_open,
        error=SearchSpaceError,
    )
    if lo > hi:
        raise_invalid(name, _OWNER, "a (low, high) pair with low <= high", value, SearchSpaceError)
    return lo, hi


def _choices(value: Any, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise_invalid(name, _OWNER, "a sequence of str", value, SearchSpaceError)
    if not value:
        raise_invalid(
            name, _OWNER, f"a non-empty subset of {list(allowed)}", value, SearchSpaceError
        )
    for item in value:
        if item not in allowed:
            raise SearchSpaceError(
                f"The {name!r} parameter of {_OWNER} must only hold values from "
                f"{list(allowed)}. Got unknown value {item!r} instead."
            )
    if len(set(value)) != len(value):
        raise_invalid(name, _OWNER, "a sequence without duplicates", value, SearchSpaceError)
    return tuple(value)


def _int_choices(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise_invalid(name, _OWNER, "a non-empty sequence of int", value, SearchSpaceError)
    checked = tuple(
        check_int(v, f"{name}[{i}]", _OWNER, low=1, error=SearchSpaceError)
        for i, v in enumerate(value)
    )
    if len(set(checked)) != len(checked):
        raise_invalid(name, _OWNER, "a sequence without duplicates", value, SearchSpaceError)
    return checked


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
