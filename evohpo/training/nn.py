"""From a genome to a torch model and its optimizer.

The network a genome describes (any :class:`~evohpo.training.spec.NetworkSpec`,
such as :class:`evohpo.Genome`) is a dense multilayer perceptron: for every
layer a ``Linear`` layer, its activation and, when the rate is positive, a
``Dropout``; a final ``Linear`` layer gives the logits.

Submodules carry stable names (``hidden0``, ``act0``, ``dropout0``, ...,
``output``), so ``state_dict`` keys such as ``hidden1.weight`` map back to the
genome's layer 1 whatever dropout the other layers have.

This module never imports optuna.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import ParamsT

from evohpo._validation import check_int, raise_invalid
from evohpo.training.spec import NetworkSpec, check_network

__all__ = [
    "ACTIVATIONS",
    "OPTIMIZERS",
    "SGD_MOMENTUM",
    "SeededDropout",
    "build_model",
    "build_optimizer",
    "count_parameters",
    "hidden_layer_name",
    "model_device",
    "resolve_device",
]

#: Momentum of the ``sgd`` optimizer (Nesterov momentum is used).
SGD_MOMENTUM = 0.9

_ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}

#: Activations :func:`build_model` builds.
ACTIVATIONS: tuple[str, ...] = tuple(_ACTIVATION_MODULES)
#: Optimizers :func:`build_optimizer` builds.
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw", "rmsprop")

# Device types whose float32 parameters the fused Adam/AdamW/SGD kernels accept.
_FUSED_DEVICE_TYPES = ("cpu", "cuda")


def hidden_layer_name(index: int) -> str:
    """Name of the ``Linear`` submodule of hidden layer ``index``: ``hidden2``."""
    return f"hidden{index}"


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


def build_model(
    genome: NetworkSpec, n_features: int, n_outputs: int, *, seed: int | None = None
) -> nn.Sequential:
    """Build the dense network that ``genome`` describes.

    Parameters
    ----------
    genome : Genome or NetworkSpec
        The architecture: one ``Linear -> activation [-> Dropout]`` block per layer.
    n_features : int
        Width of the input, at least 1.
    n_outputs : int
        Width of the output (number of logits), at least 1.
    seed : int or None
        When given, the weights are initialised from a private generator seeded with
        it (torch's default ``Linear`` initialisation, same values on every device)
        and the global torch random state is neither read nor changed. When ``None``
        they are drawn from the global generator as for any torch module.

    Returns
    -------
    torch.nn.Sequential
        A float32 model on the CPU, in training mode. Dropout modules
        (:class:`SeededDropout`, a ``torch.nn.Dropout``) are left out for layers
        whose dropout rate is 0.

    Examples
    --------
    >>> from evohpo.evolution.genome import Genome, LayerGene
    >>> genome = Genome((LayerGene(32, "relu", 0.1),), "adam", 1e-3, 0.0, 64)
    >>> model = build_model(genome, n_features=8, n_outputs=3, seed=0)
    >>> [name for name, _ in model.named_children()]
    ['hidden0', 'act0', 'dropout0', 'output']
    >>> count_parameters(model) == genome.n_parameters(8, 3)
    True
    """
    owner = "build_model"
    genome = check_network(genome, "genome", owner)
    n_features = check_int(n_features, "n_features", owner, low=1)
    n_outputs = check_int(n_outputs, "n_outputs", owner, low=1)
    generator: torch.Generator | None = None
    if seed is not None:
        seed = check_int(seed, "seed", owner, low=0, high=2**64 - 1)
        generator = torch.Generator().manual_seed(seed)

    def linear(n_in: int, n_out: int) -> nn.Linear:
        if generator is None:
            return nn.Linear(n_in, n_out)
        # Allocated without the default initialisation, which would draw from the
        # global generator, then initialised from the private one.
        module = nn.Linear(n_in, n_out, device="meta").to_empty(device="cpu")
        _reset_linear(module, generator)
        return module

    modules: OrderedDict[str, nn.Module] = OrderedDict()
    width = n_features
    for index, layer in enumerate(genome.layers):
        if layer.activation not in _ACTIVATION_MODULES:
            expected = f"one of {ACTIVATIONS}"
            raise_invalid(f"genome.layers[{index}].activation", owner, expected, layer.activation)
        modules[hidden_layer_name(index)] = linear(width, layer.units)
        modules[f"act{index}"] = _ACTIVATION_MODULES[layer.activation]()
        if layer.dropout > 0.0:
            modules[f"dropout{index}"] = SeededDropout(layer.dropout)
        width = layer.units
    modules["output"] = linear(width, n_outputs)
    return nn.Sequential(modules)


@torch.no_grad()
def _reset_linear(module: nn.Linear, generator: torch.Generator) -> None:
    # The same distribution as nn.Linear.reset_parameters, from a private generator.
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(module.in_features)
    nn.init.uniform_(module.bias, -bound, bound, generator=generator)


def build_optimizer(genome: NetworkSpec, parameters: ParamsT) -> torch.optim.Optimizer:
    """The optimizer the genome names, with its learning rate and weight decay.

    ``sgd`` uses Nesterov momentum (:data:`SGD_MOMENTUM`); ``adam`` and ``rmsprop``
    add the weight decay to the gradient (L2 penalty); ``adamw`` decouples it.
    Fused kernels are used for ``sgd``, ``adam`` and ``adamw`` when every parameter
    is a float32 tensor on the CPU or a CUDA device (they are faster there).

    Parameters
    ----------
    genome : Genome or NetworkSpec
        Supplies ``optimizer``, ``learning_rate`` and ``weight_decay``.
    parameters : iterable of tensors or parameter groups
        What to optimise, usually ``model.parameters()``.

    Examples
    --------
    >>> from evohpo.evolution.genome import Genome, LayerGene
    >>> genome = Genome((LayerGene(4, "tanh", 0.0),), "adamw", 1e-2, 1e-4, 16)
    >>> optimizer = build_optimizer(genome, build_model(genome, 3, 2).parameters())
    >>> type(optimizer).__name__, optimizer.param_groups[0]["lr"]
    ('AdamW', 0.01)
    """
    genome = check_network(genome, "genome", "build_optimizer")
    params: list[Any] = list(parameters)
    if not params:
        raise_invalid("parameters", "build_optimizer", "a non-empty iterable", params)
    lr = genome.learning_rate
    weight_decay = genome.weight_decay
    fused = True if _fusable(params) else None
    if genome.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=SGD_MOMENTUM,
            nesterov=True,
            weight_decay=weight_decay,
            fused=fused,
        )
    if genome.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if genome.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if genome.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    raise_invalid("genome.optimizer", "build_optimizer", f"one of {OPTIMIZERS}", genome.optimizer)


def _fusable(params: list[Any]) -> bool:
    return all(
        isinstance(p, torch.Tensor)
        and p.dtype == torch.float32
        and p.device.type in _FUSED_DEVICE_TYPES
        for p in params
    )


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of scalar parameters of ``model`` (only trainable ones by default)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device that ``device`` names.

    ``None`` and ``"auto"`` mean the current CUDA device when CUDA is available and
    the CPU otherwise. Any other value is what :class:`torch.device` accepts
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...); asking for CUDA where it is not
    available raises :class:`~evohpo.exceptions.InvalidParameterError`.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    owner = "resolve_device"
    expected = "'auto', None, or a torch device such as 'cpu' or 'cuda:0'"
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise_invalid("device", owner, expected, device)
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise_invalid("device", owner, expected, device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise_invalid("device", owner, "a device that is available (CUDA is not)", device)
        index = torch.cuda.current_device() if resolved.index is None else resolved.index
        if index >= torch.cuda.device_count():
            raise_invalid(
                "device",
                owner,
                f"a CUDA device index below {torch.cuda.device_count()}",
                device,
            )
        return torch.device("cuda", index)
    return resolved


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without any)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")
