"""k multilayer perceptrons of one depth as one stacked network.

Layer ``l`` of the stack holds every member's weights in one ``[k, in, out]``
tensor (its bias in ``[k, 1, out]``), so one batched matrix product
(``torch.baddbmm``) runs layer ``l`` of every member. Members may differ in
width, activation, dropout and residual flags:

* widths are padded to the widest member at each layer. A padded unit starts
  with zero incoming weights, bias and outgoing weights; every activation the
  trainer builds has f(0) = 0, so the unit's output, and every gradient of its
  weights, is exactly zero, and the optimizers keep a zero weight with a zero
  gradient at zero (weight decay included). The padding costs compute only;
* an activation is applied to each run of consecutive members that use it
  (one call when all do): the layer's output is split into views along the
  members and the results joined, which autograd undoes with one join and
  one split. The trainer orders a stack's members by their activations so
  that runs are long;
* dropout draws one mask for the stack, each member's entries kept with its own
  probability (a member with rate 0 keeps every entry exactly).

Residual dense layers stack too: a layer where some member projects its skip
holds a ``[k, in, out]`` projection (zero, and kept at zero by a constant
mask on the forward pass, for members without one); an identity skip adds the
padded input, cut or zero-padded to the layer's padded width (a member's
padded entries are zero on both sides, so they stay zero). Dropout applies to
the branch of a residual layer, as in the solo model.

Every member's parameters live in row ``i`` of one flat ``[k, P]`` tensor (the
layer tensors are views of it), so that
:class:`~evohpo.training.stack_optimizer.StackOptimizer` steps all members and
all layers with a few element-wise operations, and so that removing members
(:meth:`DenseStack.keep`) is one ``index_select``.

Training steps run :meth:`DenseStack.train_step`: the forward and backward passes
written out, with the loss's gradient from the task
(:meth:`~evohpo.training.task.Task.member_losses_and_grads`) and each activation's
derivative by the kernel autograd runs for it, the gradients written straight
into the flat gradient rows. :meth:`DenseStack.forward` and
:meth:`DenseStack.backward` (autograd) remain for evaluation and for other losses.

A member starts with exactly the weights :func:`~evohpo.training.nn.build_model`
gives it alone with the same seed, and :meth:`DenseStack.member_model` returns
its weights as the ``nn.Sequential`` the solo trainer returns.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from evohpo._validation import raise_invalid
from evohpo.training import layers
from evohpo.training.cost import skip_kinds
from evohpo.training.nn import build_model, hidden_layer_name, start_model
from evohpo.training.spec import NetworkSpec, network_blocks
from evohpo.training.task import Task

__all__ = ["DenseStack", "stack_widths"]

_OWNER = "DenseStack"

#: The message of torch's warning about ``.grad`` tensors that are views of a larger
#: tensor. The flat layout is deliberate: it trades nothing measurable for one
#: optimizer call per step.
_LAYOUT_WARNING = "grad and param do not obey the gradient layout contract"


def stack_widths(genomes: Sequence[NetworkSpec], n_features: int, n_outputs: int) -> list[int]:
    """Widths of the stacked layers' inputs and output: the widest member at each layer."""
    depth = len(genomes[0].layers)
    hidden = [max(g.layers[index].units for g in genomes) for index in range(depth)]
    return [n_features, *hidden, n_outputs]


@dataclass(frozen=True)
class _Layer:
    """Where one layer's weights, bias and (if any member has one) skip projection lie
    in a member's flat row."""

    n_in: int
    n_out: int
    offset: int
    projection: bool = False

    @property
    def size(self) -> int:
        return self.n_in * self.n_out * (2 if self.projection else 1) + self.n_out

    @property
    def projection_offset(self) -> int:
        return self.offset + self.n_in * self.n_out + self.n_out


@dataclass(frozen=True)
class _ActivationRun:
    """One activation over a run of consecutive members: its module, its backward
    function and the run's length."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    backward: layers.ActivationBackward
    length: int


def _activation_runs(names: Sequence[str]) -> list[_ActivationRun]:
    """The activations of one layer, one per run of consecutive members that use it.

    Runs of views cost far less than gathering each activation's members and
    scattering the results back (0.8 against 1.3 ms a step for 4 members of
    mixed activations, batch 32; docs/benchmarks.md).
    """
    return [
        _ActivationRun(
            layers.activation(name, "activation", _OWNER),
            layers.activation_backward(name, "activation", _OWNER),
            len(list(run)),
        )
        for name, run in itertools.groupby(names)
    ]


class DenseStack:
    """The stacked weights of k dense genomes of the same depth.

    Parameters
    ----------
    genomes : sequence of NetworkSpec
        The members, all without a convolutional body and with the same number of
        hidden layers.
    n_features, n_outputs : int
        Input and output widths, shared by every member.
    seeds : sequence of int
        Each member's weight-initialisation seed (as ``build_model(seed=...)``).
    device : torch.device
        Where the stack lives.
    initial_states : sequence of state dicts or None, optional
        Weights a member starts from instead of its seed's (see
        :func:`~evohpo.training.nn.start_model`).
    """

    def __init__(
        self,
        genomes: Sequence[NetworkSpec],
        n_features: int,
        n_outputs: int,
        seeds: Sequence[int],
        device: torch.device,
        *,
        initial_states: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
    ) -> None:
        if not genomes:
            raise_invalid("genomes", _OWNER, "at least one genome", genomes)
        depth = len(genomes[0].layers)
        for index, genome in enumerate(genomes):
            if network_blocks(genome) is not None:
                raise_invalid(f"genomes[{index}]", _OWNER, "a genome without a body", genome)
            if len(genome.layers) != depth:
                raise_invalid(
                    f"genomes[{index}]", _OWNER, f"a genome of {depth} hidden layers", genome
                )
        self.genomes = list(genomes)
        self.n_features = n_features
        self.n_outputs = n_outputs
        self.device = device
        widths = stack_widths(genomes, n_features, n_outputs)
        skips = [skip_kinds(genome, n_features) for genome in genomes]
        self._layers: list[_Layer] = []
        offset = 0
        for index, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
            projection = any(index < len(kinds) and kinds[index] == "projection" for kinds in skips)
            self._layers.append(_Layer(n_in, n_out, offset, projection))
            offset += self._layers[-1].size
        self.n_flat = offset
        self.params = torch.zeros(len(genomes), offset, device=device)
        self.grads = torch.zeros_like(self.params)
        states = initial_states if initial_states is not None else [None] * len(genomes)
        with torch.no_grad():
            for row, (genome, seed, state) in enumerate(zip(genomes, seeds, states, strict=True)):
                model = start_model(
                    genome, n_features, n_outputs, seed=seed, initial_state=state, owner=_OWNER
                )
                self._load_member(row, model)
        self._bind()
        self._configure(self.genomes)

    # -- layout ----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of members."""
        return len(self.genomes)

    def _bind(self) -> None:
        """Make the layer tensors views of the flat rows, with views of the flat gradients."""
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        self.projections: list[torch.Tensor | None] = []
        k = self.size
        for layer in self._layers:
            end = layer.offset + layer.n_in * layer.n_out
            shapes = [
                (layer.offset, end, (k, layer.n_in, layer.n_out)),
                (end, end + layer.n_out, (k, 1, layer.n_out)),
            ]
            if layer.projection:
                start = layer.projection_offset
                shapes.append((start, start + layer.n_in * layer.n_out, shapes[0][2]))
            views = []
            for start, stop, shape in shapes:
                view = self.params[:, start:stop].view(shape).requires_grad_()
                view.grad = self.grads[:, start:stop].view(shape)
                views.append(view)
            self.weights.append(views[0])
            bias = views[1]
            self.biases.append(bias)
            self.projections.append(views[2] if layer.projection else None)
        # The same gradient views, typed as tensors (a view's .grad reads as optional).
        self._weight_grads = [self._grad(view) for view in self.weights]
        self._bias_grads = [self._grad(view) for view in self.biases]
        self._projection_grads = [
            None if view is None else self._grad(view) for view in self.projections
        ]

    @staticmethod
    def _grad(view: torch.Tensor) -> torch.Tensor:
        assert view.grad is not None
        return view.grad

    def _configure(self, genomes: Sequence[NetworkSpec]) -> None:
        """Per-layer activation groups and dropout keep-probabilities of the members."""
        self._activations = [
            _activation_runs([g.layers[index].activation for g in genomes])
            for index in range(len(self._layers) - 1)
        ]
        # Per hidden layer: which members add their input (identity skips) and
        # which a projection; masks of 0 and 1 over the members, None when none does.
        kinds = [skip_kinds(genome, self.n_features) for genome in genomes]
        self._identity: list[torch.Tensor | None] = []
        self._projected: list[torch.Tensor | None] = []
        for index in range(len(self._layers) - 1):
            for name, masks in (("identity", self._identity), ("projection", self._projected)):
                rows = [float(member[index] == name) for member in kinds]
                mask = None
                if any(rows):
                    mask = torch.tensor(rows, device=self.device).view(-1, 1, 1)
                masks.append(mask)
        self._keep: list[torch.Tensor | None] = []
        for index in range(len(self._layers) - 1):
            rates = [float(g.layers[index].dropout) for g in genomes]
            if max(rates) == 0.0:
                self._keep.append(None)
            else:
                keep = torch.tensor([1.0 - r for r in rates], device=self.device)
                self._keep.append(keep.view(-1, 1, 1))

    def _load_member(self, row: int, model: nn.Sequential) -> None:
        state = model.state_dict()
        names = [hidden_layer_name(i) for i in range(len(self._layers) - 1)] + ["output"]
        for name, layer in zip(names, self._layers, strict=True):
            weight = state[f"{name}.weight"]  # (out, in)
            n_out, n_in = weight.shape
            end = layer.offset + layer.n_in * layer.n_out
            block = self.params[row, layer.offset : end].view(layer.n_in, layer.n_out)
            block[:n_in, :n_out] = weight.t()
            self.params[row, end : end + n_out] = state[f"{name}.bias"]
            projection = state.get(f"{name}.projection")
            if projection is not None:
                start = layer.projection_offset
                flat = self.params[row, start : start + layer.n_in * layer.n_out]
                flat.view(layer.n_in, layer.n_out)[:n_in, :n_out] = projection.t()

    # -- computing -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *, dropout: torch.Generator | None = None) -> torch.Tensor:
        """Logits ``[k, rows, n_outputs]`` of every member.

        ``x`` is ``[k, rows, n_features]`` (each member its own rows) or ``[rows,
        n_features]`` (the same rows for all). Dropout is applied when a
        generator is given (training), not otherwise (evaluation).
        """
        h = x
        last = len(self._layers) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = torch.matmul(h, weight) + bias if h.dim() == 2 else torch.baddbmm(bias, h, weight)
            if index == last:
                return z
            branch = self._activate(index, z)
            keep = self._keep[index]
            if dropout is not None and keep is not None:
                shape, dtype = branch.shape, branch.dtype
                mask = torch.rand(shape, generator=dropout, device=branch.device, dtype=dtype)
                branch = branch * mask.lt_(keep).div_(keep)
            skip = self._skip(index, h, branch.shape[-1])
            h = branch if skip is None else branch + skip
        return h  # pragma: no cover - the loop returns at the output layer

    def _skip(self, index: int, h: torch.Tensor, width: int) -> torch.Tensor | None:
        """What the residual members of hidden layer ``index`` add to its ``width`` outputs."""
        identity, projected = self._identity[index], self._projected[index]
        skip: torch.Tensor | None = None
        if identity is not None:
            # A member's identity skip has as many inputs as units: the padded
            # input, cut or zero-padded to the padded width, is that skip.
            n_in = h.shape[-1]
            fitted = h[..., :width] if n_in >= width else nn.functional.pad(h, (0, width - n_in))
            skip = fitted * identity
        projection = self.projections[index]
        if projected is not None and projection is not None:
            # The mask keeps the projections of members without one at zero (zero gradient).
            projected_input = torch.matmul(h, projection * projected)
            skip = projected_input if skip is None else skip + projected_input
        return skip

    def _activate(self, index: int, z: torch.Tensor) -> torch.Tensor:
        runs = self._activations[index]
        if len(runs) == 1:
            return runs[0].forward(z)
        parts = torch.split(z, [run.length for run in runs])
        return torch.cat([run.forward(part) for run, part in zip(runs, parts, strict=True)])

    def _activate_backward(
        self, index: int, grad: torch.Tensor, z: torch.Tensor, a: torch.Tensor
    ) -> torch.Tensor:
        """The gradient at hidden layer ``index``'s activation input, from that at its
        output (``z`` and ``a``: the activation's input and output)."""
        runs = self._activations[index]
        if len(runs) == 1:
            return runs[0].backward(grad, z, a)
        lengths = [run.length for run in runs]
        parts = zip(runs, *(torch.split(t, lengths) for t in (grad, z, a)), strict=True)
        return torch.cat([run.backward(g, zp, ap) for run, g, zp, ap in parts])

    def train_step(
        self, x: torch.Tensor, target: torch.Tensor, task: Task, dropout: torch.Generator
    ) -> torch.Tensor:
        """One training pass: each member's mean loss ``[k]`` on its rows, and that
        loss's gradients written over :attr:`grads`.

        ``x`` is ``[k, rows, n_features]`` and ``target`` the members' target rows
        one after the other. The pass is :meth:`forward` and :meth:`backward` of the
        members' summed losses, computed by hand: autograd's graph and engine cost
        more than the arithmetic at these sizes (about half of a step for small
        stacks on the CPU, docs/benchmarks.md). The derivatives are those autograd
        uses (the same kernels), so the numbers agree to rounding.
        """
        with torch.no_grad():
            inputs: list[torch.Tensor] = []
            saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
            h = x
            for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
                inputs.append(h)
                z = torch.baddbmm(bias, h, weight)
                if index == len(self._layers) - 1:
                    break
                a = self._activate(index, z)
                keep = self._keep[index]
                mask = None
                if keep is not None:
                    draw = torch.rand(a.shape, generator=dropout, device=a.device, dtype=a.dtype)
                    mask = draw.lt_(keep).div_(keep)
                saved.append((z, a, mask))
                branch = a if mask is None else a * mask
                skip = self._skip(index, h, branch.shape[-1])
                h = branch if skip is None else branch + skip
            losses, grad = task.member_losses_and_grads(z, target)
            # The skips' share of the gradient at layer `index`'s input.
            extra: torch.Tensor | None = None
            for index in range(len(self._layers) - 1, -1, -1):
                h = inputs[index]
                torch.bmm(h.transpose(1, 2), grad, out=self._weight_grads[index])
                torch.sum(grad, dim=1, keepdim=True, out=self._bias_grads[index])
                if index == 0:
                    break
                # The gradient at this layer's input, the output of hidden layer `index - 1`.
                grad_h = torch.bmm(grad, self.weights[index].transpose(1, 2))
                if extra is not None:
                    grad_h += extra
                z, a, mask = saved[index - 1]
                extra = self._skip_backward(index - 1, inputs[index - 1], grad_h)
                branch = grad_h if mask is None else grad_h * mask
                grad = self._activate_backward(index - 1, branch, z, a)
        return losses

    def _skip_backward(
        self, index: int, h: torch.Tensor, grad: torch.Tensor
    ) -> torch.Tensor | None:
        """Backward through hidden layer ``index``'s skips, given the gradient at the
        layer's output: writes the projections' gradients and returns the skips'
        share of the gradient at the layer's input ``h`` (``None`` without skips
        or at the first layer, whose input needs none)."""
        identity, projected = self._identity[index], self._projected[index]
        projection, projection_grad = self.projections[index], self._projection_grads[index]
        if projection_grad is not None:
            if projected is None:
                projection_grad.zero_()
            else:
                torch.bmm(h.transpose(1, 2), grad, out=projection_grad)
                projection_grad.mul_(projected)
        if index == 0:
            return None
        extra: torch.Tensor | None = None
        if identity is not None:
            # The forward pass cut the input to the layer's width or zero-padded it.
            n_in, width = h.shape[-1], grad.shape[-1]
            extra = grad * identity
            if n_in > width:
                extra = nn.functional.pad(extra, (0, n_in - width))
            elif n_in < width:
                extra = extra[..., :n_in]
        if projected is not None and projection is not None:
            through = torch.bmm(grad, (projection * projected).transpose(1, 2))
            extra = through if extra is None else extra + through
        return extra

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradients of ``loss`` into :attr:`grads`."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LAYOUT_WARNING)
            torch.autograd.backward(loss)

    # -- members ---------------------------------------------------------------------------
    def keep(self, rows: Sequence[int]) -> torch.Tensor:
        """Keep only the members at ``rows``, in that order; returns the row index tensor."""
        index = torch.tensor(list(rows), device=self.device, dtype=torch.long)
        self.params = self.params.index_select(0, index)
        self.grads = torch.zeros_like(self.params)
        self.genomes = [self.genomes[row] for row in rows]
        self._bind()
        self._configure(self.genomes)
        return index

    def member_row(self, row: int) -> torch.Tensor:
        """A copy of member ``row``'s flat parameters (to restore them later)."""
        return self.params[row].detach().clone()

    def member_model(self, genome: NetworkSpec, flat_row: torch.Tensor) -> nn.Sequential:
        """The ``nn.Sequential`` :func:`build_model` builds for ``genome``, holding
        the (unpadded) weights of ``flat_row`` (from :meth:`member_row`)."""
        model = build_model(genome, self.n_features, self.n_outputs, seed=0).to(self.device)
        names = [hidden_layer_name(i) for i in range(len(self._layers) - 1)] + ["output"]
        state = {}
        for name, layer in zip(names, self._layers, strict=True):
            linear = model.get_submodule(name)
            assert isinstance(linear, nn.Linear)
            n_out, n_in = linear.weight.shape
            end = layer.offset + layer.n_in * layer.n_out
            block = flat_row[layer.offset : end].view(layer.n_in, layer.n_out)
            state[f"{name}.weight"] = block[:n_in, :n_out].t().contiguous()
            state[f"{name}.bias"] = flat_row[end : end + n_out].clone()
            if getattr(linear, "projection", None) is not None:
                start = layer.projection_offset
                flat = flat_row[start : start + layer.n_in * layer.n_out]
                projection = flat.view(layer.n_in, layer.n_out)[:n_in, :n_out]
                state[f"{name}.projection"] = projection.t().contiguous()
        model.load_state_dict(state)
        return model

    def padded_parameters(self) -> int:
        """Scalars per member in the stack (the padded size, biases included)."""
        return self.n_flat
