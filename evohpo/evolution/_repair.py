"""Repairing a genome into a search space: the nearest genome inside it, deterministically.

:meth:`SearchSpace.repair <evohpo.evolution.space.SearchSpace.repair>` is
implemented here. Nothing is drawn at random, so a repair is reproducible
and needs no generator; gene ids follow the rule of
:mod:`evohpo.evolution.genome` (kept while the weight shape is, else derived
from the old id as ``id + "+"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from evohpo.evolution.blocks import BlockGene, block_weight_shapes, body_shapes
from evohpo.evolution.genome import Genome, LayerGene

if TYPE_CHECKING:
    from evohpo.evolution.space import SearchSpace

__all__ = ["repair_body", "repair_genome"]

_Gene = TypeVar("_Gene", LayerGene, BlockGene)


def repair_genome(space: SearchSpace, genome: Genome) -> Genome:
    """The nearest genome to ``genome`` inside ``space`` (see :meth:`SearchSpace.repair`)."""
    if space.contains(genome):
        return genome  # nothing to repair; genomes are immutable
    blocks = repair_body(space, genome.blocks) if space.has_body else None
    if blocks is not None:
        taken = {block.id for block in blocks} | {layer.id for layer in genome.layers}
        blocks = _derive_ids(
            blocks, block_weight_shapes(blocks), genome.block_weight_shapes(), taken
        )
    layers = _repair_layers(space, genome.layers)
    readout = genome.readout if genome.readout in space.readouts else space.readouts[0]
    anonymous = Genome(
        layers=tuple(replace(layer, id="") for layer in layers),
        optimizer=(
            genome.optimizer if genome.optimizer in space.optimizers else space.optimizers[0]
        ),
        learning_rate=_clip(genome.learning_rate, space.learning_rate),
        weight_decay=_clip(genome.weight_decay, space.weight_decay),
        batch_size=_nearest(genome.batch_size, space.batch_sizes),
        blocks=blocks,
        readout=readout,
    )
    # The first layer's weight shape follows what the (repaired) body hands over.
    taken = {block.id for block in blocks or ()} | {layer.id for layer in layers}
    derived = _derive_ids(layers, anonymous.weight_shapes(), genome.weight_shapes(), taken)
    return anonymous.replace(layers=derived)


def repair_body(space: SearchSpace, blocks: Sequence[BlockGene] | None) -> tuple[BlockGene, ...]:
    """``blocks`` (``None``: no body) made a body of ``space`` that fits its input shape.

    Each block's genes are brought into the space (channels and dropout
    clipped; kernel and stride the nearest choice; a pooling not allowed
    becomes another pooling kind if one is, else the first choice; other
    choices the first). Blocks beyond ``max_blocks`` are cut from the output
    end; up to ``min_blocks``, gentle copies of the last block (smallest
    stride, no pooling if allowed) are added. A body that still does not fit
    loses its pooling, then its strides (down to the smallest choice), block
    by block from the output end, and at last its blocks from the output end,
    down to ``min_blocks`` (which the space guarantees to fit when gentle).
    Ids are left as they were (padded copies repeat the last block's id).
    """
    kept = [_repair_block(space, block) for block in (blocks or ())[: space.max_blocks]]
    while len(kept) < space.min_blocks:
        kept.append(_gentle_block(space, kept[-1] if kept else None))
    return tuple(_fit(space, kept))


def _repair_block(space: SearchSpace, block: BlockGene) -> BlockGene:
    return BlockGene(
        channels=_clip(block.channels, space.channels),
        kernel=_nearest(block.kernel, space.kernels),
        stride=_nearest(block.stride, space.strides),
        pool=_nearest_pool(block.pool, space.pools),
        residual=_kept_or_first(block.residual, space.residual),
        batchnorm=_kept_or_first(block.batchnorm, space.batchnorm),
        activation=_kept_or_first(block.activation, space.activations),
        dropout=_clip(block.dropout, space.block_dropout),
        id=block.id,
    )


def _gentle_block(space: SearchSpace, last: BlockGene | None) -> BlockGene:
    """A block that shrinks the signal least: a copy of ``last``, or the space's smallest."""
    stride, pool = min(space.strides), _gentle_pool(space)
    if last is not None:
        return replace(last, stride=stride, pool=pool)
    return BlockGene(
        channels=space.channels[0],
        kernel=min(space.kernels),
        stride=stride,
        pool=pool,
        residual=False if False in space.residual else space.residual[0],
        batchnorm=False if False in space.batchnorm else space.batchnorm[0],
        activation=space.activations[0],
        dropout=space.block_dropout[0],
    )


def _fit(space: SearchSpace, blocks: list[BlockGene]) -> list[BlockGene]:
    """``blocks`` made to fit the space's input shape (see :func:`repair_body`)."""
    shape = space.input_shape

    def fits() -> bool:
        return shape is None or body_shapes(blocks, shape) is not None

    if fits():
        return blocks
    pool, stride = _gentle_pool(space), min(space.strides)
    for i in reversed(range(len(blocks))):
        if blocks[i].pool != pool:
            blocks[i] = replace(blocks[i], pool=pool)
            if fits():
                return blocks
    for i in reversed(range(len(blocks))):
        if blocks[i].stride != stride:
            blocks[i] = replace(blocks[i], stride=stride)
            if fits():
                return blocks
    while len(blocks) > space.min_blocks and not fits():
        blocks.pop()
    return blocks


def _repair_layers(space: SearchSpace, layers: Sequence[LayerGene]) -> list[LayerGene]:
    """Layers clipped into the space, cut at ``max_layers``, padded with copies of the last."""
    repaired = [
        LayerGene(
            units=_clip(layer.units, space.units),
            activation=_kept_or_first(layer.activation, space.activations),
            dropout=_clip(layer.dropout, space.dropout),
            residual=_kept_or_first(layer.residual, space.dense_residual),
            id=layer.id,
        )
        for layer in layers[: space.max_layers]
    ]
    while len(repaired) < space.min_layers:
        repaired.append(repaired[-1])
    return repaired


def _derive_ids(
    genes: Sequence[_Gene],
    shapes: Sequence[tuple[Any, ...]],
    original_shapes: Sequence[tuple[Any, ...]],
    taken: set[str],
) -> tuple[_Gene, ...]:
    """``genes`` (repaired from originals of ``original_shapes``) under the id rule.

    A gene keeps its id while its weight shape is that of the original at its
    position; otherwise it gets ``id + "+"``, extended until not in ``taken``
    (to which it is added). The empty id stays empty.
    """
    result: list[_Gene] = []
    for i, gene in enumerate(genes):
        if gene.id and (i >= len(original_shapes) or shapes[i] != original_shapes[i]):
            gene_id = gene.id + "+"
            while gene_id in taken:
                gene_id += "+"
            taken.add(gene_id)
            gene = replace(gene, id=gene_id)
        result.append(gene)
    return tuple(result)


def _gentle_pool(space: SearchSpace) -> str:
    return "none" if "none" in space.pools else space.pools[0]


def _nearest_pool(pool: str, pools: Sequence[str]) -> str:
    """``pool`` if allowed, else one that downsamples alike (max for avg), else the first."""
    if pool in pools:
        return pool
    return next((p for p in pools if (p == "none") == (pool == "none")), pools[0])


def _nearest(value: int, choices: Sequence[int]) -> int:
    """The choice nearest ``value``; the smaller one of two as near."""
    return min(choices, key=lambda choice: (abs(choice - value), choice))


def _kept_or_first(value: Any, choices: Sequence[Any]) -> Any:
    return value if value in choices else choices[0]


def _clip(value: Any, bounds: tuple[Any, Any]) -> Any:
    return min(bounds[1], max(bounds[0], value))
