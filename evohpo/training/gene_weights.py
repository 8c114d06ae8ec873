"""A trained network's weights, keyed by gene id, as bytes that load without pickle.

A child inherits its parents' weights gene by gene (:mod:`evohpo.training.transfer`),
so the weights of a trained model are kept under the ids of the genes they belong to:

* ``layer/<id>/weight``, ``layer/<id>/bias`` for a dense hidden layer, and
  ``layer/<id>/projection`` for the skip projection of a residual layer whose
  input width differs from its units (part of the layer's weights);
* ``block/<id>/<name>`` for every tensor of a convolutional block
  (``conv.weight``, ``norm.running_mean``, ``proj.weight``, ...);
* ``output/weight``, ``output/bias`` for the output layer, which has no gene of
  its own (it belongs with the last hidden layer).

Genes without an id (``""``) are not kept: nothing can name them again.

The file is ``torch.save`` of plain containers of tensors, strings and ints, read
back with ``torch.load(weights_only=True)``: no code runs when a file is loaded,
whoever wrote it. The genome's JSON travels with the tensors, so a file says
which architecture it holds.

This module never imports optuna.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from evohpo.training.conv import block_name
from evohpo.training.nn import hidden_layer_name
from evohpo.training.spec import NetworkSpec, network_blocks

__all__ = [
    "FORMAT",
    "GeneWeights",
    "WeightsFormatError",
    "gene_weights",
    "model_state",
]

#: Written into every file; a file with another tag is refused.
FORMAT = "evohpo.gene-weights/1"


class WeightsFormatError(ValueError):
    """A weights file that cannot be read: truncated, corrupt, or not ours."""


def _layer_key(gene_id: str, name: str) -> str:
    return f"layer/{gene_id}/{name}"


def _block_key(gene_id: str, name: str) -> str:
    return f"block/{gene_id}/{name}"


@dataclass(frozen=True)
class GeneWeights:
    """The trained tensors of one network, keyed by gene id, and its genome's JSON."""

    genome_json: str
    tensors: Mapping[str, torch.Tensor]

    def layer(self, gene_id: str) -> dict[str, torch.Tensor] | None:
        """``{"weight": ..., "bias": ...}`` (and ``"projection"``) of layer ``gene_id``, if kept."""
        return self._prefixed(f"layer/{gene_id}/") if gene_id else None

    def block(self, gene_id: str) -> dict[str, torch.Tensor] | None:
        """The tensors of block ``gene_id`` by their name inside the block, if kept."""
        return self._prefixed(f"block/{gene_id}/") if gene_id else None

    def output(self) -> dict[str, torch.Tensor] | None:
        """The output layer's ``weight`` and ``bias``."""
        return self._prefixed("output/")

    def _prefixed(self, prefix: str) -> dict[str, torch.Tensor] | None:
        found = {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}
        return found or None

    @property
    def n_bytes(self) -> int:
        """Bytes of tensor data held."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        payload = {
            "format": FORMAT,
            "genome": self.genome_json,
            "tensors": {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()},
        }
        torch.save(payload, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> GeneWeights:
        """Read :meth:`to_bytes`'s output; :class:`WeightsFormatError` if it is not one."""
        try:
            payload: Any = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a damaged file
            raise WeightsFormatError(f"not a readable weights file ({exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise WeightsFormatError(f"not an {FORMAT!r} file")
        genome, tensors = payload.get("genome"), payload.get("tensors")
        if not isinstance(genome, str) or not isinstance(tensors, dict):
            raise WeightsFormatError("a weights file without its genome or tensors")
        for key, value in tensors.items():
            if not isinstance(key, str) or not isinstance(value, torch.Tensor):
                raise WeightsFormatError(f"a weights file with an entry {key!r} not a tensor")
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise WeightsFormatError(f"a weights file whose {key!r} is not finite")
        return cls(genome, tensors)


def gene_weights(model: nn.Module, genome: NetworkSpec, genome_json: str) -> GeneWeights:
    """The tensors of ``model`` (built by ``build_model(genome)``) keyed by gene id."""
    state = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, block in enumerate(network_blocks(genome) or ()):
        gene_id = getattr(block, "id", "")
        if not gene_id:
            continue
        prefix = f"{block_name(index)}."
        for name, tensor in state.items():
            if name.startswith(prefix):
                tensors[_block_key(gene_id, name[len(prefix) :])] = tensor.detach().clone()
    for index, layer in enumerate(genome.layers):
        gene_id = getattr(layer, "id", "")
        if gene_id:
            prefix = f"{hidden_layer_name(index)}."
            for name, tensor in state.items():
                if name.startswith(prefix):
                    tensors[_layer_key(gene_id, name[len(prefix) :])] = tensor.detach().clone()
    for name in ("weight", "bias"):
        tensors[f"output/{name}"] = state[f"output.{name}"].detach().clone()
    return GeneWeights(genome_json, tensors)


def model_state(weights: GeneWeights, genome: NetworkSpec) -> dict[str, torch.Tensor] | None:
    """``weights`` as the state dict of ``build_model(genome)``, if every gene is kept.

    ``genome`` is the one the weights were trained for (``weights.genome_json``);
    ``None`` when a gene has no id or no tensors.
    """
    state: dict[str, torch.Tensor] = {}
    for index, block in enumerate(network_blocks(genome) or ()):
        kept = weights.block(getattr(block, "id", ""))
        if kept is None:
            return None
        state.update({f"{block_name(index)}.{k}": v for k, v in kept.items()})
    for index, layer in enumerate(genome.layers):
        kept = weights.layer(getattr(layer, "id", ""))
        if kept is None:
            return None
        state.update({f"{hidden_layer_name(index)}.{k}": v for k, v in kept.items()})
    output = weights.output()
    if output is None:
        return None
    state.update({f"output.{k}": v for k, v in output.items()})
    return state
