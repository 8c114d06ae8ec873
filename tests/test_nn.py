from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evohpo.evolution.genome import ACTIVATIONS, OPTIMIZERS, Genome, LayerGene
from evohpo.exceptions import InvalidParameterError
from evohpo.training import nn as nn_module
from evohpo.training.nn import (
    SGD_MOMENTUM,
    SeededDropout,
    build_model,
    build_optimizer,
    count_parameters,
    hidden_layer_name,
    model_device,
    resolve_device,
)
from evohpo.training.spec import NetworkSpec

LayerSpec = tuple[int, str, float]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_genome(
    layers: tuple[LayerSpec, ...] = ((16, "relu", 0.0),),
    *,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 32,
) -> Genome:
    return Genome(
        tuple(LayerGene(units, activation, dropout) for units, activation, dropout in layers),
        optimizer,
        learning_rate,
        weight_decay,
        batch_size,
    )


ARCHITECTURES: list[tuple[LayerSpec, ...]] = [
    ((1, "relu", 0.0),),
    ((16, "tanh", 0.3),),
    ((64, "gelu", 0.0), (8, "silu", 0.1)),
    ((32, "elu", 0.5), (32, "leaky_relu", 0.0), (7, "relu", 0.2)),
]

ACTIVATION_MODULES: dict[str, tuple[type[nn.Module], object]] = {
    "relu": (nn.ReLU, F.relu),
    "tanh": (nn.Tanh, torch.tanh),
    "gelu": (nn.GELU, F.gelu),
    "silu": (nn.SiLU, F.silu),
    "elu": (nn.ELU, F.elu),
    "leaky_relu": (nn.LeakyReLU, F.leaky_relu),
}

OPTIMIZER_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}


def test_every_genome_choice_is_buildable() -> None:
    assert set(ACTIVATION_MODULES) == set(ACTIVATIONS)
    assert set(OPTIMIZER_CLASSES) == set(OPTIMIZERS)
    # The trainer's own tables, which it keeps without importing the genome.
    assert set(nn_module.ACTIVATIONS) == set(ACTIVATIONS)
    assert set(nn_module.OPTIMIZERS) == set(OPTIMIZERS)


@dataclass(frozen=True)
class PlainLayer:
    units: int
    activation: str
    dropout: float


@dataclass(frozen=True)
class PlainNetwork:
    layers: tuple[PlainLayer, ...]
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    weight_decay: float = 0.0
    batch_size: int = 8


def test_any_object_shaped_like_a_genome_is_built() -> None:
    plain = PlainNetwork((PlainLayer(6, "tanh", 0.2), PlainLayer(3, "relu", 0.0)))
    genome = make_genome(((6, "tanh", 0.2), (3, "relu", 0.0)), optimizer="sgd", learning_rate=0.1)

    model = build_model(plain, 4, 2, seed=0)
    reference = build_model(genome, 4, 2, seed=0)

    assert isinstance(plain, NetworkSpec)
    assert [n for n, _ in model.named_children()] == [n for n, _ in reference.named_children()]
    for (name, weight), (_, expected) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(weight, expected), name
    assert type(build_optimizer(plain, model.parameters())) is torch.optim.SGD


def test_unknown_activation_and_optimizer_of_a_plain_network_are_refused() -> None:
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'genome.layers\[1\].activation' parameter of build_model must be one of "
        r"\(.*'relu'.*\)\. Got 'swish' instead\.",
    ):
        build_model(PlainNetwork((PlainLayer(4, "relu", 0.0), PlainLayer(4, "swish", 0.0))), 3, 2)
    plain = PlainNetwork((PlainLayer(4, "relu", 0.0),), optimizer="lbfgs")
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'genome.optimizer' parameter of build_optimizer must be one of .*'adamw'.*"
        r"Got 'lbfgs' instead\.",
    ):
        build_optimizer(plain, build_model(plain, 3, 2).parameters())


@pytest.mark.parametrize("layers", ARCHITECTURES)
@pytest.mark.parametrize(("n_features", "n_outputs"), [(1, 1), (5, 3), (64, 10)])
def test_model_shapes_and_parameter_count(
    layers: tuple[LayerSpec, ...], n_features: int, n_outputs: int
) -> None:
    genome = make_genome(layers)
    model = build_model(genome, n_features, n_outputs, seed=0)

    out = model(torch.randn(7, n_features))

    assert out.shape == (7, n_outputs)
    assert out.dtype == torch.float32
    assert count_parameters(model) == genome.n_parameters(n_features, n_outputs)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    widths = [n_features, *(units for units, _, _ in layers), n_outputs]
    assert [(m.in_features, m.out_features) for m in linears] == list(pairwise(widths))
    assert model.training
    assert model_device(model) == torch.device("cpu")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_follows_its_linear_layer(activation: str) -> None:
    model = build_model(make_genome(((8, activation, 0.0),)), 3, 2, seed=0)
    module_class, function = ACTIVATION_MODULES[activation]

    assert [name for name, _ in model.named_children()] == ["hidden0", "act0", "output"]
    assert isinstance(model.act0, module_class)
    x = torch.linspace(-3, 3, 25)
    assert torch.allclose(model.act0(x), function(x))  # type: ignore[operator]


def test_dropout_follows_the_activation_and_only_when_positive() -> None:
    genome = make_genome(((8, "relu", 0.25), (8, "tanh", 0.0), (8, "gelu", 0.5)))
    model = build_model(genome, 4, 2)

    assert [name for name, _ in model.named_children()] == [
        "hidden0",
        "act0",
        "dropout0",
        "hidden1",
        "act1",
        "hidden2",
        "act2",
        "dropout2",
        "output",
    ]
    first, last = model.get_submodule("dropout0"), model.get_submodule("dropout2")
    assert isinstance(first, nn.Dropout)
    assert isinstance(last, nn.Dropout)
    assert first.p == 0.25
    assert last.p == 0.5
    assert sum(isinstance(m, nn.Dropout) for m in model) == 2


def test_state_dict_keys_name_the_genome_layers() -> None:
    genome = make_genome(((8, "relu", 0.2), (4, "relu", 0.0)))
    keys = set(build_model(genome, 3, 2).state_dict())

    assert keys == {
        f"{hidden_layer_name(0)}.weight",
        "hidden0.bias",
        "hidden1.weight",
        "hidden1.bias",
        "output.weight",
        "output.bias",
    }


def test_seed_makes_weights_reproducible_without_touching_the_global_rng() -> None:
    genome = make_genome(((16, "relu", 0.1), (8, "tanh", 0.0)))
    before = torch.get_rng_state()

    first = build_model(genome, 5, 3, seed=1).state_dict()
    again = build_model(genome, 5, 3, seed=1).state_dict()
    other = build_model(genome, 5, 3, seed=2).state_dict()

    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["hidden0.weight"], other["hidden0.weight"])


def test_seeded_init_has_torch_default_bounds() -> None:
    # nn.Linear's default: weights and biases uniform in +-1/sqrt(fan_in).
    model = build_model(make_genome(((200, "relu", 0.0),)), 50, 3, seed=0)
    for layer in (model.get_submodule("hidden0"), model.get_submodule("output")):
        assert isinstance(layer, nn.Linear)
        bound = 1.0 / math.sqrt(layer.in_features)
        assert float(layer.weight.detach().abs().max()) <= bound
        assert float(layer.bias.detach().abs().max()) <= bound
    # 10,000 uniform draws: the spread is close to that of U(-b, b).
    weight = model.get_parameter("hidden0.weight").detach()
    assert float(weight.std()) == pytest.approx(1.0 / math.sqrt(50) / math.sqrt(3), rel=0.05)


def test_unseeded_model_draws_from_the_global_rng() -> None:
    genome = make_genome()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        first = build_model(genome, 4, 2).state_dict()
        torch.manual_seed(3)
        again = build_model(genome, 4, 2).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_seeded_dropout_is_reproducible_scaled_and_off_in_eval() -> None:
    drop = SeededDropout(0.5)
    x = torch.ones(200, 50)

    drop.generator = torch.Generator().manual_seed(0)
    first = drop(x)
    drop.generator = torch.Generator().manual_seed(0)
    again = drop(x)

    assert torch.equal(first, again)
    assert set(first.unique().tolist()) == {0.0, 2.0}
    assert float((first == 0).float().mean()) == pytest.approx(0.5, abs=0.03)
    drop.eval()
    assert torch.equal(drop(x), x)


def test_seeded_dropout_without_generator_is_torch_dropout() -> None:
    x = torch.randn(30, 20)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        ours = SeededDropout(0.3)(x)
        torch.manual_seed(5)
        theirs = nn.Dropout(0.3)(x)
    assert torch.equal(ours, theirs)


def test_seeded_dropout_gradient_flows_through_kept_units() -> None:
    drop = SeededDropout(0.25)
    drop.generator = torch.Generator().manual_seed(1)
    x = torch.ones(10, 10, requires_grad=True)
    out = drop(x)
    out.sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, out.detach())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_type_learning_rate_and_weight_decay(name: str) -> None:
    genome = make_genome(optimizer=name, learning_rate=0.0123, weight_decay=4.5e-4)
    model = build_model(genome, 6, 3, seed=0)

    optimizer = build_optimizer(genome, model.parameters())

    assert type(optimizer) is OPTIMIZER_CLASSES[name]
    (group,) = optimizer.param_groups
    assert group["lr"] == 0.0123
    assert group["weight_decay"] == 4.5e-4
    assert len(group["params"]) == len(list(model.parameters()))
    if name == "sgd":
        assert group["momentum"] == SGD_MOMENTUM
        assert group["nesterov"] is True
    if name in ("sgd", "adam", "adamw"):
        assert group["fused"] is True


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_steps_reduce_the_loss(name: str) -> None:
    genome = make_genome(((16, "tanh", 0.0),), optimizer=name, learning_rate=1e-2)
    model = build_model(genome, 4, 2, seed=0)
    optimizer = build_optimizer(genome, model.parameters())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    y = (x[:, 0] > 0).long()

    def loss() -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    start = float(loss().detach())
    for _ in range(30):
        optimizer.zero_grad(set_to_none=True)
        value = loss()
        torch.autograd.backward(value)
        optimizer.step()
    assert float(loss().detach()) < 0.8 * start


def test_optimizer_is_not_fused_for_float64_parameters() -> None:
    genome = make_genome(optimizer="adam")
    model = build_model(genome, 3, 2).double()
    (group,) = build_optimizer(genome, model.parameters()).param_groups
    assert not group["fused"]


def test_build_optimizer_rejects_bad_arguments() -> None:
    genome = make_genome()
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'parameters' parameter of build_optimizer must be a non-empty iterable\. "
        r"Got \[\] instead\.",
    ):
        build_optimizer(genome, [])
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'genome' parameter of build_optimizer must be a Genome\. Got 'adam'",
    ):
        build_optimizer("adam", build_model(genome, 2, 2).parameters())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"n_features": 0},
            r"The 'n_features' parameter of build_model must be an int >= 1\. Got 0 instead\.",
        ),
        (
            {"n_features": 2.0},
            r"The 'n_features' parameter of build_model must be an int >= 1\. Got 2\.0 instead\.",
        ),
        (
            {"n_features": True},
            r"The 'n_features' parameter of build_model must be an int >= 1\. Got True instead\.",
        ),
        (
            {"n_outputs": -1},
            r"The 'n_outputs' parameter of build_model must be an int >= 1\. Got -1 instead\.",
        ),
        (
            {"seed": -1},
            r"The 'seed' parameter of build_model must be an int in the range "
            r"\[0, 18446744073709551615\]\. Got -1 instead\.",
        ),
        (
            {"genome": "relu"},
            r"The 'genome' parameter of build_model must be a Genome\. Got 'relu' instead\.",
        ),
    ],
)
def test_build_model_validates_its_arguments(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"genome": make_genome(), "n_features": 4, "n_outputs": 2}
    arguments.update(kwargs)
    with pytest.raises(InvalidParameterError, match=match):
        build_model(**arguments)  # type: ignore[arg-type]


def test_invalid_parameter_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="n_outputs"):
        build_model(make_genome(), 3, 0)


def test_count_parameters_can_include_frozen_ones() -> None:
    genome = make_genome(((10, "relu", 0.0),))
    model = build_model(genome, 4, 2)
    model.hidden0.requires_grad_(False)

    assert count_parameters(model) == 10 * 2 + 2
    assert count_parameters(model, trainable_only=False) == genome.n_parameters(4, 2)


def test_model_device_of_a_model_without_parameters_is_the_cpu() -> None:
    assert model_device(nn.ReLU()) == torch.device("cpu")


def test_resolve_device() -> None:
    auto = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device(None).type == auto.type
    assert resolve_device("auto").type == auto.type
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("device", ["gpu", "", 3])
def test_resolve_device_rejects_unknown_devices(device: object) -> None:
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'device' parameter of resolve_device must be 'auto', None, or a torch device",
    ):
        resolve_device(device)  # type: ignore[arg-type]


@pytest.mark.parametrize("device", ["meta", torch.device("meta"), "xla"])
def test_resolve_device_rejects_devices_that_cannot_train(device: object) -> None:
    with pytest.raises(InvalidParameterError, match=r"a device to train on: 'cpu', 'cuda\[:N\]'"):
        resolve_device(device)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_resolve_device_rejects_cuda_when_unavailable() -> None:
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'device' parameter of resolve_device must be a device that is available "
        r"\(CUDA is not\)\. Got 'cuda' instead\.",
    ):
        resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resolve_device_on_cuda() -> None:
    assert resolve_device("cuda") == torch.device("cuda", torch.cuda.current_device())
    with pytest.raises(InvalidParameterError, match=r"a CUDA device index below"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


# -- residual dense layers ---------------------------------------------------------------------
def _residual_genome() -> Genome:
    layers = (
        LayerGene(8, "tanh", 0.2, residual=True),  # 5 -> 8: a projection skip
        LayerGene(8, "relu", 0.0, residual=True),  # 8 -> 8: the identity skip
        LayerGene(4, "gelu", 0.0),
    )
    return Genome(layers, "adam", 1e-3, 0.0, 32)


def test_a_residual_layer_adds_its_skip_to_the_branch() -> None:
    genome = _residual_genome()
    model = build_model(genome, 5, 3, seed=0).eval()
    names = [name for name, _ in model.named_children()]
    assert names == ["hidden0", "hidden1", "hidden2", "act2", "output"]
    state = model.state_dict()
    assert state["hidden0.projection"].shape == (8, 5)
    assert "hidden1.projection" not in state
    assert count_parameters(model) == genome.n_parameters(5, 3)
    x = torch.randn(6, 5)
    h0 = x @ state["hidden0.projection"].T + torch.tanh(
        x @ state["hidden0.weight"].T + state["hidden0.bias"]
    )
    h1 = h0 + torch.relu(h0 @ state["hidden1.weight"].T + state["hidden1.bias"])
    h2 = F.gelu(h1 @ state["hidden2.weight"].T + state["hidden2.bias"])
    expected = h2 @ state["output.weight"].T + state["output.bias"]
    torch.testing.assert_close(model(x), expected)


def test_a_residual_model_is_seeded_and_its_dropout_is_in_the_branch() -> None:
    genome = _residual_genome()
    a, b = build_model(genome, 5, 3, seed=4), build_model(genome, 5, 3, seed=4)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    dropouts = [m for m in a.modules() if isinstance(m, SeededDropout)]
    assert [d.p for d in dropouts] == [0.2]  # found by the trainer, which seeds it
    # In training mode the skip passes the input through untouched by dropout.
    layer = a.hidden1.train()
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(-1.0)  # relu(-1) = 0: the branch adds nothing
    x = torch.randn(4, 8)
    torch.testing.assert_close(layer(x), x)
