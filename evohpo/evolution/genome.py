"""Layer-wise genomes: immutable values with a JSON form and an Optuna form.

A :class:`Genome` is a stack of dense :class:`LayerGene` (units, activation,
dropout) plus the global training genes (optimizer, learning rate, weight
decay, batch size).

Gene ids
--------
Every layer gene carries an ``id`` that names its trained weights, so that a
child's layers can be mapped to its parent's. The weight matrix of a layer
has the shape ``(input width, units)``, its input width being the units of
the layer before it (the network's input for the first layer; see
:meth:`Genome.weight_shapes`). The rule every operator follows:

* a child's layer keeps its parent layer's id only while that shape is
  unchanged. A layer whose units change gets a fresh id, and so does the
  layer after it (its input width changed), after crossover, insertion or
  removal as well as after a units mutation;
* activation and dropout do not change the shape: a layer whose activation
  or dropout mutates keeps its id;
* inserted and duplicated layers get fresh ids;
* non-empty ids are unique within a genome (:class:`Genome` rejects repeats);
  the empty id ``""`` means "no id" (a genome built without ids) and may
  repeat. Ids are strings; JSON with another type is rejected.

Two serialised forms exist and both round-trip exactly:

* JSON with a ``schema_version`` (never pickle), for storage and export;
* a flat Optuna parameter dict, whose names are defined once here
  (``n_layers``, ``layer0.units``, ``layer0.activation``, ...).
"""

from __future__ import annotations

import json
import math
import random
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

from evohpo._validation import check_choice, check_float, check_int, raise_invalid
from evohpo.exceptions import GenomeFormatError, GenomeSchemaError, InvalidParameterError

__all__ = [
    "ACTIVATIONS",
    "GLOBAL_PARAMS",
    "Genome",
    "LayerGene",
    "OPTIMIZERS",
    "SCHEMA_VERSION",
    "layer_param",
    "new_gene_id",
    "parse_layer_param",
    "weight_shapes",
]

SCHEMA_VERSION = 1

#: Activations the trainer knows how to build.
ACTIVATIONS: tuple[str, ...] = ("relu", "tanh", "gelu", "silu", "elu", "leaky_relu")
#: Optimizers the trainer knows how to build.
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw", "rmsprop")

# Optuna parameter names: the only place they are spelled out.
N_LAYERS = "n_layers"
OPTIMIZER = "optimizer"
LEARNING_RATE = "learning_rate"
WEIGHT_DECAY = "weight_decay"
BATCH_SIZE = "batch_size"
GLOBAL_PARAMS: tuple[str, ...] = (N_LAYERS, OPTIMIZER, LEARNING_RATE, WEIGHT_DECAY, BATCH_SIZE)
LAYER_FIELDS: tuple[str, ...] = ("units", "activation", "dropout")


def layer_param(index: int, field_name: str) -> str:
    """Optuna parameter name of ``field_name`` of layer ``index``: ``layer2.units``."""
    return f"layer{index}.{field_name}"


def parse_layer_param(name: str) -> tuple[int, str] | None:
    """Inverse of :func:`layer_param`; ``None`` for a name that is not per-layer."""
    head, dot, tail = name.partition(".")
    if not dot or not head.startswith("layer") or tail not in LAYER_FIELDS:
        return None
    digits = head[len("layer") :]
    if not digits.isdigit():
        return None
    return int(digits), tail


def new_gene_id(rng: random.Random) -> str:
    """A fresh 48-bit gene id drawn from ``rng`` (reproducible under a seed)."""
    return f"{rng.getrandbits(48):012x}"


@dataclass(frozen=True)
class LayerGene:
    """One dense layer: its width, activation and dropout rate.

    Parameters
    ----------
    units : int
        Number of hidden units, at least 1.
    activation : str
        One of :data:`ACTIVATIONS`.
    dropout : float
        Dropout rate after the activation, in ``[0, 1)``.
    id : str
        Names the layer's trained weights; kept by a child only while the
        layer's weight shape (input width, units) is unchanged (see the
        module's "Gene ids"). ``""`` means no id.
    """

    units: int
    activation: str
    dropout: float
    id: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        owner = "LayerGene"
        object.__setattr__(self, "units", check_int(self.units, "units", owner, low=1))
        check_choice(self.activation, "activation", owner, ACTIVATIONS)
        object.__setattr__(
            self,
            "dropout",
            check_float(self.dropout, "dropout", owner, low=0.0, high=1.0, high_open=True),
        )
        if not isinstance(self.id, str):
            raise_invalid("id", owner, "a str", self.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "units": self.units,
            "activation": self.activation,
            "dropout": self.dropout,
        }


@dataclass(frozen=True)
class Genome:
    """A network architecture and its training hyperparameters.

    Equality compares what the genes express (layers, optimizer, rates, batch
    size) and ignores gene ids, so two independently drawn but identical
    architectures compare equal.

    Parameters
    ----------
    layers : sequence of LayerGene
        Hidden layers from input to output; at least one. Their non-empty
        ids must be distinct.
    optimizer : str
        One of :data:`OPTIMIZERS`.
    learning_rate : float
        Positive learning rate.
    weight_decay : float
        Non-negative L2 weight decay.
    batch_size : int
        Positive mini-batch size.

    Examples
    --------
    >>> g = Genome((LayerGene(64, "relu", 0.1),), "adam", 1e-3, 1e-5, 64)
    >>> Genome.from_json(g.to_json()) == g
    True
    >>> g.to_params()["layer0.units"]
    64
    """

    layers: tuple[LayerGene, ...]
    optimizer: str
    learning_rate: float
    weight_decay: float
    batch_size: int

    def __post_init__(self) -> None:
        owner = "Genome"
        layers = tuple(self.layers) if isinstance(self.layers, Sequence) else self.layers
        if not isinstance(layers, tuple) or not layers:
            raise InvalidParameterError(
                "The 'layers' parameter of Genome must be a non-empty sequence of LayerGene. "
                f"Got {self.layers!r} instead."
            )
        for layer in layers:
            if not isinstance(layer, LayerGene):
                raise InvalidParameterError(
                    "The 'layers' parameter of Genome must contain only LayerGene values. "
                    f"Got {layer!r} instead."
                )
        ids = [layer.id for layer in layers if layer.id]
        if len(set(ids)) != len(ids):
            repeated = next(i for n, i in enumerate(ids) if i in ids[:n])
            raise_invalid(
                "layers", owner, f"layers with distinct gene ids (id {repeated!r} repeats)", ids
            )
        object.__setattr__(self, "layers", layers)
        check_choice(self.optimizer, "optimizer", owner, OPTIMIZERS)
        object.__setattr__(
            self,
            "learning_rate",
            check_float(self.learning_rate, "learning_rate", owner, low=0.0, low_open=True),
        )
        object.__setattr__(
            self, "weight_decay", check_float(self.weight_decay, "weight_decay", owner, low=0.0)
        )
        object.__setattr__(
            self, "batch_size", check_int(self.batch_size, "batch_size", owner, low=1)
        )

    @property
    def depth(self) -> int:
        """Number of hidden layers."""
        return len(self.layers)

    def weight_shapes(self) -> list[tuple[int | None, int]]:
        """``(input width, units)`` of each layer's weight matrix.

        The first layer's input width is the network's input, unknown to the
        genome: ``None``. A layer keeps its gene id only while this shape is
        unchanged (see the module's "Gene ids").

        Examples
        --------
        >>> g = Genome((LayerGene(64, "relu", 0.0), LayerGene(32, "relu", 0.0)),
        ...            "adam", 1e-3, 0.0, 64)
        >>> g.weight_shapes()
        [(None, 64), (64, 32)]
        """
        return weight_shapes(self.layers)

    def replace(self, **changes: Any) -> Genome:
        """A copy with ``changes`` applied (validated like a new genome)."""
        return replace(self, **changes)

    def n_parameters(self, n_inputs: int, n_outputs: int) -> int:
        """Trainable parameters of the dense network this genome describes."""
        total = 0
        width = n_inputs
        for layer in self.layers:
            total += width * layer.units + layer.units
            width = layer.units
        return total + width * n_outputs + n_outputs

    # -- JSON ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, tagged with :data:`SCHEMA_VERSION`."""
        return {
            "schema_version": SCHEMA_VERSION,
            "layers": [layer.to_dict() for layer in self.layers],
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
        }

    def to_json(self) -> str:
        """Serialise to compact, key-sorted JSON."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> Genome:
        """Inverse of :meth:`to_dict`; raises :class:`GenomeFormatError` on bad input."""
        if not isinstance(data, Mapping):
            raise GenomeFormatError(f"A genome must be a JSON object. Got {type(data).__name__}.")
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise GenomeFormatError(
                f"A genome needs an integer 'schema_version' >= 1. Got {version!r}."
            )
        if version > SCHEMA_VERSION:
            raise GenomeSchemaError(
                f"This genome was written with schema version {version}, newer than the "
                f"version {SCHEMA_VERSION} this evohpo reads. Upgrade evohpo to read it."
            )
        expected = {"schema_version", "layers", "optimizer", "learning_rate"}
        expected |= {"weight_decay", "batch_size"}
        missing = sorted(expected - set(data))
        if missing:
            raise GenomeFormatError(f"A genome is missing the keys {missing}.")
        raw_layers = data["layers"]
        if not isinstance(raw_layers, list):
            raise GenomeFormatError("A genome's 'layers' must be a JSON list.")
        try:
            layers = tuple(_layer_from_dict(item) for item in raw_layers)
            return cls(
                layers=layers,
                optimizer=data["optimizer"],
                learning_rate=data["learning_rate"],
                weight_decay=data["weight_decay"],
                batch_size=data["batch_size"],
            )
        except InvalidParameterError as exc:
            raise GenomeFormatError(f"A genome holds an invalid value: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> Genome:
        """Inverse of :meth:`to_json`; raises :class:`GenomeFormatError` on bad input."""
        try:
            data = json.loads(text)
        except RecursionError as exc:
            raise GenomeFormatError(
                "A genome must be valid JSON: it is nested too deeply to be a genome."
            ) from exc
        except (TypeError, ValueError) as exc:
            raise GenomeFormatError(f"A genome must be valid JSON: {exc}") from exc
        return cls.from_dict(data)

    # -- Optuna parameters -------------------------------------------------
    def to_params(self) -> dict[str, Any]:
        """The flat Optuna parameter dict :func:`evohpo.suggest_genome` would produce."""
        params: dict[str, Any] = {N_LAYERS: self.depth}
        for i, layer in enumerate(self.layers):
            params[layer_param(i, "units")] = layer.units
            params[layer_param(i, "activation")] = layer.activation
            params[layer_param(i, "dropout")] = layer.dropout
        params[OPTIMIZER] = self.optimizer
        params[LEARNING_RATE] = self.learning_rate
        params[WEIGHT_DECAY] = self.weight_decay
        params[BATCH_SIZE] = self.batch_size
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, Any], ids: Sequence[str] | None = None) -> Genome:
        """Inverse of :meth:`to_params`; per-layer ``ids`` may be given.

        Parameters
        ----------
        params : mapping of str to value
            Optuna parameters (``FrozenTrial.params``); keys that are not
            genome parameters are ignored.
        ids : sequence of str, optional
            Gene ids of the layers, in order; layers beyond them get ``""``.

        Raises
        ------
        GenomeFormatError
            If ``params`` is not a mapping, lacks a genome parameter or holds
            an invalid value, or ``ids`` is not a sequence of distinct str.
        """
        owner = "Genome.from_params"
        if not isinstance(params, Mapping):
            _format_error("params", owner, "a mapping of parameter names to values", params)
        if ids is not None and (isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence)):
            _format_error("ids", owner, "a sequence of str or None", ids)
        missing = [name for name in GLOBAL_PARAMS if name not in params]
        if missing:
            raise GenomeFormatError(f"The parameter dict lacks the genome parameters {missing}.")
        try:
            depth = check_int(params[N_LAYERS], N_LAYERS, owner, low=1)
        except InvalidParameterError as exc:
            raise GenomeFormatError(str(exc)) from exc
        layer_names = [layer_param(i, f) for i in range(depth) for f in LAYER_FIELDS]
        missing = [name for name in layer_names if name not in params]
        if missing:
            raise GenomeFormatError(
                f"The parameter dict declares {depth} layers but lacks {missing}."
            )
        ids = list(ids or [])
        try:
            layers = tuple(
                LayerGene(
                    units=params[layer_param(i, "units")],
                    activation=params[layer_param(i, "activation")],
                    dropout=params[layer_param(i, "dropout")],
                    id=ids[i] if i < len(ids) else "",
                )
                for i in range(depth)
            )
            return cls(
                layers=layers,
                optimizer=params[OPTIMIZER],
                learning_rate=params[LEARNING_RATE],
                weight_decay=params[WEIGHT_DECAY],
                batch_size=params[BATCH_SIZE],
            )
        except InvalidParameterError as exc:
            raise GenomeFormatError(f"The parameter dict holds an invalid value: {exc}") from exc


def weight_shapes(layers: Sequence[LayerGene]) -> list[tuple[int | None, int]]:
    """``(input width, units)`` of each layer of a stack; ``None``: the network's input."""
    widths: list[int | None] = [None, *(layer.units for layer in layers[:-1])]
    return [(width, layer.units) for width, layer in zip(widths, layers, strict=True)]


def _format_error(name: str, owner: str, expected: str, got: Any) -> NoReturn:
    """Raise :class:`GenomeFormatError` with the package's one message template."""
    try:
        raise_invalid(name, owner, expected, got)
    except InvalidParameterError as exc:
        raise GenomeFormatError(str(exc)) from None


def _layer_from_dict(item: Any) -> LayerGene:
    if not isinstance(item, Mapping):
        raise GenomeFormatError(f"Each layer must be a JSON object. Got {reprlib.repr(item)}.")
    missing = sorted(set(LAYER_FIELDS) - set(item))
    if missing:
        raise GenomeFormatError(f"A layer is missing the keys {missing}.")
    units = item["units"]
    if isinstance(units, float) and math.isfinite(units) and units.is_integer():
        units = int(units)
    # A missing id means no id; any other non-string (null, a number) is rejected
    # by LayerGene rather than coerced, so two layers cannot end up sharing 'None'.
    return LayerGene(
        units=units,
        activation=item["activation"],
        dropout=item["dropout"],
        id=item.get("id", ""),
    )
