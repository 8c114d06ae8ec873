"""The bricks every model is built of: activations, seeded dropout, seeded weights.

A residual dense layer is one module, :class:`ResidualLinear` (a ``Linear``
that also holds its activation, dropout and skip), since its skip spans them:
``skip(x) + dropout(act(x W^T + b))``, the skip being ``x`` when the widths
match, else ``x P^T`` with a learned ``projection`` ``P`` of shape
``(out_features, in_features)`` (no bias).

:func:`linear` and :func:`conv` create ``Linear`` and ``Conv1d``/``Conv2d``
layers with torch's default initialisation, drawn either from the global torch
generator or, when one is given, from a private generator (then the global
random state is neither read nor changed and the weights are the same on
every device). Both :mod:`evohpo.training.nn` (the dense head) and
:mod:`evohpo.training.conv` (the convolutional body) use them, so a model's
weights follow from one generator in module order.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from evohpo._validation import raise_invalid

__all__ = [
    "ACTIVATIONS",
    "ActivationBackward",
    "ResidualLinear",
    "SeededDropout",
    "activation",
    "activation_backward",
    "conv",
    "linear",
    "residual_linear",
]

_ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}

#: Activations the trainer builds.
ACTIVATIONS: tuple[str, ...] = tuple(_ACTIVATION_MODULES)

_CONV_MODULES: dict[int, type[nn.Conv1d | nn.Conv2d]] = {1: nn.Conv1d, 2: nn.Conv2d}


class SeededDropout(nn.Dropout):
    """:class:`torch.nn.Dropout` that can draw its masks from a private generator.

    With ``generator`` left at ``None`` it is exactly ``nn.Dropout`` (masks come from
    the global torch generator). The trainer sets a seeded generator on the model's
    device for the duration of a training run, so dropout is reproducible without
    touching the global random state, also when several trainings run in threads.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__(p, inplace)
        self.generator: torch.Generator | None = None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.generator is None or not self.training or self.p == 0.0:
            return super().forward(input)
        keep = 1.0 - self.p
        # rand + in-place compare is faster on the CPU than bernoulli_ or F.dropout.
        mask = torch.rand(
            input.shape, generator=self.generator, device=input.device, dtype=input.dtype
        )
        mask.lt_(keep).div_(keep)
        return input.mul_(mask) if self.inplace else input * mask


class ResidualLinear(nn.Linear):
    """A residual dense layer: ``skip(x) + dropout(act(x W^T + b))``.

    ``weight`` and ``bias`` are the branch's, as in ``nn.Linear``;
    ``projection`` (``(out_features, in_features)``, no bias) is the skip when
    the widths differ and ``None`` (the identity) when they match, unless
    ``projection=True`` asks for one anyway (a morphed network may need it).
    """

    projection: nn.Parameter | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        act: nn.Module,
        dropout: nn.Module | None = None,
        *,
        projection: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, device=device, dtype=dtype)
        self.act = act
        self.dropout = dropout
        if projection is None:
            projection = in_features != out_features
        elif not projection and in_features != out_features:
            raise ValueError("A residual layer whose widths differ needs a projection.")
        if not projection:
            self.register_parameter("projection", None)
        else:
            shape = (out_features, in_features)
            self.projection = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
            if self.projection.device.type != "meta":
                nn.init.kaiming_uniform_(self.projection, a=math.sqrt(5))

    def extra_repr(self) -> str:
        skip = "identity" if self.projection is None else "projection"
        return f"{super().extra_repr()}, skip={skip}"

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        branch: torch.Tensor = self.act(super().forward(input))
        if self.dropout is not None:
            branch = self.dropout(branch)
        skip = input if self.projection is None else nn.functional.linear(input, self.projection)
        return skip + branch


def activation(name: str, field: str, owner: str) -> nn.Module:
    """A new activation module of that ``name``; ``field`` names it in the error."""
    if name not in _ACTIVATION_MODULES:
        raise_invalid(field, owner, f"one of {ACTIVATIONS}", name)
    return _ACTIVATION_MODULES[name]()


#: ``grad_z = f(grad_a, z, a)``: the gradient at an activation's input ``z`` from the
#: gradient at its output ``a``, by the kernels autograd itself runs for each module
#: (with the modules' default parameters), so a hand-written backward pass gets
#: autograd's numbers.
ActivationBackward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

_aten = torch.ops.aten
_ACTIVATION_BACKWARDS: dict[str, ActivationBackward] = {
    "relu": lambda grad, z, a: _aten.threshold_backward(grad, a, 0),
    "tanh": lambda grad, z, a: _aten.tanh_backward(grad, a),
    "gelu": lambda grad, z, a: _aten.gelu_backward(grad, z, approximate="none"),
    "silu": lambda grad, z, a: _aten.silu_backward(grad, z),
    "elu": lambda grad, z, a: _aten.elu_backward(grad, 1.0, 1, 1, False, z),
    "leaky_relu": lambda grad, z, a: _aten.leaky_relu_backward(grad, z, 0.01, False),
}


def activation_backward(name: str, field: str, owner: str) -> ActivationBackward:
    """The backward function of the activation ``name`` (see :data:`ActivationBackward`)."""
    if name not in _ACTIVATION_BACKWARDS:
        raise_invalid(field, owner, f"one of {ACTIVATIONS}", name)
    return _ACTIVATION_BACKWARDS[name]


def linear(n_in: int, n_out: int, generator: torch.Generator | None) -> nn.Linear:
    """A ``Linear`` layer with torch's default initialisation, from ``generator`` if given."""
    if generator is None:
        return nn.Linear(n_in, n_out)
    # Allocated without the default initialisation, which would draw from the
    # global generator, then initialised from the private one.
    module = nn.Linear(n_in, n_out, device="meta").to_empty(device="cpu")
    _reset(module, generator)
    return module


def residual_linear(
    n_in: int,
    n_out: int,
    act: nn.Module,
    dropout: nn.Module | None,
    generator: torch.Generator | None,
) -> ResidualLinear:
    """A :class:`ResidualLinear` initialised like :func:`linear` (then its projection, if any)."""
    if generator is None:
        return ResidualLinear(n_in, n_out, act, dropout)
    module = ResidualLinear(n_in, n_out, act, dropout, device="meta").to_empty(device="cpu")
    _reset(module, generator)
    if module.projection is not None:
        with torch.no_grad():
            nn.init.kaiming_uniform_(module.projection, a=math.sqrt(5), generator=generator)
    return module


def conv(
    n_dims: int,
    in_channels: int,
    out_channels: int,
    kernel: int,
    *,
    stride: int,
    bias: bool,
    generator: torch.Generator | None,
) -> nn.Conv1d | nn.Conv2d:
    """A ``Conv1d`` or ``Conv2d`` (``n_dims``) with "same" padding ``kernel // 2`` (odd kernels).

    Initialised like :func:`linear`: torch's default, from ``generator`` if given.
    """
    cls = _CONV_MODULES[n_dims]
    padding = kernel // 2
    if generator is None:
        return cls(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=bias)
    module = cls(
        in_channels,
        out_channels,
        kernel,
        stride=stride,
        padding=padding,
        bias=bias,
        device="meta",
    ).to_empty(device="cpu")
    _reset(module, generator)
    return module


@torch.no_grad()
def _reset(module: nn.Linear | nn.Conv1d | nn.Conv2d, generator: torch.Generator) -> None:
    # The same distribution as the modules' reset_parameters, from a private generator.
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
    if module.bias is not None:
        bound = 1.0 / math.sqrt(module.weight[0].numel())  # 1 / sqrt(fan_in)
        nn.init.uniform_(module.bias, -bound, bound, generator=generator)
