"""Mutation of genomes: per-gene Gaussian steps and structural changes, built on DEAP.

:func:`mutate` perturbs the genes of a :class:`~evohpo.evolution.genome.Genome`
(DEAP's ``mutGaussian`` on the logarithms of units, learning rate and weight
decay, and on dropout) and inserts, removes or duplicates layers, with the
probabilities of :class:`MutationRates`; a genome with a convolutional body
has its blocks mutated too (:mod:`evohpo.evolution._body_variation`), and
only such a genome draws anything for them. Randomness comes only from the
``rng`` argument (DEAP's draws run inside
:func:`evohpo._random.seeded_global_random`); the parent is never modified.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from deap import tools

from evohpo._random import seeded_global_random
from evohpo._validation import check_float, check_probability, check_rng, raise_invalid
from evohpo.evolution._body_variation import (
    BODY_KINDS,
    BodyDraft,
    BodySteps,
    applicable_body_kinds,
    force_body,
    mutate_block_genes,
    mutate_body_structure,
)
from evohpo.evolution._variation import (
    MAX_FORCED,
    REPAIR,
    fresh_id,
    gaussian_step,
    other_choice,
    rekey,
    step_float,
    step_log_int,
)
from evohpo.evolution.blocks import READOUTS
from evohpo.evolution.genome import Genome, LayerGene
from evohpo.evolution.space import SearchSpace

__all__ = ["MutationRates", "mutate"]

# Operator names reported in lineage records.
_UNITS = "mutate:units"
_ACTIVATION = "mutate:activation"
_DROPOUT = "mutate:dropout"
_OPTIMIZER = "mutate:optimizer"
_LEARNING_RATE = "mutate:learning_rate"
_WEIGHT_DECAY = "mutate:weight_decay"
_BATCH_SIZE = "mutate:batch_size"
_INSERT = "insert_layer"
_REMOVE = "remove_layer"
_DUPLICATE = "duplicate_layer"
_RESIDUAL = "mutate:layer_residual"


@dataclass(frozen=True)
class MutationRates:
    """Probabilities and step sizes of :func:`mutate`.

    Parameters
    ----------
    gene : float
        Probability that each gene is perturbed: each layer's units,
        activation, dropout and (in a space with both choices) residual
        flag, each global gene (optimizer, learning
        rate, weight decay, batch size) and, with a body, each gene of each
        block and the readout.
    insert_layer, remove_layer, duplicate_layer : float
        Probabilities of the structural mutations, each applied independently
        (and skipped when the depth bounds of the space forbid it).
    units_sigma : float
        Standard deviation of the Gaussian step of ``log(units)``, and of
        ``log(channels)`` of a block.
    learning_rate_sigma, weight_decay_sigma : float
        Standard deviations of the Gaussian steps of the logarithms.
    dropout_sigma : float
        Standard deviation of the Gaussian step of a dropout rate (of a
        layer or a block).
    insert_block, remove_block, duplicate_block : float
        Probabilities of the structural mutations of a convolutional body,
        each applied independently (and skipped at the body-depth bounds of
        the space, or when no such block fits the input shape).

    Notes
    -----
    The defaults take steps of about a factor of two in units and learning
    rate (``exp(0.8)``: the usual "halve or double" of a width), and change
    the structure rarely: an inserted layer is random, so it mostly undoes
    what selection found. ``bench/sampler_settings.py`` compares them with
    other settings.
    """

    gene: float = 0.1
    insert_layer: float = 0.05
    remove_layer: float = 0.05
    duplicate_layer: float = 0.05
    units_sigma: float = 0.8
    learning_rate_sigma: float = 0.8
    weight_decay_sigma: float = 1.0
    dropout_sigma: float = 0.1
    insert_block: float = 0.05
    remove_block: float = 0.05
    duplicate_block: float = 0.05

    def __post_init__(self) -> None:
        owner = "MutationRates"
        for name in (
            "gene",
            "insert_layer",
            "remove_layer",
            "duplicate_layer",
            "insert_block",
            "remove_block",
            "duplicate_block",
        ):
            object.__setattr__(self, name, check_probability(getattr(self, name), name, owner))
        for name in ("units_sigma", "learning_rate_sigma", "weight_decay_sigma", "dropout_sigma"):
            # A zero step could never move a gene, so a forced mutation could stall.
            value = check_float(getattr(self, name), name, owner, low=0.0, low_open=True)
            object.__setattr__(self, name, value)

    def body_steps(self) -> BodySteps:
        """What a body mutation needs of these rates."""
        return BodySteps(
            gene=self.gene,
            insert=self.insert_block,
            remove=self.remove_block,
            duplicate=self.duplicate_block,
            channels_sigma=self.units_sigma,
            dropout_sigma=self.dropout_sigma,
        )


class _Draft:
    """A genome under construction: the mutable working copy of one operator call."""

    def __init__(self, genome: Genome, input_shape: tuple[int, ...] | None) -> None:
        self.layers: list[LayerGene] = list(genome.layers)
        self.parent_ids = {layer.id for layer in genome.layers}
        self.parent_ids |= {block.id for block in genome.blocks or ()}
        self.optimizer = genome.optimizer
        self.learning_rate = genome.learning_rate
        self.weight_decay = genome.weight_decay
        self.batch_size = genome.batch_size
        self.body = None
        if genome.blocks is not None:
            self.body = BodyDraft(genome.blocks, genome.readout, input_shape)

    def taken_ids(self) -> set[str]:
        """Ids a new layer or block must not get: the parent's and the draft's."""
        taken = self.parent_ids | {layer.id for layer in self.layers}
        return taken | self.body.ids() if self.body is not None else taken

    def build(self) -> Genome:
        return Genome(
            layers=tuple(self.layers),
            optimizer=self.optimizer,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            blocks=None if self.body is None else tuple(self.body.blocks),
            readout=READOUTS[0] if self.body is None else self.body.readout,
        )


def mutate(
    genome: Genome,
    space: SearchSpace,
    rng: random.Random,
    rates: MutationRates = MutationRates(),  # frozen, so one shared default is safe
) -> tuple[Genome, list[str]]:
    """A mutated copy of ``genome``, inside ``space``.

    Each gene is perturbed with probability ``rates.gene``: units, learning
    rate and weight decay by a Gaussian step of their logarithm (DEAP's
    ``mutGaussian``), dropout by a Gaussian step, and activation, optimizer
    and batch size by drawing a different choice; in a space whose
    ``dense_residual`` holds both choices a layer's residual flag flips with
    that probability too (and only there is anything drawn for it). Then a
    random layer is
    removed, a fresh random layer inserted at a random position, and a
    random layer duplicated next to itself, each with its own probability and
    only where the depth bounds allow. If the result equals the parent,
    random applicable mutations are applied until it differs.

    A genome with a convolutional body has each gene of each block perturbed
    with probability ``rates.gene`` too (channels by a Gaussian step of their
    logarithm, dropout by a Gaussian step, kernel and stride to a
    neighbouring choice, pooling, residual, batch norm and activation to
    another choice), and its readout; then a block is removed, inserted or
    duplicated with the ``*_block`` probabilities. A change that would make
    the body not fit the input shape of ``space`` is not made: the body
    always fits. A genome without a body is never given one, and draws
    exactly what it drew before bodies existed.

    Gene ids follow the weight shapes (the rule of
    :mod:`evohpo.evolution.genome`): a layer whose units or input width change gets a
    fresh id (the layer after a layer whose units changed, after an inserted
    or removed layer, too), and so do an inserted layer and a duplicate; a
    layer whose activation or dropout changes keeps its id. A block keeps its
    id while its conv's weight shape (input channels, channels, kernel) is
    unchanged, and the first dense layer while what the body hands it is
    (:meth:`~evohpo.evolution.genome.Genome.head_input_key`).

    Parameters
    ----------
    genome : Genome
        The parent. A parent outside ``space`` is first repaired into it.
    space : SearchSpace
        Bounds and choices of every gene.
    rng : random.Random
        The only source of randomness.
    rates : MutationRates, optional
        Probabilities and step sizes.

    Returns
    -------
    child : Genome
        The mutant, inside ``space`` and different from ``genome`` unless the
        space holds a single genome.
    operators : list of str
        The mutations that changed the child, in order and without repeats,
        e.g. ``["mutate:units", "insert_layer"]``; ``"repair"`` comes first
        when the parent lay outside the space. A flipped residual flag of a
        dense layer is ``"mutate:layer_residual"``. Body mutations are
        ``"mutate:channels"``, ``"mutate:kernel"``, ``"mutate:stride"``,
        ``"mutate:pool"``, ``"mutate:residual"``, ``"mutate:batchnorm"``,
        ``"mutate:block_activation"``, ``"mutate:block_dropout"``,
        ``"mutate:readout"``, ``"insert_block"``, ``"remove_block"`` and
        ``"duplicate_block"``.

    Examples
    --------
    >>> import random
    >>> space = SearchSpace(max_layers=3, units=(8, 64))
    >>> parent = space.sample(random.Random(0))
    >>> child, ops = mutate(parent, space, random.Random(1))
    >>> child != parent and space.contains(child) and len(ops) > 0
    True
    """
    check_rng(rng, "mutate")
    if not isinstance(rates, MutationRates):
        raise_invalid("rates", "mutate", "a MutationRates", rates)
    ops: list[str] = []
    parent = space.repair(genome)
    if parent != genome:
        ops.append(REPAIR)
    draft = _Draft(parent, space.input_shape)
    _mutate_genes(draft, space, rng, rates, ops)
    if draft.body is not None:
        mutate_block_genes(draft.body, space, rng, rates.body_steps(), ops)
    _mutate_structure(draft, space, rng, rates, ops)
    if draft.body is not None:
        steps = rates.body_steps()
        mutate_body_structure(draft.body, space, rng, steps, draft.taken_ids(), ops)
    for _ in range(MAX_FORCED):
        if draft.build() != parent:
            break
        kinds = _applicable_kinds(draft, space)
        if not kinds:  # the space holds this genome only
            break
        _force(rng.choice(kinds), draft, space, rng, rates, ops)
    child = space.repair(draft.build())  # a no-op unless the parent could not be repaired
    blocks, layers = rekey(
        child.layers, (genome, parent), rng, blocks=child.blocks, readout=child.readout
    )
    return child.replace(blocks=blocks, layers=layers), _unique(ops)


def _mutate_genes(
    draft: _Draft, space: SearchSpace, rng: random.Random, rates: MutationRates, ops: list[str]
) -> None:
    """Per-gene perturbations, each with probability ``rates.gene``."""
    n = len(draft.layers)
    # One DEAP call steps every numeric gene: log(units) per layer, dropout per
    # layer, then log(learning rate) and log(weight decay).
    before = [math.log(layer.units) for layer in draft.layers]
    before += [layer.dropout for layer in draft.layers]
    before += [math.log(draft.learning_rate), math.log(draft.weight_decay)]
    sigmas = [rates.units_sigma] * n + [rates.dropout_sigma] * n
    sigmas += [rates.learning_rate_sigma, rates.weight_decay_sigma]
    after = list(before)
    with seeded_global_random(rng):
        tools.mutGaussian(after, mu=0.0, sigma=sigmas, indpb=rates.gene)

    for i in range(n):
        layer = draft.layers[i]
        units = layer.units
        if after[i] != before[i]:
            units = step_log_int(layer.units, after[i] - before[i], space.units)
        dropout = layer.dropout
        if after[n + i] != before[n + i]:
            dropout = step_float(layer.dropout, after[n + i] - before[n + i], space.dropout)
        activation = layer.activation
        if len(space.activations) > 1 and rng.random() < rates.gene:
            activation = other_choice(activation, space.activations, rng)
        residual = layer.residual
        if len(space.dense_residual) > 1 and rng.random() < rates.gene:
            residual = not residual
        draft.layers[i] = _changed_layer(layer, units, activation, dropout, ops, residual)

    lr_step, wd_step = after[2 * n] - before[2 * n], after[2 * n + 1] - before[2 * n + 1]
    if lr_step != 0.0 and space.learning_rate[0] < space.learning_rate[1]:
        lr = draft.learning_rate
        draft.learning_rate = step_float(lr, lr_step, space.learning_rate, log=True)
        ops.append(_LEARNING_RATE)
    if wd_step != 0.0 and space.weight_decay[0] < space.weight_decay[1]:
        wd = draft.weight_decay
        draft.weight_decay = step_float(wd, wd_step, space.weight_decay, log=True)
        ops.append(_WEIGHT_DECAY)
    if len(space.optimizers) > 1 and rng.random() < rates.gene:
        draft.optimizer = other_choice(draft.optimizer, space.optimizers, rng)
        ops.append(_OPTIMIZER)
    if len(space.batch_sizes) > 1 and rng.random() < rates.gene:
        draft.batch_size = other_choice(draft.batch_size, space.batch_sizes, rng)
        ops.append(_BATCH_SIZE)


def _changed_layer(
    layer: LayerGene,
    units: int,
    activation: str,
    dropout: float,
    ops: list[str],
    residual: bool | None = None,
) -> LayerGene:
    """``layer`` with new genes, its id kept (:func:`rekey` settles ids at the end)."""
    residual = layer.residual if residual is None else residual
    changed = replace(layer, units=units, activation=activation, dropout=dropout, residual=residual)
    if changed == layer:
        return layer
    if units != layer.units:
        ops.append(_UNITS)
    if activation != layer.activation:
        ops.append(_ACTIVATION)
    if dropout != layer.dropout:
        ops.append(_DROPOUT)
    if residual != layer.residual:
        ops.append(_RESIDUAL)
    return changed


def _mutate_structure(
    draft: _Draft, space: SearchSpace, rng: random.Random, rates: MutationRates, ops: list[str]
) -> None:
    """Remove, insert and duplicate layers, each with its own probability."""
    # Removal first, so that a genome at full depth can still grow after it.
    if rng.random() < rates.remove_layer and len(draft.layers) > space.min_layers:
        _remove_layer(draft, rng, ops)
    if rng.random() < rates.insert_layer and len(draft.layers) < space.max_layers:
        _insert_layer(draft, space, rng, ops)
    if rng.random() < rates.duplicate_layer and len(draft.layers) < space.max_layers:
        _duplicate_layer(draft, rng, ops)


def _remove_layer(draft: _Draft, rng: random.Random, ops: list[str]) -> None:
    del draft.layers[rng.randrange(len(draft.layers))]
    ops.append(_REMOVE)


def _insert_layer(draft: _Draft, space: SearchSpace, rng: random.Random, ops: list[str]) -> None:
    position = rng.randint(0, len(draft.layers))
    layer = space.sample_layer(rng)
    taken = draft.taken_ids()
    if layer.id in taken:  # only when rng repeats a stream that made the parent
        layer = replace(layer, id=fresh_id(rng, taken))
    draft.layers.insert(position, layer)
    ops.append(_INSERT)


def _duplicate_layer(draft: _Draft, rng: random.Random, ops: list[str]) -> None:
    # The copy keeps every gene (residual flag included); weight inheritance
    # recognises it as the equal layer right after its source.
    index = rng.randrange(len(draft.layers))
    layer = draft.layers[index]
    taken = draft.taken_ids()
    copy = replace(layer, id=fresh_id(rng, taken))
    draft.layers.insert(index + 1, copy)
    ops.append(_DUPLICATE)


def _applicable_kinds(draft: _Draft, space: SearchSpace) -> list[str]:
    """The mutations that can change ``draft`` within ``space``."""
    depth = len(draft.layers)
    candidates = [
        (_UNITS, space.units[0] < space.units[1]),
        (_ACTIVATION, len(space.activations) > 1),
        (_DROPOUT, space.dropout[0] < space.dropout[1]),
        (_OPTIMIZER, len(space.optimizers) > 1),
        (_LEARNING_RATE, space.learning_rate[0] < space.learning_rate[1]),
        (_WEIGHT_DECAY, space.weight_decay[0] < space.weight_decay[1]),
        (_BATCH_SIZE, len(space.batch_sizes) > 1),
        (_INSERT, depth < space.max_layers),
        (_REMOVE, depth > space.min_layers),
        (_DUPLICATE, depth < space.max_layers),
    ]
    kinds = [kind for kind, applicable in candidates if applicable]
    if draft.body is not None:  # after the layer kinds, so dense genomes draw as before
        kinds += applicable_body_kinds(draft.body, space)
    if len(space.dense_residual) > 1:  # last, so spaces without the choice draw as before
        kinds.append(_RESIDUAL)
    return kinds


def _force(
    kind: str,
    draft: _Draft,
    space: SearchSpace,
    rng: random.Random,
    rates: MutationRates,
    ops: list[str],
) -> None:
    """Apply mutation ``kind`` for certain (to a random layer for per-layer genes)."""
    if kind in BODY_KINDS and draft.body is not None:
        steps = rates.body_steps()
        force_body(kind, draft.body, space, rng, steps, draft.taken_ids(), ops)
    elif kind == _INSERT:
        _insert_layer(draft, space, rng, ops)
    elif kind == _REMOVE:
        _remove_layer(draft, rng, ops)
    elif kind == _DUPLICATE:
        _duplicate_layer(draft, rng, ops)
    elif kind in (_UNITS, _ACTIVATION, _DROPOUT, _RESIDUAL):
        index = rng.randrange(len(draft.layers))
        layer = draft.layers[index]
        units, activation, dropout = layer.units, layer.activation, layer.dropout
        residual = layer.residual
        if kind == _RESIDUAL:
            residual = not residual
        elif kind == _UNITS:
            step = gaussian_step(rates.units_sigma, rng)
            units = step_log_int(layer.units, step, space.units)
        elif kind == _ACTIVATION:
            activation = other_choice(activation, space.activations, rng)
        else:
            step = gaussian_step(rates.dropout_sigma, rng)
            dropout = step_float(dropout, step, space.dropout)
        draft.layers[index] = _changed_layer(layer, units, activation, dropout, ops, residual)
    elif kind == _LEARNING_RATE:
        step = gaussian_step(rates.learning_rate_sigma, rng)
        draft.learning_rate = step_float(draft.learning_rate, step, space.learning_rate, log=True)
        ops.append(kind)
    elif kind == _WEIGHT_DECAY:
        step = gaussian_step(rates.weight_decay_sigma, rng)
        draft.weight_decay = step_float(draft.weight_decay, step, space.weight_decay, log=True)
        ops.append(kind)
    elif kind == _OPTIMIZER:
        draft.optimizer = other_choice(draft.optimizer, space.optimizers, rng)
        ops.append(kind)
    else:
        draft.batch_size = other_choice(draft.batch_size, space.batch_sizes, rng)
        ops.append(kind)


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))
