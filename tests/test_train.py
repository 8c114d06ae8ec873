from __future__ import annotations

import math
import os
import random
import signal
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from evohpo._interrupt import GracefulStop
from evohpo.evolution.genome import Genome, LayerGene
from evohpo.exceptions import InvalidParameterError, StopRequested, TrainingDivergedError
from evohpo.training.arrays import check_features, check_labels
from evohpo.training.config import EpochRecord, TrainConfig, TrainResult
from evohpo.training.loop import train_classifier
from evohpo.training.nn import model_device
from evohpo.training.predict import predict_logits, predict_proba
from evohpo.training.stack_optimizer import StackOptimizer

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

N_CLASSES = 3
CPU = TrainConfig(device="cpu", max_epochs=10, patience=None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data() -> Data:
    X, y = make_classification(
        n_samples=400,
        n_features=10,
        n_informative=5,
        n_redundant=2,
        n_classes=N_CLASSES,
        class_sep=2.0,
        random_state=0,
    )
    X = X.astype(np.float32)
    y = y.astype(np.int64)
    return X[:300], y[:300], X[300:], y[300:]


def make_genome(
    *,
    dropout: float = 0.0,
    optimizer: str = "adam",
    learning_rate: float = 1e-2,
    batch_size: int = 32,
) -> Genome:
    return Genome(
        (LayerGene(32, "relu", dropout), LayerGene(16, "tanh", dropout)),
        optimizer,
        learning_rate,
        1e-5,
        batch_size,
    )


def train(
    data: Data, genome: Genome | None = None, config: TrainConfig = CPU, **kwargs: Any
) -> TrainResult:
    X_train, y_train, X_val, y_val = data
    return train_classifier(
        genome or make_genome(),
        X_train,
        y_train,
        X_val,
        y_val,
        n_classes=N_CLASSES,
        config=config,
        **kwargs,
    )


def accuracy(result: TrainResult, X: np.ndarray, y: np.ndarray) -> float:
    predictions = predict_proba(result.model, X).argmax(axis=1)
    return float((predictions == y).mean())


def without_seconds(history: list[EpochRecord]) -> list[dict[str, object]]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values())


# -- learning ---------------------------------------------------------------


def test_learns_a_separable_problem_well_above_chance(data: Data) -> None:
    genome = make_genome()
    result = train(data, genome)

    assert result.best_score >= 0.85  # chance is 1/3
    assert result.stop_reason == "max_epochs"
    assert result.epochs_run == 10
    assert [record["epoch"] for record in result.history] == list(range(1, 11))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.diverged_reason is None
    assert not result.diverged
    assert result.n_parameters == genome.n_parameters(10, N_CLASSES)
    assert not result.model.training
    assert result.train_seconds >= sum(record["seconds"] for record in result.history)
    assert set(result.history[0]) == {"epoch", "train_loss", "val_loss", "val_score", "seconds"}
    result.raise_if_diverged()  # does nothing


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_learns(data: Data, optimizer: str) -> None:
    lr = 0.05 if optimizer == "sgd" else 5e-3
    result = train(data, make_genome(optimizer=optimizer, learning_rate=lr, dropout=0.1))
    assert result.best_score >= 0.8


def test_full_batch_and_a_small_last_batch(data: Data) -> None:
    full = train(data, make_genome(batch_size=10_000), TrainConfig(device="cpu", max_epochs=3))
    ragged = train(data, make_genome(batch_size=7), TrainConfig(device="cpu", max_epochs=3))
    assert full.epochs_run == ragged.epochs_run == 3
    assert all(math.isfinite(record["train_loss"]) for record in full.history + ragged.history)


def test_eval_batch_size_does_not_change_the_scores(data: Data) -> None:
    big = train(data)
    small = train(data, config=TrainConfig(device="cpu", max_epochs=10, eval_batch_size=7))
    assert [r["val_score"] for r in big.history] == [r["val_score"] for r in small.history]
    assert [r["val_loss"] for r in big.history] == pytest.approx(
        [r["val_loss"] for r in small.history], rel=1e-5
    )


# -- reproducibility --------------------------------------------------------


def test_same_seed_gives_identical_history_and_weights(data: Data) -> None:
    genome = make_genome(dropout=0.3)
    config = TrainConfig(device="cpu", max_epochs=6, seed=7)

    first = train(data, genome, config)
    again = train(data, genome, config)

    assert without_seconds(first.history) == without_seconds(again.history)
    first_state, again_state = first.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(first_state[k], again_state[k]) for k in first_state)


def test_different_seeds_give_different_runs(data: Data) -> None:
    genome = make_genome(dropout=0.3)
    first = train(data, genome, TrainConfig(device="cpu", max_epochs=4, seed=1))
    other = train(data, genome, TrainConfig(device="cpu", max_epochs=4, seed=2))

    assert without_seconds(first.history) != without_seconds(other.history)
    assert not torch.equal(
        first.model.state_dict()["hidden0.weight"], other.model.state_dict()["hidden0.weight"]
    )


def test_training_neither_reads_nor_changes_the_global_rng(data: Data) -> None:
    genome = make_genome(dropout=0.3)
    config = TrainConfig(device="cpu", max_epochs=3)
    torch_state = torch.get_rng_state()
    python_state = random.getstate()

    first = train(data, genome, config)

    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == python_state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)
        again = train(data, genome, config)
    assert without_seconds(first.history) == without_seconds(again.history)


# -- early stopping and best weights ---------------------------------------


def test_early_stopping_restores_the_best_epoch(data: Data) -> None:
    _, _, X_val, y_val = data
    config = TrainConfig(device="cpu", max_epochs=500, patience=3)

    result = train(data, make_genome(learning_rate=3e-2), config)

    assert result.stop_reason == "early_stopping"
    assert result.epochs_run < 500
    assert len(result.history) == result.epochs_run
    scores = [record["val_score"] for record in result.history]
    assert result.best_score == max(scores)
    best = result.history[result.best_epoch - 1]
    assert best["epoch"] == result.best_epoch
    assert best["val_score"] == result.best_score
    assert best["val_loss"] == result.best_val_loss
    assert min(r["val_loss"] for r in result.history if r["val_score"] == max(scores)) == (
        result.best_val_loss
    )
    # The returned model holds the best epoch's weights, not the last epoch's.
    assert accuracy(result, X_val, y_val) == result.best_score
    logits = torch.from_numpy(predict_logits(result.model, X_val))
    val_loss = float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y_val)))
    assert val_loss == pytest.approx(result.best_val_loss, rel=1e-5)


def test_min_delta_counts_only_large_improvements(data: Data) -> None:
    config = TrainConfig(device="cpu", max_epochs=50, patience=3, min_delta=1.0)

    result = train(data, config=config)

    # No rise of the accuracy can exceed 1.0: patience runs out after epoch 1 + 3.
    assert result.stop_reason == "early_stopping"
    assert result.epochs_run == 4
    assert result.best_score == max(record["val_score"] for record in result.history)


def test_patience_none_runs_every_epoch(data: Data) -> None:
    result = train(data, config=TrainConfig(device="cpu", max_epochs=12, patience=None))
    assert result.stop_reason == "max_epochs"
    assert result.epochs_run == len(result.history) == 12


# -- divergence ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("learning_rate", "scale"),
    [(1e20, 1.0), (0.1, 1e30)],
    ids=["huge-learning-rate", "huge-inputs"],
)
def test_divergence_in_the_first_epoch_stops_without_an_exception(
    data: Data, learning_rate: float, scale: float
) -> None:
    X_train, y_train, X_val, y_val = data
    layers = (LayerGene(32, "relu", 0.0), LayerGene(16, "relu", 0.0))
    genome = Genome(layers, "sgd", learning_rate, 0.0, 32)
    config = TrainConfig(device="cpu", max_epochs=20)

    result = train((X_train * scale, y_train, X_val * scale, y_val), genome, config)

    assert result.stop_reason == "diverged"
    assert result.diverged
    assert result.diverged_reason is not None
    assert result.diverged_reason.startswith("The training loss became ")
    assert "in epoch 1, batch " in result.diverged_reason
    assert result.epochs_run == 1
    assert result.history == []
    # No epoch finished: the model holds its initial weights and their score.
    assert result.best_epoch == 0
    assert all_finite(result.model)
    assert 0.0 <= result.best_score <= 1.0
    assert accuracy(result, X_val * scale, y_val) == result.best_score
    with pytest.raises(TrainingDivergedError, match=r"in epoch 1, batch \d+ of 10\."):
        result.raise_if_diverged()


def test_large_but_finite_losses_are_not_divergence(data: Data) -> None:
    # About 2e36 per row: finite in float32, though 300 of them sum past its range.
    X_train, y_train, X_val, y_val = data
    scale = np.float32(3e36)
    genome = Genome((LayerGene(32, "relu", 0.0),), "adam", 1e-12, 0.0, 32)
    config = TrainConfig(device="cpu", max_epochs=2)

    result = train((X_train * scale, y_train, X_val * scale, y_val), genome, config)

    assert result.stop_reason == "max_epochs"
    assert [record["epoch"] for record in result.history] == [1, 2]
    assert all(1e35 < record["train_loss"] < 3.4e38 for record in result.history)
    assert math.isfinite(result.best_val_loss)


def poison_after(monkeypatch: pytest.MonkeyPatch, n_steps: int) -> None:
    """Make the trainer's optimizer write NaN into the weights after ``n_steps`` steps."""
    real_step = StackOptimizer.step
    steps = 0

    def step(self: StackOptimizer) -> None:
        nonlocal steps
        real_step(self)
        steps += 1
        if steps == n_steps:
            self.params.fill_(float("nan"))

    monkeypatch.setattr(StackOptimizer, "step", step)


def test_divergence_mid_training_keeps_the_last_finite_best_epoch(
    data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, X_val, y_val = data
    n_batches = 10  # 300 rows in batches of 32
    poison_after(monkeypatch, 3 * n_batches + 4)  # batch 5 of epoch 4 sees NaN weights

    result = train(data, config=TrainConfig(device="cpu", max_epochs=20))

    assert result.stop_reason == "diverged"
    assert result.diverged_reason == "The training loss became NaN in epoch 4, batch 5 of 10."
    assert result.epochs_run == 4
    assert [record["epoch"] for record in result.history] == [1, 2, 3]
    assert 1 <= result.best_epoch <= 3
    assert all_finite(result.model)
    assert accuracy(result, X_val, y_val) == result.best_score


def test_weights_broken_by_the_last_step_show_in_the_validation_loss(
    data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison_after(monkeypatch, 2 * 10)  # the last step of epoch 2
    calls: list[int] = []

    result = train(data, on_epoch_end=lambda epoch, score: calls.append(epoch))

    assert result.stop_reason == "diverged"
    assert result.diverged_reason == (
        "The validation loss became NaN after epoch 2, batch 10 of 10 "
        "(every training batch loss was finite)."
    )
    assert [record["epoch"] for record in result.history] == [1]
    assert result.best_epoch == 1
    assert calls == [1]  # not called for the diverged epoch
    assert all_finite(result.model)


# -- callback -------------------------------------------------------------------


def test_on_epoch_end_receives_every_epoch_and_score(data: Data) -> None:
    calls: list[tuple[int, float]] = []

    result = train(data, on_epoch_end=lambda epoch, score: calls.append((epoch, score)))

    assert calls == [(record["epoch"], record["val_score"]) for record in result.history]
    assert len(calls) == 10


class Pruned(Exception):
    pass


def test_an_exception_from_on_epoch_end_propagates_unchanged(data: Data) -> None:
    calls: list[int] = []
    raised = Pruned("stop at epoch 2")
    torch_state = torch.get_rng_state()

    def prune(epoch: int, score: float) -> None:
        calls.append(epoch)
        if epoch == 2:
            raise raised

    with pytest.raises(Pruned, match="stop at epoch 2") as caught:
        train(data, make_genome(dropout=0.2), on_epoch_end=prune)

    assert caught.value is raised
    assert calls == [1, 2]
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_a_signal_stops_training_at_the_next_optimizer_step(data: Data) -> None:
    steps: list[int] = []
    guard = GracefulStop()

    real_step = StackOptimizer.step

    def counting_step(self: StackOptimizer) -> None:
        steps.append(len(steps))
        if len(steps) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        real_step(self)

    with guard.installed(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(StackOptimizer, "step", counting_step)
        with pytest.raises(StopRequested):
            train(data, make_genome(batch_size=8), config=TrainConfig(device="cpu", max_epochs=5))
    assert guard.signum == signal.SIGTERM
    assert len(steps) == 3  # the step that was running finished; no further step began


def test_a_stop_requested_outside_a_guard_changes_nothing(data: Data) -> None:
    guard = GracefulStop()
    guard.requested = True  # not installed: the process has no stop request
    result = train(data, config=TrainConfig(device="cpu", max_epochs=2))
    assert result.epochs_run == 2


# -- time limit -----------------------------------------------------------------


def test_max_train_time_stops_training(data: Data) -> None:
    train(data, config=TrainConfig(device="cpu", max_epochs=1))  # one-time imports of torch
    config = TrainConfig(device="cpu", max_epochs=100_000, patience=None, max_train_time=0.3)

    result = train(data, config=config)

    assert result.stop_reason == "time_limit"
    assert 1 <= result.epochs_run < 100_000
    assert len(result.history) == result.epochs_run
    assert result.train_seconds < 0.3 + 2.0  # one batch and one validation of slack, generously


def test_max_train_time_cuts_an_epoch_and_still_validates_it(data: Data) -> None:
    config = TrainConfig(device="cpu", max_epochs=5, max_train_time=1e-9)

    result = train(data, make_genome(batch_size=1), config)

    assert result.stop_reason == "time_limit"
    assert result.epochs_run == 1
    assert len(result.history) == 1
    assert result.best_epoch == 1
    assert math.isfinite(result.history[0]["train_loss"])


# -- validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_epochs": 0}, r"The 'max_epochs' parameter of TrainConfig must be an int >= 1\. "),
        ({"max_epochs": 2.5}, r"'max_epochs' parameter of TrainConfig .* Got 2\.5 instead\."),
        (
            {"patience": 0},
            r"The 'patience' parameter of TrainConfig must be an int >= 1 or None\. "
            r"Got 0 instead\.",
        ),
        ({"patience": "10"}, r"'patience' parameter .* Got '10' instead\."),
        ({"min_delta": -0.1}, r"The 'min_delta' parameter of TrainConfig must be a float >= 0"),
        ({"min_delta": float("nan")}, r"'min_delta' parameter .* Got nan instead\."),
        (
            {"device": "gpu"},
            r"The 'device' parameter of TrainConfig must be 'auto' or a torch device such as "
            r"'cpu' or 'cuda:0'\. Got 'gpu' instead\.",
        ),
        ({"device": 0}, r"'device' parameter of TrainConfig .* Got 0 instead\."),
        ({"seed": -1}, r"The 'seed' parameter of TrainConfig must be an int in the range \[0, "),
        ({"seed": 2**64}, r"'seed' parameter of TrainConfig"),
        ({"eval_batch_size": 0}, r"The 'eval_batch_size' parameter of TrainConfig"),
        (
            {"max_train_time": 0},
            r"The 'max_train_time' parameter of TrainConfig must be a float > 0\.0 or None\. "
            r"Got 0 instead\.",
        ),
        ({"max_train_time": math.inf}, r"'max_train_time' parameter .* Got inf instead\."),
    ],
)
def test_train_config_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        TrainConfig(**kwargs)


def test_train_config_normalises_numpy_values() -> None:
    config = TrainConfig(
        max_epochs=np.int64(5),  # type: ignore[arg-type]
        min_delta=np.float32(0.5),  # type: ignore[arg-type]
        device="cuda:1",
    )
    assert type(config.max_epochs) is int
    assert type(config.min_delta) is float
    assert config.device == "cuda:1"  # availability is checked when training


def bad_inputs(data: Data) -> list[tuple[dict[str, Any], str]]:
    X_train, y_train, _, _ = data
    nan_x = X_train.copy()
    nan_x[3, 2] = np.nan
    return [
        (
            {"X_train": X_train[:, 0]},
            r"The 'X_train' parameter of train_classifier must be a non-empty 2-D array\. "
            r"Got shape \(300,\) instead\.",
        ),
        ({"X_train": X_train.astype(str)}, r"'X_train' parameter .* 2-D array of numbers"),
        ({"X_train": nan_x}, r"'X_train' parameter .* finite .* NaN or infinite values"),
        ({"X_val": np.zeros((5, 3))}, r"'X_val' parameter .* array with 10 columns"),
        (
            {"y_train": y_train.astype(float)},
            r"The 'y_train' parameter of train_classifier must be a 1-D array of integer class "
            r"indices\. Got dtype float64 instead\.",
        ),
        ({"y_train": y_train[:10]}, r"'y_train' parameter .* 1-D array of 300 labels"),
        ({"y_val": np.full(100, 3)}, r"'y_val' parameter .* class indices in \[0, 2\]"),
        (
            {"n_classes": 1},
            r"The 'n_classes' parameter of train_classifier must be an int >= 2\. Got 1",
        ),
        ({"config": {"max_epochs": 3}}, r"'config' parameter .* a TrainConfig or None"),
        ({"on_epoch_end": 3}, r"'on_epoch_end' parameter .* a callable or None"),
        ({"genome": None}, r"'genome' parameter of train_classifier must be a Genome"),
    ]


@pytest.mark.parametrize("case", range(11))
def test_train_classifier_validates_its_inputs(data: Data, case: int) -> None:
    X_train, y_train, X_val, y_val = data
    changes, match = bad_inputs(data)[case]
    arguments: dict[str, Any] = {
        "genome": make_genome(),
        "X_train": X_train,
        "y_train": y_train,
        "X_val": X_val,
        "y_val": y_val,
        "n_classes": N_CLASSES,
        "config": CPU,
    }
    arguments.update(changes)
    with pytest.raises(InvalidParameterError, match=match):
        train_classifier(**arguments)


def test_integer_features_and_lists_are_accepted(data: Data) -> None:
    X_train, y_train, X_val, y_val = data
    result = train_classifier(
        make_genome(),
        np.rint(X_train * 10).astype(np.int32),
        y_train.tolist(),
        X_val.tolist(),
        y_val.astype(np.uint8),
        n_classes=N_CLASSES,
        config=TrainConfig(device="cpu", max_epochs=2),
    )
    assert result.epochs_run == 2


def test_the_array_checks_convert_and_describe() -> None:
    objects = np.array([[1, 2.5], [3, None]], dtype=object)
    with pytest.raises(InvalidParameterError, match=r"'X' parameter of f must be finite"):
        check_features(objects, "X", "f")
    objects[1, 1] = 4
    converted = check_features(objects, "X", "f", dtype=np.float64)
    assert converted.dtype == np.float64
    assert converted.flags.c_contiguous
    assert converted.tolist() == [[1.0, 2.5], [3.0, 4.0]]
    with pytest.raises(InvalidParameterError, match=r"finite \(in float32\)"):
        check_features([[1e300]], "X", "f")
    assert check_features([[1e300]], "X", "f", dtype=np.float64)[0, 0] == 1e300
    labels = check_labels(np.array([3, 0], dtype=np.uint8), "y", "f", n_rows=2)
    assert labels.dtype == np.int64
    assert labels.tolist() == [3, 0]
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'y' parameter of f must be class indices >= 0\. Got values in \[-1, 2\]",
    ):
        check_labels([2, -1], "y", "f", n_rows=2)


# -- prediction ------------------------------------------------------------------


def test_predict_proba_rows_sum_to_one(data: Data) -> None:
    _, _, X_val, _ = data
    result = train(data, config=TrainConfig(device="cpu", max_epochs=2))

    proba = predict_proba(result.model, X_val, batch_size=17)
    logits = predict_logits(result.model, X_val)

    assert proba.shape == (100, N_CLASSES)
    assert proba.dtype == np.float64
    assert logits.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert (proba >= 0).all()
    np.testing.assert_array_equal(proba.argmax(axis=1), logits.argmax(axis=1))
    np.testing.assert_array_equal(predict_proba(result.model, X_val, device="cpu"), proba)


def test_predict_restores_the_training_mode(data: Data) -> None:
    _, _, X_val, _ = data
    model = train(data, make_genome(dropout=0.5), TrainConfig(device="cpu", max_epochs=1)).model
    model.train()

    first = predict_logits(model, X_val)
    again = predict_logits(model, X_val)

    assert model.training
    np.testing.assert_array_equal(first, again)  # dropout was off while predicting


def test_predict_rejects_the_wrong_width(data: Data) -> None:
    model = train(data, config=TrainConfig(device="cpu", max_epochs=1)).model
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'X' parameter of predict_logits must be an array with 10 columns\. "
        r"Got shape \(4, 3\) instead\.",
    ):
        predict_proba(model, np.zeros((4, 3)))


# -- packaging and hardware ------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_on_cuda(data: Data) -> None:
    _, _, X_val, y_val = data
    genome = make_genome(dropout=0.2)
    config = TrainConfig(device="cuda", max_epochs=10)
    torch_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state()

    result = train(data, genome, config)
    again = train(data, genome, config)

    assert model_device(result.model).type == "cuda"
    assert result.best_score >= 0.85
    assert result.stop_reason == "max_epochs"
    assert accuracy(result, X_val, y_val) == result.best_score
    cpu_proba = predict_proba(result.model, X_val, device="cpu")
    np.testing.assert_allclose(cpu_proba, predict_proba(result.model, X_val), atol=1e-4)
    assert model_device(result.model).type == "cuda"  # the model was not moved
    assert [r["val_score"] for r in result.history] == [r["val_score"] for r in again.history]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert torch.equal(torch.cuda.get_rng_state(), cuda_state)
