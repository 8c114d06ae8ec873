from __future__ import annotations

import collections
import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from evohpo.evolution.blocks import BlockGene, body_shapes
from evohpo.evolution.crossover import crossover
from evohpo.evolution.genome import Genome, LayerGene
from evohpo.evolution.mutation import MutationRates, mutate
from evohpo.evolution.params import crossover_params, mutate_params
from evohpo.evolution.selection import (
    nsga2_rank_and_crowding,
    select_nsga2,
    select_rank_tournament,
    select_tournament,
    youngest,
)
from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import InvalidParameterError
from tests.strategies import any_body_genomes, body_spaces, distributions, seeds, spaces

FAST = settings(max_examples=40, deadline=None)

GENOME_OPS = {
    "mutate:units",
    "mutate:activation",
    "mutate:dropout",
    "mutate:optimizer",
    "mutate:learning_rate",
    "mutate:weight_decay",
    "mutate:batch_size",
    "insert_layer",
    "remove_layer",
    "duplicate_layer",
    "repair",
}
STRUCTURAL = {"insert_layer", "remove_layer", "duplicate_layer"}
ONLY_INSERT = MutationRates(gene=0.0, insert_layer=1.0, remove_layer=0.0, duplicate_layer=0.0)
ONLY_REMOVE = MutationRates(gene=0.0, insert_layer=0.0, remove_layer=1.0, duplicate_layer=0.0)
ONLY_DUPLICATE = MutationRates(gene=0.0, insert_layer=0.0, remove_layer=0.0, duplicate_layer=1.0)
GENES_ONLY = MutationRates(gene=0.5, insert_layer=0.0, remove_layer=0.0, duplicate_layer=0.0)


def _snapshot(genome: Genome) -> tuple[str, list[str]]:
    return genome.to_json(), [layer.id for layer in genome.layers]


def _ids(genome: Genome) -> list[str]:
    return [layer.id for layer in genome.layers]


def _assert_id_rule(child: Genome, parents: tuple[Genome, ...], *, same_genes: bool) -> None:
    """Ids are unique; an id a parent had is kept only with that layer's weight shape."""
    ids = [i for i in _ids(child) if i]
    assert len(set(ids)) == len(ids)
    known = {
        layer.id: (layer, shape)
        for parent in parents
        for layer, shape in zip(parent.layers, parent.weight_shapes(), strict=True)
    }
    for layer, shape in zip(child.layers, child.weight_shapes(), strict=True):
        if layer.id in known:
            original, original_shape = known[layer.id]
            assert shape == original_shape, (layer.id, shape, original_shape)
            if same_genes:
                assert layer.to_dict() == original.to_dict()


def _layout(child: Genome, parents: tuple[Genome, ...]) -> tuple[str, ...]:
    """The child's ids, ``"*"`` for an id no parent has (a fresh one)."""
    known = {i for parent in parents for i in _ids(parent)}
    return tuple(i if i in known else "*" for i in _ids(child))


def _global_state_kept(call: Callable[[], object]) -> None:
    random.seed(12345)
    before = random.getstate()
    call()
    assert random.getstate() == before


# -- MutationRates ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gene": 1.5}, r"'gene' parameter of MutationRates must be a float in the range \[0.0"),
        ({"gene": -0.1}, "'gene' parameter"),
        ({"insert_layer": 2}, "'insert_layer' parameter"),
        ({"remove_layer": "0.1"}, "'remove_layer' parameter"),
        ({"duplicate_layer": math.nan}, "'duplicate_layer' parameter"),
        ({"units_sigma": 0.0}, r"'units_sigma' parameter of MutationRates must be a float > 0"),
        ({"learning_rate_sigma": -1.0}, "'learning_rate_sigma' parameter"),
        ({"weight_decay_sigma": math.inf}, "'weight_decay_sigma' parameter"),
        ({"dropout_sigma": True}, "'dropout_sigma' parameter"),
        ({"insert_block": 1.5}, "'insert_block' parameter of MutationRates must be a float"),
        ({"remove_block": -0.5}, "'remove_block' parameter"),
        ({"duplicate_block": None}, "'duplicate_block' parameter"),
    ],
)
def test_mutation_rates_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        MutationRates(**kwargs)


def test_mutation_rates_accept_ints() -> None:
    rates = MutationRates(gene=1, insert_layer=0)
    assert rates.gene == 1.0
    assert isinstance(rates.gene, float)


# -- mutate -----------------------------------------------------------------------------------
@FAST
@given(spaces(), seeds)
def test_mutate_child_in_space_and_different(space: SearchSpace, seed: int) -> None:
    rng = random.Random(seed)
    parent = space.sample(rng)
    before = _snapshot(parent)
    child, ops = mutate(parent, space, rng)
    assert _snapshot(parent) == before
    assert space.contains(child), space.violations(child)
    assert set(ops) <= GENOME_OPS
    assert len(ops) == len(set(ops))
    single_point = (
        space.min_layers == space.max_layers
        and space.units[0] == space.units[1]
        and len(space.activations) == 1
        and space.dropout[0] == space.dropout[1]
        and len(space.optimizers) == 1
        and space.learning_rate[0] == space.learning_rate[1]
        and space.weight_decay[0] == space.weight_decay[1]
        and len(space.batch_sizes) == 1
    )
    if not single_point:
        assert child != parent
        assert ops


@FAST
@given(spaces(), seeds)
def test_mutate_is_reproducible(space: SearchSpace, seed: int) -> None:
    parent = space.sample(random.Random(seed))
    child1, ops1 = mutate(parent, space, random.Random(seed + 1))
    child2, ops2 = mutate(parent, space, random.Random(seed + 1))
    assert _snapshot(child1) == _snapshot(child2)
    assert ops1 == ops2


def test_mutate_differs_across_seeds() -> None:
    space = SearchSpace()
    parent = space.sample(random.Random(0))
    children = {mutate(parent, space, random.Random(seed))[0].to_json() for seed in range(30)}
    assert len(children) > 20


@FAST
@given(spaces(), seeds)
def test_mutate_keeps_global_random_state(space: SearchSpace, seed: int) -> None:
    parent = space.sample(random.Random(seed))
    _global_state_kept(lambda: mutate(parent, space, random.Random(seed)))


def single_point_space(**changes: Any) -> SearchSpace:
    """A space of one genome (one layer of 8 ReLU units, Adam...), with ``changes``."""
    settings: dict[str, Any] = {
        "min_layers": 1,
        "max_layers": 1,
        "units": (8, 8),
        "activations": ("relu",),
        "dropout": (0.1, 0.1),
        "optimizers": ("adam",),
        "learning_rate": (1e-3, 1e-3),
        "weight_decay": (1e-5, 1e-5),
        "batch_sizes": (32,),
    }
    return SearchSpace(**{**settings, **changes})


def test_mutate_single_point_space_returns_the_genome() -> None:
    space = single_point_space()
    parent = space.sample(random.Random(0))
    assert space.contains(parent)
    child, ops = mutate(parent, space, random.Random(1))
    assert child == parent
    assert ops == []


@pytest.mark.parametrize("depth", [1, 3])
def test_mutate_with_fixed_depth_never_changes_depth(depth: int) -> None:
    space = SearchSpace(min_layers=depth, max_layers=depth)
    rates = MutationRates(insert_layer=1.0, remove_layer=1.0, duplicate_layer=1.0)
    rng = random.Random(0)
    for _ in range(200):
        child, ops = mutate(space.sample(rng), space, rng, rates)
        assert child.depth == depth
        assert not STRUCTURAL & set(ops)


def test_mutate_every_operator_occurs() -> None:
    space = SearchSpace(min_layers=1, max_layers=5)
    rng = random.Random(7)
    counts: collections.Counter[str] = collections.Counter()
    n = 600
    for _ in range(n):
        counts.update(mutate(space.sample(rng), space, rng)[1])
    assert set(counts) == GENOME_OPS - {"repair"}
    # Structural mutations fire with probability 0.1 each where the depth allows.
    for op in STRUCTURAL:
        assert 0.04 * n < counts[op] < 0.2 * n, counts
    # Per-layer genes fire more often than global ones: a genome has ~3 layers.
    assert counts["mutate:units"] > counts["mutate:optimizer"]


def test_insert_layer_adds_a_fresh_layer_and_keeps_the_others() -> None:
    space = SearchSpace(max_layers=4)
    rng = random.Random(3)
    positions = set()
    for _ in range(100):
        parent = Genome(tuple(space.sample_layer(rng) for _ in range(2)), "adam", 1e-3, 1e-5, 64)
        child, ops = mutate(parent, space, rng, ONLY_INSERT)
        assert ops == ["insert_layer"]
        assert child.depth == 3
        at = [p for p in range(3) if child.layers[:p] + child.layers[p + 1 :] == parent.layers]
        assert at
        p = at[0]
        positions.add(p)
        _assert_id_rule(child, (parent,), same_genes=True)
        # Layers before the insertion keep their ids; the inserted layer gets a fresh
        # one, and so does the layer after it unless its input width is unchanged.
        assert _ids(child)[:p] == _ids(parent)[:p]
        assert child.layers[p].id not in _ids(parent)
        if p < 2:
            same_input = p > 0 and child.layers[p].units == parent.layers[p - 1].units
            assert (child.layers[p + 1].id == parent.layers[p].id) == same_input
            assert _ids(child)[p + 2 :] == _ids(parent)[p + 1 :]
    assert positions == {0, 1, 2}


def test_remove_layer_drops_one_layer() -> None:
    space = SearchSpace(max_layers=4)
    rng = random.Random(4)
    removed = set()
    for _ in range(100):
        parent = Genome(tuple(space.sample_layer(rng) for _ in range(3)), "sgd", 1e-2, 1e-4, 32)
        child, ops = mutate(parent, space, rng, ONLY_REMOVE)
        assert ops == ["remove_layer"]
        assert child.depth == 2
        at = [r for r in range(3) if parent.layers[:r] + parent.layers[r + 1 :] == child.layers]
        assert at
        r = at[0]
        removed.add(parent.layers[r].id)
        _assert_id_rule(child, (parent,), same_genes=True)
        # The layer after the removed one now reads the layer before it (or the
        # input): a fresh id unless that width is the one it read before.
        assert _ids(child)[:r] == _ids(parent)[:r]
        if r < 2:
            same_input = r > 0 and parent.layers[r - 1].units == parent.layers[r].units
            assert (child.layers[r].id == parent.layers[r + 1].id) == same_input
            assert _ids(child)[r + 1 :] == _ids(parent)[r + 2 :]
        assert child.optimizer == parent.optimizer
    assert len(removed) > 50


def test_duplicate_layer_copies_next_to_the_original_with_a_new_id() -> None:
    space = SearchSpace(max_layers=4)
    rng = random.Random(5)
    for _ in range(100):
        parent = Genome(tuple(space.sample_layer(rng) for _ in range(2)), "adam", 1e-3, 0.0001, 64)
        child, ops = mutate(parent, space, rng, ONLY_DUPLICATE)
        assert ops == ["duplicate_layer"]
        assert child.depth == 3
        (new,) = [i for i, layer in enumerate(child.layers) if layer.id not in _ids(parent)]
        assert new >= 1
        original, copy = child.layers[new - 1], child.layers[new]
        assert (original.units, original.activation, original.dropout) == (
            copy.units,
            copy.activation,
            copy.dropout,
        )
        assert [layer.id for layer in child.layers if layer is not copy] == _ids(parent)


def test_structural_mutations_skipped_at_the_depth_bounds() -> None:
    space = SearchSpace(min_layers=2, max_layers=2)
    rng = random.Random(6)
    grow = MutationRates(gene=0.0, insert_layer=1.0, remove_layer=0.0, duplicate_layer=1.0)
    for rates in (grow, ONLY_REMOVE):
        for _ in range(50):
            parent = space.sample(rng)
            child, ops = mutate(parent, space, rng, rates)
            assert child.depth == 2
            assert child != parent
            # Nothing fired, so exactly one random applicable mutation was forced.
            assert len(ops) == 1
            assert ops[0] not in STRUCTURAL


@FAST
@given(spaces(), seeds)
def test_mutate_ids_follow_the_weight_shapes(space: SearchSpace, seed: int) -> None:
    rng = random.Random(seed)
    parent = space.sample(rng)
    child, ops = mutate(parent, space, rng, GENES_ONLY)
    assert len(set(_ids(child))) == child.depth
    if STRUCTURAL & set(ops):
        return  # a forced structural mutation (no gene could change); tested elsewhere
    assert child.depth == parent.depth
    shapes = zip(parent.weight_shapes(), child.weight_shapes(), strict=True)
    for old, new, (old_shape, new_shape) in zip(parent.layers, child.layers, shapes, strict=True):
        # Same units and same input width: same weights, same id.
        if new_shape == old_shape:
            assert new.id == old.id
        else:
            assert new.id not in _ids(parent)


def test_a_units_mutation_gives_the_next_layer_a_new_id_too() -> None:
    # Only units can change, and depth is fixed at two.
    space = SearchSpace(
        min_layers=2,
        max_layers=2,
        units=(8, 128),
        activations=("relu",),
        dropout=(0.0, 0.0),
        optimizers=("adam",),
        learning_rate=(1e-3, 1e-3),
        weight_decay=(1e-5, 1e-5),
        batch_sizes=(32,),
    )
    parent = Genome(
        (LayerGene(64, "relu", 0.0, "A"), LayerGene(32, "relu", 0.0, "B")), "adam", 1e-3, 1e-5, 32
    )
    first_only = second_only = 0
    for seed in range(200):
        child, ops = mutate(parent, space, random.Random(seed))
        assert ops == ["mutate:units"]
        a, b = child.layers
        if a.units != 64 and b.units == 32:
            # Layer B keeps its units, but its input width changed: its weights did.
            first_only += 1
            assert a.id not in ("A", "B")
            assert b.id not in ("A", "B")
        elif a.units == 64 and b.units != 32:
            second_only += 1
            assert a.id == "A"
            assert b.id not in ("A", "B")
    assert first_only > 10
    assert second_only > 10


@FAST
@given(spaces(), seeds)
def test_mutate_structural_ids_are_fresh_and_unique(space: SearchSpace, seed: int) -> None:
    rng = random.Random(seed)
    parent = space.sample(rng)
    rates = MutationRates(gene=0.0, insert_layer=0.5, remove_layer=0.5, duplicate_layer=0.5)
    child, _ = mutate(parent, space, rng, rates)
    assert len(set(_ids(child))) == child.depth
    # A kept id means a kept weight shape (a forced gene mutation may change the rest).
    _assert_id_rule(child, (parent,), same_genes=False)


def test_mutate_changes_categoricals_to_a_different_choice() -> None:
    space = SearchSpace(min_layers=1, max_layers=1, activations=("relu", "tanh"))
    rng = random.Random(8)
    rates = MutationRates(gene=1.0, insert_layer=0.0, remove_layer=0.0, duplicate_layer=0.0)
    for _ in range(50):
        parent = space.sample(rng)
        child, ops = mutate(parent, space, rng, rates)
        assert child.layers[0].activation != parent.layers[0].activation
        assert child.optimizer != parent.optimizer
        assert child.batch_size != parent.batch_size
        assert {"mutate:activation", "mutate:optimizer", "mutate:batch_size"} <= set(ops)


def test_mutate_steps_rates_in_log_space() -> None:
    space = SearchSpace(learning_rate=(1e-6, 1.0))
    parent = Genome((LayerGene(64, "relu", 0.1, "x"),), "adam", 1e-5, 1e-5, 64)
    rng = random.Random(9)
    rates = MutationRates(gene=1.0, insert_layer=0.0, remove_layer=0.0, duplicate_layer=0.0)
    ratios = [
        mutate(parent, space, rng, rates)[0].learning_rate / parent.learning_rate
        for _ in range(400)
    ]
    # A log-space step of sigma 0.5 is symmetric in the ratio and rarely beyond e^2.
    below = sum(r < 1 for r in ratios)
    assert 150 < below < 250
    assert sum(math.exp(-2) < r < math.exp(2) for r in ratios) > 360


def test_mutate_repairs_a_parent_outside_the_space() -> None:
    space = SearchSpace(min_layers=2, max_layers=3, units=(8, 32))
    parent = Genome(
        tuple(LayerGene(1000, "relu", 0.0, f"l{i}") for i in range(5)), "sgd", 1.0, 0, 7
    )
    child, ops = mutate(parent, space, random.Random(0))
    assert space.contains(child)
    assert ops[0] == "repair"


def test_mutate_rejects_bad_arguments() -> None:
    space = SearchSpace()
    parent = space.sample(random.Random(0))
    with pytest.raises(InvalidParameterError, match="'rng' parameter of mutate"):
        mutate(parent, space, 0)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="'rates' parameter of mutate"):
        mutate(parent, space, random.Random(0), {"gene": 0.1})  # type: ignore[arg-type]


# -- crossover -------------------------------------------------------------------------------
@FAST
@given(spaces(), seeds, seeds)
def test_crossover_child_in_space_from_its_parents(space: SearchSpace, s1: int, s2: int) -> None:
    a, b = space.sample(random.Random(s1)), space.sample(random.Random(s2 ^ 1))
    snap_a, snap_b = _snapshot(a), _snapshot(b)
    rng = random.Random(s2)
    child, ops = crossover(a, b, space, rng)
    assert (_snapshot(a), _snapshot(b)) == (snap_a, snap_b)
    assert space.contains(child)
    assert child.depth in (a.depth, b.depth)
    assert set(ops) <= {"crossover:layers", "crossover:globals"}
    genes = {(layer.units, layer.activation, layer.dropout) for layer in (*a.layers, *b.layers)}
    assert all((layer.units, layer.activation, layer.dropout) in genes for layer in child.layers)
    _assert_id_rule(child, (a, b), same_genes=True)
    assert child.optimizer in (a.optimizer, b.optimizer)
    assert child.learning_rate in (a.learning_rate, b.learning_rate)
    assert child.weight_decay in (a.weight_decay, b.weight_decay)
    assert child.batch_size in (a.batch_size, b.batch_size)
    _global_state_kept(lambda: crossover(a, b, space, random.Random(s1)))


@FAST
@given(spaces(), seeds)
def test_crossover_is_reproducible(space: SearchSpace, seed: int) -> None:
    a, b = space.sample(random.Random(seed)), space.sample(random.Random(seed + 1))
    first = crossover(a, b, space, random.Random(seed))
    second = crossover(a, b, space, random.Random(seed))
    assert _snapshot(first[0]) == _snapshot(second[0])
    assert first[1] == second[1]


def test_crossover_mixes_layers_of_different_depths() -> None:
    space = SearchSpace(max_layers=5)
    a = Genome(tuple(LayerGene(16, "relu", 0.0, f"a{i}") for i in range(4)), "sgd", 1e-3, 1e-5, 32)
    b = Genome(tuple(LayerGene(32, "tanh", 0.2, f"b{i}") for i in range(2)), "adam", 1e-2, 1e-4, 64)
    layouts = collections.Counter()
    for seed in range(300):
        child, ops = crossover(a, b, space, random.Random(seed))
        layouts[_layout(child, (a, b))] += 1
        assert "crossover:layers" in ops
    # Cut after the first layer (the only cut for a two-layer parent): two offspring.
    # The first layer after the cut reads a layer of another width: a fresh id.
    assert set(layouts) == {("a0", "*"), ("b0", "*", "a2", "a3")}
    assert min(layouts.values()) > 100


@pytest.mark.parametrize(("depth_a", "depth_b"), [(1, 1), (1, 3), (3, 1)])
def test_crossover_handles_one_layer_parents(depth_a: int, depth_b: int) -> None:
    space = SearchSpace(max_layers=3)
    a = Genome(
        tuple(LayerGene(16, "relu", 0.0, f"a{i}") for i in range(depth_a)), "sgd", 1e-3, 1e-5, 32
    )
    b = Genome(
        tuple(LayerGene(32, "tanh", 0.2, f"b{i}") for i in range(depth_b)), "adam", 1e-2, 1e-4, 64
    )
    layouts = set()
    for seed in range(100):
        child, _ = crossover(a, b, space, random.Random(seed))
        assert space.contains(child)
        layouts.add(_layout(child, (a, b)))
    expected = {
        (1, 1): {("a0",), ("b0",)},
        (1, 3): {("a0", "*", "b2"), ("b0",)},
        (3, 1): {("b0", "*", "a2"), ("a0",)},
    }[(depth_a, depth_b)]
    assert layouts == expected


def test_crossover_depth_stays_within_fixed_bounds() -> None:
    space = SearchSpace(min_layers=2, max_layers=2)
    rng = random.Random(11)
    for _ in range(100):
        child, _ = crossover(space.sample(rng), space.sample(rng), space, rng)
        assert child.depth == 2


def test_crossover_globals_come_from_both_parents() -> None:
    space = SearchSpace()
    a = Genome((LayerGene(16, "relu", 0.0, "a"),), "sgd", 1e-3, 1e-5, 32)
    b = Genome((LayerGene(32, "tanh", 0.2, "b"),), "adam", 1e-2, 1e-4, 64)
    optimizers = collections.Counter()
    mixed = 0
    for seed in range(400):
        child, ops = crossover(a, b, space, random.Random(seed))
        optimizers[child.optimizer] += 1
        mixed += "crossover:globals" in ops
    assert 150 < optimizers["sgd"] < 250
    # All four global genes come from one parent with probability 2 / 16.
    assert 300 < mixed < 380


def test_crossover_keeps_ids_only_with_their_input_width() -> None:
    space = SearchSpace(max_layers=3)
    a = Genome(
        (LayerGene(64, "relu", 0.0, "A"), LayerGene(32, "relu", 0.0, "B")), "adam", 1e-3, 1e-5, 32
    )
    narrow = Genome(
        (LayerGene(16, "tanh", 0.0, "C"), LayerGene(32, "tanh", 0.0, "D")), "adam", 1e-3, 1e-5, 32
    )
    wide = Genome(
        (LayerGene(64, "tanh", 0.0, "E"), LayerGene(32, "tanh", 0.0, "F")), "adam", 1e-3, 1e-5, 32
    )
    narrow_layouts, wide_layouts = set(), set()
    for seed in range(60):
        child, _ = crossover(a, narrow, space, random.Random(seed))
        narrow_layouts.add(_layout(child, (a, narrow)))
        child, _ = crossover(a, wide, space, random.Random(seed))
        wide_layouts.add(_layout(child, (a, wide)))
    # B and D read a layer of another width in the child: new weights, new ids.
    assert narrow_layouts == {("A", "*"), ("C", "*")}
    # The same widths: the layers keep their ids, weights can be inherited.
    assert wide_layouts == {("A", "F"), ("E", "B")}


@pytest.mark.parametrize("same_ids", [True, False])
def test_crossover_of_equal_parents_reports_no_crossover(same_ids: bool) -> None:
    space = SearchSpace(max_layers=4)
    for seed in range(30):
        genome = space.sample(random.Random(seed))
        other = genome if same_ids else Genome.from_params(genome.to_params())
        child, ops = crossover(genome, other, space, random.Random(seed))
        assert child == genome
        assert ops == []


def test_crossover_reports_only_the_parts_that_differ() -> None:
    space = SearchSpace(max_layers=4)
    layers = (LayerGene(16, "relu", 0.0, "x"), LayerGene(32, "tanh", 0.1, "y"))
    a = Genome(layers, "sgd", 1e-3, 1e-5, 32)
    b = Genome(layers, "adam", 1e-2, 1e-4, 64)  # the same layers, other globals
    reported = set()
    for seed in range(50):
        child, ops = crossover(a, b, space, random.Random(seed))
        assert "crossover:layers" not in ops
        mixed = child.replace(layers=layers) not in (a, b)
        assert ("crossover:globals" in ops) == mixed
        reported.update(ops)
    assert reported == {"crossover:globals"}


def test_crossover_gives_repeated_ids_a_fresh_one() -> None:
    space = SearchSpace(max_layers=3)
    shared = LayerGene(16, "relu", 0.0, "s")
    a = Genome((LayerGene(8, "relu", 0.0, "x"), shared), "sgd", 1e-3, 1e-5, 32)
    b = Genome((shared, LayerGene(64, "relu", 0.0, "y")), "sgd", 1e-3, 1e-5, 32)
    seen = set()
    for seed in range(50):
        child, _ = crossover(a, b, space, random.Random(seed))
        assert len(set(_ids(child))) == child.depth
        seen.add(tuple(layer.units for layer in child.layers))
    assert (16, 16) in seen


def test_crossover_rejects_a_bad_rng() -> None:
    genome = SearchSpace().sample(random.Random(0))
    with pytest.raises(InvalidParameterError, match="'rng' parameter of crossover"):
        crossover(genome, genome, SearchSpace(), None)  # type: ignore[arg-type]


# -- tournaments ---------------------------------------------------------------------------
@FAST
@given(
    st.lists(st.floats(allow_nan=False), min_size=1, max_size=20),
    st.integers(0, 10),
    st.integers(1, 25),
    seeds,
)
def test_select_tournament_returns_valid_indices(
    fitness: list[float], k: int, size: int, seed: int
) -> None:
    picks = select_tournament(fitness, k, size, random.Random(seed))
    assert len(picks) == k
    assert all(0 <= i < len(fitness) for i in picks)
    assert picks == select_tournament(fitness, k, size, random.Random(seed))
    _global_state_kept(lambda: select_tournament(fitness, k, size, random.Random(seed)))


def test_select_tournament_prefers_the_fitter() -> None:
    fitness = [0.0, 1.0, 2.0, 3.0, 4.0]
    counts = collections.Counter(select_tournament(fitness, 5000, 3, random.Random(0)))
    assert counts[0] < counts[1] < counts[2] < counts[3] < counts[4]
    # The best wins every tournament it enters: 1 - (4/5)^3 = 0.488.
    assert counts[4] / 5000 == pytest.approx(0.488, abs=0.03)


def test_select_tournament_accepts_minus_infinity() -> None:
    picks = select_tournament([-math.inf, 1.0], 50, 2, random.Random(0))
    assert picks.count(1) > 25


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([1.0], -1, 2), "'k' parameter of select_tournament must be an int >= 0"),
        (([1.0], 1, 0), "'tournament_size' parameter of select_tournament must be an int >= 1"),
        (([1.0, math.nan], 1, 2), r"'fitness\[1\]' parameter of select_tournament"),
        (([1.0, "a"], 1, 2), r"'fitness\[1\]' parameter"),
        (([], 1, 2), "'fitness' parameter of select_tournament must be non-empty"),
        (("abc", 1, 2), "'fitness' parameter of select_tournament must be a sequence"),
        (([1.0], 1.5, 2), "'k' parameter"),
    ],
)
def test_select_tournament_validation(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        select_tournament(*args, rng=random.Random(0))


def test_select_tournament_with_k_zero_accepts_an_empty_population() -> None:
    assert select_tournament([], 0, 3, random.Random(0)) == []


def test_select_rank_tournament_frequencies_follow_the_probabilities() -> None:
    fitness = [2.0, 9.0, 5.0]  # best: 1, second: 2, third: 0
    n = 6000
    counts = collections.Counter(
        select_rank_tournament(fitness, n, 3, [0.6, 0.3, 0.1], random.Random(0))
    )
    assert counts[1] / n == pytest.approx(0.6, abs=0.025)
    assert counts[2] / n == pytest.approx(0.3, abs=0.025)
    assert counts[0] / n == pytest.approx(0.1, abs=0.025)


def test_select_rank_tournament_normalises_over_present_ranks() -> None:
    # Two contestants: ranks 1 and 2 only, so p = (0.5, 0.3) / 0.8.
    n = 4000
    picks = select_rank_tournament([1.0, 0.0], n, 5, [0.5, 0.3, 0.2], random.Random(1))
    assert picks.count(0) / n == pytest.approx(0.625, abs=0.03)


def test_select_rank_tournament_ignores_ranks_without_probability() -> None:
    picks = select_rank_tournament([3.0, 1.0, 2.0, 0.0], 200, 4, [1.0], random.Random(2))
    assert set(picks) == {0}


@FAST
@given(
    st.lists(st.floats(allow_nan=False), min_size=1, max_size=15),
    st.integers(0, 10),
    st.integers(1, 20),
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5).filter(lambda p: sum(p) > 0),
    seeds,
)
def test_select_rank_tournament_returns_valid_indices(
    fitness: list[float], k: int, size: int, probabilities: list[float], seed: int
) -> None:
    probabilities = sorted(probabilities, reverse=True)
    picks = select_rank_tournament(fitness, k, size, probabilities, random.Random(seed))
    assert len(picks) == k
    assert all(0 <= i < len(fitness) for i in picks)
    again = select_rank_tournament(fitness, k, size, probabilities, random.Random(seed))
    assert picks == again
    _global_state_kept(
        lambda: select_rank_tournament(fitness, k, size, probabilities, random.Random(seed))
    )


@pytest.mark.parametrize(
    ("probabilities", "match"),
    [
        (
            [0.2, 0.5, 0.3],
            "'probabilities' parameter of select_rank_tournament must be a non-empty, non-incr",
        ),
        ([], "'probabilities' parameter"),
        ([0.0, 0.0], "with a positive sum"),
        (
            [0.5, -0.1],
            r"'probabilities\[1\]' parameter of select_rank_tournament must be a float >= 0",
        ),
        ([0.5, math.nan], r"'probabilities\[1\]' parameter"),
        ("0.5", "'probabilities' parameter"),
    ],
)
def test_select_rank_tournament_validation(probabilities: Any, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        select_rank_tournament([1.0, 2.0], 1, 2, probabilities, random.Random(0))


def test_select_rank_tournament_validates_sizes() -> None:
    with pytest.raises(InvalidParameterError, match="'tournament_size' parameter"):
        select_rank_tournament([1.0], 1, 0, [1.0], random.Random(0))
    with pytest.raises(InvalidParameterError, match="'k' parameter"):
        select_rank_tournament([1.0], -2, 1, [1.0], random.Random(0))
    with pytest.raises(InvalidParameterError, match="'fitness' parameter"):
        select_rank_tournament([], 1, 1, [1.0], random.Random(0))


# -- aging --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("birth_order", "size", "expected"),
    [
        ([5, 1, 7, 3], 2, [0, 2]),
        ([5, 1, 7, 3], 0, []),
        ([5, 1, 7, 3], 4, [0, 1, 2, 3]),
        ([5, 1, 7, 3], 10, [0, 1, 2, 3]),
        ([], 3, []),
        ([2, 2, 1], 1, [1]),
    ],
)
def test_youngest(birth_order: list[int], size: int, expected: list[int]) -> None:
    assert youngest(birth_order, size) == expected


@FAST
@given(st.lists(st.integers(0, 1000), unique=True, max_size=30), st.integers(0, 40))
def test_youngest_keeps_the_most_recent(birth_order: list[int], size: int) -> None:
    survivors = youngest(birth_order, size)
    assert len(survivors) == min(size, len(birth_order))
    dead = set(range(len(birth_order))) - set(survivors)
    for i in survivors:
        assert all(birth_order[i] > birth_order[j] for j in dead)


@pytest.mark.parametrize(
    ("birth_order", "size", "match"),
    [
        ([1, 2], -1, "'size' parameter of youngest must be an int >= 0"),
        ([1, 2.5], 1, r"'birth_order\[1\]' parameter of youngest must be an int"),
        (5, 1, "'birth_order' parameter of youngest must be a sequence of int"),
    ],
)
def test_youngest_validation(birth_order: Any, size: Any, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        youngest(birth_order, size)


# -- NSGA-II ------------------------------------------------------------------------------
def _dominates(p: list[float], q: list[float]) -> bool:
    return all(x >= y for x, y in zip(p, q, strict=True)) and p != q


objective_rows = st.integers(1, 3).flatmap(
    lambda m: st.lists(
        st.lists(st.integers(-5, 5).map(float), min_size=m, max_size=m), min_size=1, max_size=15
    )
)


@FAST
@given(objective_rows, st.integers(0, 20))
def test_select_nsga2_never_drops_a_dominating_individual(
    values: list[list[float]], k: int
) -> None:
    picked = select_nsga2(values, k)
    assert len(picked) == min(k, len(values))
    assert len(set(picked)) == len(picked)
    for i in picked:
        for j in set(range(len(values))) - set(picked):
            assert not _dominates(values[j], values[i])


@FAST
@given(objective_rows, st.integers(1, 20))
def test_select_nsga2_chooses_what_deap_chooses_from_all(values: list[list[float]], k: int) -> None:
    # select_nsga2 leaves out the individuals dominated k times or more first.
    from deap import tools

    from evohpo.evolution.selection import _individuals

    expected = tools.selNSGA2(_individuals([tuple(v) for v in values]), min(k, len(values)))
    assert select_nsga2(values, k) == [individual.index for individual in expected]


def test_select_nsga2_picks_the_pareto_front_first() -> None:
    values = [[0.0, 0.0], [3.0, 1.0], [1.0, 1.0], [1.0, 3.0], [2.0, 2.0], [0.5, 0.5]]
    assert sorted(select_nsga2(values, 3)) == [1, 3, 4]
    # From the second front ([1, 1] only), then the third.
    assert sorted(select_nsga2(values, 4)) == [1, 2, 3, 4]
    assert select_nsga2(values, 0) == []


def test_select_nsga2_breaks_front_ties_by_crowding() -> None:
    # All on one front; the extremes have infinite crowding distance.
    values = [[0.0, 4.0], [1.0, 3.0], [1.1, 2.9], [4.0, 0.0]]
    assert sorted(select_nsga2(values, 2)) == [0, 3]
    # The middle point with the most room beats its crowded neighbour.
    values = [[0.0, 4.0], [1.0, 3.0], [1.1, 2.9], [3.0, 1.0], [4.0, 0.0]]
    assert sorted(select_nsga2(values, 3)) == [0, 3, 4]


@FAST
@given(objective_rows)
def test_nsga2_rank_and_crowding_agree_with_dominance(values: list[list[float]]) -> None:
    result = nsga2_rank_and_crowding(values)
    assert len(result) == len(values)
    for i, (rank, crowding) in enumerate(result):
        dominated = any(_dominates(values[j], values[i]) for j in range(len(values)))
        assert (rank == 0) == (not dominated)
        assert crowding >= 0.0
        assert not math.isnan(crowding)
        for j, (other_rank, _) in enumerate(result):
            if _dominates(values[j], values[i]):
                assert other_rank < rank


def test_nsga2_handles_infinite_objectives() -> None:
    values = [[math.inf, 0.0], [1.0, 1.0], [0.0, -math.inf], [0.5, 0.5]]
    result = nsga2_rank_and_crowding(values)
    assert [rank for rank, _ in result] == [0, 0, 2, 1]
    assert not any(math.isnan(c) for _, c in result)
    assert sorted(select_nsga2(values, 2)) == [0, 1]


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([[1.0, 2.0], [1.0]], r"'values\[1\]' parameter of select_nsga2 must be a row of 2 values"),
        ([[1.0, math.nan]], r"'values\[0\]\[1\]' parameter of select_nsga2"),
        ([[]], r"'values\[0\]' parameter of select_nsga2 must be a non-empty"),
        ([1.0, 2.0], r"'values\[0\]' parameter"),
        ("ab", "'values' parameter of select_nsga2"),
    ],
)
def test_select_nsga2_validation(values: Any, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        select_nsga2(values, 1)


def test_select_nsga2_rejects_a_negative_k() -> None:
    with pytest.raises(InvalidParameterError, match="'k' parameter of select_nsga2"):
        select_nsga2([[1.0]], -1)


def test_nsga2_functions_keep_global_random_state() -> None:
    values = [[1.0, 2.0], [2.0, 1.0], [0.0, 0.0]]
    _global_state_kept(lambda: select_nsga2(values, 2))
    _global_state_kept(lambda: nsga2_rank_and_crowding(values))


def test_nsga2_of_an_empty_population() -> None:
    assert select_nsga2([], 3) == []
    assert nsga2_rank_and_crowding([]) == []


# -- parameter dicts -------------------------------------------------------------------------
def _inside(value: Any, dist: BaseDistribution) -> bool:
    return bool(dist._contains(dist.to_internal_repr(value)))


def _sample_value(dist: BaseDistribution, rng: random.Random) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return rng.choice(dist.choices)
    if isinstance(dist, IntDistribution):
        return dist.low + dist.step * rng.randint(0, (dist.high - dist.low) // dist.step)
    assert isinstance(dist, FloatDistribution)
    if dist.step is not None:
        k = rng.randint(0, round((dist.high - dist.low) / dist.step))
        return min(dist.high, dist.low + dist.step * k)
    return rng.uniform(dist.low, dist.high)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["x", "y", "layer2.units", "lr", "opt"]), distributions(), min_size=1
    ),
    st.floats(0.0, 1.0),
    seeds,
)
def test_mutate_params_stays_inside_the_distributions(
    dists: dict[str, BaseDistribution], gene_prob: float, seed: int
) -> None:
    rng = random.Random(seed)
    params = {name: _sample_value(dist, rng) for name, dist in dists.items()}
    assert all(_inside(params[name], dist) for name, dist in dists.items())
    frozen = dict(params)
    child, ops = mutate_params(params, dists, rng, gene_prob)
    assert params == frozen
    assert list(child) == list(params)
    for name, dist in dists.items():
        assert _inside(child[name], dist), (name, dist, child[name])
    changed = [name for name in params if child[name] != params[name]]
    assert ops == [f"mutate:{name}" for name in changed]
    mutable = [name for name, dist in dists.items() if not dist.single()]
    assert bool(changed) == bool(mutable)
    again = mutate_params(params, dists, random.Random(seed), gene_prob)
    assert again == mutate_params(params, dists, random.Random(seed), gene_prob)
    _global_state_kept(lambda: mutate_params(params, dists, random.Random(seed), gene_prob))


def test_mutate_params_respects_the_step() -> None:
    dists: dict[str, BaseDistribution] = {
        "f": FloatDistribution(0.0, 1.0, step=0.25),
        "i": IntDistribution(0, 30, step=3),
        "g": FloatDistribution(0.3, 2.0, step=0.1),
    }
    rng = random.Random(0)
    seen_f, seen_i = set(), set()
    for _ in range(300):
        child, _ = mutate_params({"f": 0.5, "i": 15, "g": 0.3}, dists, rng, gene_prob=1.0)
        assert _inside(child["g"], dists["g"])
        assert child["g"] != 0.3
        assert child["f"] in {0.0, 0.25, 0.5, 0.75, 1.0}
        assert child["i"] % 3 == 0
        assert isinstance(child["i"], int)
        seen_f.add(child["f"])
        seen_i.add(child["i"])
    # With gene_prob=1 every parameter moves, at least one grid step.
    assert 0.5 not in seen_f
    assert 15 not in seen_i
    assert len(seen_i) > 3


def test_mutate_params_steps_in_log_space() -> None:
    dists: dict[str, BaseDistribution] = {
        "lr": FloatDistribution(1e-6, 1.0, log=True),
        "n": IntDistribution(1, 4096, log=True),
    }
    rng = random.Random(1)
    ratios, units = [], []
    for _ in range(400):
        child, _ = mutate_params({"lr": 1e-4, "n": 8}, dists, rng, gene_prob=1.0)
        ratios.append(child["lr"] / 1e-4)
        units.append(child["n"])
    # A step of 0.1 of the log range: symmetric in the ratio, mostly within a factor e^3.
    assert 150 < sum(r < 1 for r in ratios) < 250
    assert sum(math.exp(-3) < r < math.exp(3) for r in ratios) > 350
    # Linear steps of 0.1 * 4095 would rarely land below 8; log steps often do.
    assert sum(u < 8 for u in units) > 100


def test_mutate_params_changes_categoricals_and_guarantees_a_change() -> None:
    dists: dict[str, BaseDistribution] = {
        "act": CategoricalDistribution(["relu", "tanh", "gelu"]),
        "fixed": CategoricalDistribution(["only"]),
        "x": FloatDistribution(0.0, 0.0),
    }
    rng = random.Random(2)
    for _ in range(50):
        child, ops = mutate_params({"act": "relu", "fixed": "only", "x": 0.0}, dists, rng, 0.0)
        assert child["act"] != "relu"
        assert child["fixed"] == "only"
        assert ops == ["mutate:act"]


def test_mutate_params_ensure_change_false_may_leave_the_params_unchanged() -> None:
    dists: dict[str, BaseDistribution] = {"act": CategoricalDistribution(["relu", "tanh"])}
    params = {"act": "relu"}
    assert mutate_params(params, dists, random.Random(0), 0.0, ensure_change=False) == (
        params,
        [],
    )
    child, ops = mutate_params(params, dists, random.Random(0), 1.0, ensure_change=False)
    assert (child, ops) == ({"act": "tanh"}, ["mutate:act"])


def test_mutate_params_without_mutable_parameters() -> None:
    dists: dict[str, BaseDistribution] = {"fixed": CategoricalDistribution(["only"])}
    assert mutate_params({"fixed": "only"}, dists, random.Random(0), 1.0) == ({"fixed": "only"}, [])


def test_mutate_params_moves_outside_values_inside() -> None:
    dists: dict[str, BaseDistribution] = {
        "x": FloatDistribution(0.0, 1.0),
        "n": IntDistribution(0, 10, step=2),
        "c": CategoricalDistribution(["a", "b"]),
        "y": FloatDistribution(5.0, 6.0),
    }
    child, _ = mutate_params({"x": 7.5, "n": 5, "c": "zzz", "y": 5.5}, dists, random.Random(0), 0.0)
    for name, dist in dists.items():
        assert _inside(child[name], dist)


def test_mutate_params_ignores_extra_distributions() -> None:
    dists: dict[str, BaseDistribution] = {
        "x": FloatDistribution(0.0, 1.0),
        "layer3.units": IntDistribution(1, 8),
    }
    child, ops = mutate_params({"x": 0.5}, dists, random.Random(0), 1.0)
    assert list(child) == ["x"]
    assert ops == ["mutate:x"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gene_prob": 1.5}, "'gene_prob' parameter of mutate_params"),
        (
            {"gene_prob": 0.5, "sigma": 0.0},
            "'sigma' parameter of mutate_params must be a float > 0",
        ),
        ({"gene_prob": 0.5, "params": {"x": 0.5, "y": 1}}, r"distribution\. Got none for \['y'\]"),
        (
            {"gene_prob": 0.5, "params": {"x": "abc"}},
            r"'params\[x\]' parameter of mutate_params must be a number",
        ),
        ({"gene_prob": 0.5, "rng": 3}, "'rng' parameter of mutate_params"),
        (
            {"gene_prob": 0.5, "ensure_change": 1},
            "'ensure_change' parameter of mutate_params must be a bool",
        ),
    ],
)
def test_mutate_params_validation(kwargs: dict[str, Any], match: str) -> None:
    arguments: dict[str, Any] = {
        "params": {"x": 0.5},
        "distributions": {"x": FloatDistribution(0.0, 1.0)},
        "rng": random.Random(0),
    }
    arguments.update(kwargs)
    with pytest.raises(InvalidParameterError, match=match):
        mutate_params(**arguments)


@FAST
@given(
    st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 9), max_size=6),
    st.dictionaries(st.sampled_from("abcdefgh"), st.integers(10, 19), max_size=6),
    seeds,
)
def test_crossover_params_covers_the_union(a: dict[str, int], b: dict[str, int], seed: int) -> None:
    frozen_a, frozen_b = dict(a), dict(b)
    child = crossover_params(a, b, random.Random(seed))
    assert (a, b) == (frozen_a, frozen_b)
    assert list(child) == [*a, *(k for k in b if k not in a)]
    for key, value in child.items():
        if key in a and key in b:
            assert value in (a[key], b[key])
        else:
            assert value == (a[key] if key in a else b[key])
    assert child == crossover_params(a, b, random.Random(seed))
    _global_state_kept(lambda: crossover_params(a, b, random.Random(seed)))


def test_crossover_params_takes_from_both_parents() -> None:
    a = {f"p{i}": "a" for i in range(10)}
    b = {f"p{i}": "b" for i in range(10)}
    counts = collections.Counter()
    for seed in range(100):
        counts.update(crossover_params(a, b, random.Random(seed)).values())
    assert 400 < counts["a"] < 600


def test_crossover_params_rejects_a_bad_rng() -> None:
    with pytest.raises(InvalidParameterError, match="'rng' parameter of crossover_params"):
        crossover_params({}, {}, random)  # type: ignore[arg-type]


# -- dense genomes draw as before bodies existed ---------------------------------------------
def _dense_fingerprint() -> str:
    """A digest of mutants and crossover children of dense genomes, ids and operators included."""
    digest = hashlib.sha256()
    spaces_ = [
        SearchSpace(),
        SearchSpace(min_layers=2, max_layers=6, units=(4, 64), activations=("relu", "tanh")),
    ]
    structural = MutationRates(gene=0.3, insert_layer=0.3, remove_layer=0.3, duplicate_layer=0.3)
    for space in spaces_:
        for rates in (MutationRates(), structural):
            for seed in range(40):
                rng = random.Random(seed)
                a, b = space.sample(rng), space.sample(rng)
                child, ops = mutate(a, space, rng, rates)
                digest.update((child.to_json() + repr(ops)).encode())
                for other in (child, b):
                    child, ops = crossover(a, other, space, rng)
                    digest.update((child.to_json() + repr(ops)).encode())
    return digest.hexdigest()


def test_dense_genomes_draw_exactly_as_before_bodies_existed() -> None:
    # Recorded before convolutional bodies were added: stored studies and seeded
    # runs of dense genomes must reproduce, so nothing extra may be drawn for them.
    expected = "c0aef197e5597e2ddea41fb6255cc7e2ff846605cf1443795872a0a7ce512804"
    assert _dense_fingerprint() == expected


# -- convolutional bodies --------------------------------------------------------------------
BODY_OPS = {
    "mutate:channels",
    "mutate:kernel",
    "mutate:stride",
    "mutate:pool",
    "mutate:residual",
    "mutate:batchnorm",
    "mutate:block_activation",
    "mutate:block_dropout",
    "mutate:readout",
    "insert_block",
    "remove_block",
    "duplicate_block",
}
BODY_STRUCTURAL = {"insert_block", "remove_block", "duplicate_block"}
#: The operator name of each block gene.
BLOCK_OPS = {
    "channels": "mutate:channels",
    "kernel": "mutate:kernel",
    "stride": "mutate:stride",
    "pool": "mutate:pool",
    "residual": "mutate:residual",
    "batchnorm": "mutate:batchnorm",
    "activation": "mutate:block_activation",
    "dropout": "mutate:block_dropout",
}
NO_STRUCTURE = {
    "insert_layer": 0.0,
    "remove_layer": 0.0,
    "duplicate_layer": 0.0,
    "insert_block": 0.0,
    "remove_block": 0.0,
    "duplicate_block": 0.0,
}
BODY_GENES_ONLY = MutationRates(gene=0.3, **NO_STRUCTURE)
BODY_RATES = [
    MutationRates(),
    BODY_GENES_ONLY,
    MutationRates(gene=0.2, insert_block=0.5, remove_block=0.5, duplicate_block=0.5),
]


def _only(op: str) -> MutationRates:
    return MutationRates(gene=0.0, **{**NO_STRUCTURE, op: 1.0})


def _dense_single_point(space: SearchSpace) -> bool:
    """Whether no gene outside the body can change (then the body alone decides)."""
    return (
        space.min_layers == space.max_layers
        and space.units[0] == space.units[1]
        and len(space.activations) == 1
        and space.dropout[0] == space.dropout[1]
        and len(space.optimizers) == 1
        and space.learning_rate[0] == space.learning_rate[1]
        and space.weight_decay[0] == space.weight_decay[1]
        and len(space.batch_sizes) == 1
    )


def _all_ids(genome: Genome) -> list[str]:
    return [gene.id for gene in (*(genome.blocks or ()), *genome.layers)]


def _block_ids(genome: Genome) -> list[str]:
    return [block.id for block in genome.blocks or ()]


def _assert_body_id_rule(child: Genome, parents: tuple[Genome, ...]) -> None:
    """Ids are unique; a block or layer keeps a parent's id only with a shape it had there."""
    ids = [i for i in _all_ids(child) if i]
    assert len(set(ids)) == len(ids)
    blocks: dict[str, set[Any]] = collections.defaultdict(set)
    layers: dict[str, set[Any]] = collections.defaultdict(set)
    for parent in parents:
        for block, conv in zip(parent.blocks or (), parent.block_weight_shapes(), strict=True):
            blocks[block.id].add(conv)
        for layer, shape in zip(parent.layers, parent.weight_shapes(), strict=True):
            layers[layer.id].add(shape)
    for block, conv in zip(child.blocks or (), child.block_weight_shapes(), strict=True):
        if block.id:  # "" is no id
            assert block.id not in layers
            assert conv in blocks.get(block.id, {conv}), (block.id, conv)
    for layer, shape in zip(child.layers, child.weight_shapes(), strict=True):
        if layer.id:
            assert layer.id not in blocks
            assert shape in layers.get(layer.id, {shape}), (layer.id, shape)


def _fits(genome: Genome, space: SearchSpace) -> bool:
    assert genome.blocks is not None
    assert space.input_shape is not None
    return body_shapes(genome.blocks, space.input_shape) is not None


@FAST
@given(body_spaces(), seeds, st.sampled_from(BODY_RATES))
def test_mutate_body_child_in_space_fits_and_differs(
    space: SearchSpace, seed: int, rates: MutationRates
) -> None:
    rng = random.Random(seed)
    parent = space.sample(rng)
    before = _snapshot(parent), _block_ids(parent)
    child, ops = mutate(parent, space, rng, rates)
    assert (_snapshot(parent), _block_ids(parent)) == before
    assert space.contains(child), space.violations(child)
    assert _fits(child, space)
    assert set(ops) <= GENOME_OPS | BODY_OPS
    assert len(ops) == len(set(ops))
    assert bool(ops) == (child != parent)
    if not _dense_single_point(space):
        assert child != parent
    _assert_body_id_rule(child, (parent,))


@FAST
@given(body_spaces(), seeds)
def test_mutate_body_is_reproducible_and_keeps_global_state(space: SearchSpace, seed: int) -> None:
    parent = space.sample(random.Random(seed))
    rates = BODY_RATES[2]
    first = mutate(parent, space, random.Random(seed + 1), rates)
    second = mutate(parent, space, random.Random(seed + 1), rates)
    assert (_snapshot(first[0]), _block_ids(first[0]), first[1]) == (
        _snapshot(second[0]),
        _block_ids(second[0]),
        second[1],
    )
    _global_state_kept(lambda: mutate(parent, space, random.Random(seed), rates))


@FAST
@given(body_spaces(), seeds)
def test_block_gene_mutations_report_what_they_changed(space: SearchSpace, seed: int) -> None:
    rng = random.Random(seed)
    parent = space.sample(rng)
    child, ops = mutate(parent, space, rng, BODY_GENES_ONLY)
    assert space.contains(child), space.violations(child)
    if (STRUCTURAL | BODY_STRUCTURAL) & set(ops):
        return  # a forced structural mutation (no gene could change); tested elsewhere
    assert parent.blocks is not None
    assert child.blocks is not None
    assert child.body_depth == parent.body_depth
    for name, op in BLOCK_OPS.items():
        changed = [
            getattr(old, name) != getattr(new, name)
            for old, new in zip(parent.blocks, child.blocks, strict=True)
        ]
        assert any(changed) == (op in ops), (name, ops)
    assert (child.readout != parent.readout) == ("mutate:readout" in ops)
    for old, new in zip(parent.blocks, child.blocks, strict=True):
        # Kernel and stride move to a neighbouring choice.
        for name, choices in (("kernel", space.kernels), ("stride", space.strides)):
            ordered = sorted(choices)
            step = ordered.index(getattr(new, name)) - ordered.index(getattr(old, name))
            assert step in (-1, 0, 1)
    # Same weight shape, same id; another shape, a fresh id.
    parent_ids = set(_all_ids(parent))
    pairs = [
        *zip(
            parent.blocks,
            child.blocks,
            parent.block_weight_shapes(),
            child.block_weight_shapes(),
            strict=True,
        ),
        *zip(
            parent.layers, child.layers, parent.weight_shapes(), child.weight_shapes(), strict=True
        ),
    ]
    for old_gene, new_gene, old_shape, new_shape in pairs:
        if old_shape == new_shape:
            assert new_gene.id == old_gene.id
        else:
            assert new_gene.id not in parent_ids


def test_mutate_body_every_operator_occurs() -> None:
    space = SearchSpace(input_shape=(1, 40), max_blocks=4, strides=(1, 2, 3))
    rng = random.Random(12)
    counts: collections.Counter[str] = collections.Counter()
    n = 400
    for _ in range(n):
        counts.update(mutate(space.sample(rng), space, rng)[1])
    assert set(counts) == (GENOME_OPS | BODY_OPS) - {"repair"}
    # Structural body mutations fire with probability 0.05 each, where allowed and fitting.
    for op in BODY_STRUCTURAL:
        assert 0.01 * n < counts[op] < 0.12 * n, counts


def _body_parent(space: SearchSpace, rng: random.Random, depth: int) -> Genome:
    """A genome of ``space`` whose body has ``depth`` blocks."""
    while True:
        genome = space.sample(rng)
        if genome.body_depth == depth:
            return genome


@pytest.mark.parametrize("input_shape", [(2, 64), (1, 16, 16)])
def test_insert_block_adds_a_fresh_fitting_block(input_shape: tuple[int, ...]) -> None:
    space = SearchSpace(input_shape=input_shape, max_blocks=4)
    rng = random.Random(3)
    positions = set()
    for _ in range(100):
        parent = _body_parent(space, rng, 2)
        child, ops = mutate(parent, space, rng, _only("insert_block"))
        assert ops == ["insert_block"]
        assert parent.blocks is not None
        assert child.blocks is not None
        assert child.body_depth == 3
        assert _fits(child, space)
        at = [p for p in range(3) if child.blocks[:p] + child.blocks[p + 1 :] == parent.blocks]
        p = at[0]
        positions.add(p)
        _assert_body_id_rule(child, (parent,))
        assert _block_ids(child)[:p] == _block_ids(parent)[:p]
        assert child.blocks[p].id not in _all_ids(parent)
        if p < 2:
            # The block after the inserted one keeps its id only if it reads as many channels.
            same_input = p > 0 and child.blocks[p].channels == parent.blocks[p - 1].channels
            assert (child.blocks[p + 1].id == parent.blocks[p].id) == same_input
        # The dense layers read the same body output unless the last block changed.
        assert (child.layers[0].id == parent.layers[0].id) == (
            child.head_input_key() == parent.head_input_key()
        )
    assert positions == {0, 1, 2}


def test_remove_block_drops_one_block() -> None:
    space = SearchSpace(input_shape=(1, 64), max_blocks=4)
    rng = random.Random(4)
    for _ in range(100):
        parent = _body_parent(space, rng, 3)
        child, ops = mutate(parent, space, rng, _only("remove_block"))
        assert ops == ["remove_block"]
        assert parent.blocks is not None
        assert child.blocks is not None
        assert child.body_depth == 2
        at = [r for r in range(3) if parent.blocks[:r] + parent.blocks[r + 1 :] == child.blocks]
        r = at[0]
        _assert_body_id_rule(child, (parent,))
        assert _block_ids(child)[:r] == _block_ids(parent)[:r]
        if r < 2:
            same_input = r > 0 and parent.blocks[r - 1].channels == parent.blocks[r].channels
            assert (child.blocks[r].id == parent.blocks[r + 1].id) == same_input


def test_duplicate_block_copies_next_to_the_original_with_a_new_id() -> None:
    space = SearchSpace(input_shape=(1, 64, 64), max_blocks=4)
    rng = random.Random(5)
    for _ in range(100):
        parent = _body_parent(space, rng, 2)
        child, ops = mutate(parent, space, rng, _only("duplicate_block"))
        assert ops == ["duplicate_block"]
        assert child.blocks is not None
        assert _fits(child, space)
        (new,) = [i for i, b in enumerate(child.blocks) if b.id not in _all_ids(parent)]
        assert new >= 1
        assert child.blocks[new - 1] == child.blocks[new]  # equal genes, ids aside
        assert [b.id for b in child.blocks if b is not child.blocks[new]] == _block_ids(parent)
        # Averaged, the body hands the head as many features as before; flattened, a
        # copy that downsamples hands it fewer, and the dense layer gets a fresh id.
        same_head = child.readout == "avg" or child.head_input_key() == parent.head_input_key()
        assert (_ids(child) == _ids(parent)) == same_head


def test_block_structure_skipped_when_nothing_fits_or_at_the_depth_bounds() -> None:
    # Length 4 after a stride-2 max-pooled block is 1: no further block can pool.
    tight = SearchSpace(
        input_shape=(1, 4), min_blocks=1, max_blocks=3, strides=(2,), pools=("max",)
    )
    fixed = SearchSpace(input_shape=(1, 64), min_blocks=2, max_blocks=2)
    rng = random.Random(6)
    grow = MutationRates(gene=0.0, **{**NO_STRUCTURE, "insert_block": 1.0, "duplicate_block": 1.0})
    for space, rates in ((tight, grow), (fixed, grow), (fixed, _only("remove_block"))):
        for _ in range(50):
            parent = space.sample(rng)
            child, ops = mutate(parent, space, rng, rates)
            assert child.body_depth == parent.body_depth
            assert child != parent
            assert len(ops) == 1  # nothing fired: one applicable mutation was forced
            assert ops[0] not in BODY_STRUCTURAL


def test_stride_and_pool_change_only_where_the_body_still_fits() -> None:
    # Length 4: block 0 keeps all 4 positions; block 1 halves twice to 1.
    space = SearchSpace(
        input_shape=(1, 4), min_blocks=2, max_blocks=2, strides=(1, 2), pools=("none", "max")
    )
    parent = Genome(
        (LayerGene(16, "relu", 0.0, "l"),),
        "adam",
        1e-3,
        1e-5,
        32,
        blocks=(
            BlockGene(8, 3, 1, "none", False, False, "relu", 0.0, "b0"),
            BlockGene(8, 3, 2, "max", False, False, "relu", 0.0, "b1"),
        ),
    )
    assert space.contains(parent)
    rates = MutationRates(gene=0.5, **NO_STRUCTURE)
    second: collections.Counter[tuple[int, str]] = collections.Counter()
    for seed in range(100):
        child, _ = mutate(parent, space, random.Random(seed), rates)
        assert child.blocks is not None
        assert _fits(child, space)
        # Any downsampling in block 0 would leave block 1 a single position to pool.
        assert (child.blocks[0].stride, child.blocks[0].pool) == (1, "none")
        second[(child.blocks[1].stride, child.blocks[1].pool)] += 1
    assert len(second) > 1


def _frozen_space(**free: Any) -> SearchSpace:
    """A 1-D space in which only the ``free`` settings allow a change."""
    settings: dict[str, Any] = {
        "units": (16, 16),
        "dropout": (0.0, 0.0),
        "input_shape": (1, 32),
        "min_blocks": 2,
        "max_blocks": 2,
        "channels": (8, 8),
        "kernels": (3,),
        "strides": (1,),
        "pools": ("none",),
        "residual": (False,),
        "batchnorm": (False,),
        "block_dropout": (0.0, 0.0),
        "readouts": ("avg",),
    }
    return single_point_space(**{**settings, **free})


def _frozen_parent(readout: str = "avg") -> Genome:
    block = BlockGene(8, 3, 1, "none", False, False, "relu", 0.0)
    return Genome(
        (LayerGene(16, "relu", 0.0, "L"),),
        "adam",
        1e-3,
        1e-5,
        32,
        blocks=(replace(block, id="B0"), replace(block, id="B1")),
        readout=readout,
    )


@pytest.mark.parametrize(
    ("free", "readout"),
    [
        ({"kernels": (3, 5)}, "avg"),
        ({"channels": (4, 32)}, "avg"),
        ({"strides": (1, 2)}, "avg"),
        ({"strides": (1, 2)}, "flatten"),
        ({"pools": ("none", "max")}, "flatten"),
        ({"residual": (False, True), "batchnorm": (False, True)}, "avg"),
        ({"readouts": ("avg", "flatten")}, "avg"),
    ],
)
def test_block_ids_follow_the_conv_weight_shapes(free: dict[str, Any], readout: str) -> None:
    space = _frozen_space(**{"readouts": (readout,), **free})
    parent = _frozen_parent(readout)
    assert space.contains(parent)
    for seed in range(40):
        child, ops = mutate(parent, space, random.Random(seed))
        assert child != parent
        assert ops
        assert child.blocks is not None
        b0, b1 = child.blocks
        (layer,) = child.layers
        # A block's conv shape: (input channels, channels, kernel).
        b0_same = (b0.channels, b0.kernel) == (8, 3)
        b1_same = (b1.channels, b1.kernel) == (8, 3) and b0.channels == 8
        assert (b0.id == "B0") == b0_same
        assert (b1.id == "B1") == b1_same
        # The dense layer keeps its id while what the body hands it is unchanged.
        assert (layer.id == "L") == (child.head_input_key() == parent.head_input_key())
        assert len({b0.id, b1.id, layer.id}) == 3


def test_readout_and_last_channels_rekey_the_first_dense_layer() -> None:
    cases = [({"readouts": ("avg", "flatten")}, "mutate:readout"), ({"channels": (4, 32)}, None)]
    for free, op in cases:
        space = _frozen_space(**free)
        parent = _frozen_parent()
        renamed = 0
        for seed in range(40):
            child, ops = mutate(parent, space, random.Random(seed))
            assert child.blocks is not None
            if op is not None:
                assert ops == [op]
            if child.readout != parent.readout or child.blocks[-1].channels != 8:
                assert child.layers[0].id != "L"
                renamed += 1
            else:
                assert child.layers[0].id == "L"
        assert renamed > 10


@FAST
@given(body_spaces(), any_body_genomes(), any_body_genomes(), seeds)
def test_body_operators_repair_parents_outside_the_space(
    space: SearchSpace, a: Genome, b: Genome, seed: int
) -> None:
    child, ops = mutate(a, space, random.Random(seed))
    assert space.contains(child), space.violations(child)
    assert (ops[:1] == ["repair"]) == (not space.contains(a))
    _assert_body_id_rule(child, (a, space.repair(a)))
    child, ops = crossover(a, b, space, random.Random(seed))
    assert space.contains(child), space.violations(child)
    # A dense genome in a space with an input shape is given a body by the repair.
    child, _ = mutate(Genome(a.layers, "adam", 1e-3, 1e-5, 32), space, random.Random(seed))
    assert space.contains(child), space.violations(child)


def test_mutate_never_gives_a_dense_genome_a_body() -> None:
    space = SearchSpace()
    rng = random.Random(13)
    rates = MutationRates(gene=0.5, insert_block=1.0, remove_block=1.0, duplicate_block=1.0)
    for _ in range(50):
        child, ops = mutate(space.sample(rng), space, rng, rates)
        assert child.blocks is None
        assert not set(ops) & BODY_OPS


# -- crossover of bodies ---------------------------------------------------------------------
@FAST
@given(body_spaces(), seeds, seeds)
def test_crossover_body_child_in_space_from_its_parents(
    space: SearchSpace, s1: int, s2: int
) -> None:
    a, b = space.sample(random.Random(s1)), space.sample(random.Random(s2 ^ 1))
    snap = (_snapshot(a), _block_ids(a), _snapshot(b), _block_ids(b))
    child, ops = crossover(a, b, space, random.Random(s2))
    assert (_snapshot(a), _block_ids(a), _snapshot(b), _block_ids(b)) == snap
    assert space.contains(child), space.violations(child)
    assert _fits(child, space)
    assert set(ops) <= {"crossover:blocks", "crossover:layers", "crossover:globals"}
    assert child.body_depth in (a.body_depth, b.body_depth)
    parent_blocks = {*(a.blocks or ()), *(b.blocks or ())}  # by value: ids aside
    assert all(block in parent_blocks for block in child.blocks or ())
    if child.blocks:
        assert child.readout in [p.readout for p in (a, b) if p.blocks]
    body = (child.blocks, child.readout)
    assert ("crossover:blocks" in ops) == (
        body not in ((a.blocks, a.readout), (b.blocks, b.readout))
    )
    _assert_body_id_rule(child, (a, b))
    second = crossover(a, b, space, random.Random(s2))
    assert (_snapshot(second[0]), _block_ids(second[0]), second[1]) == (
        _snapshot(child),
        _block_ids(child),
        ops,
    )
    _global_state_kept(lambda: crossover(a, b, space, random.Random(s1)))


def _blocks(prefix: str, channels: int, depth: int, **genes: Any) -> tuple[BlockGene, ...]:
    block = BlockGene(channels, 3, 1, "none", False, False, "relu", 0.0)
    return tuple(replace(block, id=f"{prefix}{i}", **genes) for i in range(depth))


def _body_genome(blocks: tuple[BlockGene, ...], layer_id: str, readout: str = "avg") -> Genome:
    layer = LayerGene(32, "relu", 0.0, layer_id)
    return Genome((layer,), "adam", 1e-3, 1e-5, 32, blocks=blocks, readout=readout)


def _body_layout(child: Genome, parents: tuple[Genome, ...]) -> tuple[str, ...]:
    known = {i for parent in parents for i in _all_ids(parent)}
    return tuple(i if i in known else "*" for i in _all_ids(child))


def test_crossover_mixes_bodies_of_different_depths() -> None:
    space = SearchSpace(input_shape=(1, 64), max_blocks=4)
    a = _body_genome(_blocks("a", 8, 3), "la")
    b = _body_genome(_blocks("b", 16, 1), "lb")
    layouts: collections.Counter[tuple[str, ...]] = collections.Counter()
    for seed in range(300):
        child, ops = crossover(a, b, space, random.Random(seed))
        assert space.contains(child)
        layouts[_body_layout(child, (a, b))] += 1
        assert "crossover:blocks" in ops
    # Cut after the one-block body's only block: [a0] or [b0, a1, a2]. a1 now reads
    # 16 channels (fresh id), a2 still 8. Both bodies hand the head 8 channels, as a's
    # did and b's did not: the dense layer keeps a's id only.
    assert set(layouts) == {
        ("a0", "la"),
        ("a0", "*"),
        ("b0", "*", "a2", "la"),
        ("b0", "*", "a2", "*"),
    }
    assert min(layouts.values()) > 40


@pytest.mark.parametrize("input_shape", [(1, 64), (3, 16, 16)])
def test_crossover_with_an_empty_body_takes_a_whole_body(input_shape: tuple[int, ...]) -> None:
    space = SearchSpace(input_shape=input_shape, max_blocks=3)
    a = _body_genome((), "la")
    b = _body_genome(_blocks("b", 8, 2, stride=2, pool="max"), "lb", "flatten")
    bodies = set()
    for seed in range(60):
        child, ops = crossover(a, b, space, random.Random(seed))
        assert space.contains(child)
        assert "crossover:blocks" not in ops
        assert (child.blocks, child.readout) in ((a.blocks, a.readout), (b.blocks, b.readout))
        bodies.add(child.body_depth)
    assert bodies == {0, 2}


def test_crossover_takes_the_other_offspring_when_one_does_not_fit() -> None:
    space = SearchSpace(input_shape=(1, 8), max_blocks=3)
    gentle = BlockGene(8, 3, 1, "none", False, False, "relu", 0.0)
    harsh = BlockGene(8, 3, 2, "max", False, False, "relu", 0.0)
    a = _body_genome((replace(gentle, id="a0"), replace(gentle, id="a1"), harsh), "la")
    b = _body_genome((replace(harsh, id="b0"), replace(gentle, id="b1")), "lb")
    for seed in range(50):
        child, _ = crossover(a, b, space, random.Random(seed))
        # The cut is after the first block; b0 then a1 and a2 would leave 8 -> 2 -> 2 -> 1
        # positions for a2's pooling: the child is a0 and b1.
        assert child.blocks == (gentle, gentle)
        assert _block_ids(child) == ["a0", "b1"]
        assert _fits(child, space)


# -- residual dense layers -----------------------------------------------------------------------
RESIDUAL_SPACE = SearchSpace(max_layers=4, units=(4, 32), dense_residual=(False, True))


def test_mutation_flips_the_residual_flag_only_where_the_space_has_both_choices() -> None:
    flips = 0
    for seed in range(60):
        rng = random.Random(seed)
        parent = RESIDUAL_SPACE.sample(rng)
        child, ops = mutate(parent, RESIDUAL_SPACE, rng, MutationRates(gene=0.3))
        assert RESIDUAL_SPACE.contains(child)
        if "mutate:layer_residual" in ops:
            flips += 1
            assert [g.residual for g in child.layers] != [g.residual for g in parent.layers]
        # The flag does not change a weight shape: a flipped layer keeps its id.
        kept = {g.id: g for g in parent.layers}
        for layer in child.layers:
            old = kept.get(layer.id)
            if old is not None and old.units == layer.units and old.residual != layer.residual:
                assert layer.id == old.id
    assert flips > 5
    plain = SearchSpace(max_layers=4, units=(4, 32))
    for seed in range(30):
        rng = random.Random(seed)
        _, ops = mutate(plain.sample(rng), plain, rng, MutationRates(gene=0.5))
        assert "mutate:layer_residual" not in ops


def test_a_forced_mutation_can_only_flip_the_residual_flag() -> None:
    space = single_point_space(dropout=(0.0, 0.0), dense_residual=(False, True))
    parent = space.sample(random.Random(0))
    child, ops = mutate(parent, space, random.Random(1), MutationRates(gene=0.0))
    assert ops == ["mutate:layer_residual"]
    assert child.layers[0].residual != parent.layers[0].residual
    assert child.layers[0].id == parent.layers[0].id


def test_insert_duplicate_and_crossover_carry_the_residual_flag() -> None:
    structural = MutationRates(gene=0.0, insert_layer=0.5, remove_layer=0.0, duplicate_layer=0.5)
    inserted, duplicated = set(), 0
    for seed in range(80):
        rng = random.Random(seed)
        parent = RESIDUAL_SPACE.sample(rng)
        child, ops = mutate(parent, RESIDUAL_SPACE, rng, structural)
        old = {g.id for g in parent.layers}
        new = [i for i, g in enumerate(child.layers) if g.id not in old]
        if ops == ["duplicate_layer"] and len(new) == 1:
            i = new[0]
            assert child.layers[i] == child.layers[i - 1]  # residual flag included
            duplicated += 1
        if ops == ["insert_layer"]:
            inserted |= {child.layers[i].residual for i in new}
    assert inserted == {False, True}
    assert duplicated > 3
    a = Genome(
        tuple(LayerGene(16, "relu", 0.0, residual=True, id=f"a{i}") for i in range(3)),
        "sgd",
        1e-3,
        1e-5,
        32,
    )
    b = Genome(
        tuple(LayerGene(16, "relu", 0.0, id=f"b{i}") for i in range(3)), "sgd", 1e-3, 1e-5, 32
    )
    for seed in range(10):
        child, _ = crossover(a, b, RESIDUAL_SPACE, random.Random(seed))
        for layer in child.layers:
            assert layer.residual == layer.id.startswith("a")
