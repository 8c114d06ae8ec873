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

Convolutional blocks (``block0``, ``block1``, ..., see :mod:`evohpo.training.conv`):

* :func:`widen_block`: the new output channels of a block copy randomly
  chosen channels (conv filters and bias, batch-norm weight, bias and running
  statistics, the rows of the residual projection), and every reader of the
  block's output divides the copied channels' weights by their number of
  copies: the next block's conv and projection, or the first dense layer
  (per channel with ``readout="avg"``, per channel and position with
  ``"flatten"``). Where the widening gives a residual block an identity skip a
  projection, that projection copies or sums the channels back exactly; where
  it takes a projection away (the channels now match), the projection's
  difference from the identity moves into the centre tap of the block's conv.
  Exact in eval mode for any element-wise activation, with one exception:
  that move goes through the block's batch norm and is lost on channels whose
  batch-norm weight is 0.
* :func:`insert_block`: a new block after block ``index`` with that block's
  channels, stride 1 and no pooling. A plain block starts as the identity
  (a centred 1 per channel in the conv kernel; batch norm the identity in
  eval mode); a residual block starts with a zero branch (zero conv weights,
  or a zero batch-norm weight and bias), so that it computes ``act(x + 0)``.
  Either way the block computes ``act(x)`` of what it receives, which is
  ``x`` (exact) for ReLU after ReLU; :func:`block_insert_exact` says when.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from evohpo._validation import check_choice, check_float, check_int, raise_invalid
from evohpo.training import layers
from evohpo.training.conv import ConvBlock, block_name
from evohpo.training.layers import ResidualLinear, SeededDropout
from evohpo.training.nn import hidden_layer_name
from evohpo.training.spec import BlockSpec

__all__ = [
    "block_insert_exact",
    "identity_exact",
    "insert_block",
    "insert_copy_layer",
    "insert_identity_layer",
    "insert_residual_layer",
    "set_residual",
    "widen_block",
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


# -- convolutional blocks ---------------------------------------------------------------------
_Conv = nn.Conv1d | nn.Conv2d
_Norm = nn.BatchNorm1d | nn.BatchNorm2d
_CONVS: dict[int, type[_Conv]] = {1: nn.Conv1d, 2: nn.Conv2d}
_NORMS: dict[int, type[_Norm]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


def _blocks(model: nn.Module, owner: str) -> list[ConvBlock]:
    """The blocks of ``model``, input side first; raises for a model without a body."""
    blocks: list[ConvBlock] = []
    while isinstance(getattr(model, block_name(len(blocks)), None), ConvBlock):
        blocks.append(getattr(model, block_name(len(blocks))))
    if not blocks or not isinstance(model, nn.Sequential):
        raise_invalid(
            "model", owner, "a model of build_model with a convolutional body", type(model).__name__
        )
    return blocks


def _parts(block: ConvBlock) -> tuple[_Conv, _Norm | None, _Conv | None]:
    conv, norm, proj = block.conv, block.norm, block.proj
    assert isinstance(conv, _Conv)
    assert norm is None or isinstance(norm, _Norm)
    assert proj is None or isinstance(proj, _Conv)
    return conv, norm, proj


def _empty_conv(
    like: _Conv, in_channels: int, out_channels: int, kernel: int, stride: int, *, bias: bool
) -> _Conv:
    """A conv on ``like``'s device and dtype whose values the caller sets (nothing is drawn)."""
    cls = _CONVS[like.weight.dim() - 2]
    module = cls(
        in_channels,
        out_channels,
        kernel,
        stride=stride,
        padding=kernel // 2,
        bias=bias,
        device="meta",
        dtype=like.weight.dtype,
    )
    return module.to_empty(device=like.weight.device)


def _conv_with(
    like: _Conv, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: int
) -> _Conv:
    """A conv of ``weight`` (out, in, *kernel) and ``bias`` on ``like``'s device and dtype."""
    out_channels, in_channels, kernel = weight.shape[0], weight.shape[1], weight.shape[-1]
    new = _empty_conv(like, in_channels, out_channels, kernel, stride, bias=bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            assert new.bias is not None
            new.bias.copy_(bias)
    return new


def _norm_tensors(norm: _Norm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weight, bias, running mean and running variance (build_model's norms have all four)."""
    weight, bias, mean, var = norm.weight, norm.bias, norm.running_mean, norm.running_var
    assert weight is not None
    assert bias is not None
    assert mean is not None
    assert var is not None
    return weight, bias, mean, var


def _norm_rows(norm: _Norm, source: torch.Tensor) -> _Norm:
    """Batch norm over channels ``source`` of ``norm``: channel j copies channel ``source[j]``."""
    weight = norm.weight
    assert weight is not None
    new = type(norm)(
        len(source), eps=norm.eps, momentum=norm.momentum, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        for old, copied in zip(_norm_tensors(norm), _norm_tensors(new), strict=True):
            copied.copy_(old[source])
        if norm.num_batches_tracked is not None and new.num_batches_tracked is not None:
            new.num_batches_tracked.copy_(norm.num_batches_tracked)
    return new


def _centre_tap(weight: torch.Tensor) -> torch.Tensor:
    """A view (out, in) of the kernel's centre: a 1x1 conv under stride 1 and "same" padding."""
    tap = weight
    for _ in range(weight.dim() - 2):
        tap = tap.select(-1, tap.shape[-1] // 2)
    return tap


def _divide_inputs(
    weight: torch.Tensor, source: torch.Tensor, copies: torch.Tensor
) -> torch.Tensor:
    """Input channel j of ``weight`` (out, in, ...) from ``source[j]``, divided by its copies."""
    shape = (1, len(source), *([1] * (weight.dim() - 2)))
    return weight[:, source] / copies[source].reshape(shape)


def _fold_into_conv(conv: _Conv, norm: _Norm | None, matrix: torch.Tensor) -> None:
    """Add the 1x1 map ``matrix`` (out, in) after ``norm`` to ``conv``'s output, in place.

    With stride 1 and "same" padding the centre tap of the kernel is a 1x1
    conv, so ``norm(conv'(x)) = norm(conv(x)) + matrix @ x`` in eval mode once
    the tap gets ``matrix`` divided by the norm's scale. A channel whose scale
    is 0 cannot take it and keeps its weights.
    """
    if norm is not None:
        weight, _, _, var = _norm_tensors(norm)
        gamma = weight.detach()
        scale = torch.sqrt(var + norm.eps) / torch.where(gamma == 0, 1.0, gamma)
        matrix = matrix * torch.where(gamma == 0, 0.0, scale)[:, None]
    with torch.no_grad():
        _centre_tap(conv.weight).add_(matrix.to(conv.weight))


def _flat(weight: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv weight (out, in, 1[, 1]) as a matrix (out, in)."""
    return weight.reshape(weight.shape[0], weight.shape[1])


def _as_1x1(matrix: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return matrix.reshape(*matrix.shape, *([1] * (like.dim() - 2))).to(like)


def _rebuilt(
    block: ConvBlock, conv: nn.Module, norm: nn.Module | None, proj: nn.Module | None
) -> ConvBlock:
    """``block`` with new parts, registered in build_model's order (conv, norm, proj)."""
    new = ConvBlock(conv, norm, proj, block.act, block.dropout, block.pool, residual=block.residual)
    return new.train(block.training)


def widen_block(
    model: nn.Sequential, index: int, channels: int, *, generator: torch.Generator | None = None
) -> nn.Sequential:
    """A copy of ``model`` whose block ``index`` has ``channels`` output channels, same function.

    Parameters
    ----------
    model : nn.Sequential
        A model of :func:`~evohpo.training.nn.build_model` with a convolutional body.
    index : int
        The block to widen.
    channels : int
        Its new number of channels, at least its current one.
    generator : torch.Generator, optional
        Picks the channels that the new ones copy.

    Returns
    -------
    nn.Sequential
        The ``state_dict`` keys and shapes are those of ``build_model`` for the
        genome whose block ``index`` has ``channels`` channels; residual blocks
        gain or lose their projection as that genome says. The function is
        unchanged in eval mode, unless a projection is lost (block ``index``
        or the next one is residual and its input and output channels become
        equal) in a block with batch norm whose weight is 0 on some channel.
        In training mode dropout draws independent masks for copied channels.

    Raises
    ------
    InvalidParameterError
        If ``model`` has no body, ``index`` is not a block or ``channels`` is
        fewer than the block has.
    """
    owner = "widen_block"
    blocks = _blocks(model, owner)
    index = check_int(index, "index", owner, low=0, high=len(blocks) - 1)
    conv, norm, proj = _parts(blocks[index])
    width = conv.out_channels
    channels = check_int(channels, "channels", owner, low=width)
    # Channel j of the wider block copies channel source[j]; the first `width` are themselves.
    extra = torch.randint(width, (channels - width,), generator=generator)
    source = torch.cat([torch.arange(width), extra]).to(conv.weight.device)
    copies = torch.bincount(source, minlength=width).to(conv.weight.dtype)
    child = copy.deepcopy(model)
    block = getattr(child, block_name(index))
    conv, norm, proj = _parts(block)
    with torch.no_grad():
        bias = None if conv.bias is None else conv.bias[source]
        wider = _conv_with(conv, conv.weight[source], bias, stride=conv.stride[0])
        wider_norm = None if norm is None else _norm_rows(norm, source)
        wider_proj = _widened_skip(block, wider, wider_norm, proj, source)
    setattr(child, block_name(index), _rebuilt(block, wider, wider_norm, wider_proj))
    if index + 1 < len(blocks):
        following = getattr(child, block_name(index + 1))
        setattr(child, block_name(index + 1), _grown_block(following, source, copies))
    else:
        _grow_head(child, width, source, copies)
    return child


def _widened_skip(
    block: ConvBlock, conv: _Conv, norm: _Norm | None, proj: _Conv | None, source: torch.Tensor
) -> _Conv | None:
    """The projection of the widened ``block`` (``conv`` and ``norm`` already widened)."""
    if not block.residual:
        return None
    in_channels, channels, stride = conv.in_channels, conv.out_channels, conv.stride[0]
    if proj is not None:
        rows = proj.weight[source]
        if in_channels != channels or stride != 1:
            return _conv_with(proj, rows, None, stride=stride)
        # The child's skip is the identity: the rest of proj moves into the conv.
        identity = torch.eye(channels, dtype=rows.dtype, device=rows.device)
        _fold_into_conv(conv, norm, _flat(rows) - identity)
        return None
    if in_channels == channels:
        return None
    # An identity skip (in_channels == old width, stride 1) becomes a copy of channel source[j].
    select = torch.zeros(channels, in_channels, dtype=conv.weight.dtype, device=conv.weight.device)
    select[torch.arange(channels), source] = 1.0
    return _conv_with(conv, _as_1x1(select, conv.weight), None, stride=1)


def _grown_block(block: ConvBlock, source: torch.Tensor, copies: torch.Tensor) -> ConvBlock:
    """``block`` reading the widened channels ``source``, each divided by its copies."""
    conv, norm, proj = _parts(block)
    channels, out_channels, stride = len(source), conv.out_channels, conv.stride[0]
    with torch.no_grad():
        weight = _divide_inputs(conv.weight, source, copies)
        grown = _conv_with(conv, weight, conv.bias, stride=stride)
        new_proj: _Conv | None = None
        if block.residual:
            needs_proj = channels != out_channels or stride != 1
            if proj is not None:
                columns = _divide_inputs(proj.weight, source, copies)
                if needs_proj:
                    new_proj = _conv_with(proj, columns, None, stride=stride)
                else:
                    # The child's skip is the identity: the rest of proj moves into the conv.
                    identity = torch.eye(channels, dtype=columns.dtype, device=columns.device)
                    _fold_into_conv(grown, norm, _flat(columns) - identity)
            elif needs_proj:
                # The identity skip (stride 1, out_channels == old width) becomes the
                # sum of each channel's copies, divided by their number.
                identity = torch.eye(out_channels, dtype=conv.weight.dtype, device=source.device)
                columns = _divide_inputs(_as_1x1(identity, conv.weight), source, copies)
                new_proj = _conv_with(conv, columns, None, stride=1)
    return _rebuilt(block, grown, norm, new_proj)


def _grow_head(
    model: nn.Sequential, width: int, source: torch.Tensor, copies: torch.Tensor
) -> None:
    """Divide the first dense layer's inputs (and skip) of the widened last block, in place."""
    name = next(n for n, m in model.named_children() if isinstance(m, nn.Linear))
    dense = getattr(model, name)
    assert isinstance(dense, nn.Linear)
    positions = dense.in_features // width  # 1 with readout "avg"

    def columns(matrix: torch.Tensor) -> torch.Tensor:
        rows = matrix.reshape(matrix.shape[0], width, positions)
        return _divide_inputs(rows, source, copies).reshape(matrix.shape[0], -1)

    setattr(model, name, _with_inputs(dense, columns))


def block_insert_exact(previous: BlockSpec, block: BlockSpec) -> bool:
    """Whether :func:`insert_block` of ``block`` after ``previous`` keeps the function.

    The inserted block keeps the channels with stride 1 and no pooling, and
    computes ``act(x)`` of the values ``x`` it receives (an identity conv, or
    a residual branch of zeros): exact when ``act`` is the identity on the
    range of ``previous``'s activation, which holds for ReLU after ReLU
    (:func:`identity_exact`). Exact in eval mode (batch norm uses its running
    statistics, dropout is off).
    """
    return (
        block.channels == previous.channels
        and block.stride == 1
        and block.pool == "none"
        and identity_exact(previous.activation, block.activation)
    )


def insert_block(
    model: nn.Sequential,
    index: int,
    block: BlockSpec,
    *,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """A copy of ``model`` with ``block`` inserted after block ``index``.

    The new block keeps the shape: ``block.channels`` must equal block
    ``index``'s channels (widen it afterwards with :func:`widen_block`),
    ``block.stride`` must be 1 and ``block.pool`` ``"none"``. Later blocks are
    renumbered. A plain block starts as the identity: the conv kernel has a 1
    at its centre from each channel to itself (bias 0) and batch norm has
    weight 1, bias 0, running mean 0 and running variance ``1 - eps``. A
    residual block starts with a zero branch: without batch norm its conv
    weights and bias are 0; with batch norm the conv is drawn afresh (from
    ``generator``) and the batch-norm weight and bias are 0. Either way it
    computes ``act(x)``; the function is unchanged, in eval mode, exactly when
    :func:`block_insert_exact` holds (ReLU after ReLU).

    Parameters
    ----------
    model : nn.Sequential
        A model of :func:`~evohpo.training.nn.build_model` with a convolutional body.
    index : int
        The block after which ``block`` goes.
    block : BlockSpec
        The new block's settings, such as a :class:`~evohpo.evolution.blocks.BlockGene`.
    generator : torch.Generator, optional
        Draws the conv of a residual block with batch norm.

    Raises
    ------
    InvalidParameterError
        Naming ``model``, ``index`` or the field of ``block`` that is out of range
        or would change the shape.
    """
    owner = "insert_block"
    blocks = _blocks(model, owner)
    index = check_int(index, "index", owner, low=0, high=len(blocks) - 1)
    previous = blocks[index]
    conv, _, _ = _parts(previous)
    if not isinstance(block, BlockSpec):
        raise_invalid("block", owner, "a BlockSpec such as a BlockGene", block)
    channels = conv.out_channels
    if block.channels != channels:
        expected = f"{channels}, the channels of block {index} (widen the new block afterwards)"
        raise_invalid("block.channels", owner, expected, block.channels)
    if block.stride != 1:
        raise_invalid(
            "block.stride", owner, "1: an inserted block keeps the positions", block.stride
        )
    check_choice(block.pool, "block.pool", owner, ["none"])
    kernel = check_int(block.kernel, "block.kernel", owner, low=1)
    if kernel % 2 == 0:
        raise_invalid("block.kernel", owner, "an odd int >= 1 (same padding)", kernel)
    for name in ("residual", "batchnorm"):
        if not isinstance(getattr(block, name), bool):
            raise_invalid(f"block.{name}", owner, "a bool", getattr(block, name))
    dropout = check_float(block.dropout, "block.dropout", owner, low=0.0, high=1.0, high_open=True)
    act = layers.activation(block.activation, "block.activation", owner)
    new_conv, new_norm = _new_block(conv, block, kernel, generator)
    inserted = ConvBlock(
        new_conv,
        new_norm,
        None,
        act,
        SeededDropout(dropout) if dropout > 0.0 else None,
        None,
        residual=block.residual,
    ).train(previous.training)
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for name, module in copy.deepcopy(model).named_children():
        if isinstance(module, ConvBlock):
            number = int(name[len("block") :])
            if number > index:
                name = block_name(number + 1)
        modules[name] = module
        if name == block_name(index):
            modules[block_name(index + 1)] = inserted
    return _sequential(modules, model)


def _new_block(
    like: _Conv, block: BlockSpec, kernel: int, generator: torch.Generator | None
) -> tuple[_Conv, _Norm | None]:
    """The conv and batch norm of an inserted block: the identity, or a zero residual branch."""
    channels, n_dims = like.out_channels, like.weight.dim() - 2
    norm: _Norm | None = None
    if block.batchnorm:
        norm = _NORMS[n_dims](channels, device=like.weight.device, dtype=like.weight.dtype)
    if block.residual and norm is not None:
        conv = layers.conv(
            n_dims, channels, channels, kernel, stride=1, bias=False, generator=generator
        )
        conv = conv.to(like.weight)
        with torch.no_grad():
            _norm_tensors(norm)[0].zero_()  # the bias is 0 already
        return conv, norm
    conv = _empty_conv(like, channels, channels, kernel, 1, bias=not block.batchnorm)
    with torch.no_grad():
        conv.weight.zero_()
        if conv.bias is not None:
            conv.bias.zero_()
        if not block.residual:
            _centre_tap(conv.weight).copy_(torch.eye(channels))
            if norm is not None:
                _norm_tensors(norm)[3].fill_(1.0 - norm.eps)
    return conv, norm
