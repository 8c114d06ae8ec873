"""Function-preserving changes of a trained dense network (Net2Net).

A child that is its parent with a wider or an extra hidden layer can start
from the parent's trained weights instead of from scratch, if the change
leaves the network's function as it was:

* :func:`widen_layer` (Net2WiderNet): the new units of a hidden layer copy
  randomly chosen existing units, and each copied unit's outgoing weights are
  divided by the number of its copies, so the next layer sees the same sum.
  Exact for any element-wise activation; dropout is the identity in eval mode.
* :func:`insert_identity_layer` (Net2DeeperNet): a new hidden layer after
  layer ``index`` whose weights are the identity. Exact when the new layer's
  activation ``f`` satisfies ``f(f(x)) = f(x)`` on the values it receives,
  which holds for ReLU after ReLU; :func:`identity_exact` says when.

Both work on the ``nn.Sequential`` models of :func:`~evohpo.training.nn.build_model`
(hidden layers named ``hidden0``, ``hidden1``, ... and ``output``) and return
a new model; the parent is left unchanged.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from evohpo._validation import check_int, raise_invalid
from evohpo.training import layers
from evohpo.training.nn import hidden_layer_name

__all__ = ["identity_exact", "insert_identity_layer", "widen_layer"]

#: Activations after which an identity layer with the same activation is exact:
#: ``f(f(x)) == f(x)`` on the range of ``f``.
_IDEMPOTENT = frozenset({"relu"})


def _hidden_names(model: nn.Sequential) -> list[str]:
    names = [name for name, _ in model.named_children()]
    return [name for name in names if name.startswith("hidden")]


def _following_name(hidden: list[str], index: int) -> str:
    """The layer that reads hidden layer ``index``'s output."""
    return hidden_layer_name(index + 1) if index + 1 < len(hidden) else "output"


def widen_layer(
    model: nn.Sequential, index: int, units: int, *, generator: torch.Generator | None = None
) -> nn.Sequential:
    """A copy of ``model`` whose hidden layer ``index`` has ``units`` units, same function.

    Parameters
    ----------
    model : nn.Sequential
        A dense model of :func:`~evohpo.training.nn.build_model`.
    index : int
        The hidden layer to widen.
    units : int
        Its new width, at least its current one.
    generator : torch.Generator, optional
        Picks the units that the new ones copy.
    """
    owner = "widen_layer"
    hidden = _hidden_names(model)
    index = check_int(index, "index", owner, low=0, high=len(hidden) - 1)
    child = copy.deepcopy(model)
    layer = getattr(child, hidden_layer_name(index))
    assert isinstance(layer, nn.Linear)
    width = layer.out_features
    units = check_int(units, "units", owner, low=width)
    following_name = _following_name(hidden, index)
    following = getattr(child, following_name)
    assert isinstance(following, nn.Linear)
    # Unit j of the wider layer copies unit source[j]; the first `width` are themselves.
    extra = torch.randint(width, (units - width,), generator=generator)
    source = torch.cat([torch.arange(width), extra])
    copies = torch.bincount(source, minlength=width).to(following.weight.dtype)
    with torch.no_grad():
        wider = nn.Linear(layer.in_features, units).to(layer.weight)
        wider.weight.copy_(layer.weight[source])
        wider.bias.copy_(layer.bias[source])
        grown = nn.Linear(units, following.out_features).to(following.weight)
        grown.weight.copy_(following.weight[:, source] / copies[source])
        grown.bias.copy_(following.bias)
    setattr(child, hidden_layer_name(index), wider)
    setattr(child, following_name, grown)
    return child


def identity_exact(previous_activation: str, activation: str) -> bool:
    """Whether an identity layer with ``activation`` after one with
    ``previous_activation`` leaves the function unchanged."""
    return activation == previous_activation and activation in _IDEMPOTENT


def insert_identity_layer(model: nn.Sequential, index: int, activation: str) -> nn.Sequential:
    """A copy of ``model`` with an identity hidden layer after hidden layer ``index``.

    The new layer is inserted without dropout; later hidden layers are renumbered.
    The function is unchanged when :func:`identity_exact` holds for the activation
    of layer ``index`` and ``activation``.
    """
    owner = "insert_identity_layer"
    hidden = _hidden_names(model)
    index = check_int(index, "index", owner, low=0, high=len(hidden) - 1)
    source = getattr(model, hidden_layer_name(index))
    assert isinstance(source, nn.Linear)
    width = source.out_features
    inserted = nn.Linear(width, width).to(source.weight)
    with torch.no_grad():
        inserted.weight.copy_(torch.eye(width, dtype=source.weight.dtype))
        inserted.bias.zero_()
    act = layers.activation(activation, "activation", owner)
    # The new layer goes after layer index's last module: its dropout, if any.
    last = f"dropout{index}" if hasattr(model, f"dropout{index}") else f"act{index}"
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for name, module in copy.deepcopy(model).named_children():
        layer_index = _layer_index(name)
        if layer_index is not None and layer_index > index:
            name = _renumber(name, layer_index + 1)
        modules[name] = module
        if name == last:
            modules[hidden_layer_name(index + 1)] = inserted
            modules[f"act{index + 1}"] = act
    if hidden_layer_name(index + 1) not in modules:  # pragma: no cover - build_model layout
        raise_invalid("model", owner, "a model of build_model", type(model).__name__)
    return nn.Sequential(modules)


def _layer_index(name: str) -> int | None:
    for prefix in ("hidden", "act", "dropout"):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            return int(name[len(prefix) :])
    return None


def _renumber(name: str, new_index: int) -> str:
    prefix = name.rstrip("0123456789")
    return f"{prefix}{new_index}"
