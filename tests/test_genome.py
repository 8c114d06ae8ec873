from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evohpo.evolution.blocks import (
    POOLS,
    BlockGene,
    block_param,
    body_features,
    body_shapes,
    parse_block_param,
)
from evohpo.evolution.genome import (
    GLOBAL_PARAMS,
    SCHEMA_VERSION,
    Genome,
    LayerGene,
    layer_param,
    new_gene_id,
    parse_layer_param,
)
from evohpo.exceptions import GenomeFormatError, GenomeSchemaError, InvalidParameterError
from tests.strategies import (
    WIDE,
    any_body_genomes,
    block_genes,
    body_genomes,
    fitting_bodies,
    genomes,
    input_shapes,
)

FAST = settings(max_examples=50, deadline=None)


def _genome(**changes: Any) -> Genome:
    base: dict[str, Any] = {
        "layers": (LayerGene(64, "relu", 0.1, "a"), LayerGene(32, "tanh", 0.0, "b")),
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "weight_decay": 1e-5,
        "batch_size": 64,
    }
    base.update(changes)
    return Genome(**base)


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"units": 0}, "'units' parameter of LayerGene must be an int >= 1. Got 0 instead"),
        ({"units": -5}, "'units' parameter of LayerGene must be an int >= 1. Got -5 instead"),
        ({"units": True}, "'units' parameter of LayerGene must be an int >= 1. Got True instead"),
        ({"units": 8.0}, "'units' parameter of LayerGene must be an int"),
        ({"units": "8"}, "'units' parameter of LayerGene"),
        (
            {"activation": "swish"},
            "'activation' parameter of LayerGene must be one of .*Got 'swish'",
        ),
        ({"activation": None}, "'activation' parameter of LayerGene"),
        (
            {"dropout": 1.0},
            r"'dropout' parameter of LayerGene must be a float in the range \[0.0, 1.0\)",
        ),
        ({"dropout": -0.01}, "'dropout' parameter of LayerGene"),
        ({"dropout": math.nan}, "'dropout' parameter of LayerGene"),
        ({"dropout": "0.1"}, "'dropout' parameter of LayerGene"),
        ({"dropout": False}, "'dropout' parameter of LayerGene"),
        ({"id": 7}, "'id' parameter of LayerGene must be a str. Got 7 instead"),
    ],
)
def test_invalid_layer(kwargs: dict[str, Any], match: str) -> None:
    arguments: dict[str, Any] = {"units": 16, "activation": "relu", "dropout": 0.0}
    arguments.update(kwargs)
    with pytest.raises(InvalidParameterError, match=match):
        LayerGene(**arguments)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"layers": ()}, "'layers' parameter of Genome must be a non-empty sequence of LayerGene"),
        ({"layers": []}, "'layers' parameter of Genome must be a non-empty sequence"),
        ({"layers": LayerGene(8, "relu", 0.0)}, "'layers' parameter of Genome must be a non-empty"),
        (
            {"layers": (LayerGene(8, "relu", 0.0), 8)},
            "'layers' parameter of Genome must contain only LayerGene",
        ),
        ({"optimizer": "lbfgs"}, "'optimizer' parameter of Genome must be one of .*Got 'lbfgs'"),
        (
            {"learning_rate": 0.0},
            "'learning_rate' parameter of Genome must be a float > 0.0. Got 0.0",
        ),
        ({"learning_rate": -1e-3}, "'learning_rate' parameter of Genome"),
        ({"learning_rate": math.inf}, "'learning_rate' parameter of Genome"),
        ({"learning_rate": True}, "'learning_rate' parameter of Genome"),
        ({"weight_decay": -1e-5}, "'weight_decay' parameter of Genome must be a float >= 0.0"),
        ({"weight_decay": math.nan}, "'weight_decay' parameter of Genome"),
        ({"batch_size": 0}, "'batch_size' parameter of Genome must be an int >= 1. Got 0"),
        ({"batch_size": True}, "'batch_size' parameter of Genome must be an int >= 1. Got True"),
        ({"batch_size": 32.0}, "'batch_size' parameter of Genome must be an int"),
        (
            {"layers": (LayerGene(8, "relu", 0.0, "x"), LayerGene(4, "relu", 0.0, "x"))},
            r"'layers' parameter of Genome must be layers with distinct gene ids \(id 'x' repeats",
        ),
    ],
)
def test_invalid_genome(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        _genome(**changes)


def test_invalid_parameter_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'units' parameter"):
        LayerGene(0, "relu", 0.0)


def test_values_are_normalised() -> None:
    genome = _genome(layers=[LayerGene(8, "relu", 0)], learning_rate=1, weight_decay=0)
    assert isinstance(genome.layers, tuple)
    assert isinstance(genome.layers[0].dropout, float)
    assert isinstance(genome.learning_rate, float)
    assert isinstance(genome.weight_decay, float)


def test_genomes_are_frozen() -> None:
    genome = _genome()
    with pytest.raises(AttributeError):
        genome.optimizer = "sgd"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        genome.layers[0].units = 3  # type: ignore[misc]


# -- equality, replace, size -----------------------------------------------------------------
def test_equality_ignores_ids() -> None:
    a = _genome()
    b = _genome(layers=(LayerGene(64, "relu", 0.1, "x"), LayerGene(32, "tanh", 0.0, "y")))
    assert a == b
    assert hash(a) == hash(b)
    assert a != _genome(optimizer="sgd")
    assert a != _genome(layers=a.layers[:1])
    assert LayerGene(8, "relu", 0.0, "p") == LayerGene(8, "relu", 0.0, "q")


def test_replace_validates() -> None:
    genome = _genome()
    assert genome.replace(batch_size=128).batch_size == 128
    assert genome.batch_size == 64
    with pytest.raises(InvalidParameterError, match="'batch_size' parameter"):
        genome.replace(batch_size=-1)


def test_depth_and_n_parameters() -> None:
    genome = _genome()
    assert genome.depth == 2
    # 10 -> 64 -> 32 -> 3: weights and biases of each dense layer.
    assert genome.n_parameters(10, 3) == (10 * 64 + 64) + (64 * 32 + 32) + (32 * 3 + 3)
    one = _genome(layers=(LayerGene(1, "relu", 0.0),))
    assert one.n_parameters(1, 1) == 2 + 2


# -- JSON ------------------------------------------------------------------------------------
@FAST
@given(genomes(**WIDE))
def test_json_round_trip(genome: Genome) -> None:
    text = genome.to_json()
    restored = Genome.from_json(text)
    assert restored == genome
    assert [layer.id for layer in restored.layers] == [layer.id for layer in genome.layers]
    assert restored.to_json() == text
    assert Genome.from_json(text.encode()) == genome
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION


@FAST
@given(genomes(**WIDE))
def test_params_round_trip(genome: Genome) -> None:
    params = genome.to_params()
    assert params["n_layers"] == genome.depth
    assert set(GLOBAL_PARAMS) <= set(params)
    ids = [layer.id for layer in genome.layers]
    restored = Genome.from_params(params, ids=ids)
    assert restored == genome
    assert [layer.id for layer in restored.layers] == ids
    assert Genome.from_params(params) == genome


def test_from_params_ignores_layers_beyond_depth() -> None:
    params = _genome().to_params()
    params[layer_param(5, "units")] = 999
    assert Genome.from_params(params) == _genome()


def test_json_accepts_integral_float_units() -> None:
    data = _genome().to_dict()
    data["layers"][0]["units"] = 64.0
    assert Genome.from_dict(data) == _genome()


def _json_with(**changes: Any) -> str:
    data = _genome().to_dict()
    data.update(changes)
    return json.dumps(data)


def _without(key: str) -> str:
    data = _genome().to_dict()
    del data[key]
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "A genome must be valid JSON"),
        ("{", "A genome must be valid JSON"),
        (b"\xff\xfe", "A genome must be valid JSON"),
        ("[1, 2]", "A genome must be a JSON object. Got list"),
        ("42", "A genome must be a JSON object. Got int"),
        ("{}", "A genome needs an integer 'schema_version' >= 1. Got None"),
        (_json_with(schema_version="1"), "integer 'schema_version'"),
        (_json_with(schema_version=True), "integer 'schema_version'"),
        (_json_with(schema_version=0), "integer 'schema_version' >= 1. Got 0"),
        (_without("layers"), r"missing the keys \['layers'\]"),
        (_without("batch_size"), r"missing the keys \['batch_size'\]"),
        (_json_with(layers="relu"), "'layers' must be a JSON list"),
        (_json_with(layers=[]), "invalid value: The 'layers' parameter"),
        (_json_with(layers=[5]), "Each layer must be a JSON object. Got 5"),
        (
            _json_with(layers=[{"units": 8}]),
            r"A layer is missing the keys \['activation', 'dropout'\]",
        ),
        (
            _json_with(layers=[{"units": "8", "activation": "relu", "dropout": 0}]),
            "'units' parameter",
        ),
        (
            _json_with(layers=[{"units": 8.5, "activation": "relu", "dropout": 0}]),
            "'units' parameter",
        ),
        (_json_with(layers=[{"units": 8, "activation": ["relu"], "dropout": 0}]), "'activation'"),
        (_json_with(layers=[{"units": 8, "activation": "relu", "dropout": 1.5}]), "'dropout'"),
        (_json_with(optimizer=3), "invalid value: The 'optimizer' parameter"),
        (_json_with(learning_rate="fast"), "'learning_rate' parameter"),
        (_json_with(learning_rate=None), "'learning_rate' parameter"),
        (
            '{"schema_version": 1, "layers": [{"units": 8, "activation": "relu", "dropout": NaN}], '
            '"optimizer": "adam", "learning_rate": 0.1, "weight_decay": 0, "batch_size": 4}',
            "'dropout'",
        ),
        (_json_with(batch_size=[64]), "'batch_size' parameter"),
    ],
)
def test_malformed_json(text: str | bytes, match: str) -> None:
    with pytest.raises(GenomeFormatError, match=match):
        Genome.from_json(text)


@pytest.mark.parametrize("text", ["[" * 100_000, "[" * 100_000 + "]" * 100_000, '{"a":' * 50_000])
def test_deeply_nested_json_is_a_format_error(text: str) -> None:
    with pytest.raises(GenomeFormatError, match="valid JSON: it is nested too deeply"):
        Genome.from_json(text)


def _json_with_ids(*ids: Any) -> str:
    data = _genome().to_dict()
    for layer, gene_id in zip(data["layers"], ids, strict=True):
        layer["id"] = gene_id
    return json.dumps(data)


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        ((None, "b"), "'id' parameter of LayerGene must be a str. Got None instead"),
        ((None, None), "'id' parameter of LayerGene must be a str. Got None instead"),
        ((12, "b"), "'id' parameter of LayerGene must be a str. Got 12 instead"),
        (("a", ["b"]), r"'id' parameter of LayerGene must be a str. Got \['b'\] instead"),
        (("a", "a"), r"distinct gene ids \(id 'a' repeats\)"),
    ],
)
def test_json_gene_ids_must_be_distinct_strings(ids: tuple[Any, ...], match: str) -> None:
    with pytest.raises(GenomeFormatError, match=match):
        Genome.from_json(_json_with_ids(*ids))


def test_json_without_ids_reads_as_no_id_and_empty_ids_may_repeat() -> None:
    data = _genome().to_dict()
    for layer in data["layers"]:
        del layer["id"]
    assert [layer.id for layer in Genome.from_dict(data).layers] == ["", ""]
    assert [layer.id for layer in Genome.from_json(_json_with_ids("", "")).layers] == ["", ""]


def test_non_string_json_input() -> None:
    with pytest.raises(GenomeFormatError, match="A genome must be valid JSON"):
        Genome.from_json(None)  # type: ignore[arg-type]


def test_newer_schema_version() -> None:
    text = _json_with(schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(GenomeSchemaError, match="newer than the version 1 this evohpo reads"):
        Genome.from_json(text)
    assert issubclass(GenomeSchemaError, GenomeFormatError)


def test_from_dict_rejects_a_non_mapping() -> None:
    with pytest.raises(GenomeFormatError, match=r"must be a JSON object\. Got str"):
        Genome.from_dict("genome")


# -- parameter dicts -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda p: p.pop("optimizer"), r"lacks the genome parameters \['optimizer'\]"),
        (lambda p: p.pop("n_layers"), r"lacks the genome parameters \['n_layers'\]"),
        (lambda p: p.pop("layer1.dropout"), r"declares 2 layers but lacks \['layer1.dropout'\]"),
        (lambda p: p.update(n_layers=3), r"declares 3 layers but lacks \['layer2.units'"),
        (
            lambda p: p.update(n_layers=0),
            "'n_layers' parameter of Genome.from_params must be an int >= 1",
        ),
        (lambda p: p.update(n_layers=True), "'n_layers' parameter"),
        (lambda p: p.update({"layer0.dropout": 2.0}), "invalid value: The 'dropout' parameter"),
        (lambda p: p.update(batch_size="64"), "invalid value: The 'batch_size' parameter"),
    ],
)
def test_malformed_params(edit: Any, match: str) -> None:
    params = _genome().to_params()
    edit(params)
    with pytest.raises(GenomeFormatError, match=match):
        Genome.from_params(params)


@pytest.mark.parametrize(
    ("params", "ids", "match"),
    [
        (
            None,
            None,
            "The 'params' parameter of Genome.from_params must be a mapping of parameter "
            "names to values. Got None instead",
        ),
        ([("n_layers", 1)], None, "'params' parameter of Genome.from_params must be a mapping"),
        (_genome().to_params(), "ab", "'ids' parameter of Genome.from_params must be a sequence"),
        (_genome().to_params(), 5, "'ids' parameter of Genome.from_params"),
        (_genome().to_params(), [1, 2], "'id' parameter of LayerGene must be a str. Got 1"),
        (_genome().to_params(), ["x", "x"], r"distinct gene ids \(id 'x' repeats\)"),
    ],
)
def test_from_params_rejects_bad_arguments(params: Any, ids: Any, match: str) -> None:
    with pytest.raises(GenomeFormatError, match=match):
        Genome.from_params(params, ids=ids)


def test_weight_shapes_chain_the_widths() -> None:
    genome = _genome(
        layers=(
            LayerGene(64, "relu", 0.0, "a"),
            LayerGene(32, "tanh", 0.0, "b"),
            LayerGene(8, "relu", 0.0, "c"),
        )
    )
    assert genome.weight_shapes() == [(None, 64), (64, 32), (32, 8)]


def test_layer_param_names() -> None:
    assert layer_param(2, "units") == "layer2.units"
    assert parse_layer_param("layer12.dropout") == (12, "dropout")
    for name in (
        "layer.units",
        "layerx.units",
        "layer1.bias",
        "learning_rate",
        "layer1",
        "l1.units",
    ):
        assert parse_layer_param(name) is None


def test_new_gene_id_is_reproducible_and_fresh() -> None:
    assert new_gene_id(random.Random(3)) == new_gene_id(random.Random(3))
    rng = random.Random(0)
    ids = {new_gene_id(rng) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 12 for i in ids)


# -- convolutional bodies --------------------------------------------------------------------
def _block(
    channels: int = 8, kernel: int = 3, stride: int = 1, pool: str = "none", **kw: Any
) -> BlockGene:
    genes: dict[str, Any] = {"residual": False, "batchnorm": False, "activation": "relu"}
    genes.update({"dropout": 0.0, **kw})
    return BlockGene(channels, kernel, stride, pool, **genes)


def _positions_by_sliding(blocks: Sequence[BlockGene], input_shape: Sequence[int]) -> Any:
    """Shapes after each block by counting window positions, as torch's formula does.

    A conv of kernel k, stride s and padding k // 2 over n positions has
    floor((n + 2 * (k // 2) - k) / s) + 1 outputs; a pooling of kernel and
    stride 2 has floor((n - 2) / 2) + 1, and none below two positions.
    """
    positions = list(input_shape[1:])
    shapes = []
    for block in blocks:
        pad = block.kernel // 2
        positions = [(n + 2 * pad - block.kernel) // block.stride + 1 for n in positions]
        if block.pool != "none":
            if any(n < 2 for n in positions):
                return None
            positions = [(n - 2) // 2 + 1 for n in positions]
        shapes.append((block.channels, *positions))
    return shapes


@FAST
@given(body_genomes())
def test_body_json_round_trip(genome: Genome) -> None:
    text = genome.to_json()
    restored = Genome.from_json(text)
    assert restored == genome
    assert restored.to_json() == text
    assert restored.blocks is not None
    assert genome.blocks is not None
    assert [b.id for b in restored.blocks] == [b.id for b in genome.blocks]
    assert restored.readout == genome.readout


@FAST
@given(any_body_genomes())
def test_any_body_round_trips_through_json_and_params(genome: Genome) -> None:
    assert Genome.from_json(genome.to_json()).to_json() == genome.to_json()
    params = genome.to_params()
    assert params["n_blocks"] == genome.body_depth
    assert ("readout" in params) == bool(genome.blocks)
    ids = [layer.id for layer in genome.layers]
    block_ids = [block.id for block in genome.blocks or ()]
    restored = Genome.from_params(params, ids=ids, block_ids=block_ids)
    assert restored.to_json() == genome.to_json()
    # Without ids the genes are the same and the ids empty.
    bare = Genome.from_params(params)
    assert bare == genome
    assert all(block.id == "" for block in bare.blocks or ())


def test_dense_genomes_keep_their_json_and_params() -> None:
    genome = _genome()
    assert "blocks" not in genome.to_dict()
    assert "readout" not in genome.to_dict()
    assert not any(
        parse_block_param(name) or name in ("n_blocks", "readout") for name in genome.to_params()
    )
    assert Genome.from_params(genome.to_params()).blocks is None
    empty = genome.replace(blocks=(), readout="flatten")
    # A body of depth 0: the dense layers read the input; one readout only.
    assert empty.readout == "avg"
    assert empty.to_dict()["blocks"] == []
    assert "readout" not in empty.to_dict()
    assert empty.to_params()["n_blocks"] == 0
    assert "readout" not in empty.to_params()
    assert Genome.from_json(empty.to_json()).blocks == ()
    assert empty != genome  # a body of depth 0 is not the absence of a body


@FAST
@given(input_shapes(), st.lists(block_genes(), max_size=6))
def test_body_shapes_equal_counting_window_positions(
    input_shape: tuple[int, ...], blocks: list[BlockGene]
) -> None:
    assert body_shapes(blocks, input_shape) == _positions_by_sliding(blocks, input_shape)


@pytest.mark.parametrize(
    "input_shape", [(1, 1), (1, 2), (1, 3), (2, 7), (1, 40), (3, 1, 1), (1, 2, 5), (2, 8, 8)]
)
def test_body_shapes_of_every_two_block_combination(input_shape: tuple[int, ...]) -> None:
    genes = list(itertools.product((1, 3, 5), (1, 2, 3), POOLS))
    for first, second in itertools.product(genes, repeat=2):
        blocks = [_block(4, *first), _block(6, *second)]
        expected = _positions_by_sliding(blocks, input_shape)
        assert body_shapes(blocks, input_shape) == expected, (first, second)
        assert body_shapes(blocks[:1], input_shape) == _positions_by_sliding(
            blocks[:1], input_shape
        )


@FAST
@given(st.data())
def test_fitting_bodies_fit_and_give_the_head_its_width(data: st.DataObject) -> None:
    input_shape = data.draw(input_shapes())
    blocks = data.draw(fitting_bodies(input_shape))
    shapes = body_shapes(blocks, input_shape)
    assert shapes is not None
    assert all(n >= 1 for shape in shapes for n in shape)
    if blocks:
        assert body_features(blocks, "avg", input_shape) == blocks[-1].channels
        assert body_features(blocks, "flatten", input_shape) == math.prod(shapes[-1])
    else:
        assert body_features(blocks, "avg", input_shape) == math.prod(input_shape)


def test_a_body_that_does_not_fit_is_a_clear_error() -> None:
    blocks = [_block(pool="max")] * 3
    assert body_shapes(blocks, (1, 7)) is None  # 7 -> 3 -> 1 -> no pooling possible
    with pytest.raises(
        InvalidParameterError, match=r"3 blocks does not fit the input shape \(1, 7\)"
    ):
        body_features(blocks, "avg", (1, 7))
    with pytest.raises(InvalidParameterError, match="does not fit"):
        _genome(blocks=tuple(blocks)).n_parameters((1, 7), 2)


def test_block_weight_shapes_and_head_input_follow_the_body() -> None:
    p, q = _block(8, 3, 2, "max", id="p"), _block(16, 5, 1, "avg", id="q")
    genome = _genome(blocks=(p, q), readout="avg")
    assert genome.block_weight_shapes() == [(None, 8, 3), (8, 16, 5)]
    assert genome.head_input_key() == "avg:16"
    assert genome.weight_shapes() == [("avg:16", 64), (64, 32)]
    flat = genome.replace(readout="flatten")
    assert flat.head_input_key() == "flatten:16:2m,1a"
    # With flatten, any downsampling changes what the first layer reads; with avg it does not.
    slower = (p, dataclasses.replace(q, stride=2))
    assert genome.replace(blocks=slower).head_input_key() == "avg:16"
    assert flat.replace(blocks=slower).head_input_key() == "flatten:16:2m,2a"
    assert _genome().head_input_key() is None
    assert _genome(blocks=()).head_input_key() is None


def test_gene_ids_are_unique_across_blocks_and_layers() -> None:
    with pytest.raises(InvalidParameterError, match=r"distinct gene ids \(id 'a' repeats\)"):
        _genome(blocks=(_block(id="a"),))
    with pytest.raises(InvalidParameterError, match=r"distinct gene ids \(id 'p' repeats\)"):
        _genome(blocks=(_block(id="p"), _block(id="p")))
    # The empty id means no id and may repeat.
    assert _genome(blocks=(_block(), _block())).body_depth == 2


def test_n_parameters_of_a_body_by_hand() -> None:
    blocks = (
        _block(8, 3, 2, "max", batchnorm=True),  # 1->8: 1*8*3*3 + 2*8 (bn), no bias
        _block(8, 3, 1, "none", residual=True),  # 8->8 stride 1: identity shortcut
        _block(4, 1, 2, "none", residual=True),  # 8->4 stride 2: 1x1 projection 8*4
    )
    genome = _genome(layers=(LayerGene(5, "relu", 0.0),), blocks=blocks, readout="flatten")
    convs = (1 * 8 * 9 + 16) + (8 * 8 * 9 + 8) + (8 * 4 * 1 + 4 + 8 * 4)
    # (1, 12, 12) -> conv s2: 6x6 -> pool: 3x3 -> 3x3 -> s2: 2x2; flatten 4 * 2 * 2.
    assert genome.n_parameters((1, 12, 12), 3) == convs + (16 * 5 + 5) + (5 * 3 + 3)
    one_d = genome.replace(readout="avg")
    convs_1d = (1 * 8 * 3 + 16) + (8 * 8 * 3 + 8) + (8 * 4 + 4 + 8 * 4)
    assert one_d.n_parameters((1, 40), 3) == convs_1d + (4 * 5 + 5) + (5 * 3 + 3)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda p: p.pop("block1.kernel"), r"declares 2 blocks but lacks \['block1.kernel'\]"),
        (lambda p: p.pop("readout"), r"lacks \['readout'\]"),
        (lambda p: p.update({"n_blocks": -1}), "'n_blocks' parameter of Genome.from_params"),
        (
            lambda p: p.update({"block0.kernel": 4}),
            "'kernel' parameter of BlockGene must be an odd",
        ),
        (lambda p: p.update({"block0.pool": "min"}), "'pool' parameter of BlockGene"),
        (
            lambda p: p.update({"block0.residual": 1}),
            "'residual' parameter of BlockGene must be a bool",
        ),
        (lambda p: p.update({"readout": "max"}), "'readout' parameter of Genome"),
    ],
)
def test_malformed_body_params(edit: Any, match: str) -> None:
    params = _genome(blocks=(_block(id="p"), _block(16, id="q"))).to_params()
    edit(params)
    with pytest.raises(GenomeFormatError, match=match):
        Genome.from_params(params)


def test_block_param_names() -> None:
    assert block_param(3, "stride") == "block3.stride"
    assert parse_block_param("block12.pool") == (12, "pool")
    for name in ("block.pool", "blockx.pool", "block1.units", "block1", "n_blocks", "readout"):
        assert parse_block_param(name) is None


# -- residual dense layers ---------------------------------------------------------------------
def test_a_residual_layer_round_trips_through_json_and_params() -> None:
    layers = (LayerGene(8, "tanh", 0.1, residual=True, id="a"), LayerGene(4, "relu", 0.0, id="b"))
    genome = Genome(layers, "adam", 1e-3, 0.0, 32)
    data = json.loads(genome.to_json())
    assert data["layers"][0]["residual"] is True
    assert "residual" not in data["layers"][1]  # a plain layer's JSON is what it always was
    assert Genome.from_json(genome.to_json()) == genome
    assert Genome.from_json(genome.to_json()).layers[0].residual
    params = genome.to_params()
    assert params["layer0.residual"] is True
    assert params["layer1.residual"] is False
    assert Genome.from_params(params) == genome
    assert parse_layer_param("layer3.residual") == (3, "residual")


def test_residual_is_keyword_only_and_part_of_equality_but_not_of_the_shape() -> None:
    assert LayerGene(8, "relu", 0.0, "p").id == "p"  # the positional id keeps its place
    plain, residual = LayerGene(8, "relu", 0.0), LayerGene(8, "relu", 0.0, residual=True)
    assert plain != residual
    with pytest.raises(InvalidParameterError, match="'residual' parameter of LayerGene"):
        LayerGene(8, "relu", 0.0, residual=1)  # type: ignore[arg-type]
    a = Genome((plain, plain), "adam", 1e-3, 0.0, 32)
    b = Genome((residual, residual), "adam", 1e-3, 0.0, 32)
    assert a.weight_shapes() == b.weight_shapes()


def test_a_genome_without_residual_layers_has_the_parameters_it_always_had() -> None:
    genome = Genome((LayerGene(8, "relu", 0.0), LayerGene(4, "relu", 0.0)), "adam", 1e-3, 0.0, 32)
    assert not any(name.endswith(".residual") for name in genome.to_params())
    asked = genome.to_params(residual=True)
    assert [asked[f"layer{i}.residual"] for i in range(2)] == [False, False]
    assert Genome.from_params(asked) == genome


def test_json_written_before_the_flag_reads_as_plain_layers() -> None:
    old = (
        '{"batch_size":32,"layers":[{"activation":"relu","dropout":0.0,"id":"a","units":8}],'
        '"learning_rate":0.001,"optimizer":"adam","schema_version":1,"weight_decay":0.0}'
    )
    genome = Genome.from_json(old)
    assert not genome.layers[0].residual
    assert genome.to_json() == old
    with pytest.raises(GenomeFormatError, match="residual"):
        Genome.from_json(old.replace('"units":8', '"units":8,"residual":"yes"'))


def test_parameter_count_includes_the_projection_of_a_width_changing_residual_layer() -> None:
    layers = (LayerGene(8, "relu", 0.0, residual=True), LayerGene(8, "relu", 0.0, residual=True))
    genome = Genome(layers, "adam", 1e-3, 0.0, 32)
    plain = genome.replace(layers=tuple(dataclasses.replace(g, residual=False) for g in layers))
    # Layer 0 reads 5 features into 8 units: a 5x8 projection; layer 1 is square: identity.
    assert genome.n_parameters(5, 3) == plain.n_parameters(5, 3) + 5 * 8
