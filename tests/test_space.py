from __future__ import annotations

import dataclasses
import json
import math
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, IntDistribution

from evohpo.evolution.blocks import BlockGene, body_shapes
from evohpo.evolution.genome import Genome, LayerGene
from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import InvalidParameterError, SearchSpaceError
from tests.strategies import any_body_genomes, any_genomes, body_spaces, seeds, spaces

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


# -- convolutional bodies --------------------------------------------------------------------
def _block(
    channels: int = 8, kernel: int = 3, stride: int = 1, pool: str = "none", **kw: Any
) -> BlockGene:
    genes: dict[str, Any] = {"residual": False, "batchnorm": False, "activation": "relu"}
    genes.update({"dropout": 0.0, **kw})
    return BlockGene(channels, kernel, stride, pool, **genes)


def _dense(**changes: Any) -> Genome:
    genome = Genome(
        (LayerGene(32, "relu", 0.0, "x"), LayerGene(16, "relu", 0.0, "y")), "adam", 1e-3, 1e-5, 64
    )
    return genome.replace(**changes)


BODY = SearchSpace(input_shape=(1, 40), max_blocks=3, channels=(4, 32), strides=(1, 2))


def test_input_shape_takes_numpy_ints_and_arrays() -> None:
    assert SearchSpace(input_shape=(np.int64(1), 8, 8)).input_shape == (1, 8, 8)
    assert SearchSpace(input_shape=np.array([2, 20])).input_shape == (2, 20)
    with pytest.raises(InvalidParameterError, match="'input_shape' parameter"):
        SearchSpace(input_shape=np.array([1.0, 8.0, 8.0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"input_shape": (1, 0)},
            "'input_shape' parameter of SearchSpace must be a tuple of 2 or 3 positive ints",
        ),
        ({"input_shape": (40,)}, "'input_shape' parameter"),
        ({"input_shape": (1, 2, 3, 4)}, "'input_shape' parameter"),
        ({"input_shape": "1x40"}, "'input_shape' parameter"),
        ({"input_shape": (1, 4.0)}, "'input_shape' parameter"),
        ({"min_blocks": -1}, "'min_blocks' parameter of SearchSpace must be an int >= 0"),
        ({"min_blocks": 3, "max_blocks": 2}, r"'max_blocks' .* an int >= min_blocks \(3\)"),
        ({"kernels": (3, 4)}, "'kernels' parameter of SearchSpace must be odd kernel sizes"),
        ({"kernels": ()}, "'kernels' parameter"),
        ({"strides": (0,)}, r"'strides\[0\]' parameter of SearchSpace must be an int >= 1"),
        ({"pools": ("min",)}, "Got unknown value 'min'"),
        ({"residual": (True, True)}, "'residual' parameter of SearchSpace must be a non-empty"),
        ({"batchnorm": (1,)}, "'batchnorm' parameter"),
        ({"block_dropout": (0.0, 1.0)}, r"'block_dropout\[1\]' parameter"),
        ({"readouts": ("max",)}, "Got unknown value 'max'"),
        ({"channels": (8, 4)}, "'channels' parameter .* low <= high"),
        (
            {"input_shape": (1, 4), "min_blocks": 3, "pools": ("max",)},
            r"No body of 3 blocks \(min_blocks\) fits the input shape \(1, 4\) .* stride 1 and "
            r"max pooling in every block .* Lower min_blocks, allow pools 'none', or use a larger",
        ),
    ],
)
def test_invalid_body_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(SearchSpaceError, match=match):
        SearchSpace(**{"input_shape": (1, 40), **kwargs})


def test_a_dense_space_stores_no_body_settings() -> None:
    assert "input_shape" not in SearchSpace().to_dict()
    assert "kernels" not in SearchSpace(kernels=(1,)).to_dict()
    assert not SearchSpace().has_body
    assert BODY.has_body
    assert BODY.to_dict()["input_shape"] == [1, 40]


@FAST
@given(body_spaces())
def test_body_space_dict_round_trip(space: SearchSpace) -> None:
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space


@FAST
@given(body_spaces(), seeds)
def test_body_samples_are_inside_and_fit(space: SearchSpace, seed: int) -> None:
    assert space.input_shape is not None
    rng = random.Random(seed)
    for _ in range(5):
        genome = space.sample(rng)
        assert space.violations(genome) == []
        assert genome.blocks is not None
        assert body_shapes(genome.blocks, space.input_shape) is not None
        ids = [gene.id for gene in (*genome.blocks, *genome.layers)]
        assert len(set(ids)) == len(ids)
        assert all(ids)


def test_body_samples_cover_the_body_settings() -> None:
    space = SearchSpace(input_shape=(2, 64), min_blocks=0, max_blocks=3, channels=(2, 4))
    genomes = [space.sample(random.Random(seed)) for seed in range(300)]
    blocks = [block for genome in genomes for block in genome.blocks or ()]
    assert {genome.body_depth for genome in genomes} == {0, 1, 2, 3}
    assert {block.channels for block in blocks} == {2, 3, 4}
    for name, choices in (
        ("kernel", space.kernels),
        ("stride", space.strides),
        ("pool", space.pools),
    ):
        assert {getattr(block, name) for block in blocks} == set(choices)
    assert {genome.readout for genome in genomes if genome.blocks} == set(space.readouts)


def test_body_violations_name_every_problem() -> None:
    space = SearchSpace(
        input_shape=(1, 8), max_blocks=2, kernels=(3,), pools=("none", "max"), readouts=("avg",)
    )
    blocks = (_block(2, 5, 1, "avg"), _block(64, 3, 3, "max"), _block(8, 3, 1, "max"))
    text = "\n".join(space.violations(_dense(blocks=blocks, readout="flatten")))
    for fragment in (
        "body depth 3 outside [0, 2]",
        "block0.channels 2 outside [8, 64]",
        "block0.kernel 5 not a choice",
        "block0.pool 'avg' not a choice",
        "block1.stride 3 not a choice",
        "readout 'flatten' not a choice",
        "the body does not fit the input shape (1, 8)",
    ):
        assert fragment in text
    assert space.violations(_dense()) == ["no body, but the space has an input_shape"]
    assert SearchSpace().violations(_dense(blocks=())) == [
        "a body, but the space has no input_shape"
    ]


@FAST
@given(body_spaces(), seeds)
def test_repair_keeps_body_genomes_inside_untouched(space: SearchSpace, seed: int) -> None:
    genome = space.sample(random.Random(seed))
    assert space.repair(genome) is genome


def _check_repair(space: SearchSpace, genome: Genome) -> Genome:
    """Repair ``genome`` and check what every repair promises."""
    repaired = space.repair(genome)
    assert space.violations(repaired) == []
    assert space.repair(repaired).to_json() == repaired.to_json()
    assert space.repair(genome).to_json() == repaired.to_json()  # deterministic
    # Ids: kept while the weight shape is, else derived from the old one.
    pairs = [
        (
            genome.block_weight_shapes(),
            repaired.block_weight_shapes(),
            genome.blocks or (),
            repaired.blocks or (),
        ),
        (genome.weight_shapes(), repaired.weight_shapes(), genome.layers, repaired.layers),
    ]
    for old, new, before, after in pairs:
        for i in range(min(len(before), len(after))):
            if new[i] == old[i] or not before[i].id:
                assert after[i].id == before[i].id
            else:
                assert after[i].id.startswith(before[i].id + "+")
                assert after[i].id.rstrip("+") == before[i].id.rstrip("+")
    ids = [gene.id for gene in (*(repaired.blocks or ()), *repaired.layers) if gene.id]
    assert len(set(ids)) == len(ids)
    return repaired


@FAST
@given(body_spaces(), any_body_genomes())
def test_repair_maps_any_body_inside_a_body_space(space: SearchSpace, genome: Genome) -> None:
    repaired = _check_repair(space, genome)
    assert genome.blocks is not None
    assert repaired.blocks is not None
    # Blocks kept from the input keep their place, cut only from the output end.
    kept = repaired.blocks[: min(len(genome.blocks), len(repaired.blocks))]
    assert [b.id.rstrip("+") for b in kept] == [
        b.id.rstrip("+") for b in genome.blocks[: len(kept)]
    ]
    assert len(repaired.blocks) <= max(len(genome.blocks), space.min_blocks)


@FAST
@given(body_spaces(), any_genomes())
def test_repair_gives_a_dense_genome_a_body(space: SearchSpace, genome: Genome) -> None:
    repaired = _check_repair(space, genome)
    assert repaired.body_depth == space.min_blocks


@FAST
@given(spaces(), any_body_genomes())
def test_repair_takes_the_body_of_a_genome_in_a_dense_space(
    space: SearchSpace, genome: Genome
) -> None:
    repaired = _check_repair(space, genome)
    assert repaired.blocks is None
    # The genes of the dense genome's repair; the ids too when no layer read a body.
    dense = space.repair(genome.replace(blocks=None))
    assert repaired == dense
    if not genome.blocks:
        assert repaired.to_json() == dense.to_json()


def test_repair_brings_block_genes_into_the_space() -> None:
    space = SearchSpace(
        input_shape=(1, 64),
        max_blocks=2,
        channels=(4, 16),
        kernels=(3, 7),
        strides=(1, 3),
        pools=("none", "avg"),
        residual=(True,),
        batchnorm=(False,),
        activations=("relu", "tanh"),
        block_dropout=(0.1, 0.2),
        readouts=("flatten",),
    )
    blocks = (
        _block(16, 5, 2, "max", residual=True, dropout=0.15, id="p"),
        _block(100, 9, 2, "none", batchnorm=True, activation="gelu", id="q"),
        _block(8, 3, 1, id="r"),
    )
    repaired = space.repair(_dense(blocks=blocks, readout="avg"))
    assert repaired.blocks is not None
    p, q = repaired.blocks
    # Kernel 5 is as near 3 as 7: the smaller; stride 2 likewise becomes 1. Max pooling
    # becomes average pooling (it halves alike); the last block is cut.
    assert (p.channels, p.kernel, p.stride, p.pool, p.residual, p.dropout) == (
        16,
        3,
        1,
        "avg",
        True,
        0.15,
    )
    assert (q.channels, q.kernel, q.stride, q.pool) == (16, 7, 1, "none")
    assert (q.residual, q.batchnorm, q.activation, q.dropout) == (True, False, "relu", 0.1)
    assert repaired.readout == "flatten"
    # p's conv keeps its shape (1, 16, 5 -> 3 changes it): derived; q's channels change.
    assert [b.id for b in repaired.blocks] == ["p+", "q+"]
    assert [layer.id for layer in repaired.layers] == ["x+", "y"]


def test_repair_fits_a_body_by_dropping_pooling_from_the_output_end() -> None:
    space = SearchSpace(input_shape=(1, 8), max_blocks=4)
    blocks = tuple(_block(8, 3, 1, "max", id=str(i)) for i in range(4))  # 8 4 2 1 -> no room
    repaired = space.repair(_dense(blocks=blocks, readout="flatten"))
    assert repaired.blocks is not None
    assert [b.pool for b in repaired.blocks] == ["max", "max", "max", "none"]
    # Pooling is no part of a conv's weight shape: every block keeps its id. The first
    # dense layer reads a flattened body of another size: a derived id.
    assert [b.id for b in repaired.blocks] == ["0", "1", "2", "3"]
    assert [layer.id for layer in repaired.layers] == ["x+", "y"]
    with_avg = space.repair(_dense(blocks=blocks, readout="avg"))
    assert [layer.id for layer in with_avg.layers] == ["x", "y"]


def test_repair_fits_a_body_by_strides_then_by_cutting_when_pooling_is_required() -> None:
    space = SearchSpace(
        input_shape=(1, 8), min_blocks=1, max_blocks=4, strides=(1, 2), pools=("max",)
    )
    strided = tuple(_block(8, 3, 2, "max", id=str(i)) for i in range(2))  # 8 -> 2 -> 1: no room
    repaired = space.repair(_dense(blocks=strided))
    assert repaired.blocks is not None
    assert [(b.stride, b.pool) for b in repaired.blocks] == [(2, "max"), (1, "max")]
    deep = tuple(_block(8, 3, 2, "max", id=str(i)) for i in range(4))
    repaired = space.repair(_dense(blocks=deep))
    assert repaired.blocks is not None
    # Even with all strides 1, 8 4 2 1 has room for three poolings only.
    assert [(b.stride, b.id) for b in repaired.blocks] == [(1, "0"), (1, "1"), (1, "2")]
    tiny = SearchSpace(input_shape=(1, 4), min_blocks=1, max_blocks=4, pools=("avg",))
    repaired = tiny.repair(_dense(blocks=deep))
    assert repaired.blocks is not None
    assert [(b.stride, b.pool, b.id) for b in repaired.blocks] == [
        (1, "avg", "0"),
        (1, "avg", "1"),
    ]


def test_repair_pads_a_body_with_gentle_blocks() -> None:
    space = SearchSpace(input_shape=(1, 8), min_blocks=3, max_blocks=4, channels=(4, 16))
    one = space.repair(_dense(blocks=(_block(8, 5, 2, "max", id="p"),)))
    assert one.blocks is not None
    assert [(b.channels, b.kernel, b.stride, b.pool, b.id) for b in one.blocks] == [
        (8, 5, 2, "max", "p"),
        (8, 5, 1, "none", "p+"),
        (8, 5, 1, "none", "p++"),
    ]
    dense = space.repair(_dense())
    assert dense.blocks is not None
    assert [(b.channels, b.kernel, b.stride, b.pool, b.residual, b.id) for b in dense.blocks] == [
        (4, 3, 1, "none", False, "")
    ] * 3
    # The dense layers now read the body's average instead of the input.
    assert [layer.id for layer in dense.layers] == ["x+", "y"]
    assert [layer.id for layer in SearchSpace(input_shape=(1, 8)).repair(_dense()).layers] == [
        "x",
        "y",
    ]


def test_repair_drops_the_body_in_a_dense_space() -> None:
    genome = _dense(blocks=(_block(id="p"),))
    repaired = SearchSpace().repair(genome)
    assert repaired.blocks is None
    assert repaired.to_params() == _dense().to_params()
    assert [layer.id for layer in repaired.layers] == ["x+", "y"]
    assert [layer.id for layer in SearchSpace().repair(_dense(blocks=())).layers] == ["x", "y"]


# -- suggest_genome with a body ----------------------------------------------------------------
def test_body_distributions_follow_the_parameters() -> None:
    from evohpo.evolution.suggest import genome_distributions

    dense = genome_distributions(SearchSpace(), 2)
    assert list(dense) == [
        "n_layers",
        *(f"layer{i}.{f}" for i in range(2) for f in ("units", "activation", "dropout")),
        "optimizer",
        "learning_rate",
        "weight_decay",
        "batch_size",
    ]
    dists = genome_distributions(BODY, 1)
    genome = BODY.sample(random.Random(1))
    names = list(genome.replace(layers=genome.layers[:1]).to_params())
    assert genome.body_depth == 3
    assert list(dists) == names
    assert dists["n_blocks"] == IntDistribution(0, 3)
    assert dists["block2.channels"] == IntDistribution(4, 32, log=True)
    assert dists["block0.stride"] == CategoricalDistribution((1, 2))
    assert dists["block1.residual"] == CategoricalDistribution((False, True))
    assert "readout" not in genome_distributions(BODY, 1, n_blocks=0)
    for name, value in genome.to_params().items():
        if name in dists:
            assert dists[name]._contains(dists[name].to_internal_repr(value)), name


@FAST
@given(body_spaces())
def test_body_space_round_trips_through_distributions(space: SearchSpace) -> None:
    from evohpo.evolution.suggest import genome_distributions, space_from_distributions

    dists = genome_distributions(space, space.max_layers)
    if space.max_blocks:
        assert space_from_distributions(dists, space.input_shape) == space
    else:  # no block ever: the block settings cannot be told, and do not matter
        recovered = space_from_distributions(dists, space.input_shape)
        assert recovered is not None
        assert (recovered.input_shape, recovered.max_blocks) == (space.input_shape, 0)
    # Without the input shape no body space can be told.
    assert space_from_distributions(dists) is None
    dense = SearchSpace(
        **{k: v for k, v in space.to_dict().items() if k in SearchSpace().to_dict()}
    )
    assert space_from_distributions(genome_distributions(dense, 1), space.input_shape) == dense


def test_suggest_genome_reads_a_body_from_a_fixed_trial() -> None:
    import optuna

    from evohpo.evolution.suggest import INPUT_SHAPE_ATTR, REPAIRED_ATTR, suggest_genome

    genome = next(
        g for g in (BODY.sample(random.Random(seed)) for seed in range(100)) if g.body_depth >= 2
    )
    assert genome.blocks is not None
    trial = optuna.trial.FixedTrial(genome.to_params(), number=7)
    suggested = suggest_genome(trial, BODY)
    assert (
        suggested.to_json()
        == genome.replace(
            layers=tuple(
                dataclasses.replace(layer, id=f"t7l{i}") for i, layer in enumerate(genome.layers)
            ),
            blocks=tuple(
                dataclasses.replace(block, id=f"t7b{i}") for i, block in enumerate(genome.blocks)
            ),
        ).to_json()
    )
    assert trial.user_attrs == {INPUT_SHAPE_ATTR: [1, 40]}
    assert REPAIRED_ATTR not in trial.user_attrs
    # Without blocks there is no readout to ask for.
    bare = optuna.trial.FixedTrial(genome.replace(blocks=()).to_params())
    assert suggest_genome(bare, BODY).blocks == ()


def test_suggest_genome_repairs_a_body_that_does_not_fit() -> None:
    import optuna

    from evohpo.evolution.suggest import REPAIRED_ATTR, suggest_genome

    space = SearchSpace(input_shape=(1, 8), max_blocks=4)
    blocks = tuple(_block(8, 3, 1, "max") for _ in range(4))
    params = _dense(blocks=blocks, readout="flatten").to_params()
    trial = optuna.trial.FixedTrial(params, number=3)
    genome = suggest_genome(trial, space)
    assert space.contains(genome)
    assert genome.blocks is not None
    assert [b.pool for b in genome.blocks] == ["max", "max", "max", "none"]
    assert [b.id for b in genome.blocks] == ["t3b0", "t3b1", "t3b2", "t3b3"]
    assert [layer.id for layer in genome.layers] == ["t3l0+", "t3l1"]
    assert trial.user_attrs[REPAIRED_ATTR] == ["the body does not fit the input shape (1, 8)"]
    # A dense space never writes an attribute.
    dense_trial = optuna.trial.FixedTrial(_dense().to_params())
    suggest_genome(dense_trial, SearchSpace())
    assert dense_trial.user_attrs == {}


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_samplers_suggest_valid_body_genomes(sampler: str) -> None:
    import optuna

    from evohpo.evolution.suggest import INPUT_SHAPE_ATTR, REPAIRED_ATTR, suggest_genome

    # A short input and pooling everywhere: many suggested bodies do not fit.
    space = SearchSpace(
        input_shape=(1, 6, 6), max_layers=2, min_blocks=1, max_blocks=4, pools=("none", "max")
    )
    genomes: list[Genome] = []

    def objective(trial: optuna.Trial) -> float:
        genome = suggest_genome(trial, space)
        genomes.append(genome)
        assert space.violations(genome) == []
        return float(genome.body_depth + sum(b.pool == "max" for b in genome.blocks or ()))

    chosen = (
        optuna.samplers.RandomSampler(seed=0)
        if sampler == "random"
        else optuna.samplers.TPESampler(n_startup_trials=5, seed=0)
    )
    study = optuna.create_study(direction="maximize", sampler=chosen)
    study.optimize(objective, n_trials=25)
    assert len(genomes) == 25
    assert all(t.user_attrs[INPUT_SHAPE_ATTR] == [1, 6, 6] for t in study.trials)
    repaired = [t for t in study.trials if REPAIRED_ATTR in t.user_attrs]
    assert repaired, "some suggested bodies did not fit"
    for trial, genome in zip(study.trials, genomes, strict=True):
        expected = Genome.from_params(trial.params)
        assert (genome == expected) == (REPAIRED_ATTR not in trial.user_attrs)
        assert genome == space.repair(expected)
    assert {g.body_depth for g in genomes} >= {1, 2, 3}


@FAST
@given(body_spaces(), seeds, st.booleans())
def test_suggest_genome_from_any_choices_of_a_fixed_trial_is_inside(
    space: SearchSpace, seed: int, harsh: bool
) -> None:
    import optuna

    from evohpo.evolution.suggest import REPAIRED_ATTR, suggest_genome

    genome = space.sample(random.Random(seed))
    if harsh:  # the strongest downsampling the choices allow: it may not fit
        pool = next((p for p in space.pools if p != "none"), "none")
        stride = max(space.strides)
        blocks = tuple(
            dataclasses.replace(b, pool=pool, stride=stride) for b in genome.blocks or ()
        )
        genome = genome.replace(blocks=blocks)
    trial = optuna.trial.FixedTrial(genome.to_params())
    suggested = suggest_genome(trial, space)
    assert space.violations(suggested) == []
    assert (REPAIRED_ATTR in trial.user_attrs) == (not space.contains(genome))
    if space.contains(genome):
        assert suggested == genome
    else:
        assert suggested == space.repair(genome)


# -- residual dense layers ---------------------------------------------------------------------
RESIDUAL = SearchSpace(max_layers=3, units=(4, 16), dense_residual=(False, True))


def test_dense_residual_defaults_to_plain_layers_and_is_validated() -> None:
    assert SearchSpace().dense_residual == (False,)
    assert not SearchSpace().has_dense_residual
    assert "dense_residual" not in SearchSpace().to_dict()  # stored identities unchanged
    assert RESIDUAL.to_dict()["dense_residual"] == [False, True]
    assert SearchSpace.from_dict(RESIDUAL.to_dict()) == RESIDUAL
    assert SearchSpace(dense_residual=(True,)).has_dense_residual
    for bad in ((), (1,), (True, True), "yes"):
        with pytest.raises(SearchSpaceError, match="'dense_residual' parameter"):
            SearchSpace(dense_residual=bad)  # type: ignore[arg-type]


def test_the_default_space_draws_exactly_as_before_the_flag() -> None:
    for seed in range(20):
        a = SearchSpace().sample(random.Random(seed))
        b = SearchSpace(dense_residual=(False,)).sample(random.Random(seed))
        assert a.to_json() == b.to_json()
        assert not any(layer.residual for layer in a.layers)


def test_a_residual_space_draws_both_and_repairs_into_its_choices() -> None:
    drawn = {
        layer.residual
        for seed in range(30)
        for layer in RESIDUAL.sample(random.Random(seed)).layers
    }
    assert drawn == {False, True}
    genome = Genome((LayerGene(8, "relu", 0.0, residual=True, id="a"),), "adam", 1e-3, 1e-5, 32)
    assert RESIDUAL.contains(genome)
    plain = SearchSpace(units=(4, 16))
    assert plain.violations(genome) == ["layer0.residual True not a choice"]
    repaired = plain.repair(genome)
    assert not repaired.layers[0].residual
    assert repaired.layers[0].id == "a"  # the shape is unchanged: the id too
    only = SearchSpace(units=(4, 16), dense_residual=(True,))
    assert only.repair(repaired) == genome


def test_residual_distributions_and_suggest_round_trip() -> None:
    import optuna

    from evohpo.evolution.suggest import (
        genome_distributions,
        space_from_distributions,
        suggest_genome,
    )

    dists = genome_distributions(RESIDUAL, 2)
    assert dists["layer1.residual"] == CategoricalDistribution((False, True))
    assert "layer0.residual" not in genome_distributions(SearchSpace(), 2)
    assert space_from_distributions(dists) == RESIDUAL
    assert space_from_distributions(genome_distributions(SearchSpace(), 2)) == SearchSpace()
    for seed in range(10):
        genome = RESIDUAL.sample(random.Random(seed))
        params = genome.to_params(residual=True)
        assert set(params) == set(genome_distributions(RESIDUAL, genome.depth))
        suggested = suggest_genome(optuna.trial.FixedTrial(params), RESIDUAL)
        assert suggested == genome
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: float(suggest_genome(t, RESIDUAL).depth), n_trials=12)
    assert {p for t in study.trials for p in t.params if p.endswith(".residual")}
    plain = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    plain.optimize(lambda t: float(suggest_genome(t, SearchSpace()).depth), n_trials=3)
    assert not {p for t in plain.trials for p in t.params if p.endswith(".residual")}
