"""From a genome to a torch model and its optimizer.

The network a genome describes (any :class:`~evohpo.training.spec.NetworkSpec`,
such as :class:`evohpo.Genome`) is a multilayer perceptron: for every layer a
``Linear`` layer, its activation and, when the rate is positive, a
``Dropout``; a final ``Linear`` layer gives the logits. A genome with a
convolutional body (:class:`~evohpo.training.spec.BodySpec`) has the body's
modules first (:mod:`evohpo.training.conv`: ``unflatten``, ``block0``, ...,
``flatten``), so the model still takes flat rows.

Submodules carry stable names (``block0``, ``hidden0``, ``act0``,
``dropout0``, ..., ``output``), so ``state_dict`` keys such as
``hidden1.weight`` or ``block0.conv.weight`` map back to the genome's layer 1
or block 0 whatever dropout the other layers have.

A residual layer (``residual=True``) is one module ``hidden{i}``, a
:class:`~evohpo.training.layers.ResidualLinear` holding its activation,
dropout and skip (``hidden{i}.projection`` when its input width differs from
its units), with no ``act{i}`` or ``dropout{i}`` beside it.

This module never imports optuna.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import ParamsT

from evohpo._validation import check_int, raise_invalid
from evohpo.training import conv, layers
from evohpo.training.layers import SeededDropout
from evohpo.training.spec import (
    NetworkSpec,
    check_network,
    layer_residual,
    network_blocks,
    network_readout,
)

__all__ = [
    "ACTIVATIONS",
    "OPTIMIZERS",
    "SGD_MOMENTUM",
    "SeededDropout",
    "build_model",
    "build_optimizer",
    "start_model",
    "count_parameters",
    "hidden_layer_name",
    "model_device",
    "resolve_device",
]

#: Momentum of the ``sgd`` optimizer (Nesterov momentum is used).
SGD_MOMENTUM = 0.9

#: Activations :func:`build_model` builds.
ACTIVATIONS: tuple[str, ...] = layers.ACTIVATIONS
#: Optimizers :func:`build_optimizer` builds.
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw", "rmsprop")

# Device types whose float32 parameters the fused Adam/AdamW/SGD kernels accept.
_FUSED_DEVICE_TYPES = ("cpu", "cuda")


def hidden_layer_name(index: int) -> str:
    """Name of the ``Linear`` submodule of hidden layer ``index``: ``hidden2``."""
    return f"hidden{index}"


def build_model(
    genome: NetworkSpec,
    n_features: int,
    n_outputs: int,
    *,
    seed: int | None = None,
    input_shape: Sequence[int] | None = None,
) -> nn.Sequential:
    """Build the network that ``genome`` describes.

    Parameters
    ----------
    genome : Genome or NetworkSpec
        The architecture: its convolutional body, if any
        (:mod:`evohpo.training.conv`), then one
        ``Linear -> activation [-> Dropout]`` block per layer (one
        :class:`~evohpo.training.layers.ResidualLinear` per residual layer).
    n_features : int
        Width of the (flat) input, at least 1.
    n_outputs : int
        Width of the output (number of logits), at least 1.
    seed : int or None
        When given, the weights are initialised from a private generator seeded with
        it (torch's default initialisation, same values on every device) and the
        global torch random state is neither read nor changed. When ``None`` they
        are drawn from the global generator as for any torch module.
    input_shape : sequence of int, optional
        ``(channels, length)`` or ``(channels, height, width)`` of the rows, whose
        product is ``n_features``; required by a genome with a body (``blocks`` not
        ``None``), checked and otherwise unused for a dense one.

    Returns
    -------
    torch.nn.Sequential
        A float32 model on the CPU, in training mode, taking rows of
        ``n_features``. Dropout modules (:class:`SeededDropout`, a
        ``torch.nn.Dropout``) are left out for layers whose dropout rate is 0.

    Raises
    ------
    InvalidParameterError
        If a gene is unknown to the trainer, ``input_shape`` is missing for a
        genome with a body or does not match ``n_features``, or the body does
        not fit ``input_shape``.

    Examples
    --------
    >>> from evohpo.evolution.genome import BlockGene, Genome, LayerGene
    >>> genome = Genome((LayerGene(32, "relu", 0.1),), "adam", 1e-3, 0.0, 64)
    >>> model = build_model(genome, n_features=8, n_outputs=3, seed=0)
    >>> [name for name, _ in model.named_children()]
    ['hidden0', 'act0', 'dropout0', 'output']
    >>> count_parameters(model) == genome.n_parameters(8, 3)
    True
    >>> block = BlockGene(4, 3, 1, "max", True, True, "relu", 0.0)
    >>> conv_genome = genome.replace(blocks=(block,), readout="flatten")
    >>> model = build_model(conv_genome, 40, 3, seed=0, input_shape=(1, 40))
    >>> [name for name, _ in model.named_children()][:3]
    ['unflatten', 'block0', 'flatten']
    >>> count_parameters(model) == conv_genome.n_parameters((1, 40), 3)
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
    blocks = network_blocks(genome)
    shape = None if input_shape is None else conv.check_input_shape(input_shape, n_features, owner)
    if blocks is not None and shape is None:
        expected = "the shape of the rows, (channels, length) or (channels, height, width)"
        raise_invalid("input_shape", owner, f"{expected}, for a genome with a body", None)

    modules: OrderedDict[str, nn.Module] = OrderedDict()
    width = n_features
    if blocks and shape is not None:
        body, width = conv.body_modules(blocks, network_readout(genome), shape, generator, owner)
        modules.update(body)
    for index, layer in enumerate(genome.layers):
        act = layers.activation(layer.activation, f"genome.layers[{index}].activation", owner)
        dropout = SeededDropout(layer.dropout) if layer.dropout > 0.0 else None
        if layer_residual(layer):
            modules[hidden_layer_name(index)] = layers.residual_linear(
                width, layer.units, act, dropout, generator
            )
        else:
            modules[hidden_layer_name(index)] = layers.linear(width, layer.units, generator)
            modules[f"act{index}"] = act
            if dropout is not None:
                modules[f"dropout{index}"] = dropout
        width = layer.units
    modules["output"] = layers.linear(width, n_outputs, generator)
    return nn.Sequential(modules)


def start_model(
    genome: NetworkSpec,
    n_features: int,
    n_outputs: int,
    *,
    seed: int,
    input_shape: Sequence[int] | None = None,
    initial_state: Mapping[str, torch.Tensor] | None = None,
    owner: str = "build_model",
) -> nn.Sequential:
    """The model a training starts from: :func:`build_model`, then ``initial_state``.

    ``initial_state`` (a state dict of the same architecture, such as inherited
    weights) replaces every tensor; without it the model keeps the weights the
    seed gives. A state of another architecture is an
    :class:`~evohpo.exceptions.InvalidParameterError` naming ``initial_state``.
    """
    model = build_model(genome, n_features, n_outputs, seed=seed, input_shape=input_shape)
    if initial_state is not None:
        if not isinstance(initial_state, Mapping):
            raise_invalid("initial_state", owner, "a state dict or None", initial_state)
        try:
            model.load_state_dict(initial_state)
        except (RuntimeError, TypeError, KeyError) as exc:
            expected = "a state dict of the genome's model (same names and shapes)"
            raise_invalid("initial_state", owner, expected, f"one that fails to load: {exc}")
    return model


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
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise_invalid("device", owner, "a device that is available (MPS is not)", device)
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise_invalid("device", owner, "a device to train on: 'cpu', 'cuda[:N]' or 'mps'", device)
    return resolved


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without any)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")
