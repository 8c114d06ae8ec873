"""The search space: ranges and choices for every gene of a :class:`Genome`."""

from __future__ import annotations

import difflib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from evohpo._validation import check_float, check_input_shape, check_int, raise_invalid
from evohpo.evolution._repair import repair_genome
from evohpo.evolution.blocks import POOLS, READOUTS, BlockGene, body_shapes
from evohpo.evolution.genome import ACTIVATIONS, OPTIMIZERS, Genome, LayerGene, new_gene_id
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
    input_shape : tuple of int, optional
        ``(channels, length)`` or ``(channels, height, width)``: genomes get a
        convolutional body (:mod:`evohpo.evolution.blocks`) that fits this
        shape. ``None`` (default): dense genomes, and none of the settings
        below is used or stored.
    min_blocks, max_blocks : int
        Body depth range, ``0 <= min_blocks <= max_blocks``.
    channels : (int, int)
        Range of a block's output channels, sampled on a log scale.
    kernels : sequence of int
        Kernel-size choices, odd positive integers.
    strides : sequence of int
        Stride choices, positive integers.
    pools : sequence of str
        Pooling choices, a subset of :data:`evohpo.evolution.blocks.POOLS`.
    residual, batchnorm : sequence of bool
        Choices of the residual and batch-norm flags.
    block_dropout : (float, float)
        Dropout range of a block, within ``[0, 1)``.
    readouts : sequence of str
        How the body meets the dense layers, a subset of
        :data:`evohpo.evolution.blocks.READOUTS`.
    dense_residual : sequence of bool, default=(False,)
        Choices of a dense layer's residual flag
        (:class:`~evohpo.evolution.genome.LayerGene`); ``residual`` above is
        the blocks'. The default keeps every layer plain, and such a space
        draws, stores and suggests exactly what it did before the flag
        existed; ``(False, True)`` lets the search choose.

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
    input_shape: tuple[int, ...] | None = None
    min_blocks: int = 0
    max_blocks: int = 4
    channels: tuple[int, int] = (8, 64)
    kernels: tuple[int, ...] = (3, 5, 7)
    strides: tuple[int, ...] = (1, 2)
    pools: tuple[str, ...] = POOLS
    residual: tuple[bool, ...] = (False, True)
    batchnorm: tuple[bool, ...] = (False, True)
    block_dropout: tuple[float, float] = (0.0, 0.3)
    readouts: tuple[str, ...] = READOUTS
    dense_residual: tuple[bool, ...] = (False,)

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
        set_(self, "dense_residual", _bool_choices(self.dense_residual, "dense_residual"))
        self._check_body_settings()

    def _check_body_settings(self) -> None:
        set_ = object.__setattr__
        err = SearchSpaceError
        if self.input_shape is not None:
            try:
                shape = check_input_shape(self.input_shape, "input_shape", _OWNER)
            except ValueError as exc:
                raise SearchSpaceError(str(exc)) from None
            set_(self, "input_shape", shape)
        set_(self, "min_blocks", check_int(self.min_blocks, "min_blocks", _OWNER, low=0, error=err))
        set_(self, "max_blocks", check_int(self.max_blocks, "max_blocks", _OWNER, low=0, error=err))
        if self.max_blocks < self.min_blocks:
            expected = f"an int >= min_blocks ({self.min_blocks})"
            raise_invalid("max_blocks", _OWNER, expected, self.max_blocks, err)
        set_(self, "channels", _int_range(self.channels, "channels", low=1))
        kernels = _int_choices(self.kernels, "kernels")
        if any(k % 2 == 0 for k in kernels):
            raise_invalid("kernels", _OWNER, "odd kernel sizes (same padding)", self.kernels, err)
        set_(self, "kernels", kernels)
        set_(self, "strides", _int_choices(self.strides, "strides"))
        set_(self, "pools", _choices(self.pools, "pools", POOLS))
        set_(self, "residual", _bool_choices(self.residual, "residual"))
        set_(self, "batchnorm", _bool_choices(self.batchnorm, "batchnorm"))
        dropout = _float_range(self.block_dropout, "block_dropout", 0.0, 1.0, high_open=True)
        set_(self, "block_dropout", dropout)
        set_(self, "readouts", _choices(self.readouts, "readouts", READOUTS))
        if self.input_shape is not None and self._smallest_body_fails():
            gentle = self._gentle_shape()
            pooling = "no pooling" if gentle.pool == "none" else f"{gentle.pool} pooling"
            remedies = []
            if gentle.stride > 1:
                remedies.append("allow stride 1")
            if gentle.pool != "none":
                remedies.append("allow pools 'none'")
            raise SearchSpaceError(
                f"No body of {self.min_blocks} blocks (min_blocks) fits the input shape "
                f"{self.input_shape} with these strides and pools: even stride "
                f"{gentle.stride} and {pooling} in every block shrink it below one position. "
                f"Lower min_blocks, {', '.join([*remedies, 'or use a larger input'])}."
            )

    def _smallest_body_fails(self) -> bool:
        """Whether even the gentlest body of ``min_blocks`` blocks leaves no position."""
        if self.input_shape is None:
            return False
        return body_shapes([self._gentle_shape()] * self.min_blocks, self.input_shape) is None

    def _gentle_shape(self) -> BlockGene:
        """A block that shrinks the signal least: smallest stride, no pooling if allowed."""
        pool = "none" if "none" in self.pools else self.pools[0]
        return BlockGene(1, 1, min(self.strides), pool, False, False, "relu", 0.0)

    @property
    def has_dense_residual(self) -> bool:
        """Whether dense layers may be residual: genomes then have ``layer{i}.residual`` params."""
        return self.dense_residual != (False,)

    @property
    def has_body(self) -> bool:
        """Whether genomes of this space have a convolutional body (``input_shape`` is set)."""
        return self.input_shape is not None

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the settings (lists for tuples)."""
        # A dense space stores exactly the settings it always stored, so that
        # studies made before bodies (or residual layers) existed still match
        # their identity.
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in fields(self)
            if (self.has_body or f.name not in _BODY_SETTINGS)
            and (self.has_dense_residual or f.name != "dense_residual")
        }

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
        units = self.sample_units(rng)
        activation = rng.choice(self.activations)
        dropout = rng.uniform(*self.dropout)
        gene_id = new_gene_id(rng)
        # Drawn last and only when there is a choice: a space without one draws as before.
        residual = self.dense_residual[0]
        if len(self.dense_residual) > 1:
            residual = rng.choice(self.dense_residual)
        return LayerGene(units, activation, dropout, residual=residual, id=gene_id)

    def sample_units(self, rng: random.Random) -> int:
        """Units drawn log-uniformly over the integers of the range."""
        return _log_uniform_int(rng, self.units)

    def sample_channels(self, rng: random.Random) -> int:
        """Channels drawn log-uniformly over the integers of the range."""
        return _log_uniform_int(rng, self.channels)

    def sample_block(self, rng: random.Random) -> BlockGene:
        """A random block gene with a fresh id (it may not fit every body: see :meth:`sample`)."""
        return BlockGene(
            channels=self.sample_channels(rng),
            kernel=rng.choice(self.kernels),
            stride=rng.choice(self.strides),
            pool=rng.choice(self.pools),
            residual=rng.choice(self.residual),
            batchnorm=rng.choice(self.batchnorm),
            activation=rng.choice(self.activations),
            dropout=rng.uniform(*self.block_dropout),
            id=new_gene_id(rng),
        )

    def sample_body(self, rng: random.Random) -> tuple[BlockGene, ...] | None:
        """A random body that fits :attr:`input_shape` (``None`` for a dense space).

        Blocks are drawn one after the other; a block that would leave no
        position (or no room for the gentlest blocks still needed to reach
        ``min_blocks``) is drawn again, up to a few times, then the body stops
        growing, never below ``min_blocks`` (the space guarantees that a
        gentle enough body of that depth fits).
        """
        if self.input_shape is None:
            return None
        depth = rng.randint(self.min_blocks, self.max_blocks)
        gentle = self._gentle_shape()
        blocks: list[BlockGene] = []
        while len(blocks) < depth:
            needed = [gentle] * max(0, self.min_blocks - len(blocks) - 1)
            for _ in range(_BLOCK_DRAWS):
                block = self.sample_block(rng)
                if body_shapes([*blocks, block, *needed], self.input_shape) is not None:
                    blocks.append(block)
                    break
            else:
                if len(blocks) >= self.min_blocks:
                    break
                blocks.append(self._gentlest_block(rng))
        return tuple(blocks)

    def _gentlest_block(self, rng: random.Random) -> BlockGene:
        """A random block with the smallest stride and, if allowed, no pooling."""
        block = self.sample_block(rng)
        pool = "none" if "none" in self.pools else block.pool
        return replace(block, stride=min(self.strides), pool=pool)

    def sample(self, rng: random.Random) -> Genome:
        """A random genome inside the space."""
        depth = rng.randint(self.min_layers, self.max_layers)
        layers = tuple(self.sample_layer(rng) for _ in range(depth))
        blocks = self.sample_body(rng) if self.has_body else None
        return Genome(
            layers=layers,
            optimizer=rng.choice(self.optimizers),
            learning_rate=_log_uniform(rng, self.learning_rate),
            weight_decay=_log_uniform(rng, self.weight_decay),
            batch_size=rng.choice(self.batch_sizes),
            blocks=blocks,
            readout=rng.choice(self.readouts) if blocks else READOUTS[0],
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
            if layer.residual not in self.dense_residual:
                problems.append(f"layer{i}.residual {layer.residual!r} not a choice")
        if genome.optimizer not in self.optimizers:
            problems.append(f"optimizer {genome.optimizer!r} not a choice")
        if not self.learning_rate[0] <= genome.learning_rate <= self.learning_rate[1]:
            problems.append(f"learning_rate {genome.learning_rate} outside the range")
        if not self.weight_decay[0] <= genome.weight_decay <= self.weight_decay[1]:
            problems.append(f"weight_decay {genome.weight_decay} outside the range")
        if genome.batch_size not in self.batch_sizes:
            problems.append(f"batch_size {genome.batch_size} not a choice")
        problems.extend(self._body_violations(genome))
        return problems

    def _body_violations(self, genome: Genome) -> list[str]:
        if self.input_shape is None:
            return ["a body, but the space has no input_shape"] if genome.has_body else []
        if genome.blocks is None:
            return ["no body, but the space has an input_shape"]
        problems: list[str] = []
        if not self.min_blocks <= genome.body_depth <= self.max_blocks:
            problems.append(
                f"body depth {genome.body_depth} outside [{self.min_blocks}, {self.max_blocks}]"
            )
        for i, b in enumerate(genome.blocks):
            if not self.channels[0] <= b.channels <= self.channels[1]:
                problems.append(f"block{i}.channels {b.channels} outside {list(self.channels)}")
            for name, choices in (
                ("kernel", self.kernels),
                ("stride", self.strides),
                ("pool", self.pools),
                ("residual", self.residual),
                ("batchnorm", self.batchnorm),
                ("activation", self.activations),
            ):
                if getattr(b, name) not in choices:
                    problems.append(f"block{i}.{name} {getattr(b, name)!r} not a choice")
            if not self.block_dropout[0] <= b.dropout <= self.block_dropout[1]:
                problems.append(f"block{i}.dropout {b.dropout} outside {list(self.block_dropout)}")
        if genome.blocks and genome.readout not in self.readouts:
            problems.append(f"readout {genome.readout!r} not a choice")
        if body_shapes(genome.blocks, self.input_shape) is None:
            problems.append(f"the body does not fit the input shape {self.input_shape}")
        return problems

    def repair(self, genome: Genome) -> Genome:
        """The nearest genome inside the space, deterministically.

        Numbers are clipped to their ranges, a categorical gene that is no
        longer a choice becomes the first choice, a batch size, kernel or
        stride the nearest choice, extra layers are cut from the output end
        and missing layers are copies of the last one. Genes already inside
        the space are kept, and a genome inside it is returned as it is.

        The body follows the space: a dense space drops it (``blocks=None``),
        a space with an ``input_shape`` gives a dense genome an empty body (or
        gentle blocks up to ``min_blocks``). Extra blocks are cut from the
        output end, a pooling not allowed becomes another pooling kind where
        one is, and a body that does not fit the input shape is made to fit:
        its pooling is dropped, then its strides are reduced, block by block
        from the output end, then blocks are cut down to ``min_blocks``.

        Gene ids: a layer or block keeps its id while the repair leaves its
        weight shape alone (a layer's (input width, units), the first
        layer's input being what the body hands over; a block's (input
        channels, channels, kernel)). A gene whose shape changes and a padded
        one get an id derived from the old one, ``id + "+"`` (more ``+`` if
        that one is taken), since the repair draws nothing at random. The
        empty id stays empty.
        """
        return repair_genome(self, genome)


_BODY_SETTINGS = frozenset(
    (
        "input_shape",
        "min_blocks",
        "max_blocks",
        "channels",
        "kernels",
        "strides",
        "pools",
        "residual",
        "batchnorm",
        "block_dropout",
        "readouts",
    )
)
#: Draws of a block that fits before a body stops growing.
_BLOCK_DRAWS = 8


def _log_uniform_int(rng: random.Random, bounds: tuple[int, int]) -> int:
    """An int drawn log-uniformly over the integers of ``bounds``."""
    low, high = bounds
    value = math.exp(rng.uniform(math.log(low - 0.5 if low > 1 else low), math.log(high + 0.5)))
    return min(high, max(low, round(value)))


def _bool_choices(value: Any, name: str) -> tuple[bool, ...]:
    expected = "a non-empty sequence of distinct bools"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise_invalid(name, _OWNER, expected, value, SearchSpaceError)
    if any(not isinstance(v, bool) for v in value) or len(set(value)) != len(value):
        raise_invalid(name, _OWNER, expected, value, SearchSpaceError)
    return tuple(value)


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
    lo, hi = (
        check_float(
            bound,
            f"{name}[{i}]",
            _OWNER,
            low=low,
            high=high,
            low_open=low_open,
            high_open=high_open,
            error=SearchSpaceError,
        )
        for i, bound in enumerate((lo, hi))
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
