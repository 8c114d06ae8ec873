"""One-line summaries of genomes, for logs and the command line."""

from __future__ import annotations

from evohpo.evolution.blocks import BlockGene
from evohpo.evolution.genome import Genome

__all__ = ["describe_genome"]


def describe_genome(genome: Genome) -> str:
    """A one-line summary: ``2 layers [128 relu, 64 gelu 0.10], adam lr 3.2e-03 ...``.

    A genome with a convolutional body starts with its blocks and readout:
    ``2 blocks [16 k5 s2 max res bn relu, 32 k3 s1 relu], avg readout; 1 layer [...]``.
    A residual dense layer says ``res``: ``64 res relu 0.10``.
    """
    layers = ", ".join(
        f"{layer.units}{' res' if layer.residual else ''} {layer.activation}"
        + (f" {layer.dropout:.2f}" if layer.dropout else "")
        for layer in genome.layers
    )
    body = ""
    if genome.blocks is not None:
        blocks = ", ".join(_describe_block(block) for block in genome.blocks)
        n = len(genome.blocks)
        body = f"{n} block{'s' if n != 1 else ''} [{blocks}], {genome.readout} readout; "
    return (
        f"{body}{genome.depth} layer{'s' if genome.depth != 1 else ''} [{layers}], "
        f"{genome.optimizer} lr {genome.learning_rate:.1e} wd {genome.weight_decay:.1e} "
        f"batch {genome.batch_size}"
    )


def _describe_block(block: BlockGene) -> str:
    """``16 k5 s2 max res bn relu 0.10``: channels, kernel, stride, then what is on."""
    words = [f"{block.channels}", f"k{block.kernel}", f"s{block.stride}"]
    words += [block.pool] if block.pool != "none" else []
    words += ["res"] if block.residual else []
    words += ["bn"] if block.batchnorm else []
    words.append(block.activation)
    words += [f"{block.dropout:.2f}"] if block.dropout else []
    return " ".join(words)
