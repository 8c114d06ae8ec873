"""Layer-wise genomes: immutable values with a JSON form and an Optuna form.

A :class:`Genome` is a stack of dense :class:`LayerGene` (units, activation,
dropout) plus the global training genes (optimizer, learning rate, weight
decay, batch size). For inputs with a shape it may also have a convolutional
body of :class:`~evohpo.evolution.blocks.BlockGene` before the dense layers
(see :mod:`evohpo.evolution.blocks`); a genome without one (``blocks=None``)
has exactly the JSON and parameters it always had.

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
* the ``residual`` flag does not change it either (a residual layer whose
  input width differs from its units also has a skip projection, part of the
  layer's weights and of the same shape rule), so a flipped layer keeps its id;
* inserted and duplicated layers get fresh ids;
* non-empty ids are unique within a genome (:class:`Genome` rejects repeats);
  the empty id ``""`` means "no id" (a genome built without ids) and may
  repeat. Ids are strings; JSON with another type is rejected.

Residual layers
---------------
A layer with ``residual=True`` computes ``skip(x) + dropout(act(W x + b))``:
the skip is ``x`` itself when the input width equals the units, else a
learned linear projection without bias (as a residual block's 1x1 conv).
Its JSON carries ``"residual": true``; a plain layer's JSON has no such key
(like a dense genome's has no body keys), so genomes without residual layers
keep the exact JSON they always had, and JSON without the key (all genomes
written before the flag existed) reads as ``False``. The Optuna form has ``layer0.residual``, ...
only where asked for (:meth:`Genome.to_params`), so that a genome of plain
layers in a space without residual choices has exactly the parameters it
always had.

Two serialised forms exist and both round-trip exactly:

* JSON with a ``schema_version`` (never pickle), for storage and export;
* a flat Optuna parameter dict, whose names are defined once here
  (``n_layers``, ``layer0.units``, ``layer0.activation``, ...; with a body
  also ``n_blocks``, ``block0.channels``, ... and ``readout``).

Block genes follow the same id rule, with the conv's weight shape (see
:func:`~evohpo.evolution.blocks.block_weight_shapes`). The first dense layer of
a genome with blocks reads the body's output, so its input "width" is a key of
what the body hands over (:meth:`Genome.weight_shapes`).
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
from evohpo.evolution._names import indexed_param, parse_indexed_param
from evohpo.evolution.blocks import (
    BLOCK_FIELDS,
    READOUTS,
    BlockGene,
    block_param,
    block_parameter_count,
    block_weight_shapes,
    body_features,
)
from evohpo.exceptions import GenomeFormatError, GenomeSchemaError, InvalidParameterError

__all__ = [
    "ACTIVATIONS",
    "GLOBAL_PARAMS",
    "BlockGene",
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
N_BLOCKS = "n_blocks"
READOUT = "readout"
LAYER_FIELDS: tuple[str, ...] = ("units", "activation", "dropout")
#: The per-layer field only residual-capable spaces suggest (``layer0.residual``).
LAYER_RESIDUAL = "residual"


def layer_param(index: int, field_name: str) -> str:
    """Optuna parameter name of ``field_name`` of layer ``index``: ``layer2.units``."""
    return indexed_param("layer", index, field_name)


def parse_layer_param(name: str) -> tuple[int, str] | None:
    """Inverse of :func:`layer_param`; ``None`` for a name that is not per-layer."""
    return parse_indexed_param(name, "layer", (*LAYER_FIELDS, LAYER_RESIDUAL))


def new_gene_id(rng: random.Random) -> str:
    """A fresh 48-bit gene id drawn from ``rng`` (reproducible under a seed)."""
    return f"{rng.getrandbits(48):012x}"


@dataclass(frozen=True)
class LayerGene:
    """One dense layer: its width, activation, dropout rate and residual flag.

    Parameters
    ----------
    units : int
        Number of hidden units, at least 1.
    activation : str
        One of :data:`ACTIVATIONS`.
    dropout : float
        Dropout rate after the activation, in ``[0, 1)``.
    residual : bool, default=False
        Keyword-only. Add a skip to the layer's output: the layer's input (identity) when
        its width equals ``units``, else a learned projection without bias
        (see the module's "Residual layers").
    id : str
        Names the layer's trained weights; kept by a child only while the
        layer's weight shape (input width, units) is unchanged (see the
        module's "Gene ids"). ``""`` means no id.
    """

    units: int
    activation: str
    dropout: float
    # Keyword-only, so that ``LayerGene(units, activation, dropout, id)`` keeps its meaning.
    residual: bool = field(default=False, kw_only=True)
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
        if not isinstance(self.residual, bool):
            raise_invalid("residual", owner, "a bool", self.residual)
        if not isinstance(self.id, str):
            raise_invalid("id", owner, "a str", self.id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the layer's genes and id (``"residual"`` only when set)."""
        data: dict[str, Any] = {
            "id": self.id,
            "units": self.units,
            "activation": self.activation,
            "dropout": self.dropout,
        }
        if self.residual:
            data["residual"] = True
        return data


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
    blocks : sequence of BlockGene or None, default=None
        The convolutional body, input side first; ``()`` is a body of depth 0
        (the dense layers read the flattened input) and ``None`` no body at
        all (a dense genome, for flat inputs).
    readout : {"avg", "flatten"}, default="avg"
        How the body meets the dense layers; ``"avg"`` whenever there are no
        blocks.

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
    blocks: tuple[BlockGene, ...] | None = None
    readout: str = "avg"

    def __post_init__(self) -> None:
        owner = "Genome"
        self._check_body(owner)
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
        genes: list[LayerGene | BlockGene] = [*(self.blocks or ()), *layers]
        ids = [gene.id for gene in genes if gene.id]
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

    def _check_body(self, owner: str) -> None:
        if self.blocks is None:
            blocks = None
        elif isinstance(self.blocks, (tuple, list)):
            blocks = tuple(self.blocks)
            for block in blocks:
                if not isinstance(block, BlockGene):
                    raise_invalid("blocks", owner, "a sequence of BlockGene or None", self.blocks)
        else:
            raise_invalid("blocks", owner, "a sequence of BlockGene or None", self.blocks)
        object.__setattr__(self, "blocks", blocks)
        check_choice(self.readout, "readout", owner, READOUTS)
        if not blocks:  # no body output to read: one canonical value
            object.__setattr__(self, "readout", READOUTS[0])

    @property
    def depth(self) -> int:
        """Number of hidden layers."""
        return len(self.layers)

    @property
    def has_body(self) -> bool:
        """Whether the genome is for shaped inputs (it has a body, maybe of depth 0)."""
        return self.blocks is not None

    @property
    def body_depth(self) -> int:
        """Number of convolutional blocks (0 without a body)."""
        return len(self.blocks or ())

    def head_input_key(self) -> int | str | None:
        """What the first dense layer reads, as a key that changes when its weight shape may.

        ``None``: the network's input (no blocks); otherwise the readout, the
        last block's channels and, when flattening, every block's downsampling.
        """
        if not self.blocks:
            return None
        last = self.blocks[-1].channels
        if self.readout == "avg":
            return f"avg:{last}"
        steps = ",".join(f"{b.stride}{b.pool[0]}" for b in self.blocks)
        return f"flatten:{last}:{steps}"

    def weight_shapes(self) -> list[tuple[int | str | None, int]]:
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
        return weight_shapes(self.layers, self.head_input_key())

    def block_weight_shapes(self) -> list[tuple[int | None, int, int]]:
        """``(input channels, channels, kernel)`` of each block's conv (``None``: the input's)."""
        return block_weight_shapes(self.blocks or ())

    def replace(self, **changes: Any) -> Genome:
        """A copy with ``changes`` applied (validated like a new genome)."""
        return replace(self, **changes)

    def n_parameters(self, n_inputs: int | Sequence[int], n_outputs: int) -> int:
        """Trainable parameters of the network this genome describes.

        ``n_inputs`` is the number of input features, or the input shape
        ``(channels, *positions)`` for a genome with a body.
        """
        total = 0
        if isinstance(n_inputs, Sequence):
            shape = tuple(n_inputs)
            in_channels = shape[0]
            for block in self.blocks or ():
                total += block_parameter_count(block, in_channels, len(shape) - 1)
                in_channels = block.channels
            width = body_features(self.blocks or (), self.readout, shape)
        else:
            width = n_inputs
        for layer in self.layers:
            total += width * layer.units + layer.units
            if layer.residual and width != layer.units:
                total += width * layer.units  # the skip projection
            width = layer.units
        return total + width * n_outputs + n_outputs

    # -- JSON ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, tagged with :data:`SCHEMA_VERSION` (body keys only with a body)."""
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "layers": [layer.to_dict() for layer in self.layers],
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
        }
        if self.blocks is not None:
            data["blocks"] = [block.to_dict() for block in self.blocks]
            if self.blocks:
                data["readout"] = self.readout
        return data

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
        raw_blocks = data.get("blocks")
        if raw_blocks is not None and not isinstance(raw_blocks, list):
            raise GenomeFormatError("A genome's 'blocks' must be a JSON list.")
        try:
            layers = tuple(_layer_from_dict(item) for item in raw_layers)
            blocks = None
            if raw_blocks is not None:
                blocks = tuple(BlockGene.from_dict(item) for item in raw_blocks)
            return cls(
                layers=layers,
                optimizer=data["optimizer"],
                learning_rate=data["learning_rate"],
                weight_decay=data["weight_decay"],
                batch_size=data["batch_size"],
                blocks=blocks,
                readout=data.get("readout", READOUTS[0]),
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
    @property
    def has_residual_layers(self) -> bool:
        """Whether any dense layer is residual."""
        return any(layer.residual for layer in self.layers)

    def to_params(self, *, residual: bool | None = None) -> dict[str, Any]:
        """The flat Optuna parameter dict :func:`evohpo.suggest_genome` would produce.

        Parameters
        ----------
        residual : bool, optional
            Whether to write ``layer{i}.residual``: ``True`` in a space with
            residual choices (:attr:`SearchSpace.has_dense_residual
            <evohpo.evolution.space.SearchSpace.has_dense_residual>`), where
            :func:`evohpo.suggest_genome` asks for it. ``None`` or ``False``
            (default): only when a layer is residual (the flag is never
            lost), so that a genome of plain layers has the parameters it
            always had.
        """
        residual = bool(residual) or self.has_residual_layers
        params: dict[str, Any] = {N_LAYERS: self.depth}
        for i, layer in enumerate(self.layers):
            params[layer_param(i, "units")] = layer.units
            params[layer_param(i, "activation")] = layer.activation
            params[layer_param(i, "dropout")] = layer.dropout
            if residual:
                params[layer_param(i, LAYER_RESIDUAL)] = layer.residual
        if self.blocks is not None:
            params[N_BLOCKS] = len(self.blocks)
            for i, block in enumerate(self.blocks):
                for name in BLOCK_FIELDS:
                    params[block_param(i, name)] = getattr(block, name)
            if self.blocks:
                params[READOUT] = self.readout
        params[OPTIMIZER] = self.optimizer
        params[LEARNING_RATE] = self.learning_rate
        params[WEIGHT_DECAY] = self.weight_decay
        params[BATCH_SIZE] = self.batch_size
        return params

    @classmethod
    def from_params(
        cls,
        params: Mapping[str, Any],
        ids: Sequence[str] | None = None,
        block_ids: Sequence[str] | None = None,
    ) -> Genome:
        """Inverse of :meth:`to_params`; per-layer and per-block ids may be given.

        Parameters
        ----------
        params : mapping of str to value
            Optuna parameters (``FrozenTrial.params``); keys that are not
            genome parameters are ignored.
        ids : sequence of str, optional
            Gene ids of the layers, in order; layers beyond them get ``""``.
        block_ids : sequence of str, optional
            Gene ids of the blocks, likewise. Blocks are read when ``params``
            holds ``n_blocks``.

        Raises
        ------
        GenomeFormatError
            If ``params`` is not a mapping, lacks a genome parameter or holds
            an invalid value, or ``ids`` is not a sequence of distinct str.
        """
        owner = "Genome.from_params"
        if not isinstance(params, Mapping):
            _format_error("params", owner, "a mapping of parameter names to values", params)
        for name, given in (("ids", ids), ("block_ids", block_ids)):
            if given is not None and (
                isinstance(given, (str, bytes)) or not isinstance(given, Sequence)
            ):
                _format_error(name, owner, "a sequence of str or None", given)
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
        blocks = _blocks_from_params(params, list(block_ids or []), owner)
        try:
            layers = tuple(
                LayerGene(
                    units=params[layer_param(i, "units")],
                    activation=params[layer_param(i, "activation")],
                    dropout=params[layer_param(i, "dropout")],
                    # Written only by residual-capable spaces: absent means a plain layer.
                    residual=params.get(layer_param(i, LAYER_RESIDUAL), False),
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
                blocks=blocks,
                readout=params.get(READOUT, READOUTS[0]),
            )
        except InvalidParameterError as exc:
            raise GenomeFormatError(f"The parameter dict holds an invalid value: {exc}") from exc


def weight_shapes(
    layers: Sequence[LayerGene], head_input: int | str | None = None
) -> list[tuple[int | str | None, int]]:
    """``(input width, units)`` of each layer of a stack.

    ``head_input`` is what the first layer reads: ``None`` for the network's
    input, else :meth:`Genome.head_input_key`.
    """
    widths: list[int | str | None] = [head_input, *(layer.units for layer in layers[:-1])]
    return [(width, layer.units) for width, layer in zip(widths, layers, strict=True)]


def _blocks_from_params(
    params: Mapping[str, Any], ids: list[str], owner: str
) -> tuple[BlockGene, ...] | None:
    if N_BLOCKS not in params:
        return None
    try:
        n_blocks = check_int(params[N_BLOCKS], N_BLOCKS, owner, low=0)
    except InvalidParameterError as exc:
        raise GenomeFormatError(str(exc)) from exc
    names = [block_param(i, f) for i in range(n_blocks) for f in BLOCK_FIELDS]
    if n_blocks:
        names.append(READOUT)
    missing = [name for name in names if name not in params]
    if missing:
        raise GenomeFormatError(
            f"The parameter dict declares {n_blocks} blocks but lacks {missing}."
        )
    try:
        return tuple(
            BlockGene(
                **{f: params[block_param(i, f)] for f in BLOCK_FIELDS},
                id=ids[i] if i < len(ids) else "",
            )
            for i in range(n_blocks)
        )
    except InvalidParameterError as exc:
        raise GenomeFormatError(f"The parameter dict holds an invalid value: {exc}") from exc


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
        # Genomes stored before the flag existed have plain layers.
        residual=item.get("residual", False),
        id=item.get("id", ""),
    )
