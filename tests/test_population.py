"""The incremental population view must equal one rebuilt from scratch."""

from __future__ import annotations

import random

import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from evohpo.evolution.blocks import BlockGene
from evohpo.evolution.genome import Genome, LayerGene
from evohpo.evolution.lineage import Lineage
from evohpo.evolution.population import Member, Population, params_key, rank_key


def finished(number: int, value: float, **params: float) -> FrozenTrial:
    dists = {
        name: IntDistribution(0, 10) if isinstance(v, int) else FloatDistribution(-10, 10)
        for name, v in params.items()
    }
    trial = create_trial(state=TrialState.COMPLETE, value=value, params=params, distributions=dists)
    trial.number = number
    return trial


def built_at_once(trials: list[FrozenTrial], signs: tuple[float, ...] = (1.0,)) -> Population:
    population = Population(signs)
    population.sync(sorted(trials, key=lambda t: t.number))
    return population


def view(population: Population) -> tuple[list[int], list[int], list[str]]:
    snap = population.snapshot()
    return (
        [m.number for m in snap.members],
        [m.number for m in snap.ranked],
        list(snap.distributions),
    )


def test_sync_in_steps_equals_one_sync_whatever_order_trials_finish_in() -> None:
    rng = random.Random(3)
    trials = [finished(n, rng.uniform(-1, 1), x=rng.uniform(-1, 1)) for n in range(60)]
    finish_order = trials[:]
    rng.shuffle(finish_order)  # workers finish out of order
    stepwise = Population((1.0,))
    done: list[FrozenTrial] = []
    for trial in finish_order:
        done.append(trial)
        stepwise.sync(sorted(done, key=lambda t: t.number))
    assert view(stepwise) == view(built_at_once(trials))


def test_equal_parameters_rank_once_with_their_mean_value() -> None:
    trials = [
        finished(0, 1.0, x=1.0),
        finished(1, 0.9, x=2.0),
        finished(2, 0.2, x=1.0),  # a repeat of trial 0: mean 0.6
        finished(3, 0.7, x=3.0),
    ]
    snap = built_at_once(trials).snapshot()
    assert [m.number for m in snap.members] == [0, 1, 2, 3]  # every trial stays a member
    assert [(m.number, m.fitness) for m in snap.ranked] == [(1, (0.9,)), (3, (0.7,)), (0, (0.6,))]
    assert (snap.repeats, snap.noisy) == (1, True)


def test_equal_values_of_equal_parameters_say_the_objective_is_deterministic() -> None:
    trials = [finished(0, 0.5, x=1.0), finished(1, 0.8, x=2.0), finished(2, 0.5, x=1.0)]
    population = built_at_once(trials)
    snap = population.snapshot()
    assert (snap.repeats, snap.noisy) == (1, False)
    assert [m.number for m in snap.ranked] == [1, 0]
    population.sync([*trials, finished(3, 0.8, x=2.0), finished(4, 0.79, x=2.0)])
    snap = population.snapshot()
    assert (snap.repeats, snap.noisy) == (3, True)
    assert snap.ranked[0].number == 1
    assert snap.ranked[0].fitness[0] == pytest.approx((0.8 + 0.8 + 0.79) / 3)


def test_repeats_arriving_out_of_order_give_the_same_view() -> None:
    rng = random.Random(7)
    # Few distinct parameter sets: most trials repeat one.
    trials = [finished(n, rng.uniform(-1, 1), x=float(rng.randint(0, 5))) for n in range(40)]
    finish_order = trials[:]
    rng.shuffle(finish_order)
    stepwise = Population((1.0,))
    done: list[FrozenTrial] = []
    for trial in finish_order:
        done.append(trial)
        stepwise.sync(sorted(done, key=lambda t: t.number))
    at_once = built_at_once(trials)
    assert view(stepwise) == view(at_once)
    # The entry of each parameter set is its earliest trial, with the mean value.
    by_x: dict[float, list[FrozenTrial]] = {}
    for trial in trials:
        by_x.setdefault(trial.params["x"], []).append(trial)
    expected = {
        min(t.number for t in ts): sum(t.values[0] for t in ts) / len(ts) for ts in by_x.values()
    }
    got = {m.number: m.fitness[0] for m in stepwise.snapshot().ranked}
    assert got == pytest.approx(expected)
    assert stepwise.snapshot().repeats == 40 - len(by_x)


def test_ranked_is_the_full_sort_by_rank_key() -> None:
    rng = random.Random(0)
    # Ties in value: the older trial ranks first.
    trials = [finished(n, float(rng.randint(0, 5)), x=n / 10) for n in range(40)]
    population = built_at_once(trials)
    expected = sorted(population.members, key=rank_key, reverse=True)
    assert [m.number for m in population.snapshot().ranked] == [m.number for m in expected]


def test_minimization_signs_flip_the_ranking() -> None:
    trials = [finished(0, 3.0, x=1.0), finished(1, 1.0, x=2.0), finished(2, 2.0, x=3.0)]
    population = built_at_once(trials, signs=(-1.0,))
    assert [m.number for m in population.snapshot().ranked] == [1, 2, 0]


def test_trials_without_usable_values_are_seen_but_not_members() -> None:
    odd = create_trial(state=TrialState.COMPLETE, values=[1.0, 2.0])  # not this study's shape
    odd.number = 1
    trials = [finished(0, 1.0, x=1.0), odd, finished(2, 0.5, x=3.0)]
    population = built_at_once(trials)
    assert [m.number for m in population.members] == [0, 2]
    # A later sync with one more trial parses only that trial.
    population.sync([*trials, finished(3, 2.0, x=0.0)])
    assert [m.number for m in population.members] == [0, 2, 3]


def test_distributions_keep_first_seen_order_and_latest_distribution() -> None:
    first = finished(0, 1.0, b=1.0, a=2.0)
    later = create_trial(
        state=TrialState.COMPLETE,
        value=0.0,
        params={"c": 1, "a": 0.5},
        distributions={"c": IntDistribution(0, 10), "a": FloatDistribution(0, 1)},
    )
    later.number = 1
    # The later trial arrives first: the order must not depend on arrival.
    population = Population((1.0,))
    population.sync([later])
    population.sync([first, later])
    dists = population.snapshot().distributions
    assert list(dists) == ["b", "a", "c"]
    assert dists["a"] == FloatDistribution(0, 1)


def test_a_shorter_trial_list_starts_the_view_again() -> None:
    population = built_at_once([finished(n, float(n), x=0.0) for n in range(5)])
    population.sync([finished(0, 9.0, y=1.0)])
    snap = population.snapshot()
    assert [m.fitness for m in snap.members] == [(9.0,)]
    assert list(snap.distributions) == ["y"]


def test_snapshot_does_not_change_when_the_population_grows() -> None:
    trials = [finished(n, float(n), x=float(n)) for n in range(3)]
    population = built_at_once(trials)
    snap = population.snapshot()
    population.sync([*trials, finished(3, 10.0, x=0.0)])
    assert [m.number for m in snap.ranked] == [2, 1, 0]
    assert snap.latest.number == 2


@pytest.mark.parametrize("signs", [(1.0, -1.0)])
def test_multi_objective_members_are_not_ranked(signs: tuple[float, ...]) -> None:
    trial = create_trial(
        state=TrialState.COMPLETE,
        values=[1.0, 2.0],
        params={"x": 0.1},
        distributions={"x": FloatDistribution(0, 1)},
    )
    trial.number = 0
    population = built_at_once([trial], signs=signs)
    assert population.members[0].fitness == (1.0, -2.0)
    assert population.snapshot().ranked == []


def test_sync_parses_only_trials_it_has_not_seen() -> None:
    trials = [finished(n, float(n), x=n / 10) for n in range(50)]
    population = built_at_once(trials)
    # Finished trials never change, so a known trial is never read again: a
    # changed copy of one goes unnoticed, while the one new trial is read.
    trials[10] = finished(10, 100.0, x=1.0)
    population.sync([*trials, finished(50, 50.0, x=5.0)])
    snap = population.snapshot()
    assert snap.members[10].fitness == (10.0,)
    assert [m.number for m in snap.ranked[:2]] == [50, 49]


def _member(number: int, params: dict[str, object], lineage: Lineage | None) -> Member:
    return Member(number, (1.0,), params, {}, lineage)


def test_member_genome_carries_the_recorded_ids_when_the_record_matches() -> None:
    genome = Genome(
        (LayerGene(16, "relu", 0.0, "x"), LayerGene(8, "tanh", 0.1, "y")), "adam", 1e-3, 1e-5, 32
    )
    record = Lineage(origin="bred", params=genome.to_params(), genome=genome.to_json())
    member = _member(5, genome.to_params(), record)
    assert member.genome == genome
    assert member.genome is not None
    assert [layer.id for layer in member.genome.layers] == ["x", "y"]
    # A record of another genome (or none): ids derived from the trial number.
    other = genome.replace(learning_rate=1e-2)
    stale = Lineage(origin="bred", params=other.to_params(), genome=other.to_json())
    for lineage in (stale, None):
        derived = _member(5, genome.to_params(), lineage).genome
        assert derived is not None
        assert [layer.id for layer in derived.layers] == ["t5l0", "t5l1"]
    assert _member(5, {"x": 1.0}, None).genome is None


def test_member_params_key_tells_parameters_apart() -> None:
    a = _member(0, {"x": 1, "y": "relu"}, None)
    b = _member(1, {"y": "relu", "x": 1}, None)
    c = _member(2, {"x": 1.0, "y": "relu"}, None)
    assert a.params_key == b.params_key == params_key({"x": 1, "y": "relu"})
    assert a.params_key != c.params_key  # 1 and 1.0 are different suggestions


def test_member_genome_of_a_body_derives_block_ids_and_reads_the_input_shape() -> None:
    blocks = tuple(BlockGene(8, 3, 2, "max", True, False, "relu", 0.0, id=i) for i in "pq")
    genome = Genome((LayerGene(16, "relu", 0.0, "x"),), "adam", 1e-3, 1e-5, 32, blocks=blocks)
    params = genome.to_params()
    record = Lineage(origin="bred", params=params, genome=genome.to_json())
    bred = _member(2, params, record).genome
    assert bred is not None
    assert bred.to_json() == genome.to_json()
    derived = _member(2, params, None).genome
    assert derived is not None
    assert derived == genome
    assert [b.id for b in derived.blocks or ()] == ["t2b0", "t2b1"]
    assert [layer.id for layer in derived.layers] == ["t2l0"]
    trial = create_trial(
        state=TrialState.COMPLETE,
        value=1.0,
        params={"x": 1.0},
        distributions={"x": FloatDistribution(0, 2)},
        user_attrs={"input_shape": [1, 8, 8]},
    )
    odd = create_trial(
        state=TrialState.COMPLETE,
        value=1.0,
        params={"x": 1.5},
        distributions={"x": FloatDistribution(0, 2)},
        user_attrs={"input_shape": [0, 8]},
    )
    odd.number = 1
    population = built_at_once([trial, odd])
    assert [m.input_shape for m in population.members] == [(1, 8, 8), None]
