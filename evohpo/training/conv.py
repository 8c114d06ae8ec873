"""The convolutional body of a network for inputs with a shape.

Rows stay flat outside the model: the body starts with ``nn.Unflatten`` to
``(n, *input_shape)``, ``input_shape`` being ``(channels, length)`` (1-D:
``Conv1d``, ``BatchNorm1d``, ...) or ``(channels, height, width)`` (2-D:
``Conv2d``, ``BatchNorm2d``, ...); one code path builds both. Each block
(a :class:`ConvBlock` named ``block{i}``) computes::

    y = conv(x)                     kernel k, stride s, padding k // 2;
                                    a bias only without batch norm
    y = norm(y)                     with batch norm
    y = y + x  or  y + proj(x)      residual; proj is a 1x1 conv with stride s and
                                    no bias, present when channels or stride change
    y = dropout(act(y))             dropout when its rate is positive
    y = pool(y)                     max or average pooling, kernel 2, stride 2

so a dimension of ``n`` positions has ``ceil(n / s)`` after the conv and half
of that, rounded down, after the pooling. The body then meets the dense layers
by global average pooling (``readout="avg"``: module ``readout``, an adaptive
average pooling to one position, then ``flatten``) or by flattening channels
and positions (``readout="flatten"``).

torchvision's ``Conv2dNormActivation`` adds no residual before its activation
and has no 1-D form, so the blocks are plain ``torch.nn`` modules; the trainer
does not need torchvision.

The weights of block ``i`` are ``block{i}.conv``, ``block{i}.norm`` and
``block{i}.proj`` in ``state_dict``, whatever the other blocks hold.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NoReturn

import torch
from torch import nn

from evohpo._validation import check_input_shape as _check_shape
from evohpo._validation import check_int, raise_invalid
from evohpo.exceptions import InvalidParameterError
from evohpo.training import layers
from evohpo.training.layers import SeededDropout
from evohpo.training.spec import BlockSpec

__all__ = [
    "POOLS",
    "READOUTS",
    "ConvBlock",
    "block_name",
    "body_modules",
    "check_input_shape",
    "needs_projection",
]

#: Pooling after a block.
POOLS: tuple[str, ...] = ("none", "max", "avg")
#: How the body meets the dense layers.
READOUTS: tuple[str, ...] = ("avg", "flatten")

_NORMS: dict[int, type[nn.BatchNorm1d | nn.BatchNorm2d]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_POOLS: dict[tuple[str, int], type[nn.Module]] = {
    ("max", 1): nn.MaxPool1d,
    ("max", 2): nn.MaxPool2d,
    ("avg", 1): nn.AvgPool1d,
    ("avg", 2): nn.AvgPool2d,
}
_GLOBAL_POOLS: dict[int, type[nn.Module]] = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}


def block_name(index: int) -> str:
    """Name of the module of block ``index``: ``block2``."""
    return f"block{index}"


def needs_projection(block: BlockSpec, in_channels: int) -> bool:
    """Whether a residual ``block`` reading ``in_channels`` needs a 1x1 projection."""
    return block.residual and (in_channels != block.channels or block.stride != 1)


class ConvBlock(nn.Module):
    """One block: conv, [norm], [+ residual], activation, [dropout], [pool].

    Parameters
    ----------
    conv : torch.nn.Module
        The convolution.
    norm, proj, dropout, pool : torch.nn.Module or None
        Batch norm, the residual's 1x1 projection, dropout and pooling;
        ``None`` where the block has none.
    act : torch.nn.Module
        The activation.
    residual : bool
        Add the block's input (through ``proj`` when given) before ``act``.
    """

    def __init__(
        self,
        conv: nn.Module,
        norm: nn.Module | None,
        proj: nn.Module | None,
        act: nn.Module,
        dropout: nn.Module | None,
        pool: nn.Module | None,
        *,
        residual: bool,
    ) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm
        self.proj = proj
        self.act = act
        self.dropout = dropout
        self.pool = pool
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.conv(x)
        if self.norm is not None:
            y = self.norm(y)
        if self.residual:
            y = y + (x if self.proj is None else self.proj(x))
        y = self.act(y)
        if self.dropout is not None:
            y = self.dropout(y)
        if self.pool is not None:
            y = self.pool(y)
        return y


def check_input_shape(value: Any, n_features: int, owner: str) -> tuple[int, ...]:
    """``value`` as ``(channels, length)`` or ``(channels, height, width)`` of ``n_features``.

    Raises
    ------
    InvalidParameterError
        Naming ``input_shape``, if ``value`` is not 2 or 3 positive ints or
        their product is not ``n_features``.
    """
    shape = _check_shape(value, "input_shape", owner)
    if math.prod(shape) != n_features:
        raise InvalidParameterError(
            f"The 'input_shape' parameter of {owner} must have as many elements as there are "
            f"features: its product is {math.prod(shape)}, the data have {n_features} "
            f"features. Got {shape} instead."
        )
    return shape


def body_modules(
    blocks: Sequence[BlockSpec],
    readout: str,
    input_shape: tuple[int, ...],
    generator: torch.Generator | None,
    owner: str,
) -> tuple[OrderedDict[str, nn.Module], int]:
    """The modules of the body, from the flat rows to the head's input, and its width.

    Parameters
    ----------
    blocks : sequence of BlockSpec
        At least one block, input side first.
    readout : {"avg", "flatten"}
        How the body meets the dense layers.
    input_shape : tuple of int
        ``(channels, *positions)`` with 1 or 2 position dimensions, checked.
    generator : torch.Generator or None
        Source of the conv weights (see :func:`evohpo.training.layers.conv`).
    owner : str
        The function named in errors.

    Raises
    ------
    InvalidParameterError
        If a block is malformed, ``readout`` is unknown, or the body does not
        fit ``input_shape`` (a pooling would meet fewer than two positions).
    """
    if readout not in READOUTS:
        raise_invalid("genome.readout", owner, f"one of {READOUTS}", readout)
    n_dims = len(input_shape) - 1
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    modules["unflatten"] = nn.Unflatten(1, input_shape)
    channels, positions = input_shape[0], list(input_shape[1:])
    for index, block in enumerate(blocks):
        _check_block(block, index, owner)
        positions = [-(-n // block.stride) for n in positions]
        if block.pool != "none":
            if min(positions) < 2:
                _does_not_fit(blocks, index, input_shape, owner)
            positions = [n // 2 for n in positions]
        modules[block_name(index)] = _block(block, index, channels, n_dims, generator, owner)
        channels = block.channels
    if readout == "avg":
        modules["readout"] = _GLOBAL_POOLS[n_dims](1)
        width = channels
    else:
        width = channels * math.prod(positions)
    modules["flatten"] = nn.Flatten()
    return modules, width


def _block(
    block: BlockSpec,
    index: int,
    in_channels: int,
    n_dims: int,
    generator: torch.Generator | None,
    owner: str,
) -> ConvBlock:
    conv = layers.conv(
        n_dims,
        in_channels,
        block.channels,
        block.kernel,
        stride=block.stride,
        bias=not block.batchnorm,
        generator=generator,
    )
    proj = None
    if needs_projection(block, in_channels):
        proj = layers.conv(
            n_dims,
            in_channels,
            block.channels,
            1,
            stride=block.stride,
            bias=False,
            generator=generator,
        )
    return ConvBlock(
        conv,
        _NORMS[n_dims](block.channels) if block.batchnorm else None,
        proj,
        layers.activation(block.activation, f"genome.blocks[{index}].activation", owner),
        SeededDropout(block.dropout) if block.dropout > 0.0 else None,
        _POOLS[block.pool, n_dims](2) if block.pool != "none" else None,
        residual=block.residual,
    )


def _check_block(block: BlockSpec, index: int, owner: str) -> None:
    field = f"genome.blocks[{index}]"
    check_int(block.channels, f"{field}.channels", owner, low=1)
    check_int(block.stride, f"{field}.stride", owner, low=1)
    kernel = check_int(block.kernel, f"{field}.kernel", owner, low=1)
    if kernel % 2 == 0:
        raise_invalid(f"{field}.kernel", owner, "an odd int >= 1 (same padding)", kernel)
    if block.pool not in POOLS:
        raise_invalid(f"{field}.pool", owner, f"one of {POOLS}", block.pool)


def _does_not_fit(
    blocks: Sequence[BlockSpec], index: int, input_shape: tuple[int, ...], owner: str
) -> NoReturn:
    raise InvalidParameterError(
        f"The convolutional body of {len(blocks)} blocks does not fit the 'input_shape' "
        f"{input_shape} given to {owner}: block {index} would pool fewer than 2 positions. "
        "Use a body with fewer blocks, smaller strides or less pooling, or a larger input."
    )
