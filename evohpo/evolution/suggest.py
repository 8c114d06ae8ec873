"""Define-by-run genome suggestion: the bridge between Optuna samplers and genomes.

:func:`suggest_genome` asks a trial for every gene of a genome, per-layer
parameters conditional on the depth and, in a space with an input shape,
per-block parameters conditional on the depth of the body. Under TPE or
random search Optuna answers; under :class:`evohpo.EvoSampler` the sampler
answers from the child genome it bred. The objective is therefore the same
for every sampler, which is what makes a GA-vs-TPE comparison fair.

Each gene is suggested on its own, so a sampler can propose a body whose
strides and pooling leave no position of the input. Such a genome is
repaired into the space (:meth:`SearchSpace.repair`) before it is returned,
and the trial says so in its user attribute :data:`REPAIRED_ATTR`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from evohpo._validation import check_input_shape, raise_invalid
from evohpo.evolution.blocks import BLOCK_FIELDS, block_param
from evohpo.evolution.genome import (
    BATCH_SIZE,
    LAYER_FIELDS,
    LAYER_RESIDUAL,
    LEARNING_RATE,
    N_BLOCKS,
    N_LAYERS,
    OPTIMIZER,
    READOUT,
    WEIGHT_DECAY,
    Genome,
    layer_param,
)
from evohpo.evolution.lineage import LINEAGE_ATTR, Lineage
from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import InvalidParameterError
from evohpo.storage.internals import trial_user_attrs

__all__ = [
    "INPUT_SHAPE_ATTR",
    "REPAIRED_ATTR",
    "derived_ids",
    "genome_distributions",
    "input_shape_of",
    "space_from_distributions",
    "suggest_genome",
]

#: User attribute of a trial whose genome has a body: the space's input shape,
#: as a list (the only setting of a space its distributions cannot tell).
INPUT_SHAPE_ATTR = "input_shape"
#: User attribute of a trial whose suggested genome lay outside the space and
#: was repaired: the reasons (:meth:`SearchSpace.violations`) it was outside.
REPAIRED_ATTR = "repaired"

#: Body settings of a space that are a block gene's choices: (setting, gene).
_CHOICE_SETTINGS = (
    ("kernels", "kernel"),
    ("strides", "stride"),
    ("pools", "pool"),
    ("residual", "residual"),
    ("batchnorm", "batchnorm"),
)
_SPACE_EXPECTED = "a SearchSpace or None (build one from a mapping with SearchSpace.from_dict)"


def genome_distributions(
    space: SearchSpace, depth: int, n_blocks: int | None = None
) -> dict[str, BaseDistribution]:
    """The Optuna distribution of every parameter of a ``depth``-layer genome.

    In a space with an input shape the body's parameters follow the layers':
    ``n_blocks``, those of ``n_blocks`` blocks (default: ``max_blocks``) and
    ``readout``. A dense space gives the dense parameters only. Every layer
    has ``layer{i}.residual`` only in a space with residual choices
    (:attr:`SearchSpace.has_dense_residual`).
    """
    dists: dict[str, BaseDistribution] = {
        N_LAYERS: IntDistribution(space.min_layers, space.max_layers),
    }
    for i in range(depth):
        dists[layer_param(i, "units")] = IntDistribution(*space.units, log=True)
        dists[layer_param(i, "activation")] = CategoricalDistribution(space.activations)
        dists[layer_param(i, "dropout")] = FloatDistribution(*space.dropout)
        if space.has_dense_residual:
            dists[layer_param(i, LAYER_RESIDUAL)] = CategoricalDistribution(space.dense_residual)
    if space.has_body:
        dists.update(_body_distributions(space, space.max_blocks if n_blocks is None else n_blocks))
    dists[OPTIMIZER] = CategoricalDistribution(space.optimizers)
    dists[LEARNING_RATE] = FloatDistribution(*space.learning_rate, log=True)
    dists[WEIGHT_DECAY] = FloatDistribution(*space.weight_decay, log=True)
    dists[BATCH_SIZE] = CategoricalDistribution(space.batch_sizes)
    return dists


def _body_distributions(space: SearchSpace, n_blocks: int) -> dict[str, BaseDistribution]:
    dists: dict[str, BaseDistribution] = {
        N_BLOCKS: IntDistribution(space.min_blocks, space.max_blocks)
    }
    for i in range(n_blocks):
        block: dict[str, BaseDistribution] = {
            "channels": IntDistribution(*space.channels, log=True),
            "kernel": CategoricalDistribution(space.kernels),
            "stride": CategoricalDistribution(space.strides),
            "pool": CategoricalDistribution(space.pools),
            "residual": CategoricalDistribution(space.residual),
            "batchnorm": CategoricalDistribution(space.batchnorm),
            "activation": CategoricalDistribution(space.activations),
            "dropout": FloatDistribution(*space.block_dropout),
        }
        dists.update({block_param(i, name): block[name] for name in BLOCK_FIELDS})
    if n_blocks:
        dists[READOUT] = CategoricalDistribution(space.readouts)
    return dists


def space_from_distributions(
    dists: Mapping[str, BaseDistribution], input_shape: Sequence[int] | None = None
) -> SearchSpace | None:
    """Recover the :class:`SearchSpace` behind a trial's distributions.

    Parameters
    ----------
    dists : mapping of str to BaseDistribution
        Distributions of a trial of :func:`suggest_genome` (or a union of
        several trials', so that the body's genes are there).
    input_shape : sequence of int, optional
        The space's input shape, which no distribution tells (a trial of a
        body space records it in its user attribute :data:`INPUT_SHAPE_ATTR`).

    Returns
    -------
    SearchSpace or None
        ``None`` when the distributions are not those of :func:`suggest_genome`
        (another objective's own parameters), and for a body (``n_blocks``)
        when ``input_shape`` is missing or no block's genes are among them
        although the body may have blocks.
    """
    n_layers = dists.get(N_LAYERS)
    units = dists.get(layer_param(0, "units"))
    activation = dists.get(layer_param(0, "activation"))
    dropout = dists.get(layer_param(0, "dropout"))
    optimizer = dists.get(OPTIMIZER)
    lr = dists.get(LEARNING_RATE)
    wd = dists.get(WEIGHT_DECAY)
    batch = dists.get(BATCH_SIZE)
    if not (
        isinstance(n_layers, IntDistribution)
        and isinstance(units, IntDistribution)
        and isinstance(activation, CategoricalDistribution)
        and isinstance(dropout, FloatDistribution)
        and isinstance(optimizer, CategoricalDistribution)
        and isinstance(lr, FloatDistribution)
        and isinstance(wd, FloatDistribution)
        and isinstance(batch, CategoricalDistribution)
    ):
        return None
    body = _body_settings(dists, input_shape) if N_BLOCKS in dists else {}
    if body is None:
        return None
    residual = dists.get(layer_param(0, LAYER_RESIDUAL))
    if isinstance(residual, CategoricalDistribution):
        body["dense_residual"] = tuple(residual.choices)
    try:
        return SearchSpace(
            min_layers=n_layers.low,
            max_layers=n_layers.high,
            units=(units.low, units.high),
            activations=tuple(str(c) for c in activation.choices),
            dropout=(dropout.low, dropout.high),
            optimizers=tuple(str(c) for c in optimizer.choices),
            learning_rate=(lr.low, lr.high),
            weight_decay=(wd.low, wd.high),
            batch_sizes=tuple(int(c) for c in batch.choices),  # type: ignore[arg-type]
            **body,
        )
    except (ValueError, TypeError):
        return None


def _body_settings(
    dists: Mapping[str, BaseDistribution], input_shape: Sequence[int] | None
) -> dict[str, Any] | None:
    """The body settings of a space from its distributions; ``None`` if they cannot be told."""
    n_blocks = dists.get(N_BLOCKS)
    if input_shape is None or not isinstance(n_blocks, IntDistribution):
        return None
    settings: dict[str, Any] = {
        "input_shape": tuple(input_shape),
        "min_blocks": n_blocks.low,
        "max_blocks": n_blocks.high,
    }
    if n_blocks.high == 0:
        return settings  # no block ever: the other body settings do not matter
    channels = dists.get(block_param(0, "channels"))
    dropout = dists.get(block_param(0, "dropout"))
    readout = dists.get(READOUT)
    choices = {
        setting: dist
        for setting, name in _CHOICE_SETTINGS
        if isinstance(dist := dists.get(block_param(0, name)), CategoricalDistribution)
    }
    if not (
        isinstance(channels, IntDistribution)
        and isinstance(dropout, FloatDistribution)
        and isinstance(readout, CategoricalDistribution)
        and len(choices) == len(_CHOICE_SETTINGS)
    ):
        return None
    settings["channels"] = (channels.low, channels.high)
    settings["block_dropout"] = (dropout.low, dropout.high)
    settings["readouts"] = tuple(readout.choices)
    settings.update({setting: tuple(dist.choices) for setting, dist in choices.items()})
    return settings


def input_shape_of(user_attrs: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The input shape a trial recorded (:data:`INPUT_SHAPE_ATTR`); ``None`` if none is valid."""
    value = user_attrs.get(INPUT_SHAPE_ATTR)
    if value is None:
        return None
    try:
        return check_input_shape(value, INPUT_SHAPE_ATTR, "input_shape_of")
    except InvalidParameterError:
        return None


def suggest_genome(trial: optuna.trial.BaseTrial, space: SearchSpace | None = None) -> Genome:
    """Ask ``trial`` for a genome inside ``space`` (define-by-run).

    Parameters
    ----------
    trial : optuna.trial.BaseTrial
        The trial of any sampler (``Trial``, ``FixedTrial``, ``FrozenTrial``).
    space : SearchSpace, optional
        Ranges and choices; the default :class:`SearchSpace` if omitted. A
        mapping of settings is not accepted (as by :class:`evohpo.EvoSampler`):
        build the space with :meth:`SearchSpace.from_dict` once, outside the
        objective.

    Returns
    -------
    Genome
        The suggested genome. Under :class:`evohpo.EvoSampler` it carries the
        gene ids the sampler bred (so layers and blocks map to the parent's);
        otherwise ids are derived from the trial number. In a space with an
        input shape, a suggested genome outside the space (a body that does
        not fit the input) is repaired into it; the trial's user attribute
        :data:`REPAIRED_ATTR` then lists why, and :data:`INPUT_SHAPE_ATTR`
        always holds the input shape.

    Raises
    ------
    InvalidParameterError
        If ``space`` is neither a :class:`SearchSpace` nor ``None``.

    Examples
    --------
    >>> import optuna
    >>> space = SearchSpace(max_layers=2, units=(8, 32))
    >>> genome = suggest_genome(optuna.trial.FixedTrial(
    ...     {"n_layers": 1, "layer0.units": 16, "layer0.activation": "relu",
    ...      "layer0.dropout": 0.0, "optimizer": "adam", "learning_rate": 1e-3,
    ...      "weight_decay": 1e-5, "batch_size": 64}), space)
    >>> genome.depth, genome.layers[0].units
    (1, 16)
    """
    if space is not None and not isinstance(space, SearchSpace):
        raise_invalid("space", "suggest_genome", _SPACE_EXPECTED, space)
    space = space if space is not None else SearchSpace()
    dists = genome_distributions(space, space.max_layers)
    depth = trial.suggest_int(N_LAYERS, space.min_layers, space.max_layers)
    params: dict[str, object] = {N_LAYERS: depth}
    fields = (*LAYER_FIELDS, LAYER_RESIDUAL) if space.has_dense_residual else LAYER_FIELDS
    names = [layer_param(i, field) for i in range(depth) for field in fields]
    if space.has_body:
        n_blocks = trial.suggest_int(N_BLOCKS, space.min_blocks, space.max_blocks)
        params[N_BLOCKS] = n_blocks
        names += [block_param(i, field) for i in range(n_blocks) for field in BLOCK_FIELDS]
        names += [READOUT] if n_blocks else []
    names += [OPTIMIZER, LEARNING_RATE, WEIGHT_DECAY, BATCH_SIZE]
    for name in names:
        params[name] = _suggest(trial, name, dists[name])
    layer_ids, block_ids = _gene_ids(trial, params, space.has_dense_residual)
    genome = Genome.from_params(params, ids=layer_ids, block_ids=block_ids)
    if space.input_shape is not None:
        trial.set_user_attr(INPUT_SHAPE_ATTR, list(space.input_shape))
        problems = space.violations(genome)
        if problems:
            trial.set_user_attr(REPAIRED_ATTR, problems)
            genome = space.repair(genome)
    return genome


def _suggest(trial: optuna.trial.BaseTrial, name: str, dist: BaseDistribution) -> object:
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    assert isinstance(dist, CategoricalDistribution)
    return trial.suggest_categorical(name, dist.choices)


def _gene_ids(
    trial: optuna.trial.BaseTrial, params: dict[str, object], residual: bool
) -> tuple[list[str], list[str]]:
    """Layer and block ids the sampler bred for these params, else ids derived from the trial."""
    lineage = Lineage.from_attr(trial_user_attrs(trial).get(LINEAGE_ATTR))
    bred = lineage.parsed_genome() if lineage is not None else None
    if bred is not None and bred.to_params(residual=residual) == params:
        return [layer.id for layer in bred.layers], [block.id for block in bred.blocks or ()]
    return derived_ids(getattr(trial, "number", 0), params)


def derived_ids(number: int, params: Mapping[str, object]) -> tuple[list[str], list[str]]:
    """Layer and block ids of trial ``number``'s genome when no sampler bred it."""
    depth, n_blocks = params.get(N_LAYERS, 0), params.get(N_BLOCKS, 0)
    layers = range(depth) if isinstance(depth, int) else range(0)
    blocks = range(n_blocks) if isinstance(n_blocks, int) else range(0)
    return [f"t{number}l{i}" for i in layers], [f"t{number}b{i}" for i in blocks]
