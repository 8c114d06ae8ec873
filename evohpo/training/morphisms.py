"""Function-preserving changes of a trained network (Net2Net).

A child that is its parent with a wider or an extra layer or block can start
from the parent's trained weights instead of from scratch, if the change
leaves the network's function as it was. Every function here takes a model
of :func:`~evohpo.training.nn.build_model` and returns a new one whose
``state_dict`` has the keys and shapes of ``build_model(child_genome, ...)``,
the child genome being the parent's with that one change; the parent is left
unchanged.

Dense layers (``hidden0``, ``hidden1``, ..., ``output``):

* :func:`widen_layer` (Net2WiderNet): the new units of a hidden layer copy
  randomly chosen existing units, and each copied unit's outgoing weights are
  divided by the number of its copies, so the next layer sees the same sum.
  Exact for any element-wise activation; dropout is the identity in eval mode.
* :func:`insert_identity_layer` (Net2DeeperNet): a new hidden layer after
  layer ``index`` whose weights are the identity. Exact when the new layer's
  activation ``f`` satisfies ``f(f(x)) = f(x)`` on the values it receives,
  which holds for ReLU after ReLU; :func:`identity_exact` says when.
* :func:`insert_residual_layer`: a new residual hidden layer (a
  :class:`~evohpo.training.layers.ResidualLinear`) with an identity skip and a
  zero branch; exact for every activation (a non-zero ``act(0)`` is taken out
  of the readers' biases). Widening a residual layer copies the rows of its
  skip (an identity skip becomes a projection), and a residual reader's skip
  has its columns divided like its weights.
* :func:`set_residual` gives a layer a skip or takes it away (exact only for a
  projection of zeros), and :func:`insert_copy_layer` repeats a square layer
  (a duplicate; never exact).

Convolutional blocks: :mod:`evohpo.training.block_morphisms`.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from evohpo._validation import check_float, check_int, raise_invalid
from evohpo.training import layers
from evohpo.training.layers import ResidualLinear, SeededDropout
from evohpo.training.nn import hidden_layer_name

__all__ = [
    "identity_exact",
    "insert_copy_layer",
    "insert_identity_layer",
    "insert_residual_layer",
    "set_residual",
    "widen_layer",
]

#: Activations after which an identity layer with the same activation is exact:
#: ``f(f(x)) == f(x)`` on the range of ``f``.
_IDEMPOTENT = frozenset({"relu"})


def _hidden_names(model: nn.Sequential) -> list[str]:
    names = [name for name, _ in model.named_children()]
    return [name for name in names if name.startswith("hidden")]


def _following_name(hidden: list[str], index: int) -> str:
    """The layer that reads hidden layer ``index``'s output."""
    return hidden_layer_name(index + 1) if index + 1 < len(hidden) else "output"


def _residual_like(
    layer: nn.Module,
    weight: torch.Tensor,
    bias: torch.Tensor,
    projection: torch.Tensor | None,
    *,
    parts: tuple[nn.Module, nn.Module | None] | None = None,
) -> ResidualLinear:
    """A :class:`ResidualLinear` with these tensors, ``layer``'s training flag and its
    activation and dropout (or those of ``parts``).

    A ``projection`` equal to the identity is dropped (the skip is then the identity).
    """
    if parts is None:
        assert isinstance(layer, ResidualLinear)
        parts = (layer.act, layer.dropout)
    out_features, in_features = weight.shape
    if projection is not None and in_features == out_features:
        eye = torch.eye(out_features, dtype=projection.dtype, device=projection.device)
        if torch.equal(projection, eye):
            projection = None
    new = ResidualLinear(
        in_features,
        out_features,
        *parts,
        projection=projection is not None,
        device="meta",
        dtype=weight.dtype,
    ).to_empty(device=weight.device)
    with torch.no_grad():
        new.weight.copy_(weight)
        new.bias.copy_(bias)
        if projection is not None:
            assert new.projection is not None
            new.projection.copy_(projection)
    return new.train(layer.training)


def _linear_like(like: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """A plain ``Linear`` of ``weight`` (out, in) and ``bias`` on ``like``'s device and dtype."""
    new = nn.Linear(weight.shape[1], weight.shape[0], device="meta", dtype=weight.dtype)
    new = new.to_empty(device=weight.device)
    with torch.no_grad():
        new.weight.copy_(weight)
        new.bias.copy_(bias)
    return new.train(like.training)


def _skip_matrix(layer: nn.Linear) -> torch.Tensor | None:
    """The skip of a residual layer as a matrix (out, in); ``None`` for a plain layer."""
    if not isinstance(layer, ResidualLinear):
        return None
    if layer.projection is not None:
        return layer.projection.detach()
    return torch.eye(layer.out_features, dtype=layer.weight.dtype, device=layer.weight.device)


def _with_inputs(layer: nn.Linear, columns: Callable[[torch.Tensor], torch.Tensor]) -> nn.Linear:
    """``layer`` reading a changed input: ``columns`` maps each (out, in) matrix to the new one.

    A residual layer's skip goes through ``columns`` as well (an identity skip
    becomes a projection unless the result is the identity again).
    """
    with torch.no_grad():
        weight = columns(layer.weight.detach())
        skip = _skip_matrix(layer)
        if isinstance(layer, ResidualLinear):
            assert skip is not None
            return _residual_like(layer, weight, layer.bias.detach(), columns(skip))
        return _linear_like(layer, weight, layer.bias.detach())


def widen_layer(
    model: nn.Sequential, index: int, units: int, *, generator: torch.Generator | None = None
) -> nn.Sequential:
    """A copy of ``model`` whose hidden layer ``index`` has ``units`` units, same function.

    A residual layer's skip follows its units: rows of its projection are
    copied too, and an identity skip becomes the projection that copies the
    input unit each new unit copies. A residual layer reading the widened one
    has its skip's columns divided like its weights (an identity skip becomes
    such a projection). Where a projection results whose layer's widths match
    and which is not exactly the identity, it is kept (the function is
    preserved, but the model then differs from ``build_model`` of the child in
    that one tensor).

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
        weight, bias = layer.weight.detach()[source], layer.bias.detach()[source]
        skip = _skip_matrix(layer)
        if isinstance(layer, ResidualLinear):
            assert skip is not None
            wider: nn.Linear = _residual_like(layer, weight, bias, skip[source])
        else:
            wider = _linear_like(layer, weight, bias)
        grown = _with_inputs(following, lambda m: m[:, source] / copies[source].to(m))
    setattr(child, hidden_layer_name(index), wider)
    setattr(child, following_name, grown)
    return child


def identity_exact(previous_activation: str, activation: str) -> bool:
    """Whether an identity layer with ``activation`` after one with
    ``previous_activation`` leaves the function unchanged.

    The previous layer must be plain: a residual layer's output is not in
    its activation's range.
    """
    return activation == previous_activation and activation in _IDEMPOTENT


def insert_identity_layer(model: nn.Sequential, index: int, activation: str) -> nn.Sequential:
    """A copy of ``model`` with an identity hidden layer after hidden layer ``index``.

    The new layer is inserted without dropout; later hidden layers are renumbered.
    The function is unchanged when :func:`identity_exact` holds for the activation
    of layer ``index`` (a plain layer) and ``activation``.
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
    act = layers.activation(activation, "activation", owner).train(source.training)
    return _insert_at(model, index + 1, inserted.train(source.training), act)


def insert_residual_layer(
    model: nn.Sequential, position: int, activation: str, *, dropout: float = 0.0
) -> nn.Sequential:
    """A copy of ``model`` with a residual hidden layer at ``position`` that starts as the identity.

    The new layer reads what hidden layer ``position`` read (the network's or
    the body's output for 0; ``position`` may be the number of hidden layers:
    then it reads the last one), keeps its width (an identity skip; widen it
    afterwards with :func:`widen_layer`) and has a zero branch, ``W = 0`` and
    ``b = 0``. The branch then adds ``act(0)`` to every unit: 0 for every
    activation the trainer builds; a non-zero constant is subtracted from the
    bias of every layer that reads it (through the identity or projection
    skips of later residual layers, up to the first plain layer or the
    output). The function is unchanged, in eval mode, for every activation.
    Later hidden layers are renumbered.
    """
    owner = "insert_residual_layer"
    hidden = _hidden_names(model)
    position = check_int(position, "position", owner, low=0, high=len(hidden))
    reader = getattr(model, _reader_name(hidden, position))
    assert isinstance(reader, nn.Linear)
    width = reader.in_features
    dropout = check_float(dropout, "dropout", owner, low=0.0, high=1.0, high_open=True)
    act = layers.activation(activation, "activation", owner)
    inserted = ResidualLinear(
        width,
        width,
        act,
        SeededDropout(dropout) if dropout > 0.0 else None,
        device="meta",
        dtype=reader.weight.dtype,
    ).to_empty(device=reader.weight.device)
    with torch.no_grad():
        inserted.weight.zero_()
        inserted.bias.zero_()
    child = _insert_at(model, position, inserted.train(reader.training))
    with torch.no_grad():
        zero = torch.zeros((), dtype=reader.weight.dtype, device=reader.weight.device)
        constant = act(zero).expand(width)
        if bool(constant.any()):
            _absorb_constant(child, position + 1, constant)
    return child


def _absorb_constant(model: nn.Sequential, position: int, constant: torch.Tensor) -> None:
    """Take ``constant``, added to the input of hidden layer ``position``, out again, in place.

    Each reader's bias loses ``W @ constant``; a residual reader passes the
    constant on through its skip to the next reader.
    """
    hidden = _hidden_names(model)
    for index in range(position, len(hidden) + 1):
        reader = getattr(model, _reader_name(hidden, index))
        assert isinstance(reader, nn.Linear)
        reader.bias.sub_(reader.weight.detach() @ constant)
        skip = _skip_matrix(reader) if index < len(hidden) else None
        if skip is None:
            return
        constant = skip @ constant


def _reader_name(hidden: list[str], position: int) -> str:
    """The module at dense ``position``: hidden layer ``position``, or the output after the last."""
    return hidden_layer_name(position) if position < len(hidden) else "output"


def insert_copy_layer(model: nn.Sequential, index: int) -> nn.Sequential:
    """A copy of ``model`` with a copy of hidden layer ``index`` (weights, activation,
    dropout, skip) right after it; the layer must be square (input width equals units).

    The function changes (the layer now applies twice); later hidden layers
    are renumbered.
    """
    owner = "insert_copy_layer"
    hidden = _hidden_names(model)
    index = check_int(index, "index", owner, low=0, high=len(hidden) - 1)
    source = getattr(model, hidden_layer_name(index))
    assert isinstance(source, nn.Linear)
    if source.in_features != source.out_features:
        expected = "a square layer (input width equal to units)"
        raise_invalid("index", owner, expected, f"{source.in_features} -> {source.out_features}")
    extras = [
        copy.deepcopy(getattr(model, f"{kind}{index}"))
        for kind in ("act", "dropout")
        if hasattr(model, f"{kind}{index}")
    ]
    return _insert_at(model, index + 1, copy.deepcopy(source), *extras)


def set_residual(model: nn.Sequential, index: int, residual: bool) -> tuple[nn.Sequential, bool]:
    """A copy of ``model`` whose hidden layer ``index`` is residual (or plain), and whether
    the function is unchanged.

    A plain layer made residual keeps its branch; a projection skip starts at
    zero (exact), an identity skip (input width equals units) is the identity
    (the input is added: not exact). A residual layer made plain loses its
    skip: exact only if that was a projection of zeros.
    """
    owner = "set_residual"
    hidden = _hidden_names(model)
    index = check_int(index, "index", owner, low=0, high=len(hidden) - 1)
    name = hidden_layer_name(index)
    layer = getattr(model, name)
    assert isinstance(layer, nn.Linear)
    if isinstance(layer, ResidualLinear) == residual:
        return copy.deepcopy(model), True
    weight, bias = layer.weight.detach(), layer.bias.detach()
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    exact = False
    for child_name, module in copy.deepcopy(model).named_children():
        if child_name in (f"act{index}", f"dropout{index}"):
            continue  # moved into the residual layer
        if child_name != name:
            modules[child_name] = module
        elif residual:
            act = copy.deepcopy(getattr(model, f"act{index}"))
            dropout = copy.deepcopy(getattr(model, f"dropout{index}", None))
            square = layer.in_features == layer.out_features
            zeros = None if square else torch.zeros_like(weight)
            modules[name] = _residual_like(layer, weight, bias, zeros, parts=(act, dropout))
            exact = not square
        else:
            assert isinstance(module, ResidualLinear)
            modules[name] = _linear_like(layer, weight, bias)
            modules[f"act{index}"] = module.act
            if module.dropout is not None:
                modules[f"dropout{index}"] = module.dropout
            exact = module.projection is not None and not bool(module.projection.any())
    return _sequential(modules, model), exact


def _insert_at(model: nn.Sequential, position: int, *new: nn.Module) -> nn.Sequential:
    """A copy of ``model`` with the modules of a new hidden layer ``position`` (its
    ``Linear``, then an activation and a dropout, if given) before the module that
    was at that position; later layers are renumbered."""
    kinds = ("hidden", "act", "dropout")
    before = _reader_name(_hidden_names(model), position)
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for name, module in copy.deepcopy(model).named_children():
        if name == before:
            for kind, inserted in zip(kinds, new, strict=False):
                modules[f"{kind}{position}"] = inserted
        layer_index = _layer_index(name)
        if layer_index is not None and layer_index >= position:
            name = _renumber(name, layer_index + 1)
        modules[name] = module
    return _sequential(modules, model)


def _sequential(modules: OrderedDict[str, nn.Module], model: nn.Module) -> nn.Sequential:
    """``modules`` in a new container with ``model``'s training flag (its children keep theirs)."""
    result = nn.Sequential(modules)
    result.training = model.training
    return result


def _layer_index(name: str) -> int | None:
    for prefix in ("hidden", "act", "dropout"):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            return int(name[len(prefix) :])
    return None


def _renumber(name: str, new_index: int) -> str:
    prefix = name.rstrip("0123456789")
    return f"{prefix}{new_index}"
