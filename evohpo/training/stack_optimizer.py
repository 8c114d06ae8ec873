"""One optimizer step for k networks whose parameters lie in one ``[k, P]`` tensor.

``torch.optim`` takes one learning rate per tensor, and a slice of a stacked
tensor cannot be a parameter of its own, so the members of a stack, each with
its own optimizer, learning rate and weight decay, are stepped here. Row ``i``
of the flat tensor holds every parameter of member ``i``; each coefficient is a
``[k, 1]`` column, so one element-wise operation updates every member.

The four optimizers the trainer knows are one update rule with per-member
coefficients (``g`` is the gradient, ``p`` the parameter, ``t`` the step)::

    g  = grad + l2 * p                      # L2 penalty: sgd, adam, rmsprop
    p  = p * decay                          # decoupled decay: adamw (1 - lr * wd)
    m  = beta1 * m + c1 * g                 # momentum / first moment
    v  = beta2 * v + c2 * g * g             # second moment
    p -= lr * (a_t * m + b * g) / (s_t * sqrt(v) + eps)

==========  =====  =====  =====  =====  ===========  ===  ============  ====
optimizer   beta1  c1     beta2  c2     a_t          b    s_t           eps
==========  =====  =====  =====  =====  ===========  ===  ============  ====
sgd         0.9    1      0      0      0.9          1    0             1
adam(w)     0.9    0.1    0.999  0.001  1/(1-0.9^t)  0    1/sqrt(bc2)   1e-8
rmsprop     0      0      0.99   0.01   0            1    1             1e-8
==========  =====  =====  =====  =====  ===========  ===  ============  ====

which is, term by term, torch's SGD (Nesterov momentum 0.9, L2 weight decay,
no dampening), Adam (L2 added to the gradient), AdamW (weights decayed before
the step) and RMSprop (alpha 0.99, eps after the square root, no momentum,
not centred), with their default betas and eps. ``bc2 = 1 - 0.999^t``.
Members whose optimizer does not use a moment carry zeros there.

For members with many parameters, :class:`RowOptimizer` steps each member's
row with ``torch.optim`` itself (one parameter group per member, the fused
kernels where torch has them): k kernel calls, each one pass over a row that
fits in the cache, against a dozen passes over all k rows for the rule above.
:func:`stack_optimizer` picks one by the row size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from evohpo._validation import raise_invalid
from evohpo.training.nn import OPTIMIZERS, SGD_MOMENTUM

__all__ = ["ROW_STEP_THRESHOLD", "RowOptimizer", "StackOptimizer", "stack_optimizer"]

#: Parameters per member above which :func:`stack_optimizer` steps each member's row
#: with torch's own (fused) optimizer instead of the coefficient rule: a row then
#: stays in the CPU's cache for its one fused pass, while the element-wise rule
#: makes a dozen passes over the whole stack (see docs/benchmarks.md).
ROW_STEP_THRESHOLD = 24_576

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
_RMSPROP_ALPHA = 0.99
_RMSPROP_EPS = 1e-8

# Columns of the per-member coefficient table, in this order.
_COLUMNS = ("l2", "decay", "beta1", "c1", "beta2", "c2", "b", "eps", "lr", "is_adam")


def _coefficients(optimizer: str, lr: float, weight_decay: float) -> tuple[float, ...]:
    """One row of the coefficient table (see the module docstring)."""
    if optimizer == "sgd":
        return (weight_decay, 1.0, SGD_MOMENTUM, 1.0, 0.0, 0.0, 1.0, 1.0, lr, 0.0)
    beta1, beta2 = _ADAM_BETAS
    if optimizer == "adam":
        return (weight_decay, 1.0, beta1, 1 - beta1, beta2, 1 - beta2, 0.0, _ADAM_EPS, lr, 1.0)
    if optimizer == "adamw":
        decay = 1.0 - lr * weight_decay
        return (0.0, decay, beta1, 1 - beta1, beta2, 1 - beta2, 0.0, _ADAM_EPS, lr, 1.0)
    if optimizer == "rmsprop":
        alpha = _RMSPROP_ALPHA
        return (weight_decay, 1.0, 0.0, 0.0, alpha, 1 - alpha, 1.0, _RMSPROP_EPS, lr, 0.0)
    raise_invalid("optimizer", "StackOptimizer", f"one of {OPTIMIZERS}", optimizer)


def _check_settings(
    params: torch.Tensor,
    optimizers: Sequence[str],
    learning_rates: Sequence[float],
    weight_decays: Sequence[float],
    owner: str,
) -> None:
    """One known optimizer, learning rate and weight decay per row of ``params``."""
    k = params.shape[0]
    if not (len(optimizers) == len(learning_rates) == len(weight_decays) == k):
        raise_invalid("optimizers", owner, f"{k} settings, one per row of params", optimizers)
    for name in optimizers:
        if name not in OPTIMIZERS:
            raise_invalid("optimizer", owner, f"one of {OPTIMIZERS}", name)


class StackOptimizer:
    """Per-member SGD, Adam, AdamW or RMSprop on a flat ``[k, P]`` parameter tensor.

    Parameters
    ----------
    params : torch.Tensor of shape (k, P)
        Row ``i`` holds every parameter of member ``i``; updated in place.
    grads : torch.Tensor of shape (k, P)
        Where the gradients accumulate (the parameters' ``.grad`` are views of it).
    optimizers, learning_rates, weight_decays : sequences of length k
        Each member's optimizer name (one of :data:`~evohpo.training.nn.OPTIMIZERS`),
        learning rate and weight decay.

    Examples
    --------
    >>> params = torch.ones(2, 3)
    >>> grads = torch.full((2, 3), 0.5)
    >>> opt = StackOptimizer(params, grads, ["sgd", "adam"], [0.1, 0.1], [0.0, 0.0])
    >>> opt.step()
    >>> [round(v, 6) for v in params[:, 0].tolist()]  # sgd: 1 - 0.1 * 1.9 * 0.5; adam: 1 - 0.1
    [0.905, 0.9]
    """

    def __init__(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        optimizers: Sequence[str],
        learning_rates: Sequence[float],
        weight_decays: Sequence[float],
    ) -> None:
        _check_settings(params, optimizers, learning_rates, weight_decays, "StackOptimizer")
        self.params = params
        self.grads = grads
        rows = [
            _coefficients(name, float(lr), float(wd))
            for name, lr, wd in zip(optimizers, learning_rates, weight_decays, strict=True)
        ]
        table = torch.tensor(rows, dtype=params.dtype, device=params.device)
        self._coef = {name: table[:, i : i + 1].contiguous() for i, name in enumerate(_COLUMNS)}
        # The parts of a_t and s_t that do not change with t (see the module docstring).
        not_adam = 1 - self._coef["is_adam"]
        self._coef["a0"] = not_adam * self._coef["beta1"]
        self._coef["s0"] = not_adam * (self._coef["c2"] != 0)
        self.step_count = 0
        self.first_moment = torch.zeros_like(params)
        self.second_moment = torch.zeros_like(params)
        # Scratch space of a step: a fresh tensor of the stack's size every step costs
        # more than the arithmetic once it is past the CPU caches (page faults).
        self._scratch = torch.empty_like(params)
        # Terms every member leaves out are skipped, not multiplied by zero.
        self._any_decay = bool((self._coef["decay"] != 1.0).any())
        self._any_l2 = bool((self._coef["l2"] != 0.0).any())
        self._any_second = bool((self._coef["c2"] != 0.0).any())
        self._all_adam = bool((self._coef["is_adam"] == 1.0).all())
        self._all_sgd = not self._any_second  # sgd alone has no second moment

    @property
    def size(self) -> int:
        """Number of members (rows)."""
        return int(self.params.shape[0])

    def zero_grad(self) -> None:
        """Clear the gradients before the next backward pass."""
        self.grads.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every member from the gradients in :attr:`grads`."""
        self.step_count += 1
        t = self.step_count
        c = self._coef
        p = self.params
        g = self.grads
        if self._any_l2:  # in place: the gradients are cleared before the next backward
            g.addcmul_(c["l2"], p)
        if self._any_decay:
            p.mul_(c["decay"])
        beta1, beta2 = _ADAM_BETAS
        if self._all_adam:
            self._adam_step(g, t)
            return
        if self._all_sgd:
            self._sgd_step(g)
            return
        m, v = self.first_moment, self.second_moment
        m.mul_(c["beta1"]).addcmul_(c["c1"], g)
        v.mul_(c["beta2"]).addcmul_(torch.mul(g, c["c2"], out=self._scratch), g)
        # Adam's bias corrections change with t; sgd's and rmsprop's terms do not.
        a = torch.add(c["a0"], c["is_adam"], alpha=1 / (1 - beta1**t))
        s = torch.add(c["s0"], c["is_adam"], alpha=1 / (1 - beta2**t) ** 0.5)
        denominator = torch.sqrt(v, out=self._scratch).mul_(s).add_(c["eps"])
        numerator = g.mul_(c["b"]).addcmul_(a, m).mul_(c["lr"])  # g is not needed again
        p.addcdiv_(numerator, denominator, value=-1.0)

    def _adam_step(self, g: torch.Tensor, t: int) -> None:
        """The rule when every member is adam or adamw: their betas and eps are shared,
        so only the step size is a column (a third fewer passes over the stack)."""
        beta1, beta2 = _ADAM_BETAS
        m, v = self.first_moment, self.second_moment
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step = self._coef["lr"] / (1 - beta1**t)
        # p -= step * m / d is p -= m / (d / step): no temporary of the stack's size.
        denominator = torch.sqrt(v, out=self._scratch)
        denominator.div_((1 - beta2**t) ** 0.5).add_(_ADAM_EPS).div_(step)
        self.params.addcdiv_(m, denominator, value=-1.0)

    def _sgd_step(self, g: torch.Tensor) -> None:
        """The rule when every member is sgd: Nesterov momentum, no second moment."""
        m = self.first_moment
        m.mul_(SGD_MOMENTUM).add_(g)
        self.params.addcmul_(self._coef["lr"], g.add_(m, alpha=SGD_MOMENTUM), value=-1.0)

    def keep(self, rows: torch.Tensor, params: torch.Tensor, grads: torch.Tensor) -> None:
        """Keep only the members at ``rows`` (a compacted stack), on new flat tensors."""
        self.params = params
        self.grads = grads
        self.first_moment = self.first_moment.index_select(0, rows)
        self.second_moment = self.second_moment.index_select(0, rows)
        self._scratch = torch.empty_like(params)
        self._coef = {name: column.index_select(0, rows) for name, column in self._coef.items()}


class RowOptimizer:
    """Each member's row stepped by ``torch.optim``, one parameter group per member.

    The rows of ``params`` are views that the optimizers update in place, with
    the rows of ``grads`` as their gradients. Same interface as
    :class:`StackOptimizer`.
    """

    def __init__(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        optimizers: Sequence[str],
        learning_rates: Sequence[float],
        weight_decays: Sequence[float],
    ) -> None:
        _check_settings(params, optimizers, learning_rates, weight_decays, "RowOptimizer")
        self.settings = [
            (name, float(lr), float(wd))
            for name, lr, wd in zip(optimizers, learning_rates, weight_decays, strict=True)
        ]
        self._bind(params, grads)

    def _bind(self, params: torch.Tensor, grads: torch.Tensor) -> None:
        self.params = params
        self.grads = grads
        self.rows: list[torch.Tensor] = []
        for row in range(params.shape[0]):
            view = params[row].requires_grad_()
            view.grad = grads[row]
            self.rows.append(view)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for name in dict.fromkeys(setting[0] for setting in self.settings):
            groups = [
                {"params": [row], "lr": lr, "weight_decay": wd}
                for row, (kind, lr, wd) in zip(self.rows, self.settings, strict=True)
                if kind == name
            ]
            self.optimizers[name] = _torch_optimizer(name, groups, params.device)

    @property
    def size(self) -> int:
        """Number of members (rows)."""
        return len(self.rows)

    def zero_grad(self) -> None:
        """Clear the gradients before the next backward pass."""
        self.grads.zero_()

    def step(self) -> None:
        """One update of every member."""
        for optimizer in self.optimizers.values():
            optimizer.step()

    def keep(self, rows: torch.Tensor, params: torch.Tensor, grads: torch.Tensor) -> None:
        """Keep only the members at ``rows``, their optimizer state carried over."""
        states = [self._state(row) for row in rows.tolist()]
        self.settings = [self.settings[row] for row in rows.tolist()]
        self._bind(params, grads)
        for new, state in enumerate(states):
            name = self.settings[new][0]
            self.optimizers[name].state[self.rows[new]] = state

    def _state(self, row: int) -> dict[str, Any]:
        name = self.settings[row][0]
        return dict(self.optimizers[name].state.get(self.rows[row], {}))


def _torch_optimizer(
    name: str, groups: list[dict[str, Any]], device: torch.device
) -> torch.optim.Optimizer:
    """torch's optimizer ``name`` with the trainer's settings (as ``build_optimizer``)."""
    fused = True if device.type in ("cpu", "cuda") else None
    if name == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=SGD_MOMENTUM, nesterov=True, fused=fused)
    if name == "adam":
        return torch.optim.Adam(groups, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(groups, fused=fused)
    return torch.optim.RMSprop(groups)


def stack_optimizer(
    params: torch.Tensor,
    grads: torch.Tensor,
    optimizers: Sequence[str],
    learning_rates: Sequence[float],
    weight_decays: Sequence[float],
) -> StackOptimizer | RowOptimizer:
    """The faster of :class:`StackOptimizer` and :class:`RowOptimizer` for rows this long."""
    if params.shape[1] > ROW_STEP_THRESHOLD:
        return RowOptimizer(params, grads, optimizers, learning_rates, weight_decays)
    return StackOptimizer(params, grads, optimizers, learning_rates, weight_decays)
