from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings

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
from tests.strategies import WIDE, genomes

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
