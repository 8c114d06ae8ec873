"""Children start from their parents' weights: gene-keyed files and the transfer rules."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from evohpo.evolution.crossover import crossover
from evohpo.evolution.genome import BlockGene, Genome, LayerGene, new_gene_id
from evohpo.evolution.mutation import MutationRates, mutate
from evohpo.evolution.space import SearchSpace
from evohpo.training.gene_weights import (
    GeneWeights,
    WeightsFormatError,
    gene_weights,
    model_state,
)
from evohpo.training.nn import build_model
from evohpo.training.transfer import ParentWeights, inherit

N_FEATURES, N_CLASSES = 10, 3
SHAPE = (2, 24)


def _ids(genome: Genome, rng: random.Random) -> Genome:
    layers = tuple(replace(layer, id=new_gene_id(rng)) for layer in genome.layers)
    blocks = genome.blocks
    if blocks is not None:
        blocks = tuple(replace(block, id=new_gene_id(rng)) for block in blocks)
    return genome.replace(layers=layers, blocks=blocks)


def _trained(genome: Genome, seed: int, shape: tuple[int, ...] | None = None) -> torch.nn.Module:
    """A model with non-trivial weights and batch-norm statistics (a stand-in for training)."""
    n_features = N_FEATURES if shape is None else shape[0] * shape[1]
    model = build_model(genome, n_features, N_CLASSES, seed=seed, input_shape=shape)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, n_features, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


def _parent(number: int, genome: Genome, model: torch.nn.Module) -> ParentWeights:
    weights = GeneWeights.from_bytes(gene_weights(model, genome, genome.to_json()).to_bytes())
    return ParentWeights(number, genome, weights)


def _child_model(genome: Genome, state: dict[str, torch.Tensor], shape=None) -> torch.nn.Module:
    n_features = N_FEATURES if shape is None else shape[0] * shape[1]
    model = build_model(genome, n_features, N_CLASSES, seed=0, input_shape=shape)
    model.load_state_dict(state)
    return model.eval()


def _dense(units: tuple[int, ...], activation: str = "relu") -> Genome:
    rng = random.Random(sum(units))
    layers = tuple(LayerGene(u, activation, 0.1, id=new_gene_id(rng)) for u in units)
    return Genome(layers, "adam", 1e-3, 0.0, 32)


# -- the file ---------------------------------------------------------------------------------
def test_weights_round_trip_by_gene_id_and_rebuild_the_model() -> None:
    genome = _dense((16, 8))
    model = _trained(genome, 0)
    weights = GeneWeights.from_bytes(gene_weights(model, genome, genome.to_json()).to_bytes())
    assert weights.layer(genome.layers[1].id) is not None
    assert set(weights.layer(genome.layers[0].id) or {}) == {"weight", "bias"}
    state = model_state(weights, genome)
    assert state is not None
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(state[name], tensor)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: b"not a weights file",
        lambda data: data.replace(b"evohpo.gene-weights/1", b"evohpo.gene-weights/9"),
    ],
    ids=["truncated", "garbage", "other-format"],
)
def test_a_damaged_file_is_a_format_error(damage) -> None:
    genome = _dense((8,))
    data = gene_weights(_trained(genome, 0), genome, genome.to_json()).to_bytes()
    with pytest.raises(WeightsFormatError):
        GeneWeights.from_bytes(damage(data))


def test_a_file_that_needs_pickle_is_refused() -> None:
    """``weights_only`` loading: an object that would run code on load is refused."""
    import io

    buffer = io.BytesIO()
    torch.save(
        {"format": "evohpo.gene-weights/1", "genome": "{}", "tensors": {}, "x": Genome}, buffer
    )
    with pytest.raises(WeightsFormatError):
        GeneWeights.from_bytes(buffer.getvalue())


# -- dense transfer ---------------------------------------------------------------------------
def test_a_child_that_only_changes_training_genes_copies_everything_exactly() -> None:
    parent = _dense((16, 8))
    model = _trained(parent, 1)
    child = parent.replace(learning_rate=1e-2)
    result = inherit(
        child, [_parent(7, parent, model)], n_features=N_FEATURES, n_outputs=N_CLASSES, seed=3
    )
    assert result.exact
    assert set(result.genes.values()) == {"copy:#7"}
    assert result.inherited_parameters == result.total_parameters
    x = torch.randn(64, N_FEATURES)
    torch.testing.assert_close(_child_model(child, result.state)(x), model(x))


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "silu"])
@pytest.mark.parametrize("index", [0, 1])
def test_a_wider_layer_is_net2wider_of_the_parent(activation: str, index: int) -> None:
    parent = _dense((12, 8), activation)
    model = _trained(parent, 2)
    rng = random.Random(5)
    layers = list(parent.layers)
    layers[index] = replace(layers[index], units=layers[index].units + 5, id=new_gene_id(rng))
    if index + 1 < len(layers):  # its input width changed: a fresh id, the rule of genome ids
        layers[index + 1] = replace(layers[index + 1], id=new_gene_id(rng))
    child = parent.replace(layers=tuple(layers))
    result = inherit(
        child, [_parent(3, parent, model)], n_features=N_FEATURES, n_outputs=N_CLASSES, seed=0
    )
    assert result.exact
    assert result.genes[child.layers[index].id] == "widen:#3"
    x = torch.randn(64, N_FEATURES)
    torch.testing.assert_close(_child_model(child, result.state)(x), model(x), rtol=1e-4, atol=1e-5)


def test_an_inserted_relu_layer_starts_as_the_identity() -> None:
    parent = _dense((12, 8))
    model = _trained(parent, 3)
    rng = random.Random(9)
    inserted = LayerGene(12, "relu", 0.0, id=new_gene_id(rng))
    child = parent.replace(layers=(parent.layers[0], inserted, parent.layers[1]))
    result = inherit(
        child, [_parent(4, parent, model)], n_features=N_FEATURES, n_outputs=N_CLASSES, seed=0
    )
    assert result.genes[inserted.id] == "identity:#4"
    assert result.exact
    x = torch.randn(64, N_FEATURES)
    torch.testing.assert_close(_child_model(child, result.state)(x), model(x))


def test_an_inserted_tanh_layer_is_not_claimed_exact_and_does_change_the_function() -> None:
    parent = _dense((12, 8), "tanh")
    model = _trained(parent, 3)
    inserted = LayerGene(12, "tanh", 0.0, id=new_gene_id(random.Random(1)))
    child = parent.replace(layers=(parent.layers[0], inserted, parent.layers[1]))
    result = inherit(
        child, [_parent(4, parent, model)], n_features=N_FEATURES, n_outputs=N_CLASSES, seed=0
    )
    assert not result.exact
    x = torch.randn(64, N_FEATURES)
    assert not torch.allclose(_child_model(child, result.state)(x), model(x), atol=1e-4)


def test_a_narrowed_layer_starts_fresh_and_the_rest_is_copied_by_id() -> None:
    parent = _dense((16, 8, 8))
    model = _trained(parent, 4)
    rng = random.Random(2)
    layers = list(parent.layers)
    layers[0] = replace(layers[0], units=6, id=new_gene_id(rng))
    layers[1] = replace(layers[1], id=new_gene_id(rng))
    child = parent.replace(layers=tuple(layers))
    result = inherit(
        child, [_parent(5, parent, model)], n_features=N_FEATURES, n_outputs=N_CLASSES, seed=11
    )
    fresh = build_model(child, N_FEATURES, N_CLASSES, seed=11).state_dict()
    assert result.genes[layers[0].id] == "fresh"
    assert result.genes[layers[2].id] == "copy:#5"
    assert not result.exact
    torch.testing.assert_close(result.state["hidden0.weight"], fresh["hidden0.weight"])
    torch.testing.assert_close(result.state["hidden2.weight"], model.state_dict()["hidden2.weight"])


def test_crossover_takes_each_gene_from_the_parent_that_gave_it() -> None:
    a, b = _dense((8, 8)), _dense((8, 8, 8))
    a_model, b_model = _trained(a, 5), _trained(b, 6)
    # Both share an ancestor's first layer (same id), trained further apart.
    shared = a.layers[0].id
    b = b.replace(layers=(replace(b.layers[0], id=shared), *b.layers[1:]))
    child = a.replace(layers=(a.layers[0], b.layers[1], b.layers[2]))
    parents = [_parent(1, a, a_model), _parent(2, b, b_model)]
    result = inherit(child, parents, n_features=N_FEATURES, n_outputs=N_CLASSES, seed=0)
    assert result.genes[shared] == "copy:#1"
    assert result.genes[b.layers[1].id] == "copy:#2"
    assert result.genes[b.layers[2].id] == "copy:#2"
    assert result.genes["output"] == "copy:#2"  # it reads b's last layer
    torch.testing.assert_close(
        result.state["hidden1.weight"], b_model.state_dict()["hidden1.weight"]
    )
    torch.testing.assert_close(result.state["output.weight"], b_model.state_dict()["output.weight"])
    assert not result.exact
    assert result.parents == [1, 2]


def test_without_parents_the_child_gets_its_own_initialisation() -> None:
    child = _dense((8,))
    result = inherit(child, [], n_features=N_FEATURES, n_outputs=N_CLASSES, seed=4)
    fresh = build_model(child, N_FEATURES, N_CLASSES, seed=4).state_dict()
    for name, tensor in fresh.items():
        torch.testing.assert_close(result.state[name], tensor)
    assert set(result.genes.values()) == {"fresh"}
    assert result.record()["fraction"] == 0.0


def _mutants(space: SearchSpace, rates: MutationRates, n: int, shape=None):
    for seed in range(n):
        rng = random.Random(seed)
        parent = _ids(space.sample(rng), rng)
        model = _trained(parent, seed, shape)
        child, _ = mutate(parent, space, rng, rates)
        yield parent, model, child


@pytest.mark.parametrize(
    ("conv", "residual_head"),
    [(False, False), (True, False), (True, True)],
    ids=["dense", "conv", "conv-residual-head"],
)
def test_exact_is_claimed_only_when_the_child_computes_the_parents_function(
    conv: bool, residual_head: bool
) -> None:
    """Over many real mutations: every child said to be exact is (eval mode), some are,
    and an inexact one is never worse off than a partial copy of what fits."""
    if conv:
        shape: tuple[int, ...] | None = SHAPE
        space = SearchSpace(
            max_layers=2,
            units=(8, 32),
            input_shape=SHAPE,
            min_blocks=1,
            max_blocks=3,
            dense_residual=(False, True) if residual_head else (False,),
        )
        rates = MutationRates(gene=0.2, insert_block=0.3, remove_block=0.1, duplicate_block=0.1)
        if residual_head:  # the dense head after the body, with residual layers, changes
            rates = MutationRates(
                gene=0.0, insert_block=0.2, insert_layer=0.6, duplicate_layer=0.2, remove_layer=0.1
            )
    else:
        shape = None
        space = SearchSpace(max_layers=4, units=(8, 64), activations=("relu", "tanh"))
        rates = MutationRates(gene=0.3, insert_layer=0.3, remove_layer=0.1, duplicate_layer=0.1)
    n_features = N_FEATURES if shape is None else shape[0] * shape[1]
    exact = 0
    for number, (parent, model, child) in enumerate(_mutants(space, rates, 120, shape)):
        result = inherit(
            child,
            [_parent(number, parent, model)],
            n_features=n_features,
            n_outputs=N_CLASSES,
            seed=number,
            input_shape=shape,
        )
        x = torch.randn(32, n_features)
        same = torch.allclose(_child_model(child, result.state, shape)(x), model(x), atol=1e-4)
        assert same or not result.exact, (parent, child, result.genes)
        exact += result.exact
    assert exact >= 6


def test_widened_and_inserted_blocks_preserve_a_conv_parent() -> None:
    rng = random.Random(3)
    blocks = (
        BlockGene(4, 3, 1, "max", True, True, "relu", 0.0, id=new_gene_id(rng)),
        BlockGene(6, 3, 1, "none", True, True, "relu", 0.1, id=new_gene_id(rng)),
    )
    parent = Genome(
        (LayerGene(8, "relu", 0.0, id=new_gene_id(rng)),),
        "adam",
        1e-3,
        0.0,
        32,
        blocks=blocks,
        readout="avg",
    )
    model = _trained(parent, 7, SHAPE)
    wider = replace(blocks[0], channels=7, id=new_gene_id(rng))
    second = replace(blocks[1], id=new_gene_id(rng))  # its input channels changed
    inserted = BlockGene(6, 3, 1, "none", True, True, "relu", 0.0, id=new_gene_id(rng))
    child = parent.replace(blocks=(wider, second, inserted))
    result = inherit(
        child,
        [_parent(9, parent, model)],
        n_features=48,
        n_outputs=N_CLASSES,
        seed=0,
        input_shape=SHAPE,
    )
    assert result.genes[wider.id] == "widen:#9"
    assert result.genes[inserted.id] == "identity:#9"
    assert result.exact
    x = torch.randn(32, 48)
    torch.testing.assert_close(
        _child_model(child, result.state, SHAPE)(x), model(x), rtol=1e-4, atol=1e-5
    )


def test_a_crossover_of_real_genomes_never_claims_exactness_and_loads() -> None:
    space = SearchSpace(max_layers=3, units=(8, 32))
    for seed in range(20):
        rng = random.Random(seed)
        a, b = _ids(space.sample(rng), rng), _ids(space.sample(rng), rng)
        child = crossover(a, b, space, rng)
        if isinstance(child, tuple):
            child = child[0]
        parents = [_parent(1, a, _trained(a, 1)), _parent(2, b, _trained(b, 2))]
        result = inherit(child, parents, n_features=N_FEATURES, n_outputs=N_CLASSES, seed=seed)
        _child_model(child, result.state)  # every tensor has the child's shape
        assert set(result.genes) >= {"output"}


# -- residual dense layers ----------------------------------------------------------------------
def _residual(units: tuple[int, ...], activation: str = "relu", seed: int = 0) -> Genome:
    rng = random.Random(seed)
    layers = tuple(LayerGene(u, activation, 0.1, residual=True, id=new_gene_id(rng)) for u in units)
    return Genome(layers, "adam", 1e-3, 0.0, 32)


def _inherit(child: Genome, parent: Genome, model: torch.nn.Module, number: int = 4):
    return inherit(
        child, [_parent(number, parent, model)], n_features=N_FEATURES, n_outputs=N_CLASSES, seed=0
    )


def _assert_same_function(child: Genome, state, model) -> None:
    x = torch.randn(64, N_FEATURES)
    torch.testing.assert_close(_child_model(child, state)(x), model(x), rtol=1e-4, atol=1e-5)


def test_residual_weights_are_kept_by_gene_id_with_their_projection() -> None:
    genome = _residual((12, 12))
    model = _trained(genome, 1)
    weights = GeneWeights.from_bytes(gene_weights(model, genome, genome.to_json()).to_bytes())
    first = weights.layer(genome.layers[0].id)
    assert first is not None
    assert set(first) == {"weight", "bias", "projection"}
    assert first["projection"].shape == (12, N_FEATURES)
    second = weights.layer(genome.layers[1].id)
    assert second is not None
    assert set(second) == {"weight", "bias"}
    state = model_state(weights, genome)
    assert state is not None
    _assert_same_function(genome, state, model)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "silu", "elu", "leaky_relu"])
@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("extra", [0, 5])
def test_an_inserted_residual_layer_starts_with_a_zero_branch_exactly(
    activation: str, position: int, extra: int
) -> None:
    parent = _dense((12, 8), "tanh" if activation == "relu" else "relu")
    model = _trained(parent, 3)
    reads = (N_FEATURES, 12, 8)[position]
    new = LayerGene(reads + extra, activation, 0.2, residual=True, id=new_gene_id(random.Random(7)))
    layers = list(parent.layers)
    layers.insert(position, new)
    if position < len(parent.layers) and extra:  # its input width changed: a fresh id
        layers[position + 1] = replace(layers[position + 1], id=new_gene_id(random.Random(8)))
    child = parent.replace(layers=tuple(layers))
    result = _inherit(child, parent, model)
    assert result.genes[new.id] == "identity:#4"
    assert result.exact
    _assert_same_function(child, result.state, model)
    if not extra:
        assert not result.state[f"hidden{position}.weight"].any()  # a zero branch


def test_a_residual_insert_narrower_than_its_input_is_not_claimed_exact() -> None:
    parent = _dense((12, 8))
    model = _trained(parent, 3)
    new = LayerGene(6, "relu", 0.0, residual=True, id=new_gene_id(random.Random(1)))
    child = parent.replace(layers=(parent.layers[0], new, replace(parent.layers[1], id="n")))
    assert not _inherit(child, parent, model).exact


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_widened_residual_layers_keep_the_function(index: int, activation: str) -> None:
    parent = _residual((12, 12, 8), activation)  # skips: projection, identity, projection
    model = _trained(parent, 2)
    rng = random.Random(5)
    layers = list(parent.layers)
    layers[index] = replace(layers[index], units=layers[index].units + 5, id=new_gene_id(rng))
    layers[index + 1] = replace(layers[index + 1], id=new_gene_id(rng))
    child = parent.replace(layers=tuple(layers))
    result = _inherit(child, parent, model, 3)
    assert result.genes[child.layers[index].id] == "widen:#3"
    assert result.exact
    _assert_same_function(child, result.state, model)


def test_a_layer_made_residual_keeps_the_function_only_through_a_zero_projection() -> None:
    parent = _dense((12, 12))
    model = _trained(parent, 6)
    for index, exact in ((0, True), (1, False)):  # 10 -> 12 projects; 12 -> 12 is the identity
        layers = list(parent.layers)
        layers[index] = replace(layers[index], residual=True)
        child = parent.replace(layers=tuple(layers))
        result = _inherit(child, parent, model)
        assert result.genes[layers[index].id] == "copy:#4"
        assert result.exact is exact
        if exact:
            assert not result.state["hidden0.projection"].any()
            _assert_same_function(child, result.state, model)
    back = _residual((12,), seed=3)
    back_model = _trained(back, 2)
    plain = back.replace(layers=(replace(back.layers[0], residual=False),))
    assert not _inherit(plain, back, back_model).exact


@pytest.mark.parametrize("residual", [False, True])
def test_a_duplicated_square_layer_starts_as_a_copy_of_its_source(residual: bool) -> None:
    parent = _dense((12, 12))
    parent = parent.replace(layers=tuple(replace(g, residual=residual) for g in parent.layers))
    model = _trained(parent, 8)
    source = parent.layers[1]
    duplicate = replace(source, id=new_gene_id(random.Random(2)))
    child = parent.replace(layers=(*parent.layers, duplicate))
    result = _inherit(child, parent, model, 9)
    assert result.genes[duplicate.id] == "duplicate:#9"
    assert result.genes["output"] == "copy:#9"
    assert not result.exact  # the layer now applies twice
    trained = model.state_dict()
    for name in ("weight", "bias"):
        torch.testing.assert_close(result.state[f"hidden2.{name}"], trained[f"hidden1.{name}"])
    torch.testing.assert_close(result.state["output.weight"], trained["output.weight"])
    # A source that is not square (10 -> 12) is inserted as an identity, as before.
    first = replace(parent.layers[0], id=new_gene_id(random.Random(3)))
    child = parent.replace(layers=(parent.layers[0], first, parent.layers[1]))
    assert _inherit(child, parent, model, 9).genes[first.id] == "identity:#9"


def test_a_constant_branch_output_is_taken_out_downstream(monkeypatch) -> None:
    """An activation with f(0) != 0 (sigmoid: 0.5) would add a constant: the readers absorb it."""
    from torch import nn

    from evohpo.training import layers as layer_module
    from evohpo.training import morphisms

    monkeypatch.setitem(layer_module._ACTIVATION_MODULES, "sigmoid", nn.Sigmoid)
    parent = _residual((12, 12, 6), "tanh")  # readers: identity and projection skips, then plain
    parent = parent.replace(layers=(*parent.layers, LayerGene(5, "relu", 0.0, id="p")))
    model = _trained(parent, 4)
    x = torch.randn(64, N_FEATURES)
    for position in range(5):
        morphed = morphisms.insert_residual_layer(model, position, "sigmoid").eval()
        torch.testing.assert_close(morphed(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("inserts_only", [False, True], ids=["mixed", "inserts"])
def test_exact_is_claimed_only_when_true_with_residual_layers_and_every_activation(
    inserts_only: bool,
) -> None:
    from evohpo.evolution.genome import ACTIVATIONS

    space = SearchSpace(
        max_layers=4, units=(8, 24), activations=ACTIVATIONS, dense_residual=(False, True)
    )
    rates = MutationRates(gene=0.15, insert_layer=0.4, remove_layer=0.1, duplicate_layer=0.2)
    if inserts_only:
        rates = MutationRates(gene=0.0, insert_layer=1.0, remove_layer=0.0, duplicate_layer=0.0)
    exact, inserted = 0, set()
    for number in range(60):
        rng = random.Random(number)
        parent = _ids(space.sample(rng), rng)
        model = _trained(parent, number)
        child, _ = mutate(parent, space, rng, rates)
        result = inherit(
            child,
            [_parent(number, parent, model)],
            n_features=N_FEATURES,
            n_outputs=N_CLASSES,
            seed=number,
        )
        x = torch.randn(32, N_FEATURES)
        same = torch.allclose(_child_model(child, result.state)(x), model(x), atol=1e-4)
        assert same or not result.exact, (parent, child, result.genes)
        exact += result.exact
        if result.exact:
            inserted |= {
                (g.activation, g.residual)
                for g in child.layers
                if result.genes[g.id].startswith("identity:")
            }
    assert exact >= 6
    if inserts_only:
        # Residual inserts are exact whatever their activation, plain ones only for ReLU.
        assert len({activation for activation, residual in inserted if residual}) >= 4
        assert {activation for activation, residual in inserted if not residual} <= {"relu"}
