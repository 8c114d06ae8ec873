"""Define-by-run genome suggestion: the bridge between Optuna samplers and genomes.

:func:`suggest_genome` asks a trial for every gene of a genome, per-layer
parameters conditional on the depth. Under TPE or random search Optuna
answers; under :class:`evohpo.EvoSampler` the sampler answers from the child
genome it bred. The objective is therefore the same for every sampler, which
is what makes a GA-vs-TPE comparison fair.
"""

from __future__ import annotations

from collections.abc import Mapping

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from evohpo._validation import raise_invalid
from evohpo.evolution.genome import (
    BATCH_SIZE,
    LAYER_FIELDS,
    LEARNING_RATE,
    N_LAYERS,
    OPTIMIZER,
    WEIGHT_DECAY,
    Genome,
    layer_param,
)
from evohpo.evolution.lineage import LINEAGE_ATTR, Lineage
from evohpo.evolution.space import SearchSpace
from evohpo.storage.internals import trial_user_attrs

__all__ = [
    "genome_distributions",
    "space_from_distributions",
    "suggest_genome",
]

_SPACE_EXPECTED = "a SearchSpace or None (build one from a mapping with SearchSpace.from_dict)"


def genome_distributions(space: SearchSpace, depth: int) -> dict[str, BaseDistribution]:
    """The Optuna distribution of every parameter of a ``depth``-layer genome."""
    dists: dict[str, BaseDistribution] = {
        N_LAYERS: IntDistribution(space.min_layers, space.max_layers),
    }
    for i in range(depth):
        dists[layer_param(i, "units")] = IntDistribution(*space.units, log=True)
        dists[layer_param(i, "activation")] = CategoricalDistribution(space.activations)
        dists[layer_param(i, "dropout")] = FloatDistribution(*space.dropout)
    dists[OPTIMIZER] = CategoricalDistribution(space.optimizers)
    dists[LEARNING_RATE] = FloatDistribution(*space.learning_rate, log=True)
    dists[WEIGHT_DECAY] = FloatDistribution(*space.weight_decay, log=True)
    dists[BATCH_SIZE] = CategoricalDistribution(space.batch_sizes)
    return dists


def space_from_distributions(dists: Mapping[str, BaseDistribution]) -> SearchSpace | None:
    """Recover the :class:`SearchSpace` behind a trial's distributions.

    Returns ``None`` when the distributions are not those of
    :func:`suggest_genome` (another objective's own parameters).
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
        )
    except (ValueError, TypeError):
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
        gene ids the sampler bred (so layers map to the parent's layers);
        otherwise ids are derived from the trial number.

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
    for i in range(depth):
        for field in LAYER_FIELDS:
            name = layer_param(i, field)
            params[name] = _suggest(trial, name, dists[name])
    for name in (OPTIMIZER, LEARNING_RATE, WEIGHT_DECAY, BATCH_SIZE):
        params[name] = _suggest(trial, name, dists[name])
    return Genome.from_params(params, ids=_gene_ids(trial, params, depth))


def _suggest(trial: optuna.trial.BaseTrial, name: str, dist: BaseDistribution) -> object:
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    assert isinstance(dist, CategoricalDistribution)
    return trial.suggest_categorical(name, dist.choices)


def _gene_ids(trial: optuna.trial.BaseTrial, params: dict[str, object], depth: int) -> list[str]:
    """Gene ids the sampler bred for these params, else ids derived from the trial."""
    lineage = Lineage.from_attr(trial_user_attrs(trial).get(LINEAGE_ATTR))
    bred = lineage.parsed_genome() if lineage is not None else None
    if bred is not None and bred.to_params() == params:
        return [layer.id for layer in bred.layers]
    number = getattr(trial, "number", 0)
    return [f"t{number}l{i}" for i in range(depth)]
