"""Convolutional block genes and the shape arithmetic of a convolutional body.

A genome for inputs with a shape (``(channels, length)`` signals,
``(channels, height, width)`` images) has a *body* of :class:`BlockGene`
before its dense layers. One block, in order::

    conv (kernel k, stride s, padding k // 2)   bias only without batch norm
    [batch norm]
    [+ the block's input]                        residual: identity, or a 1x1
                                                 conv with stride s (no bias)
                                                 when channels or stride change
    activation
    [dropout]
    [max or average pooling, kernel 2, stride 2]

The kernel is odd, so the padding is "same": a dimension of size ``n``
leaves the conv with size ``ceil(n / s)`` and the pooling with half of that,
rounded down. A body *fits* an input shape when every dimension keeps at
least one position after every block (:func:`body_shapes`). The body then
meets the dense head by global average pooling (``readout="avg"``: one
feature per channel, whatever the input size) or by flattening
(``readout="flatten"``: channels times positions).

Gene ids follow weight shapes here too: a block's conv weight has the shape
``(in channels, channels, kernel)`` (see :func:`block_weight_shapes`); its
input channels are those of the block before it, or the input's (``None``:
unknown to the genome) for the first block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evohpo._validation import (
    check_choice,
    check_float,
    check_int,
    raise_invalid,
)
from evohpo.evolution._names import indexed_param, parse_indexed_param
from evohpo.exceptions import InvalidParameterError

__all__ = [
    "BLOCK_FIELDS",
    "POOLS",
    "READOUTS",
    "BlockGene",
    "block_param",
    "block_parameter_count",
    "block_weight_shapes",
    "body_features",
    "body_shapes",
    "parse_block_param",
]

#: Pooling after a block: none, max or average pooling with kernel 2 and stride 2.
POOLS: tuple[str, ...] = ("none", "max", "avg")
#: How the body meets the dense head: global average pooling, or flattening.
READOUTS: tuple[str, ...] = ("avg", "flatten")
#: Fields of a block gene, in their parameter-dict order.
BLOCK_FIELDS: tuple[str, ...] = (
    "channels",
    "kernel",
    "stride",
    "pool",
    "residual",
    "batchnorm",
    "activation",
    "dropout",
)


def block_param(index: int, field_name: str) -> str:
    """Optuna parameter name of ``field_name`` of block ``index``: ``block2.kernel``."""
    return indexed_param("block", index, field_name)


def parse_block_param(name: str) -> tuple[int, str] | None:
    """Inverse of :func:`block_param`; ``None`` for a name that is not per-block."""
    return parse_indexed_param(name, "block", BLOCK_FIELDS)


@dataclass(frozen=True)
class BlockGene:
    """One convolutional block of a genome's body (see the module's notes).

    Parameters
    ----------
    channels : int
        Output channels, at least 1.
    kernel : int
        Odd kernel size (same padding), at least 1.
    stride : int
        Stride of the conv, at least 1.
    pool : str
        One of :data:`POOLS`.
    residual : bool
        Add the block's input to its output before the activation.
    batchnorm : bool
        Batch normalisation after the conv.
    activation : str
        One of :data:`evohpo.evolution.genome.ACTIVATIONS`.
    dropout : float
        Dropout rate after the activation, in ``[0, 1)``.
    id : str
        Names the block's trained weights; kept by a child only while the
        conv's weight shape (input channels, channels, kernel) is unchanged.
        ``""`` means no id.
    """

    channels: int
    kernel: int
    stride: int
    pool: str
    residual: bool
    batchnorm: bool
    activation: str
    dropout: float
    id: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        from evohpo.evolution.genome import ACTIVATIONS  # genome imports this module

        owner = "BlockGene"
        set_ = object.__setattr__
        set_(self, "channels", check_int(self.channels, "channels", owner, low=1))
        kernel = check_int(self.kernel, "kernel", owner, low=1)
        if kernel % 2 == 0:
            raise_invalid("kernel", owner, "an odd int >= 1 (same padding)", self.kernel)
        set_(self, "kernel", kernel)
        set_(self, "stride", check_int(self.stride, "stride", owner, low=1))
        check_choice(self.pool, "pool", owner, POOLS)
        for name in ("residual", "batchnorm"):
            if not isinstance(getattr(self, name), bool):
                raise_invalid(name, owner, "a bool", getattr(self, name))
        check_choice(self.activation, "activation", owner, ACTIVATIONS)
        set_(
            self,
            "dropout",
            check_float(self.dropout, "dropout", owner, low=0.0, high=1.0, high_open=True),
        )
        if not isinstance(self.id, str):
            raise_invalid("id", owner, "a str", self.id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the block's genes and id."""
        return {"id": self.id, **{name: getattr(self, name) for name in BLOCK_FIELDS}}

    @classmethod
    def from_dict(cls, item: Any) -> BlockGene:
        """Inverse of :meth:`to_dict`; raises :class:`InvalidParameterError` on bad input."""
        if not isinstance(item, dict):
            raise InvalidParameterError(f"Each block must be a JSON object. Got {item!r}.")
        missing = sorted(set(BLOCK_FIELDS) - set(item))
        if missing:
            raise InvalidParameterError(f"A block is missing the keys {missing}.")
        values = {name: item[name] for name in BLOCK_FIELDS}
        for name in ("channels", "kernel", "stride"):
            value = values[name]
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                values[name] = int(value)
        return cls(**values, id=item.get("id", ""))


def block_weight_shapes(blocks: Sequence[BlockGene]) -> list[tuple[int | None, int, int]]:
    """``(input channels, channels, kernel)`` of each block's conv; ``None``: the input's."""
    inputs: list[int | None] = [None, *(block.channels for block in blocks)][: len(blocks)]
    return [
        (width, block.channels, block.kernel) for width, block in zip(inputs, blocks, strict=True)
    ]


def body_shapes(
    blocks: Sequence[BlockGene], input_shape: Sequence[int]
) -> list[tuple[int, ...]] | None:
    """The shape ``(channels, *positions)`` after each block, or ``None`` if the body does not fit.

    A body fits when every dimension keeps at least one position after every
    conv and every pooling (pooling needs at least two positions).

    Examples
    --------
    >>> block = BlockGene(8, 3, 2, "max", False, False, "relu", 0.0)
    >>> body_shapes([block, block], (1, 40))
    [(8, 10), (8, 2)]
    >>> body_shapes([block, block, block], (1, 8)) is None
    True
    """
    positions = list(input_shape[1:])
    shapes: list[tuple[int, ...]] = []
    for block in blocks:
        positions = [-(-n // block.stride) for n in positions]
        if block.pool != "none":
            if min(positions) < 2:
                return None
            positions = [n // 2 for n in positions]
        shapes.append((block.channels, *positions))
    return shapes


def body_features(blocks: Sequence[BlockGene], readout: str, input_shape: Sequence[int]) -> int:
    """Number of features the body hands to the dense head (its input width).

    With no blocks the head reads the flattened input.

    Raises
    ------
    InvalidParameterError
        If the body does not fit ``input_shape``.
    """
    if not blocks:
        return math.prod(input_shape)
    shapes = body_shapes(blocks, input_shape)
    if shapes is None:
        raise InvalidParameterError(
            f"The convolutional body of {len(blocks)} blocks does not fit the input shape "
            f"{tuple(input_shape)}: its strides and pooling leave no position. Use fewer "
            "blocks, smaller strides or less pooling, or a larger input."
        )
    last = shapes[-1]
    return last[0] if readout == "avg" else math.prod(last)


def block_parameter_count(block: BlockGene, in_channels: int, n_dims: int) -> int:
    """Trainable parameters of one block with ``in_channels`` inputs over ``n_dims`` dimensions."""
    out = block.channels
    total = in_channels * out * math.prod([block.kernel] * n_dims)
    total += 2 * out if block.batchnorm else out  # batch norm's affine, or the conv's bias
    if block.residual and (in_channels != out or block.stride != 1):
        total += in_channels * out  # the 1x1 projection
    return total
