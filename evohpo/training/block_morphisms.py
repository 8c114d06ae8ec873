"""Function-preserving changes of a trained network's convolutional blocks (Net2Net).

The same contract as :mod:`evohpo.training.morphisms` (a model of
:func:`~evohpo.training.nn.build_model` in, a new one with the child genome's
keys and shapes out, the parent unchanged), for the body of blocks.

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

import torch
from torch import nn

from evohpo._validation import check_choice, check_float, check_int, raise_invalid
from evohpo.training import layers
from evohpo.training.conv import ConvBlock, block_name
from evohpo.training.layers import SeededDropout
from evohpo.training.morphisms import _sequential, _with_inputs, identity_exact
from evohpo.training.spec import BlockSpec

__all__ = ["block_insert_exact", "insert_block", "widen_block"]

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
