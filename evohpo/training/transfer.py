"""A child network's starting weights, taken from its trained parents.

:func:`inherit` builds the state dict a child trains from. Gene ids
(:mod:`evohpo.evolution.genome`, "Gene ids") say which of the child's layers
and blocks have the same weight shape as a parent's, and so can be copied.
The child of one parent is first obtained from that parent's network by
function-preserving steps (:mod:`evohpo.training.morphisms` for dense layers,
:mod:`evohpo.training.block_morphisms` for blocks), aligned on the gene ids the
two share:

* a layer (or block) kept with its id is copied;
* a layer whose units grew is widened by Net2WiderNet (the layer after it
  takes the divided outgoing weights: its id changed because its input
  width did);
* an inserted layer starts as the identity (then widened if it is wider
  than the layer before it): a plain one with an identity weight matrix
  (exact only for ReLU after a plain ReLU layer), a residual one with a zero
  branch on an identity skip (exact for every activation, also as the first
  layer);
* a duplicated layer (a new gene equal to the one before it, ids aside, as
  mutation's ``duplicate_layer`` makes) whose weight is square starts as a
  copy of its trained source: not exact, the function changes;
* a layer whose residual flag flipped keeps its branch: a new projection
  skip starts at zero (exact), a new identity skip is not exact, and neither
  is a dropped skip (unless it was a projection of zeros);
* anything else (a narrowed or removed layer, an insertion before the first
  layer) stops the alignment there: the rest of the network takes only what
  the gene ids name.

Crossover children take each gene's weights from the parent that gave the
gene (the parent whose gene equals the child's, the first parent on a tie);
layers no parent names start with the child's own seeded initialisation.

The result says, gene by gene, where the weights came from and whether the
child computes exactly its first parent's function (eval mode).

This module never imports optuna.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from evohpo.training import block_morphisms, morphisms
from evohpo.training.conv import block_name
from evohpo.training.gene_weights import GeneWeights, model_state
from evohpo.training.nn import build_model, hidden_layer_name
from evohpo.training.spec import NetworkSpec, layer_residual, network_blocks

__all__ = ["Inherited", "ParentWeights", "inherit"]


@dataclass(frozen=True)
class ParentWeights:
    """A trained parent: its trial number, genome and weights."""

    number: int
    genome: NetworkSpec
    weights: GeneWeights


@dataclass
class Inherited:
    """What :func:`inherit` gives a child.

    Attributes
    ----------
    state : dict of str to Tensor
        The state dict of ``build_model(child)`` to train from.
    genes : dict of str to str
        For every layer and block (by gene id, or ``"layer2"``/``"block0"``
        when it has none) and ``"output"``: ``"copy:#N"`` (trial N's weights),
        ``"widen:#N"`` (trial N's, widened), ``"identity:#N"`` (an identity
        inserted into trial N's network, or a residual layer with a zero
        branch), ``"duplicate:#N"`` (a copy of the trained layer before it)
        or ``"fresh"``.
    exact : bool
        The child computes its first parent's function (eval mode): every
        tensor came from it by exact steps.
    inherited_parameters, total_parameters : int
        Parameters (elements of trainable tensors) taken from a parent, and all.
    """

    state: dict[str, torch.Tensor]
    genes: dict[str, str] = field(default_factory=dict)
    exact: bool = False
    inherited_parameters: int = 0
    total_parameters: int = 0

    @property
    def parents(self) -> list[int]:
        """Trial numbers whose weights the child took."""
        numbers = {int(how.split("#")[1]) for how in self.genes.values() if "#" in how}
        return sorted(numbers)

    def record(self) -> dict[str, Any]:
        """A JSON-ready summary (the trial's ``"inherited"`` user attribute)."""
        share = self.inherited_parameters / max(1, self.total_parameters)
        return {
            "parents": self.parents,
            "genes": dict(self.genes),
            "exact": self.exact,
            "fraction": round(share, 4),
        }


def inherit(
    child: NetworkSpec,
    parents: Sequence[ParentWeights],
    *,
    n_features: int,
    n_outputs: int,
    seed: int,
    input_shape: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> Inherited:
    """The weights ``child`` starts from, taken from ``parents`` where they fit.

    Parameters
    ----------
    child : Genome or NetworkSpec
        The child; its gene ids name what it shares with the parents.
    parents : sequence of ParentWeights
        Its trained parents, the one it was mutated from first.
    n_features, n_outputs, input_shape
        As for :func:`~evohpo.training.nn.build_model`.
    seed : int
        The child's initialisation seed: what no parent gives starts as
        ``build_model(child, seed=seed)`` would.
    generator : torch.Generator, optional
        Chooses the units Net2WiderNet replicates.
    """
    fresh_model = build_model(child, n_features, n_outputs, seed=seed, input_shape=input_shape)
    fresh = fresh_model.state_dict()
    state = {name: tensor.clone() for name, tensor in fresh.items()}
    result = Inherited(state=state)
    result.total_parameters = sum(p.numel() for p in fresh_model.parameters())
    if not parents:
        result.genes = {_label(g, "layer", i): "fresh" for i, g in enumerate(child.layers)}
        result.genes["output"] = "fresh"
        return result

    morphed = _Morph.of(child, parents[0], n_features, n_outputs, input_shape, generator)
    exact = morphed is not None and morphed.exact
    sources: dict[str, str] = {}  # module prefix -> how

    def place(prefix: str, tensors: dict[str, torch.Tensor] | None, how: str) -> bool:
        names = [n for n in fresh if n.startswith(prefix + ".")]
        if tensors is None or len(tensors) != len(names):
            return False
        for name in names:
            tensor = tensors.get(name[len(prefix) + 1 :])
            if tensor is None or tensor.shape != fresh[name].shape:
                return False
        for name in names:
            state[name] = tensors[name[len(prefix) + 1 :]].to(fresh[name].dtype).clone()
        sources[prefix] = how
        return True

    primary = parents[0].number
    morphed_prefixes: set[str] = set()
    for kind, genes in (("block", network_blocks(child) or ()), ("layer", child.layers)):
        for index, gene in enumerate(genes):
            prefix = block_name(index) if kind == "block" else hidden_layer_name(index)
            giver = _giver(gene, kind, parents)
            from_morph = morphed is not None and index in morphed.realised(kind)
            placed = False
            if giver is not None and not (giver.number == primary and from_morph):
                held = giver.weights.block if kind == "block" else giver.weights.layer
                placed = place(prefix, held(getattr(gene, "id", "")), f"copy:#{giver.number}")
                exact = exact and giver.number == primary
            elif from_morph and morphed is not None:
                how = morphed.how(kind, index)
                placed = place(prefix, morphed.tensors(prefix), f"{how}:#{primary}")
                if placed:
                    morphed_prefixes.add(prefix)
            if not placed:
                sources[prefix] = "fresh"
                exact = False
            result.genes[_label(gene, kind, index)] = sources[prefix]

    # The output layer goes with the module it reads (whose outgoing weights a
    # widening divided into it), or with the input when there is none.
    last = _last_prefix(child)
    if last is None or last in morphed_prefixes:
        placed = morphed is not None and place(
            "output", morphed.tensors("output"), f"copy:#{primary}"
        )
    elif sources[last] != "fresh":
        number = int(sources[last].split("#")[1])
        giver = next(p for p in parents if p.number == number)
        placed = place("output", giver.weights.output(), f"copy:#{number}")
    else:
        placed = False
    if not placed:
        sources["output"] = "fresh"
        exact = False
    result.genes["output"] = sources["output"]
    result.exact = exact
    modules = dict(fresh_model.named_modules())
    result.inherited_parameters = sum(
        p.numel()
        for prefix, how in sources.items()
        if how != "fresh"
        for p in modules[prefix].parameters()
    )
    return result


def _label(gene: Any, kind: str, index: int) -> str:
    return str(getattr(gene, "id", "") or f"{kind}{index}")


def _giver(gene: Any, kind: str, parents: Sequence[ParentWeights]) -> ParentWeights | None:
    """The parent that gave ``gene``: one holding its id, with an equal gene if any."""
    gene_id = getattr(gene, "id", "")
    if not gene_id:
        return None
    holders = []
    for parent in parents:
        genes = network_blocks(parent.genome) or () if kind == "block" else parent.genome.layers
        for candidate in genes:
            if getattr(candidate, "id", "") == gene_id:
                holders.append((candidate == gene, parent))
    if not holders:
        return None
    equal = [parent for same, parent in holders if same]
    return equal[0] if equal else holders[0][1]


def _last_prefix(child: NetworkSpec) -> str | None:
    """The module the output layer reads: the last hidden layer or block, if any."""
    if child.layers:
        return hidden_layer_name(len(child.layers) - 1)
    blocks = network_blocks(child)
    return block_name(len(blocks) - 1) if blocks else None


# -- the first parent's network, morphed towards the child ---------------------------------
@dataclass
class _Morph:
    """The first parent's network after the function-preserving steps towards the child."""

    model: nn.Sequential
    actions: dict[tuple[str, int], str]  # (kind, child index) -> "copy" | "widen" | "identity"
    exact: bool
    _generator: torch.Generator | None = None

    @classmethod
    def of(
        cls,
        child: NetworkSpec,
        parent: ParentWeights,
        n_features: int,
        n_outputs: int,
        input_shape: Sequence[int] | None,
        generator: torch.Generator | None,
    ) -> _Morph | None:
        state = model_state(parent.weights, parent.genome)
        if state is None:
            return None
        try:
            model = build_model(
                parent.genome, n_features, n_outputs, seed=0, input_shape=input_shape
            )
            model.load_state_dict(state)
        except (RuntimeError, ValueError):
            return None  # the parent was trained on other data: nothing aligns
        model.eval()
        morph = cls(model, {}, True, generator)
        morph._body(list(network_blocks(child) or ()), list(network_blocks(parent.genome) or ()))
        morph._dense(child.layers, parent.genome.layers, generator)
        return morph

    def _body(self, child: list[Any], parent: list[Any]) -> None:
        """Align the blocks on shared ids and morph the parent's body towards the child's.

        A block whose channels grew is widened (its shape genes otherwise equal);
        an inserted block that keeps its input's shape starts as the identity or
        a zero residual branch (then widened). Anything else stops the
        alignment: the dense layers still align, by shape, but the function is
        no longer the parent's.
        """
        child_ids = {getattr(g, "id", "") for g in child} - {""}
        parent_at = {getattr(g, "id", ""): j for j, g in enumerate(parent) if getattr(g, "id", "")}
        j = 0
        for i, gene in enumerate(child):
            gene_id = getattr(gene, "id", "")
            if gene_id and parent_at.get(gene_id) == j:
                self.actions["block", i] = "copy"
                self.exact = self.exact and _same_function(gene, parent[j])
                j += 1
                continue
            old = parent[j] if j < len(parent) else None
            replaced = old is not None and getattr(old, "id", "") not in child_ids
            if (
                replaced
                and old is not None
                and gene.channels >= old.channels
                and _shape_genes(gene) == _shape_genes(old)
            ):
                if gene.channels > old.channels:
                    self.model = block_morphisms.widen_block(
                        self.model, i, gene.channels, generator=self._generator
                    )
                self.actions["block", i] = "widen" if gene.channels > old.channels else "copy"
                self.exact = self.exact and _same_function(
                    replace(gene, channels=old.channels), old
                )
                j += 1
                continue
            if i == 0:
                self.exact = False
                return  # nothing reads the raw input as the identity would need
            previous = child[i - 1]
            start = replace(gene, channels=previous.channels)
            if gene.channels < previous.channels or gene.stride != 1 or gene.pool != "none":
                self.exact = False
                return
            self.model = block_morphisms.insert_block(
                self.model, i - 1, start, generator=self._generator
            )
            if gene.channels > previous.channels:
                self.model = block_morphisms.widen_block(
                    self.model, i, gene.channels, generator=self._generator
                )
            self.actions["block", i] = "identity"
            self.exact = self.exact and block_morphisms.block_insert_exact(previous, start)
        if j != len(parent):
            self.exact = False  # parent blocks were removed
        # The dense head reads the body: after a change its shapes may still
        # align but its function is the parent's only if the body's is.

    def _dense(
        self,
        child: Sequence[Any],
        parent: Sequence[Any],
        generator: torch.Generator | None,
    ) -> None:
        """Align the dense layers on shared ids and morph the parent's towards the child."""
        child_ids = {getattr(g, "id", "") for g in child} - {""}
        parent_at = {getattr(g, "id", ""): j for j, g in enumerate(parent) if getattr(g, "id", "")}
        j = 0
        for i, gene in enumerate(child):
            gene_id = getattr(gene, "id", "")
            width = _width(self.model, i)
            if gene_id and parent_at.get(gene_id) == j:
                self.actions["layer", i] = "copy"
                self._match_residual(i, gene, parent[j])
                j += 1
                continue
            parent_gene = parent[j] if j < len(parent) else None
            replaced = parent_gene is not None and getattr(parent_gene, "id", "") not in child_ids
            # A layer inserted before a parent layer whose input width it changed (so
            # that layer's id changed too): the next child layer is that one, by
            # value, and the child has a layer more left than the parent.
            inserted = (
                parent_gene is not None
                and i + 1 < len(child)
                and child[i + 1] == parent_gene
                and gene != parent_gene
                and len(child) - i > len(parent) - j
            )
            if (
                replaced
                and not inserted
                and parent_gene is not None
                and gene.units >= parent_gene.units
            ):
                self._match_residual(i, gene, parent_gene)
                if gene.units > parent_gene.units:
                    self.model = morphisms.widen_layer(
                        self.model, i, gene.units, generator=generator
                    )
                    self.actions["layer", i] = "widen"
                else:
                    self.actions["layer", i] = "copy"
                j += 1
                continue
            if self._duplicates(i, gene, child):
                # A duplicate starts as its trained source: the function changes.
                self.model = morphisms.insert_copy_layer(self.model, i - 1)
                self.actions["layer", i] = "duplicate"
                self.exact = False
                continue
            if layer_residual(gene):
                reads = _reads(self.model, i)
                if gene.units < reads:
                    self.exact = False
                    return  # a projection cannot start as the identity of a wider input
                # A zero branch on an identity skip: exact for every activation.
                self.model = morphisms.insert_residual_layer(self.model, i, gene.activation)
                if gene.units > reads:
                    self.model = morphisms.widen_layer(
                        self.model, i, gene.units, generator=generator
                    )
                self.actions["layer", i] = "identity"
                continue
            if i == 0 or width is None or gene.units < width:
                self.exact = False
                return  # an insertion the identity cannot start
            previous = child[i - 1]
            self.model = morphisms.insert_identity_layer(self.model, i - 1, gene.activation)
            if gene.units > width:
                self.model = morphisms.widen_layer(self.model, i, gene.units, generator=generator)
            self.actions["layer", i] = "identity"
            # After a residual layer the values are not in the activation's range.
            self.exact = (
                self.exact
                and not layer_residual(previous)
                and morphisms.identity_exact(previous.activation, gene.activation)
            )
        if j != len(parent) or len(_hidden(self.model)) != len(child):
            self.exact = False  # parent layers were removed

    def _match_residual(self, index: int, gene: Any, parent_gene: Any) -> None:
        """Give the working layer ``index`` the child's residual flag (and settle exactness)."""
        self.exact = self.exact and gene.activation == parent_gene.activation
        if layer_residual(gene) != layer_residual(parent_gene):
            self.model, kept = morphisms.set_residual(self.model, index, layer_residual(gene))
            self.exact = self.exact and kept

    def _duplicates(self, index: int, gene: Any, child: Sequence[Any]) -> bool:
        """Whether child layer ``index`` is a duplicate of the layer before it.

        A duplicate (mutation's ``duplicate_layer``) is a new gene equal to the
        one before it, ids aside; only a square source (input width equal to
        units) can be copied with its weights.
        """
        if index == 0 or gene != child[index - 1] or ("layer", index - 1) not in self.actions:
            return False
        source = getattr(self.model, hidden_layer_name(index - 1), None)
        return (
            isinstance(source, nn.Linear)
            and source.in_features == source.out_features == gene.units
        )

    def realised(self, kind: str) -> set[int]:
        return {index for k, index in self.actions if k == kind}

    def how(self, kind: str, index: int) -> str:
        return self.actions[kind, index]

    def tensors(self, prefix: str) -> dict[str, torch.Tensor] | None:
        state = self.model.state_dict()
        found = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
        return found or None


def _same_function(block: Any, other: Any) -> bool:
    """Equal blocks but for dropout, which is the identity in eval mode."""
    return bool(replace(block, dropout=other.dropout) == other)


def _shape_genes(block: Any) -> tuple[Any, ...]:
    """The genes of a block, other than its channels, that decide its tensors' shapes."""
    return (block.kernel, block.stride, block.residual, block.batchnorm)


def _hidden(model: nn.Sequential) -> list[str]:
    return [name for name, _ in model.named_children() if name.startswith("hidden")]


def _reads(model: nn.Sequential, index: int) -> int:
    """Input width of the working model's dense module at ``index`` (the output after the last)."""
    hidden = _hidden(model)
    module = getattr(model, hidden_layer_name(index) if index < len(hidden) else "output")
    assert isinstance(module, nn.Linear)
    return module.in_features


def _width(model: nn.Sequential, index: int) -> int | None:
    """Output width of the working model's hidden layer ``index - 1`` (what layer
    ``index`` reads), if it has one."""
    if index == 0:
        return None
    layer = getattr(model, hidden_layer_name(index - 1), None)
    return layer.out_features if isinstance(layer, nn.Linear) else None
