"""What the trainer reads from a genome: the shape of a network and how to train it.

The training side knows no genome class. It reads any object with the
attributes below, which :class:`evohpo.Genome` and :class:`evohpo.LayerGene`
have; so the trainer stays independent of the evolution side, and another
genome type (a convolutional one, say) only has to carry the same attributes.

Examples
--------
>>> from evohpo.evolution.genome import Genome, LayerGene
>>> isinstance(Genome((LayerGene(8, "relu", 0.0),), "adam", 1e-3, 0.0, 32), NetworkSpec)
True
>>> isinstance("adam", NetworkSpec)
False
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from evohpo._validation import raise_invalid

__all__ = ["LayerSpec", "NetworkSpec", "check_network"]


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


def check_network(value: Any, name: str, owner: str) -> NetworkSpec:
    """Return ``value`` if it has the attributes of :class:`NetworkSpec`, else raise.

    The message says "a Genome": the type every caller of the package passes.
    """
    if not isinstance(value, NetworkSpec):
        raise_invalid(name, owner, "a Genome", value)
    return value
