"""What the trainer reads from a genome: the shape of a network and how to train it.

The training side knows no genome class. It reads any object with the
attributes below, which :class:`evohpo.Genome` and :class:`evohpo.LayerGene`
have; so the trainer stays independent of the evolution side, and another
genome type only has to carry the same attributes.

A network for inputs with a shape may also have a convolutional body:
:class:`BodySpec` adds ``blocks`` (a sequence of :class:`BlockSpec`, or
``None`` for a dense network) and ``readout`` to :class:`NetworkSpec`.
Objects without these attributes are dense networks
(:func:`network_blocks`), so a plain dense spec stays valid. Likewise a
layer may have a ``residual`` flag; a layer without one is plain
(:func:`layer_residual`).

Examples
--------
>>> from evohpo.evolution.genome import Genome, LayerGene
>>> isinstance(Genome((LayerGene(8, "relu", 0.0),), "adam", 1e-3, 0.0, 32), NetworkSpec)
True
>>> isinstance("adam", NetworkSpec)
False
>>> network_blocks(Genome((LayerGene(8, "relu", 0.0),), "adam", 1e-3, 0.0, 32)) is None
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from evohpo._validation import raise_invalid

__all__ = [
    "BlockSpec",
    "BodySpec",
    "LayerSpec",
    "NetworkSpec",
    "check_network",
    "layer_residual",
    "network_blocks",
    "network_readout",
]


@runtime_checkable
class LayerSpec(Protocol):
    """One dense hidden layer: ``Linear -> activation [-> Dropout]``."""

    @property
    def units(self) -> int:
        """Number of hidden units, at least 1."""

    @property
    def activation(self) -> str:
        """Name of the activation, one of :data:`evohpo.training.nn.ACTIVATIONS`."""

    @property
    def dropout(self) -> float:
        """Dropout rate after the activation, in ``[0, 1)``."""


@runtime_checkable
class NetworkSpec(Protocol):
    """A dense classifier and its training hyperparameters."""

    @property
    def layers(self) -> Sequence[LayerSpec]:
        """The hidden layers, input side first."""

    @property
    def optimizer(self) -> str:
        """Name of the optimizer, one of :data:`evohpo.training.nn.OPTIMIZERS`."""

    @property
    def learning_rate(self) -> float:
        """Learning rate, > 0."""

    @property
    def weight_decay(self) -> float:
        """Weight decay, >= 0."""

    @property
    def batch_size(self) -> int:
        """Rows per mini-batch, at least 1."""


@runtime_checkable
class BlockSpec(Protocol):
    """One convolutional block (see :mod:`evohpo.training.conv` for the modules it builds)."""

    @property
    def channels(self) -> int:
        """Output channels, at least 1."""

    @property
    def kernel(self) -> int:
        """Odd kernel size, at least 1 (same padding: ``kernel // 2``)."""

    @property
    def stride(self) -> int:
        """Stride of the conv, at least 1."""

    @property
    def pool(self) -> str:
        """Pooling after the block: ``"none"``, ``"max"`` or ``"avg"`` (kernel 2, stride 2)."""

    @property
    def residual(self) -> bool:
        """Whether the block's input is added before the activation."""

    @property
    def batchnorm(self) -> bool:
        """Whether batch normalisation follows the conv."""

    @property
    def activation(self) -> str:
        """Name of the activation, one of :data:`evohpo.training.nn.ACTIVATIONS`."""

    @property
    def dropout(self) -> float:
        """Dropout rate after the activation, in ``[0, 1)``."""


@runtime_checkable
class BodySpec(NetworkSpec, Protocol):
    """A :class:`NetworkSpec` that may have a convolutional body before its dense layers."""

    @property
    def blocks(self) -> Sequence[BlockSpec] | None:
        """The blocks, input side first; ``()``: a body of depth 0; ``None``: a dense network."""

    @property
    def readout(self) -> str:
        """How the body meets the dense layers: ``"avg"`` (global average) or ``"flatten"``."""


def layer_residual(layer: LayerSpec) -> bool:
    """Whether a dense layer is residual (a spec without the attribute is not)."""
    return bool(getattr(layer, "residual", False))


def network_blocks(network: NetworkSpec) -> Sequence[BlockSpec] | None:
    """The body of ``network``: its ``blocks``, or ``None`` when it has none (a dense network)."""
    blocks: Sequence[BlockSpec] | None = getattr(network, "blocks", None)
    return blocks


def network_readout(network: NetworkSpec) -> str:
    """The ``readout`` of ``network``; ``"avg"`` when it has none."""
    readout: str = getattr(network, "readout", "avg")
    return readout


def check_network(value: Any, name: str, owner: str) -> NetworkSpec:
    """Return ``value`` if it has the attributes of :class:`NetworkSpec`, else raise.

    The message says "a Genome": the type every caller of the package passes.
    """
    if not isinstance(value, NetworkSpec):
        raise_invalid(name, owner, "a Genome", value)
    return value
