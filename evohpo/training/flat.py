"""A model's parameters as views of one flat tensor, stepped by one optimizer call.

The networks a search mostly trains are small, so a step of ``torch.optim``
costs more in Python than in arithmetic: a wrapper, a profiler range, the
grouping of tensors by device and dtype, one kernel per tensor. With every
parameter (and gradient) a view of one ``[1, P]`` tensor,
:class:`~evohpo.training.stack_optimizer.StackOptimizer` updates the whole
network with a handful of element-wise operations, the same rule (SGD with
Nesterov momentum, Adam, AdamW, RMSprop) the stacked trainer uses for its
members. ``torch.optim`` also imports ``torch._dynamo`` on its first use (one
to several seconds per process, more where torch ships with Triton); the flat
step needs none of it.
"""

from __future__ import annotations

import torch
from torch import nn

from evohpo.training.nn import build_optimizer
from evohpo.training.spec import NetworkSpec
from evohpo.training.stack_optimizer import StackOptimizer

__all__ = ["FLAT_STEP_MAX_PARAMS", "FlatParameters", "solo_optimizer"]

#: Parameters up to which one network steps with the flat rule; larger ones with
#: torch's fused optimizers (measured: Adam's step costs the same at about 50,000).
FLAT_STEP_MAX_PARAMS = 50_000


class FlatParameters:
    """The trainable parameters of ``model``, moved into one flat tensor.

    After construction every parameter of ``model`` is a view of a slice of
    :attr:`params` (same values), and its ``.grad`` a view of the same slice of
    :attr:`grads`, where backward passes accumulate. :meth:`release` gives each
    parameter its own storage back and drops the gradients, so the trained
    model is an ordinary module.

    Parameters
    ----------
    model : torch.nn.Module
        Its parameters share one dtype and device.

    Examples
    --------
    >>> model = nn.Linear(3, 2)
    >>> flat = FlatParameters(model)
    >>> flat.params.shape
    torch.Size([1, 8])
    >>> model.weight.data_ptr() == flat.params.data_ptr()
    True
    """

    def __init__(self, model: nn.Module) -> None:
        self._bound = [p for p in model.parameters() if p.requires_grad]
        if not self._bound:
            raise ValueError("FlatParameters needs a model with trainable parameters.")
        first = self._bound[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in self._bound):
            raise ValueError("FlatParameters needs parameters of one dtype on one device.")
        total = sum(p.numel() for p in self._bound)
        self.params = torch.empty((1, total), dtype=first.dtype, device=first.device)
        self.grads = torch.zeros_like(self.params)
        offset = 0
        with torch.no_grad():
            for parameter in self._bound:
                stop = offset + parameter.numel()
                self.params[0, offset:stop].copy_(parameter.reshape(-1))
                parameter.data = self.params[0, offset:stop].view_as(parameter)
                parameter.grad = self.grads[0, offset:stop].view_as(parameter)
                offset = stop

    def optimizer(self, genome: NetworkSpec) -> StackOptimizer:
        """The genome's optimizer, learning rate and weight decay over :attr:`params`."""
        return StackOptimizer(
            self.params,
            self.grads,
            [genome.optimizer],
            [genome.learning_rate],
            [genome.weight_decay],
        )

    def release(self) -> None:
        """Give every parameter its own storage (with its current values), no gradient."""
        with torch.no_grad():
            for parameter in self._bound:
                parameter.data = parameter.data.clone()
                parameter.grad = None


def solo_optimizer(
    model: nn.Module, genome: NetworkSpec
) -> tuple[FlatParameters | None, StackOptimizer | torch.optim.Optimizer]:
    """The optimizer one network trains with, and its flat parameters if it has them.

    Up to :data:`FLAT_STEP_MAX_PARAMS` trainable parameters, the model's parameters
    move into a :class:`FlatParameters` stepped by its
    :class:`~evohpo.training.stack_optimizer.StackOptimizer` (call
    :meth:`FlatParameters.release` when training ends); larger models keep their
    parameters and get :func:`~evohpo.training.nn.build_optimizer`'s. Both follow
    torch's update rules and clear the gradients with ``zero_grad()``.
    """
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n_params > FLAT_STEP_MAX_PARAMS:
        return None, build_optimizer(genome, model.parameters())
    flat = FlatParameters(model)
    return flat, flat.optimizer(genome)
