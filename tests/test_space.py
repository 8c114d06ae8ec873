from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings

from evohpo.evolution.genome import Genome, LayerGene
from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import InvalidParameterError, SearchSpaceError
from tests.strategies import any_genomes, seeds, spaces

FAST = settings(max_examples=50, deadline=None)


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"units": (-1, 5)}, r"'units\[0\]' parameter of SearchSpace must be an int >= 1"),
        ({"units": (0, 5)}, r"'units\[0\]' parameter"),
        ({"units": (8, -2)}, r"'units\[1\]' parameter"),
        (
            {"units": (64, 8)},
            r"'units' parameter of SearchSpace must be a \(low, high\) pair with low <= high",
        ),
        ({"units": (1.5, 8)}, r"'units\[0\]' parameter of SearchSpace must be an int"),
        ({"units": (True, 8)}, r"'units\[0\]' parameter"),
        ({"units": 8}, r"'units' parameter of SearchSpace must be a \(low, high\) pair"),
        ({"units": (1, 2, 3)}, r"'units' parameter of SearchSpace must be a \(low, high\) pair"),
        ({"units": "ab"}, r"'units' parameter"),
        ({"activations": ()}, "'activations' parameter of SearchSpace must be a non-empty subset"),
        ({"activations": ("relu", "swish")}, "Got unknown value 'swish'"),
        ({"activations": ("relu", "relu")}, "'activations' parameter .* without duplicates"),
        (
            {"activations": "relu"},
            "'activations' parameter of SearchSpace must be a sequence of str",
        ),
        ({"optimizers": []}, "'optimizers' parameter of SearchSpace must be a non-empty subset"),
        ({"optimizers": ("adam", "lbfgs")}, "Got unknown value 'lbfgs'"),
        ({"optimizers": ("sgd", "sgd")}, "'optimizers' parameter .* without duplicates"),
        (
            {"batch_sizes": ()},
            "'batch_sizes' parameter of SearchSpace must be a non-empty sequence",
        ),
        ({"batch_sizes": (32, 32)}, "'batch_sizes' parameter .* without duplicates"),
        (
            {"batch_sizes": (32, 0)},
            r"'batch_sizes\[1\]' parameter of SearchSpace must be an int >= 1",
        ),
        ({"batch_sizes": (32, -4)}, r"'batch_sizes\[1\]' parameter"),
        ({"batch_sizes": (32, True)}, r"'batch_sizes\[1\]' parameter"),
        ({"batch_sizes": (32.0,)}, r"'batch_sizes\[0\]' parameter"),
        ({"batch_sizes": 32}, "'batch_sizes' parameter"),
        (
            {"dropout": (0.0, 1.0)},
            r"'dropout\[1\]' parameter of SearchSpace must be a float in the range \[0.0, 1.0\)",
        ),
        ({"dropout": (0.2, 1.5)}, r"'dropout\[1\]' parameter"),
        ({"dropout": (-0.1, 0.5)}, r"'dropout\[0\]' parameter"),
        ({"dropout": (0.5, 0.2)}, "'dropout' parameter of SearchSpace must be a .* low <= high"),
        ({"dropout": (0.0, math.nan)}, r"'dropout\[1\]' parameter"),
        (
            {"learning_rate": (0.0, 0.1)},
            r"'learning_rate\[0\]' parameter of SearchSpace must be a float > 0.0",
        ),
        ({"learning_rate": (-1e-3, 0.1)}, r"'learning_rate\[0\]' parameter"),
        ({"learning_rate": (1e-3, -0.1)}, r"'learning_rate\[1\]' parameter"),
        ({"learning_rate": (1e-1, 1e-3)}, "'learning_rate' parameter .* low <= high"),
        ({"learning_rate": (1e-3, math.inf)}, r"'learning_rate\[1\]' parameter"),
        ({"learning_rate": ("1e-3", 0.1)}, r"'learning_rate\[0\]' parameter"),
        (
            {"weight_decay": (0.0, 1e-2)},
            r"'weight_decay\[0\]' parameter of SearchSpace must be a float > 0.0",
        ),
        ({"weight_decay": (1e-2, 1e-5)}, "'weight_decay' parameter .* low <= high"),
        ({"min_layers": 0}, "'min_layers' parameter of SearchSpace must be an int >= 1"),
        (
            {"min_layers": 3, "max_layers": 2},
            r"'max_layers' parameter of SearchSpace must be an int >= min_layers \(3\)\. "
            "Got 2 instead",
        ),
        ({"min_layers": 1, "max_layers": 0}, "'max_layers' parameter .* an int >= 1"),
        ({"min_layers": 1.0}, "'min_layers' parameter"),
        ({"min_layers": True}, "'min_layers' parameter"),
        ({"max_layers": "4"}, "'max_layers' parameter"),
    ],
)
def test_invalid_space(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(SearchSpaceError, match=match):
        SearchSpace(**kwargs)


def test_space_error_is_a_value_error() -> None:
    assert issubclass(SearchSpaceError, InvalidParameterError)
    with pytest.raises(ValueError, match="'units' parameter"):
        SearchSpace(units=(9, 1))


def test_sequences_are_stored_as_tuples() -> None:
    space = SearchSpace(units=[8, 16], activations=["relu"], batch_sizes=[8])  # type: ignore[arg-type]
    assert space.units == (8, 16)
    assert space.activations == ("relu",)
    assert space.batch_sizes == (8,)
    hash(space)


def test_degenerate_ranges_are_allowed() -> None:
    space = SearchSpace(
        min_layers=2,
        max_layers=2,
        units=(8, 8),
        dropout=(0.0, 0.0),
        learning_rate=(1e-3, 1e-3),
        weight_decay=(1e-5, 1e-5),
    )
    genome = space.sample(random.Random(0))
    assert space.contains(genome)
    assert genome.depth == 2
    assert genome.learning_rate == 1e-3


# -- sampling and membership ------------------------------------------------------------------
@FAST
@given(spaces(), seeds)
def test_sample_is_always_contained(space: SearchSpace, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(5):
        genome = space.sample(rng)
        assert space.contains(genome), space.violations(genome)
        assert space.violations(genome) == []
        assert len({layer.id for layer in genome.layers}) == genome.depth


@FAST
@given(spaces(), seeds)
def test_sample_is_reproducible(space: SearchSpace, seed: int) -> None:
    first = space.sample(random.Random(seed))
    second = space.sample(random.Random(seed))
    assert first.to_json() == second.to_json()


def test_sample_covers_the_space() -> None:
    space = SearchSpace(min_layers=1, max_layers=3, units=(2, 4))
    rng = random.Random(0)
    genomes = [space.sample(rng) for _ in range(300)]
    assert {g.depth for g in genomes} == {1, 2, 3}
    assert {layer.units for g in genomes for layer in g.layers} == {2, 3, 4}
    assert {g.optimizer for g in genomes} == set(space.optimizers)
    assert {g.batch_size for g in genomes} == set(space.batch_sizes)
    rates = [g.learning_rate for g in genomes]
    # Log-uniform: about half below the geometric midpoint of [1e-4, 1e-1].
    assert 100 < sum(r < math.sqrt(1e-4 * 1e-1) for r in rates) < 200


def test_violations_name_every_problem() -> None:
    space = SearchSpace(max_layers=2, units=(8, 64), activations=("relu",), optimizers=("adam",))
    genome = Genome(
        layers=(LayerGene(4, "tanh", 0.9),) * 3,
        optimizer="sgd",
        learning_rate=10.0,
        weight_decay=0.0,
        batch_size=7,
    )
    problems = space.violations(genome)
    assert not space.contains(genome)
    text = "\n".join(problems)
    for fragment in (
        "depth 3 outside [1, 2]",
        "layer0.units 4 outside [8, 64]",
        "layer2.activation 'tanh' not a choice",
        "layer1.dropout 0.9 outside [0.0, 0.5]",
        "optimizer 'sgd' not a choice",
        "learning_rate 10.0 outside",
        "weight_decay 0.0 outside",
        "batch_size 7 not a choice",
    ):
        assert fragment in text


# -- repair ----------------------------------------------------------------------------------
@FAST
@given(spaces(), seeds)
def test_repair_is_the_identity_inside_the_space(space: SearchSpace, seed: int) -> None:
    genome = space.sample(random.Random(seed))
    repaired = space.repair(genome)
    assert repaired.to_json() == genome.to_json()


@FAST
@given(spaces(), any_genomes())
def test_repair_maps_any_genome_inside(space: SearchSpace, genome: Genome) -> None:
    repaired = space.repair(genome)
    assert space.contains(repaired), space.violations(repaired)
    assert space.repair(repaired).to_json() == repaired.to_json()
    # Layers kept from the input keep their ids while their weight shape is kept;
    # a reshaped layer gets an id derived from its own. Ids stay unique.
    kept = min(genome.depth, space.max_layers)
    old, new = genome.weight_shapes(), repaired.weight_shapes()
    for i in range(kept):
        before, after = genome.layers[i].id, repaired.layers[i].id
        if new[i] == old[i] or not before:
            assert after == before
        else:
            assert after.startswith(before + "+")
            assert after.rstrip("+") == before.rstrip("+")
    ids = [layer.id for layer in repaired.layers if layer.id]
    assert len(set(ids)) == len(ids)


def test_repair_clips_cuts_and_pads() -> None:
    space = SearchSpace(
        min_layers=3,
        max_layers=4,
        units=(8, 64),
        activations=("relu", "tanh"),
        optimizers=("adam", "sgd"),
        batch_sizes=(32, 128),
    )
    genome = Genome(
        layers=(LayerGene(1000, "gelu", 0.9, "a"), LayerGene(2, "tanh", 0.1, "b")),
        optimizer="rmsprop",
        learning_rate=5.0,
        weight_decay=0.0,
        batch_size=90,
    )
    repaired = space.repair(genome)
    assert [(layer.units, layer.activation, layer.dropout) for layer in repaired.layers] == [
        (64, "relu", 0.5),
        (8, "tanh", 0.1),
        (8, "tanh", 0.1),
    ]
    # Both layers change shape (a's units are clipped, so b's input width changes
    # with its own units): derived ids; the padded copy of b gets another one.
    assert [layer.id for layer in repaired.layers] == ["a+", "b+", "b++"]
    assert repaired.optimizer == "adam"
    assert repaired.learning_rate == 0.1
    assert repaired.weight_decay == 1e-7
    assert repaired.batch_size == 128

    deep = Genome(
        tuple(LayerGene(16, "relu", 0.0, str(i)) for i in range(6)), "adam", 1e-3, 1e-5, 32
    )
    assert [layer.id for layer in space.repair(deep).layers] == ["0", "1", "2", "3"]


def test_repair_gives_the_layer_after_a_clipped_one_a_derived_id() -> None:
    space = SearchSpace(units=(8, 64))
    genome = Genome(
        (LayerGene(100, "relu", 0.0, "a"), LayerGene(32, "relu", 0.0, "b")),
        "adam",
        1e-3,
        1e-5,
        32,
    )
    repaired = space.repair(genome)
    # b keeps its units but its input width went from 100 to 64: new weight shape.
    assert [layer.units for layer in repaired.layers] == [64, 32]
    assert [layer.id for layer in repaired.layers] == ["a+", "b+"]
    inside = Genome((LayerGene(64, "relu", 0.0, "a"), genome.layers[1]), "adam", 1e-3, 1e-5, 32)
    assert [layer.id for layer in space.repair(inside).layers] == ["a", "b"]


# -- serialisation ---------------------------------------------------------------------------
@FAST
@given(spaces())
def test_dict_round_trip(space: SearchSpace) -> None:
    data = space.to_dict()
    assert SearchSpace.from_dict(data) == space
    # The dict is JSON-ready and survives JSON (lists for tuples).
    assert SearchSpace.from_dict(json.loads(json.dumps(data))) == space


def test_from_dict_accepts_a_partial_mapping() -> None:
    space = SearchSpace.from_dict({"max_layers": 2, "units": [4, 8]})
    assert space == SearchSpace(max_layers=2, units=(4, 8))


def test_from_dict_rejects_unknown_settings() -> None:
    with pytest.raises(SearchSpaceError, match=r"Unknown SearchSpace settings \['depth'\]"):
        SearchSpace.from_dict({"depth": 3})


@pytest.mark.parametrize(
    ("key", "hint"),
    [("unit", "units"), ("max_layer", "max_layers"), ("activation", "activations")],
)
def test_from_dict_suggests_the_closest_setting(key: str, hint: str) -> None:
    with pytest.raises(SearchSpaceError, match=rf"\['{key}'\].* Did you mean '{hint}'\?$"):
        SearchSpace.from_dict({key: 3})


def test_from_dict_without_a_close_setting_gives_no_hint() -> None:
    with pytest.raises(SearchSpaceError, match="Unknown SearchSpace settings") as info:
        SearchSpace.from_dict({"zzzzzz": 3})
    assert "Did you mean" not in str(info.value)


def test_from_dict_rejects_a_non_mapping() -> None:
    with pytest.raises(SearchSpaceError, match="SearchSpace settings must be a mapping"):
        SearchSpace.from_dict([("max_layers", 2)])  # type: ignore[arg-type]


def test_from_dict_validates_values() -> None:
    with pytest.raises(SearchSpaceError, match="'max_layers' parameter"):
        SearchSpace.from_dict({"max_layers": 0})


# -- suggest_genome --------------------------------------------------------------------------
@pytest.mark.parametrize("space", [{"max_layers": 2}, "small", 3])
def test_suggest_genome_needs_a_search_space(space: Any) -> None:
    import optuna

    from evohpo.evolution.suggest import suggest_genome

    trial = optuna.trial.FixedTrial({"n_layers": 1})
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'space' parameter of suggest_genome must be a SearchSpace or None "
        r"\(build one from a mapping with SearchSpace.from_dict\)\. Got .* instead",
    ):
        suggest_genome(trial, space)


def test_suggest_genome_accepts_the_space_built_from_the_mapping() -> None:
    import optuna

    from evohpo.evolution.suggest import suggest_genome

    space = SearchSpace.from_dict({"max_layers": 2, "units": [8, 16]})
    params = space.sample(random.Random(0)).to_params()
    genome = suggest_genome(optuna.trial.FixedTrial(params), space)
    assert genome.to_params() == params
