"""The stacked trainer: optimizers, padding, compaction, per-member rules, distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from evohpo.evolution.genome import ACTIVATIONS, BlockGene, Genome, LayerGene
from evohpo.exceptions import InvalidParameterError
from evohpo.training import layers
from evohpo.training.config import TrainConfig, TrainResult
from evohpo.training.loop import train_classifier
from evohpo.training.nn import OPTIMIZERS, build_model, build_optimizer
from evohpo.training.population import plan_stacks, train_population
from evohpo.training.stack_model import DenseStack
from evohpo.training.stack_optimizer import (
    ROW_STEP_THRESHOLD,
    RowOptimizer,
    StackOptimizer,
    stack_optimizer,
)
from evohpo.training.task import get_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


def genome(units=(16,), activation="relu", dropout=0.0, optimizer="adam", lr=1e-2, wd=0.0, bs=32):
    layers = tuple(LayerGene(u, activation, dropout) for u in units)
    return Genome(layers, optimizer, lr, wd, bs)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=2.0, size=(3, 6))
    y = rng.integers(0, 3, size=240)
    X = (centers[y] + rng.normal(size=(240, 6))).astype(np.float32)
    return X[:180], y[:180], X[180:], y[180:]


def solo_grads_and_step(g, x, y, steps):
    """Weights of the solo model after ``steps`` optimizer steps on the same batch."""
    model = build_model(g, x.shape[1], 3, seed=7)
    optimizer = build_optimizer(g, model.parameters())
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.state_dict()


@pytest.mark.parametrize("kind", [StackOptimizer, RowOptimizer])
@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_one_optimizer_per_member_matches_torch(kind, name, wd):
    torch.manual_seed(0)
    x = torch.randn(20, 5)
    y = torch.randint(0, 3, (20,))
    members = [genome((8,), optimizer=name, lr=3e-2, wd=wd), genome((12,), "tanh", wd=wd)]
    stack = DenseStack(members, 5, 3, [7, 7], CPU)
    optimizer = kind(
        stack.params,
        stack.grads,
        [m.optimizer for m in members],
        [m.learning_rate for m in members],
        [m.weight_decay for m in members],
    )
    for _ in range(4):
        logits = stack.forward(x)
        losses = torch.stack([F.cross_entropy(logits[i], y) for i in range(2)])
        optimizer.zero_grad()
        stack.backward(losses.sum())
        optimizer.step()
    for row, member in enumerate(members):
        expected = solo_grads_and_step(member, x, y, 4)
        got = stack.member_model(member, stack.params[row]).state_dict()
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-6)


def test_padded_units_stay_exactly_zero():
    torch.manual_seed(1)
    members = [
        genome((4, 6), "gelu", 0.2, "sgd", wd=0.1),
        genome((16, 3), "elu", 0.1, "adamw", wd=0.1),
        genome((9, 12), "silu", 0.0, "rmsprop", wd=0.1),
    ]
    stack = DenseStack(members, 5, 3, [1, 2, 3], CPU)
    optimizer = StackOptimizer(
        stack.params, stack.grads, [m.optimizer for m in members], [0.05] * 3, [0.1] * 3
    )
    dropout = torch.Generator().manual_seed(0)
    for _ in range(10):
        x = torch.randn(3, 16, 5)
        y = torch.randint(0, 3, (3, 16))
        logits = stack.forward(x, dropout=dropout)
        loss = F.cross_entropy(logits.reshape(48, 3), y.reshape(48), reduction="none")
        optimizer.zero_grad()
        stack.backward(loss.view(3, 16).mean(1).sum())
        optimizer.step()
    w0, w1, w2 = stack.weights
    b0, b1, _ = stack.biases
    # Member 0 is 4 then 6 wide in a stack 16 then 12 wide.
    assert torch.count_nonzero(w0[0, :, 4:]) == 0
    assert torch.count_nonzero(b0[0, :, 4:]) == 0
    assert torch.count_nonzero(w1[0, 4:, :]) == 0
    assert torch.count_nonzero(w1[0, :, 6:]) == 0
    assert torch.count_nonzero(b1[0, :, 6:]) == 0
    assert torch.count_nonzero(w2[0, 6:, :]) == 0
    assert torch.count_nonzero(w1[1, :, 3:]) == 0  # member 1's second layer is 3 wide
    assert torch.count_nonzero(w0[0, :, :4]) > 0  # its own units did train


@pytest.mark.parametrize("kind", [StackOptimizer, RowOptimizer])
def test_compacting_the_optimizer_keeps_the_others_state(kind):
    torch.manual_seed(2)
    names = ["adam", "sgd", "rmsprop", "adamw"]
    params = torch.randn(4, 6)
    kept = params[[0, 2, 3]].clone()
    grads = torch.zeros_like(params)
    full = kind(params, grads, names, [0.01] * 4, [0.1] * 4)
    small = kind(kept, torch.zeros_like(kept), [names[i] for i in (0, 2, 3)], [0.01] * 3, [0.1] * 3)
    for step in range(6):
        draw = torch.randn(4, 6)
        if step == 3:  # member 1 leaves the full stack
            rows = torch.tensor([0, 2, 3])
            params = params.index_select(0, rows)
            grads = torch.zeros_like(params)
            full.keep(rows, params, grads)
        g = draw if full.size == 4 else draw[[0, 2, 3]]
        full.grads.copy_(g)
        small.grads.copy_(draw[[0, 2, 3]])
        full.step()
        small.step()
    torch.testing.assert_close(full.params, small.params)


def test_the_optimizer_follows_the_row_size():
    small = torch.zeros(2, ROW_STEP_THRESHOLD)
    large = torch.zeros(2, ROW_STEP_THRESHOLD + 1)
    args = (["adam", "sgd"], [0.1, 0.1], [0.0, 0.0])
    assert isinstance(stack_optimizer(small, torch.zeros_like(small), *args), StackOptimizer)
    assert isinstance(stack_optimizer(large, torch.zeros_like(large), *args), RowOptimizer)


def test_a_member_starts_with_its_solo_weights():
    members = [genome((8,)), genome((20,), "tanh")]
    stack = DenseStack(members, 5, 3, [11, 12], CPU)
    for row, (member, seed) in enumerate(zip(members, [11, 12], strict=True)):
        expected = build_model(member, 5, 3, seed=seed).state_dict()
        got = stack.member_model(member, stack.params[row]).state_dict()
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=0, atol=0)


def test_members_of_interleaved_activations_compute_their_solo_outputs():
    # Runs of one activation: relu | tanh | relu in the first layer, three in the second.
    pairs = [("relu", "tanh"), ("tanh", "relu"), ("relu", "gelu")]
    members = [
        Genome((LayerGene(8, a, 0.0), LayerGene(6 + i, b, 0.0)), "adam", 1e-2, 0.0, 32)
        for i, (a, b) in enumerate(pairs)
    ]
    stack = DenseStack(members, 5, 3, [1, 2, 3], CPU)
    x = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(0))
    logits = stack.forward(x)
    for row, (member, seed) in enumerate(zip(members, [1, 2, 3], strict=True)):
        alone = build_model(member, 5, 3, seed=seed).eval()
        torch.testing.assert_close(logits[row], alone(x[row]), rtol=1e-6, atol=1e-6)


def config(seed, **kwargs):
    kwargs.setdefault("max_epochs", 6)
    kwargs.setdefault("patience", None)
    return TrainConfig(device="cpu", seed=seed, **kwargs)


def stacked_and_solo(members, configs, blobs):
    """Each member's result trained in a stack and alone, after checking that its
    validation losses follow the solo run's epoch by epoch."""
    stacked = train_population(members, *blobs, n_classes=3, configs=configs)
    pairs = []
    for member, cfg, result in zip(members, configs, stacked, strict=True):
        alone = train_classifier(member, *blobs, n_classes=3, config=cfg)
        assert isinstance(result, TrainResult)
        np.testing.assert_allclose(
            [r["val_loss"] for r in result.history],
            [r["val_loss"] for r in alone.history],
            rtol=1e-4,
        )
        pairs.append((result, alone))
    return pairs


def test_members_without_dropout_follow_their_solo_runs(blobs):
    members = [genome((8,), "relu"), genome((24,), "tanh", optimizer="sgd", lr=0.05)]
    members += [genome((12,), "silu", optimizer="rmsprop", lr=1e-3, wd=1e-3)]
    configs = [config(seed) for seed in (3, 4, 5)]
    for result, alone in stacked_and_solo(members, configs, blobs):
        assert result.epochs_run == alone.epochs_run
        assert result.best_epoch == alone.best_epoch


def test_wide_members_stepped_row_by_row_follow_their_solo_runs(blobs):
    members = [genome((256, 160), "relu", optimizer=o, lr=1e-3) for o in OPTIMIZERS]
    assert ROW_STEP_THRESHOLD < 6 * 256 + 256 * 160  # each row steps with torch.optim
    configs = [config(seed, max_epochs=3) for seed in range(4)]
    assert len(stacked_and_solo(members, configs, blobs)) == 4


@pytest.mark.parametrize(
    ("make", "projection"),
    [
        (lambda: genome((32, 16), "relu", 0.3), None),
        (lambda: residual((8, 8, 4), "tanh", dropout=0.3), (8, 6)),  # skips and a projection
    ],
    ids=["plain", "residual"],
)
def test_single_member_stack_matches_solo_with_dropout(blobs, make, projection):
    member = make()
    cfg = config(9)
    alone = train_classifier(member, *blobs, n_classes=3, config=cfg)
    (result,) = train_population([member], *blobs, n_classes=3, configs=[cfg], min_stack=1)
    assert isinstance(result, TrainResult)
    np.testing.assert_allclose(
        [r["val_loss"] for r in result.history],
        [r["val_loss"] for r in alone.history],
        rtol=1e-4,
    )
    state = result.model.state_dict()
    assert (state["hidden0.projection"].shape if projection else None) == projection
    assert ("hidden0.projection" in state) == (projection is not None)


def test_compaction_leaves_the_other_members_unchanged(blobs):
    quick = genome((8,), lr=1e-4)  # barely learns: patience 1 stops it early
    steady = [genome((16,), "tanh"), genome((12,), "gelu", optimizer="adamw", wd=1e-2)]
    configs = [config(1, patience=1, max_epochs=12), config(2, max_epochs=12)]
    configs.append(config(3, max_epochs=12))
    together = train_population([quick, *steady], *blobs, n_classes=3, configs=configs)
    without = train_population(steady, *blobs, n_classes=3, configs=configs[1:])
    first = together[0]
    assert isinstance(first, TrainResult)
    assert first.stop_reason == "early_stopping"
    assert first.epochs_run < 12
    for a, b in zip(together[1:], without, strict=True):
        assert isinstance(a, TrainResult)
        assert isinstance(b, TrainResult)
        assert a.epochs_run == b.epochs_run == 12
        for key, value in a.model.state_dict().items():
            torch.testing.assert_close(value, b.model.state_dict()[key], rtol=1e-5, atol=1e-6)


def test_each_member_has_its_own_early_stopping_and_max_epochs(blobs):
    members = [genome((8,)), genome((8,)), genome((8,))]
    configs = [config(0, max_epochs=3), config(1, max_epochs=7), config(2, patience=2)]
    results = train_population(members, *blobs, n_classes=3, configs=configs)
    reasons = [r.stop_reason for r in results if isinstance(r, TrainResult)]
    runs = [r.epochs_run for r in results if isinstance(r, TrainResult)]
    assert reasons[:2] == ["max_epochs", "max_epochs"]
    assert runs[:2] == [3, 7]
    alone = train_classifier(members[2], *blobs, n_classes=3, config=configs[2])
    assert (reasons[2], runs[2]) == (alone.stop_reason, alone.epochs_run)


def test_a_diverging_member_stops_alone(blobs):
    members = [genome((8,), optimizer="sgd", lr=1.0e6), genome((8,))]
    results = train_population(members, *blobs, n_classes=3, configs=[config(0), config(1)])
    bad, good = results
    assert isinstance(bad, TrainResult)
    assert isinstance(good, TrainResult)
    assert bad.stop_reason == "diverged"
    assert "loss became" in (bad.diverged_reason or "")
    assert good.stop_reason == "max_epochs"
    assert good.best_score > 0.8


def test_a_callback_error_ends_only_its_member(blobs):
    seen: list[tuple[int, int]] = []

    def on_epoch_end(member: int, epoch: int, score: float) -> None:
        seen.append((member, epoch))
        if member == 1 and epoch == 2:
            raise KeyError("pruned")

    members = [genome((8,)), genome((10,)), genome((12,))]
    results = train_population(
        members,
        *blobs,
        n_classes=3,
        configs=[config(s) for s in range(3)],
        on_epoch_end=on_epoch_end,
    )
    assert isinstance(results[1], KeyError)
    assert all(isinstance(results[i], TrainResult) for i in (0, 2))
    assert max(epoch for member, epoch in seen if member == 1) == 2
    assert max(epoch for member, epoch in seen if member == 0) == 6


def test_conv_genomes_and_lone_genomes_plan_alone(blobs):
    conv = genome((8,)).replace(blocks=(BlockGene(4, 3, 1, "none", False, False, "relu", 0.0),))
    members = [conv, genome((8,)), genome((8,), bs=64), genome((8, 8))]
    plan = plan_stacks(members, 180, 6, 3, max_stack=16)
    assert sorted(plan) == [[0], [1], [2], [3]]
    results = train_population(
        members, *blobs, n_classes=3, configs=[config(s) for s in range(4)], input_shape=(1, 6)
    )
    assert all(isinstance(r, TrainResult) for r in results)


def test_plan_groups_by_depth_and_batch_size_and_caps_the_stack():
    members = [genome((8,)), genome((64,)), genome((8, 8)), genome((8,), bs=64)] * 3
    plan = plan_stacks(members, 1000, 10, 3, max_stack=2)
    for stack in plan:
        assert len(stack) <= 2
        assert len({(len(members[i].layers), members[i].batch_size) for i in stack}) == 1
    assert sorted(i for stack in plan for i in stack) == list(range(12))


def test_plan_splits_large_networks_that_would_pad_badly():
    narrow = genome((32, 32))
    wide = genome((1024, 1024))
    plan = plan_stacks([wide, narrow, narrow], 1000, 64, 10, max_stack=16)
    assert plan == [[0], [1, 2]]  # a 32-wide member padded to 1024 would waste the stack
    small = plan_stacks([genome((16,)), genome((64,))], 1000, 64, 10, max_stack=16)
    assert small == [[0, 1]]  # small networks: the fixed cost dominates, padding is cheap
    # A cap on the arithmetic per row (the CPU's) leaves networks above it alone.
    capped = plan_stacks([genome((512, 512))] * 2 + [genome((8,))] * 2, 1000, 64, 10, 16, 1 << 16)
    assert capped == [[0], [1], [2, 3]]


def test_plan_counts_the_skip_projections_of_residual_layers():
    # 64 -> 480 -> 10: 35,520 multiply-adds per row, under the CPU's cap; with the
    # residual layer's 64x480 skip projection 66,240, over it.
    plain = genome((480,))
    projected = residual((480,))
    cap = 1 << 16
    assert plan_stacks([plain, plain], 1000, 64, 10, 16, cap) == [[0, 1]]
    assert plan_stacks([projected, projected], 1000, 64, 10, 16, cap) == [[0], [1]]
    # An identity skip (as wide as its input) costs no multiply-adds.
    assert plan_stacks([residual((64,)), residual((64,))], 1000, 64, 10, 16, cap) == [[0, 1]]


def test_configs_must_share_device_and_time_budget(blobs):
    members = [genome((8,)), genome((8,))]
    with pytest.raises(InvalidParameterError, match="configs"):
        train_population(
            members,
            *blobs,
            n_classes=3,
            configs=[config(0), TrainConfig(device="cpu", max_train_time=3.0)],
        )
    with pytest.raises(InvalidParameterError, match="configs"):
        train_population(members, *blobs, n_classes=3, configs=[config(0)])


def test_time_budget_cuts_every_member(blobs):
    members = [genome((8,)), genome((8,))]
    configs = [config(s, max_epochs=100_000, max_train_time=0.5) for s in range(2)]
    results = train_population(members, *blobs, n_classes=3, configs=configs)
    assert all(isinstance(r, TrainResult) and r.stop_reason == "time_limit" for r in results)


def _final_losses(runs: list[TrainResult]) -> list[float]:
    return [r.history[-1]["val_loss"] for r in runs]


def test_a_member_trains_like_it_would_alone_in_distribution(blobs):
    """With dropout, masks differ from the solo run's; the outcome's distribution must not."""
    member = genome((16,), "relu", 0.4, lr=5e-3)
    seeds = range(48)
    cfgs = [config(1000 + s, max_epochs=4) for s in seeds]
    alone = [train_classifier(member, *blobs, n_classes=3, config=c) for c in cfgs]
    partners = [genome((24,), "tanh", 0.2), genome((8,), "gelu", 0.1, "sgd", lr=0.05)]
    stacked: list[TrainResult] = []
    for c in cfgs:
        others = [config(c.seed + 1, max_epochs=4), config(c.seed + 2, max_epochs=4)]
        result = train_population([member, *partners], *blobs, n_classes=3, configs=[c, *others])
        assert isinstance(result[0], TrainResult)
        stacked.append(result[0])
    same = stats.ks_2samp(_final_losses(alone), _final_losses(stacked))
    assert same.pvalue > 0.01, same
    # The test has the power to see a real difference: twice the learning rate.
    faster = member.replace(learning_rate=1e-2)
    other = [train_classifier(faster, *blobs, n_classes=3, config=c) for c in cfgs]
    assert stats.ks_2samp(_final_losses(alone), _final_losses(other)).pvalue < 0.01


def residual(units=(8, 8), activation="tanh", dropout=0.0, lr=1e-2, optimizer="adam"):
    layers = tuple(LayerGene(u, activation, dropout, residual=True) for u in units)
    return Genome(layers, optimizer, lr, 0.0, 32)


def test_residual_members_start_with_their_solo_weights_and_outputs():
    # Layer by layer: projections (6 -> 8, 6 -> 12), identities (8 -> 8, 12 -> 12),
    # a plain layer beside them, and a member without any skip.
    mixed = Genome(
        (LayerGene(12, "relu", 0.0, residual=True), LayerGene(5, "gelu", 0.0)),
        "adam",
        1e-2,
        0.0,
        32,
    )
    members = [residual((8, 8)), mixed, genome((4, 12), "silu"), residual((6, 6), "elu")]
    seeds = [1, 2, 3, 4]
    stack = DenseStack(members, 6, 3, seeds, CPU)
    x = torch.randn(20, 6)
    logits = stack.forward(x)
    for row, (member, seed) in enumerate(zip(members, seeds, strict=True)):
        solo = build_model(member, 6, 3, seed=seed).eval()
        expected = solo.state_dict()
        got = stack.member_model(member, stack.params[row]).state_dict()
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=0, atol=0)
        torch.testing.assert_close(logits[row], solo(x), rtol=1e-5, atol=1e-6)


def test_padded_entries_of_residual_layers_stay_zero_while_training(blobs):
    members = [residual((8, 8)), residual((16, 4), "relu"), genome((12, 12), "tanh")]
    members.append(residual((6, 6), "gelu", dropout=0.2, optimizer="sgd", lr=0.05))
    stack = DenseStack(members, 6, 3, [0, 1, 2, 3], CPU)
    # Mark what each member owns (its own tensors): everything else is padding, or a
    # projection slot of a member that has none there, and must stay exactly 0.
    start = stack.params.clone()
    for row, member in enumerate(members):
        marked = build_model(member, 6, 3, seed=0)
        with torch.no_grad():
            for parameter in marked.parameters():
                parameter.fill_(1.0)
        stack._load_member(row, marked)
    owned = stack.params != 0
    with torch.no_grad():
        stack.params.copy_(start)
    assert not stack.params[~owned].any()
    optimizer = stack_optimizer(
        stack.params,
        stack.grads,
        [m.optimizer for m in members],
        [m.learning_rate for m in members],
        [1e-2] * len(members),  # weight decay must keep zeros at zero too
    )
    x, y = torch.from_numpy(blobs[0][:64]), torch.from_numpy(blobs[1][:64])
    dropout = torch.Generator().manual_seed(0)
    for _ in range(5):
        optimizer.zero_grad()
        logits = stack.forward(x, dropout=dropout)
        loss = F.cross_entropy(logits.reshape(-1, 3), y.repeat(len(members)), reduction="sum")
        stack.backward(loss)
        optimizer.step()
    assert not stack.params[~owned].any()
    assert not torch.equal(stack.params[owned], start[owned])


def test_residual_members_stack_and_follow_their_solo_runs(blobs):
    members = [residual((8, 8)), residual((12, 12), "relu", optimizer="sgd", lr=0.05)]
    members.append(genome((8, 8), "silu"))
    assert plan_stacks(members, 180, 6, 3, max_stack=16) == [[0, 1, 2]]
    configs = [config(seed) for seed in (3, 4, 5)]
    assert len(stacked_and_solo(members, configs, blobs)) == 3


def _random_stack(seed: int):
    """A stack of 1-5 members drawn at random: depths 1-3, widths, every activation (in
    runs), dropout, identity and projected skips; a classification or regression task."""
    rng = np.random.default_rng(seed)
    task = get_task("classification" if seed % 2 == 0 else "regression")
    k, depth, n_features = int(rng.integers(1, 6)), int(rng.integers(1, 4)), int(rng.choice([5, 8]))
    n_outputs = int(rng.choice([1, 3])) if task.name == "regression" else int(rng.choice([2, 4]))
    activations = sorted(rng.choice(ACTIVATIONS, size=k))
    members = [
        Genome(
            tuple(
                LayerGene(
                    int(rng.choice([4, 8, 16])),
                    str(activations[m]),
                    float(rng.choice([0.0, 0.3])),
                    residual=bool(rng.random() < 0.4),
                )
                for _ in range(depth)
            ),
            "adam",
            1e-2,
            0.0,
            16,
        )
        for m in range(k)
    ]
    stack = DenseStack(members, n_features, n_outputs, list(range(k)), CPU)
    draws = torch.Generator().manual_seed(seed)
    x = torch.randn(k, 7, n_features, generator=draws)
    if task.name == "classification":
        target = torch.randint(0, n_outputs, (k * 7,), generator=draws)
    else:
        target = torch.randn(k * 7, n_outputs, generator=draws)
    return stack, task, x, target


@pytest.mark.parametrize("seed", range(40))
def test_the_hand_written_training_pass_computes_autograds_gradients(seed):
    stack, task, x, target = _random_stack(seed)
    owned = stack.params != 0  # padding (and absent projections) is exactly zero
    with torch.no_grad():
        stack.grads.fill_(float("nan"))  # every gradient must be written, not accumulated
    losses = stack.train_step(x, target, task, torch.Generator().manual_seed(seed))
    by_hand = stack.grads.clone()

    stack.grads.zero_()
    outputs = stack.forward(x, dropout=torch.Generator().manual_seed(seed))  # the same masks
    expected = task.member_losses(outputs, target, stack.size)
    stack.backward(expected.sum())

    torch.testing.assert_close(losses, expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(by_hand, stack.grads, rtol=1e-4, atol=1e-6)
    assert not by_hand[~owned].any()  # padded weights get exactly zero gradients


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_each_activations_backward_is_autograds(name):
    z = torch.linspace(-3, 3, 61, dtype=torch.float64).requires_grad_()
    a = layers.activation(name, "activation", "test")(z)
    grad = torch.rand(61, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (expected,) = torch.autograd.grad(a, z, grad)
    backward = layers.activation_backward(name, "activation", "test")
    assert torch.equal(backward(grad, z.detach(), a.detach()), expected)


@pytest.mark.parametrize("name", ["classification", "regression"])
def test_member_losses_and_their_gradients_without_autograd(name):
    task = get_task(name)
    outputs = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    if name == "classification":
        target = torch.randint(0, 4, (15,), generator=torch.Generator().manual_seed(1))
    else:
        target = torch.randn(15, 4, dtype=torch.float64)
    expected = task.member_losses(outputs, target, 3)
    (expected_grad,) = torch.autograd.grad(expected.sum(), outputs)
    losses, grad = task.member_losses_and_grads(outputs.detach(), target)
    torch.testing.assert_close(losses, expected.detach())
    torch.testing.assert_close(grad, expected_grad)


def test_lone_dense_genomes_train_as_stacks_of_one_unless_min_stack_says_otherwise(
    blobs, monkeypatch
):
    from evohpo.training import population

    calls = []
    for name in ("_train_alone", "_train_stack"):
        real = getattr(population, name)

        def counted(*args, _name=name, _real=real, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(population, name, counted)
    conv = genome((8,)).replace(blocks=(BlockGene(4, 3, 1, "none", False, False, "relu", 0.0),))
    members = [conv, genome((8,)), genome((8,), bs=64), genome((8,), "tanh")]
    configs = [config(s, max_epochs=2) for s in range(4)]
    train_population(members, *blobs, n_classes=3, configs=configs, input_shape=(1, 6))
    # The conv genome alone; the lone batch-64 genome, and the two batch-32 ones, as stacks.
    assert sorted(calls) == ["_train_alone", "_train_stack", "_train_stack"]
    calls.clear()
    train_population(members, *blobs, n_classes=3, configs=configs, input_shape=(1, 6), min_stack=3)
    assert calls == ["_train_alone"] * 4  # the pair is below min_stack: each alone


@pytest.mark.parametrize("n_members", [1, 2])
def test_an_input_shape_that_does_not_fit_the_features_is_refused(blobs, n_members):
    members = [genome((8,))] * n_members  # dense: a lone one trains as a stack of one
    configs = [config(s, max_epochs=1) for s in range(n_members)]
    with pytest.raises(InvalidParameterError, match=r"'input_shape' parameter of train_population"):
        train_population(members, *blobs, n_classes=3, configs=configs, input_shape=(2, 5))
