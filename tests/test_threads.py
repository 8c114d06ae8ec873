"""Torch threads chosen per network: one for small dense networks, the budget for the rest."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

import evohpo.training.loop
from evohpo import EvoSearchClassifier, SearchSpace
from evohpo.cli.parser import build_parser
from evohpo.evolution.genome import Genome
from evohpo.exceptions import InvalidParameterError
from evohpo.training.config import TrainConfig
from evohpo.training.cost import CPU_STACK_MAX_MACS, arithmetic_bound, dense_macs
from evohpo.training.loop import train_classifier
from evohpo.training.population import train_population
from evohpo.training.threads import (
    cpu_thread_budget,
    current_thread_budget,
    thread_budget,
    threads_for,
    torch_threads,
)

N_FEATURES = 16


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, ...]:
    X, y = make_classification(120, N_FEATURES, n_informative=6, n_classes=3, random_state=0)
    X = X.astype(np.float32)
    return X[:90], y[:90], X[90:], y[90:]


@pytest.fixture
def threads_before() -> Iterator[int]:
    """Start every test from one torch thread; the count it had is restored after."""
    with torch_threads(1):
        yield 1


def dense(*units: int, batch: int = 32) -> Genome:
    return Genome.from_dict(
        {
            "schema_version": 1,
            "layers": [{"units": u, "activation": "relu", "dropout": 0.0} for u in units],
            "optimizer": "adam",
            "learning_rate": 1e-3,
            "weight_decay": 0.0,
            "batch_size": batch,
        }
    )


def conv() -> Genome:
    genome = dense(8).to_dict()
    genome["blocks"] = [
        {
            "channels": 4,
            "kernel": 3,
            "stride": 1,
            "pool": "none",
            "residual": False,
            "batchnorm": False,
            "activation": "relu",
            "dropout": 0.0,
        }
    ]
    genome["readout"] = "avg"
    return Genome.from_dict(genome)


SMALL = dense(32)
LARGE = dense(512, 512)  # 16*512 + 512*512 + 512*3 multiply-adds per row


def threads_while_training(genome: Genome, data: tuple[np.ndarray, ...], **kw: Any) -> set[int]:
    seen: set[int] = set()
    shape = (1, N_FEATURES) if genome.blocks else None
    train_classifier(
        genome,
        *data,
        n_classes=3,
        config=TrainConfig(max_epochs=2, device="cpu", seed=0),
        on_epoch_end=lambda epoch, score: seen.add(torch.get_num_threads()),
        input_shape=shape,
        **kw,
    )
    return seen


def test_the_cost_line() -> None:
    assert dense_macs(LARGE, N_FEATURES, 3) == 16 * 512 + 512 * 512 + 512 * 3
    assert arithmetic_bound(LARGE, N_FEATURES, 3)
    assert not arithmetic_bound(SMALL, N_FEATURES, 3)
    assert dense_macs(SMALL, N_FEATURES, 3) <= CPU_STACK_MAX_MACS
    assert arithmetic_bound(conv(), N_FEATURES, 3)


@pytest.mark.usefixtures("threads_before")
def test_under_a_budget_each_network_gets_its_threads(data: tuple[np.ndarray, ...]) -> None:
    with thread_budget(2):
        assert threads_while_training(SMALL, data) == {1}
        assert threads_while_training(LARGE, data) == {2}
        assert threads_while_training(conv(), data) == {2}
    assert torch.get_num_threads() == 1


@pytest.mark.usefixtures("threads_before")
def test_a_small_network_drops_to_one_thread_under_a_budget(
    data: tuple[np.ndarray, ...],
) -> None:
    with torch_threads(2), thread_budget(2):
        assert threads_while_training(SMALL, data) == {1}
        assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("threads_before")
def test_without_a_budget_torch_is_left_alone(data: tuple[np.ndarray, ...]) -> None:
    assert current_thread_budget() is None
    assert threads_while_training(LARGE, data) == {1}
    with torch_threads(2):
        assert threads_while_training(SMALL, data) == {2}


@pytest.mark.usefixtures("threads_before")
def test_stacks_train_with_one_thread_and_large_members_with_the_budget(
    data: tuple[np.ndarray, ...],
) -> None:
    genomes = [SMALL, dense(24), LARGE]
    seen: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}

    def record(member: int, epoch: int, score: float) -> None:
        seen[member].add(torch.get_num_threads())

    configs = [TrainConfig(max_epochs=2, device="cpu", seed=i) for i in range(3)]
    with torch_threads(2), thread_budget(2):
        outcomes = train_population(
            genomes, *data, n_classes=3, configs=configs, on_epoch_end=record
        )
    assert not any(isinstance(o, Exception) for o in outcomes)
    assert seen == {0: {1}, 1: {1}, 2: {2}}


def test_the_budget_is_scoped_and_checked() -> None:
    assert threads_for(arithmetic_bound=True) is None
    with thread_budget(3):
        assert current_thread_budget() == 3
        with thread_budget(None):
            assert threads_for(arithmetic_bound=True) is None
        assert threads_for(arithmetic_bound=True) == 3
        assert threads_for(arithmetic_bound=False) == 1
    assert current_thread_budget() is None
    with pytest.raises(InvalidParameterError, match="'n'"), thread_budget(0):
        pass
    assert cpu_thread_budget(1) == torch.get_num_threads()
    assert cpu_thread_budget(torch.get_num_threads() + 1) == 1


@pytest.mark.usefixtures("threads_before")
def test_the_estimator_gives_large_networks_the_threads_torch_had(
    data: tuple[np.ndarray, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen: list[tuple[bool, int | None]] = []
    original = evohpo.training.loop.threads_for

    def spy(*, arithmetic_bound: bool) -> int | None:
        threads = original(arithmetic_bound=arithmetic_bound)
        chosen.append((arithmetic_bound, threads))
        return threads

    monkeypatch.setattr(evohpo.training.loop, "threads_for", spy)
    space = SearchSpace(min_layers=2, max_layers=2, units=(300, 400), batch_sizes=(64,))
    X = np.vstack([data[0], data[2]])
    y = np.concatenate([data[1], data[3]])
    with torch_threads(2):
        EvoSearchClassifier(
            n_trials=2, max_epochs=1, search_space=space, random_state=0, ensemble_size=1
        ).fit(X, y)
        assert torch.get_num_threads() == 2
    assert chosen
    assert set(chosen) == {(True, 2)}


@pytest.mark.parametrize(
    ("argv", "expected"), [([], "auto"), (["--threads", "3"], 3), (["--threads", "auto"], "auto")]
)
def test_the_threads_flag(argv: list[str], expected: int | str) -> None:
    args = build_parser().parse_args(["run", "study.toml", *argv])
    assert args.threads == expected


def test_a_bad_threads_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "study.toml", "--threads", "0"])
    assert "expected an integer >= 1 or 'auto', got '0'" in capsys.readouterr().err
