from __future__ import annotations

import gc
import math
import os
import random
import statistics
import subprocess
import sys
import textwrap
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
)
from optuna.trial import TrialState

import evohpo
from evohpo import EvoSampler, SearchSpace, suggest_genome
from evohpo.evolution.lineage import LINEAGE_ATTR, ORIGINS
from evohpo.exceptions import InvalidParameterError

REPO = Path(__file__).resolve().parents[1]


class TestEvoSamplerConformance(BasicSamplerTestCase):
    @pytest.fixture
    def sampler(self):  # type: ignore[no-untyped-def]
        return lambda: EvoSampler(population_size=4, seed=1)


class TestEvoSamplerMultiObjectiveConformance(MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self):  # type: ignore[no-untyped-def]
        return lambda: EvoSampler(population_size=4, seed=1)


SMALL_SPACE = SearchSpace(min_layers=1, max_layers=4, units=(4, 64))


def genome_objective(trial: optuna.Trial) -> float:
    genome = suggest_genome(trial, SMALL_SPACE)
    # Best: depth 3, 32 units everywhere, relu, lr near 1e-2.
    score = -abs(genome.depth - 3)
    score -= sum(abs(math.log2(layer.units / 32)) for layer in genome.layers) / genome.depth
    score -= sum(layer.activation != "relu" for layer in genome.layers)
    score -= abs(math.log10(genome.learning_rate) + 2)
    return score


def lineages(study: optuna.Study) -> list[dict]:  # type: ignore[type-arg]
    return [t.user_attrs[LINEAGE_ATTR] for t in study.trials]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"population_size": 1}, "'population_size' parameter of EvoSampler must be an int"),
        ({"population_size": 2.5}, "'population_size'"),
        ({"mode": "batch"}, "'mode' parameter of EvoSampler must be one of"),
        ({"selection": "roulette"}, "'selection'"),
        ({"tournament_size": 0}, """'tournament_size' .* an int >= 1 or "auto". Got 0"""),
        ({"tournament_size": "greedy"}, "'tournament_size' .*Got 'greedy'"),
        ({"rank_probabilities": (0.2, 0.5)}, "'rank_probabilities'"),
        ({"rank_probabilities": ()}, "'rank_probabilities'"),
        ({"rank_probabilities": (0.0, 0.0)}, "'rank_probabilities'"),
        (
            {"rank_probabilities": (0.3, 0.3, 0.3)},
            r"'rank_probabilities' parameter of EvoSampler must be a non-empty, strictly "
            r"decreasing sequence of probabilities \(p1 > p2 > p3 \.\.\.\).*"
            r"Got \(0.3, 0.3, 0.3\) instead",
        ),
        ({"rank_probabilities": (0.5, 0.3, 0.3)}, "'rank_probabilities' .* strictly decreasing"),
        (
            {"mode": "generational", "aging": True},
            "'aging' parameter of EvoSampler must be False when mode='generational' .*Got True",
        ),
        ({"crossover_prob": 1.5}, r"'crossover_prob' parameter of EvoSampler must be a float"),
        ({"mutation_prob": -0.1}, "'mutation_prob'"),
        ({"elitism": -1}, "'elitism'"),
        ({"population_size": 4, "elitism": 5}, r"'elitism'.*\[0, population_size\] = \[0, 4\]"),
        ({"n_startup_trials": 0}, "'n_startup_trials'"),
        ({"seed": "x"}, "'seed'"),
        ({"aging": "yes"}, "'aging'"),
        ({"search_space": {"units": (1, 2)}}, "'search_space'"),
        ({"mutation_rates": 0.5}, "'mutation_rates'"),
    ],
)
def test_invalid_settings_raise_clear_errors(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidParameterError, match=match):
        EvoSampler(**kwargs)


def test_settings_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        EvoSampler(10)  # type: ignore[misc]


def test_lineage_is_recorded_for_every_trial() -> None:
    study = optuna.create_study(direction="maximize", sampler=EvoSampler(population_size=5, seed=3))
    study.optimize(genome_objective, n_trials=30)
    records = lineages(study)
    assert [r["origin"] for r in records[:5]] == ["random"] * 5
    # The objective is deterministic: two repeats find it so (tested below).
    assert [r["origin"] for r in records[5:7]] == ["repeat"] * 2
    bred = records[7:]
    assert all(r["origin"] == "bred" for r in bred)
    numbers = {t.number for t in study.trials}
    for trial, record in zip(study.trials[7:], bred, strict=True):
        assert record["parents"], "a bred child names its parents"
        assert all(p in numbers and p < trial.number for p in record["parents"])
        assert record["operators"]
        assert record["generation"] >= 1
        # The trial's parameters are exactly the child the sampler bred.
        assert trial.params == record["params"]
        genome = evohpo.Genome.from_json(record["genome"])
        assert genome.to_params() == trial.params
    # Generations grow along the lineage.
    by_number = {t.number: r for t, r in zip(study.trials, records, strict=True)}
    for record in bred:
        assert record["generation"] == 1 + max(
            by_number[p]["generation"] for p in record["parents"]
        )


def noisy_genome_objective(trial: optuna.Trial) -> float:
    # Noise of its own per trial, so repeated parameters get other values.
    return genome_objective(trial) + random.Random(trial.number).gauss(0.0, 0.1)


@pytest.fixture
def tournament_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every tournament the sampler runs (the real operator still runs)."""
    sizes: list[int] = []
    real = evohpo.evolution.sampler.select_tournament

    def spy(fitness, k, tournament_size, rng):  # type: ignore[no-untyped-def]
        sizes.append(tournament_size)
        return real(fitness, k, tournament_size, rng)

    monkeypatch.setattr(evohpo.evolution.sampler, "select_tournament", spy)
    return sizes


def test_a_deterministic_objective_is_repeated_twice_then_bred_greedily(
    tournament_sizes: list[int],
) -> None:
    study = optuna.create_study(direction="maximize", sampler=EvoSampler(population_size=8, seed=5))
    study.optimize(genome_objective, n_trials=30)
    records = lineages(study)
    best = max(study.trials[:8], key=lambda t: t.value)  # type: ignore[arg-type, return-value]
    for trial, record in zip(study.trials[8:10], records[8:10], strict=True):
        assert record["origin"] == "repeat"
        assert record["parents"] == [best.number]
        assert record["generation"] == 0
        assert trial.params == best.params == record["params"]
        assert evohpo.Genome.from_json(record["genome"]).to_params() == best.params
        assert trial.value == best.value
    assert all(r["origin"] == "bred" for r in records[10:])
    # Trusted values: every tournament covers the whole population.
    assert tournament_sizes == [8] * 20


def test_a_noisy_objective_is_repeated_once_and_keeps_tournaments_of_five(
    tournament_sizes: list[int],
) -> None:
    study = optuna.create_study(direction="maximize", sampler=EvoSampler(population_size=8, seed=5))
    study.optimize(noisy_genome_objective, n_trials=30)
    origins = [r["origin"] for r in lineages(study)]
    assert origins == ["random"] * 8 + ["repeat"] + ["bred"] * 21
    assert study.trials[8].params == max(study.trials[:8], key=lambda t: t.value).params  # type: ignore[arg-type, return-value]
    assert study.trials[8].value != max(t.value for t in study.trials[:8])  # type: ignore[type-var]
    assert tournament_sizes == [5] * 21


def test_repeats_that_cannot_reproduce_the_best_stop_after_two(
    tournament_sizes: list[int],
) -> None:
    # The objective gains a parameter after the random start: a repeat of the
    # best cannot have its parameters, so it measures no noise. Two tries, then
    # breeding as on a noisy objective (not repeats for ever).
    study = optuna.create_study(sampler=EvoSampler(seed=0, population_size=5))
    study.optimize(lambda t: (t.suggest_float("x", -5, 5) - 1) ** 2, n_trials=5)
    study.optimize(
        lambda t: (t.suggest_float("x", -5, 5) - 1) ** 2 + (t.suggest_float("y", -5, 5) - 2) ** 2,
        n_trials=20,
    )
    origins = [r["origin"] for r in lineages(study)]
    assert origins == ["random"] * 5 + ["repeat"] * 2 + ["bred"] * 18
    assert tournament_sizes == [5] * 18


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tournament_size": 5},
        {"mode": "generational"},
        {"aging": True},
    ],
)
def test_selection_adapts_only_when_asked_to_and_in_steady_state(kwargs: dict) -> None:  # type: ignore[type-arg]
    study = optuna.create_study(
        direction="maximize", sampler=EvoSampler(population_size=6, seed=0, **kwargs)
    )
    study.optimize(genome_objective, n_trials=20)
    assert [r["origin"] for r in lineages(study)] == ["random"] * 6 + ["bred"] * 14


def test_multi_objective_studies_are_not_repeated() -> None:
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=EvoSampler(population_size=6, seed=0)
    )
    study.optimize(lambda t: (genome_objective(t), len(t.params)), n_trials=20)
    assert [r["origin"] for r in lineages(study)] == ["random"] * 6 + ["bred"] * 14


def test_structural_operators_are_used_with_suggest_genome() -> None:
    study = optuna.create_study(direction="maximize", sampler=EvoSampler(population_size=6, seed=0))
    study.optimize(genome_objective, n_trials=80)
    records = lineages(study)
    ops = Counter(op for r in records for op in r["operators"])
    assert any(op.startswith("crossover") for op in ops)
    structural = {op for op in ops if "layer" in op and not op.startswith(("mutate", "crossover"))}
    assert {"insert_layer", "remove_layer", "duplicate_layer"} <= structural, ops
    # The structural operators are what change depth: bred children, not only the
    # random initial ones, come in several depths, and a mutated-only child is as
    # deep as its parent plus the layers its record says were added or removed.
    bred = [(t, r) for t, r in zip(study.trials, records, strict=True) if r["origin"] == "bred"]
    assert len({t.params["n_layers"] for t, _ in bred}) > 1
    steps = {"insert_layer": 1, "duplicate_layer": 1, "remove_layer": -1}
    checked = Counter()
    for trial, record in bred:
        if len(record["parents"]) != 1:
            continue  # a crossover child takes one parent's depth or the other's
        applied = [op for op in record["operators"] if op in steps]
        parent_depth = study.trials[record["parents"][0]].params["n_layers"]
        if len(applied) <= 1:
            expected = parent_depth + sum(steps[op] for op in applied)
            assert trial.params["n_layers"] == expected, record
            checked[len(applied)] += 1
    assert checked[0] > 0
    assert checked[1] > 0


def test_child_keeps_gene_ids_of_unchanged_parent_layers() -> None:
    study = optuna.create_study(direction="maximize", sampler=EvoSampler(population_size=4, seed=5))
    study.optimize(genome_objective, n_trials=30)
    records = lineages(study)
    shared = 0
    for record in records[4:]:
        child = evohpo.Genome.from_json(record["genome"])
        number = record["parents"][0]
        stored = records[number]["genome"]
        if stored is not None:
            parent_ids = {g.id for g in evohpo.Genome.from_json(stored).layers}
        else:  # random initial trial: ids derived by suggest_genome from its number
            parent_ids = {f"t{number}l{i}" for i in range(study.trials[number].params["n_layers"])}
        shared += len({g.id for g in child.layers} & parent_ids)
    assert shared > 0


def test_ga_improves_on_random_initial_population() -> None:
    study = optuna.create_study(
        direction="maximize", sampler=EvoSampler(population_size=8, seed=11)
    )
    study.optimize(genome_objective, n_trials=120)
    values = [t.value for t in study.trials]
    assert max(values[8:]) > max(values[:8])


def test_same_seed_gives_same_trials_and_other_seed_differs() -> None:
    def run(seed: int) -> list[dict]:  # type: ignore[type-arg]
        study = optuna.create_study(
            direction="maximize", sampler=EvoSampler(population_size=4, seed=seed)
        )
        study.optimize(genome_objective, n_trials=20)
        return [t.params for t in study.trials]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_threads_keep_the_seed_and_its_random_start() -> None:
    # optimize(n_jobs=2) calls reseed_rng in each thread; the streams are per
    # trial number already, so the seed stays and the random start reproduces.
    def run() -> tuple[dict[int, dict[str, Any]], int]:
        sampler = EvoSampler(population_size=6, seed=7)
        study = optuna.create_study(sampler=sampler)
        study.optimize(_mixed_objective, n_trials=12, n_jobs=2)
        start = {t.number: t.params for t in study.trials if t.number < 6}
        return start, sampler.settings()["seed"]

    first, second = run(), run()
    assert first == second
    assert first[1] == 7


def conditional_objective(trial: optuna.Trial) -> float:
    # Conditional, variable-length parameters with names of the user's own.
    n = trial.suggest_int("n_blocks", 1, 5)
    kind = trial.suggest_categorical("kind", ["linear", "quadratic"])
    total = 0.0
    for i in range(n):
        w = trial.suggest_float(f"block{i}_w", -4.0, 4.0)
        total += (w - i) ** 2 if kind == "quadratic" else abs(w - i)
    if kind == "quadratic":
        total += trial.suggest_int("penalty", 0, 10, step=2)
    return total + 2.0 * abs(n - 5)


def test_conditional_objective_evolves_deeper_parameters() -> None:
    study = optuna.create_study(sampler=EvoSampler(population_size=8, seed=2))
    study.optimize(conditional_objective, n_trials=150)
    records = lineages(study)
    assert [r["origin"] for r in records[8:10]] == ["repeat"] * 2
    assert all(r["origin"] == "bred" for r in records[10:])
    # Deep, conditional parameters are inherited from the population, not redrawn:
    # each bred trial's block4_w, when used, comes from its record.
    inherited = [
        t
        for t, r in zip(study.trials, records, strict=True)
        if r["origin"] == "bred" and "block4_w" in t.params and "block4_w" in r["params"]
    ]
    assert inherited
    for t in inherited:
        assert t.params["block4_w"] == r_params(t)["block4_w"]


def best_values(make_sampler: Callable[[int], optuna.samplers.BaseSampler]) -> list[float]:
    """The best value of 150 trials of ``conditional_objective``, one study per seed 0-4."""
    values = []
    for seed in range(5):
        study = optuna.create_study(sampler=make_sampler(seed))
        study.optimize(conditional_objective, n_trials=150)
        values.append(study.best_value)
    return values


def clearly_better(values: list[float], baseline: list[float]) -> bool:
    """Lower on every seed, and at most half of ``baseline`` on average."""
    wins = all(v < b for v, b in zip(values, baseline, strict=True))
    return wins and statistics.fmean(values) <= 0.5 * statistics.fmean(baseline)


def test_bred_trials_beat_random_search_at_the_same_budget() -> None:
    def evo(seed: int) -> optuna.samplers.BaseSampler:
        return EvoSampler(population_size=8, seed=seed)

    def random_search(seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)

    def other_random_search(seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed + 1000)

    baseline = best_values(random_search)
    assert clearly_better(best_values(evo), baseline), (best_values(evo), baseline)
    # The bar is one random search itself does not clear.
    assert not clearly_better(best_values(other_random_search), baseline)


def r_params(trial: optuna.trial.FrozenTrial) -> dict:  # type: ignore[type-arg]
    return trial.user_attrs[LINEAGE_ATTR]["params"]


def branch_objective(trial: optuna.Trial) -> float:
    # Two branches that share no parameter: a child inherits the other branch's
    # parameters from the pool, unused.
    branch = trial.suggest_categorical("branch", ["a", "b"])
    names = [f"{branch}{i}" for i in range(3)]
    offset = 0.2 if branch == "a" else 0.0
    return sum((trial.suggest_float(name, 0, 1) - 0.7) ** 2 for name in names) + offset


def test_every_reported_mutation_is_of_a_parameter_the_trial_used() -> None:
    study = optuna.create_study(sampler=EvoSampler(population_size=6, seed=3))
    study.optimize(branch_objective, n_trials=120)
    mutated_only = 0
    for trial in study.trials:
        record = trial.user_attrs[LINEAGE_ATTR]
        ops = record["operators"]
        mutations = [op.removeprefix("mutate:") for op in ops if op.startswith("mutate:")]
        assert set(mutations) <= set(trial.params), record
        if record["origin"] == "bred" and len(record["parents"]) == 1:
            # A mutated-only child differs from its parent in what it uses.
            mutated_only += 1
            assert mutations
            assert trial.params != study.trials[record["parents"][0]].params
    assert mutated_only > 10


def test_dead_mutations_are_dropped_from_the_record_when_the_trial_ends() -> None:
    # Forced: every child is a crossover of parents from both branches, so it
    # holds both branches' parameters and mutations of the unused branch occur.
    sampler = EvoSampler(population_size=6, seed=5, crossover_prob=1.0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(branch_objective, n_trials=80)
    dropped = 0
    for trial in study.trials:
        record = trial.user_attrs[LINEAGE_ATTR]
        unused = set(record["params"]) - set(trial.params)
        assert not {f"mutate:{name}" for name in unused} & set(record["operators"]), record
        dropped += bool(unused)
    assert dropped > 0


def test_parameters_next_to_the_genome_evolve_too() -> None:
    def objective(trial: optuna.Trial) -> float:
        genome = suggest_genome(trial, SMALL_SPACE)
        epochs = trial.suggest_int("epochs", 1, 100)
        scale = trial.suggest_categorical("scale", ["small", "large"])
        return genome_objective_value(genome) - abs(epochs - 77) / 10 - (scale == "small")

    # Tournaments of 5 rather than the greedy ones of a deterministic objective,
    # whose two best parents soon agree on these parameters.
    sampler = EvoSampler(population_size=6, tournament_size=5, seed=4)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=120)
    bred = [t for t in study.trials if t.user_attrs[LINEAGE_ATTR]["origin"] == "bred"]
    assert len(bred) == 114
    ops = Counter(op for t in bred for op in t.user_attrs[LINEAGE_ATTR]["operators"])
    assert ops["mutate:epochs"] > 5
    # Reported only when the child's values differ from both parents': rarer once
    # the population agrees on them.
    assert ops["crossover:uniform"] > 0
    for trial in bred:
        record = trial.user_attrs[LINEAGE_ATTR]
        # The sampler answered every parameter from the child it bred.
        assert trial.params == record["params"]
        genome = evohpo.Genome.from_json(record["genome"])
        assert {
            **genome.to_params(),
            "epochs": trial.params["epochs"],
            "scale": trial.params["scale"],
        } == trial.params
        if len(record["parents"]) == 1 and "mutate:epochs" not in record["operators"]:
            # Inherited, not redrawn.
            assert trial.params["epochs"] == study.trials[record["parents"][0]].params["epochs"]
    # And it is selected for: late children are near the best number of epochs.
    late = [t.params["epochs"] for t in bred[-30:]]
    assert sum(abs(e - 77) for e in late) / len(late) < 15


def genome_objective_value(genome: evohpo.Genome) -> float:
    score = -abs(genome.depth - 3)
    score -= sum(abs(math.log2(layer.units / 32)) for layer in genome.layers) / genome.depth
    return score - abs(math.log10(genome.learning_rate) + 2)


def test_failed_pruned_and_running_trials_are_not_parents() -> None:
    study = optuna.create_study(sampler=EvoSampler(population_size=3, seed=4))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10, 10)
        if trial.number % 4 == 1:
            raise RuntimeError("training failed")
        if trial.number % 4 == 2:
            raise optuna.TrialPruned()
        return x * x

    study.optimize(objective, n_trials=40, catch=(RuntimeError,))
    running = study.ask()  # left running on purpose
    running.suggest_float("x", -10, 10)
    study.optimize(objective, n_trials=8, catch=(RuntimeError,))
    ok = {t.number for t in study.trials if t.state == TrialState.COMPLETE}
    for record in lineages(study):
        assert set(record["parents"]) <= ok


def test_enqueued_trials_are_honoured_and_marked() -> None:
    study = optuna.create_study(sampler=EvoSampler(population_size=3, seed=4))
    study.optimize(lambda t: t.suggest_float("x", -10, 10) ** 2, n_trials=5)
    study.enqueue_trial({"x": 0.5})
    study.optimize(lambda t: t.suggest_float("x", -10, 10) ** 2, n_trials=1)
    last = study.trials[-1]
    assert last.params == {"x": 0.5}
    assert last.user_attrs[LINEAGE_ATTR]["origin"] == "enqueued"


def test_parameters_the_child_lacks_are_sampled_inside_their_range() -> None:
    study = optuna.create_study(sampler=EvoSampler(population_size=3, seed=4))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=6)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.25, 0.5)  # a narrower range than the parents'
        y = trial.suggest_int("y", 3, 9, step=3)  # a new parameter
        return x + y

    study.optimize(objective, n_trials=10)
    for t in study.trials[6:]:
        assert 0.25 <= t.params["x"] <= 0.5
        assert t.params["y"] in (3, 6, 9)


def test_ask_tell_interface_works() -> None:
    study = optuna.create_study(sampler=EvoSampler(population_size=3, seed=9))
    for _ in range(12):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", -1, 1) ** 2)
    assert len(study.trials) == 12
    assert study.trials[-1].user_attrs[LINEAGE_ATTR]["origin"] == "bred"


@pytest.mark.parametrize("mode", ["generational", "steady_state_aging", "rank"])
def test_modes_breed_valid_children(mode: str) -> None:
    kwargs: dict = {"population_size": 5, "seed": 1}  # type: ignore[type-arg]
    if mode == "generational":
        kwargs.update(mode="generational", elitism=2)
    elif mode == "steady_state_aging":
        kwargs.update(aging=True, elitism=1)
    else:
        # A fixed size: with "auto", the first two trials after the start repeat.
        kwargs.update(selection="rank", rank_probabilities=(0.7, 0.2, 0.1), tournament_size=3)
    study = optuna.create_study(direction="maximize", sampler=EvoSampler(**kwargs))
    study.optimize(genome_objective, n_trials=40)
    records = lineages(study)
    assert all(r["origin"] == "bred" for r in records[5:])
    assert all(SMALL_SPACE.contains(evohpo.Genome.from_params(t.params)) for t in study.trials)
    if mode == "generational":
        # Trials 5..9 form generation 1, 10..14 generation 2, ...
        assert [r["generation"] for r in records[5:15]] == [1] * 5 + [2] * 5
        for record in records[10:15]:
            # Parents come from generation 1 or are elites of earlier ones.
            assert all(records[p]["generation"] <= 1 for p in record["parents"])
    if mode == "steady_state_aging":
        assert max(r["generation"] for r in records) >= 3


def _mo_objective(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 0, 1)
    y = trial.suggest_float("y", 0, 1)
    return x + y * y, 1 - x + y


def test_multi_objective_aging_breeds_from_the_youngest() -> None:
    sampler = EvoSampler(population_size=4, aging=True, elitism=0, seed=2)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(_mo_objective, n_trials=40)
    records = lineages(study)
    for number, record in enumerate(records[4:], start=4):
        # Sequential trials: the population is the four before this one.
        assert all(number - 4 <= p < number for p in record["parents"]), (number, record)


def test_multi_objective_generational_breeds_from_the_previous_generation() -> None:
    sampler = EvoSampler(population_size=5, mode="generational", elitism=1, seed=2)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(_mo_objective, n_trials=25)
    records = lineages(study)
    assert [r["generation"] for r in records[5:15]] == [1] * 5 + [2] * 5
    for record in records[10:15]:
        assert all(records[p]["generation"] <= 1 for p in record["parents"]), record


def test_multi_objective_tournaments_follow_the_crowded_order() -> None:
    from evohpo.evolution.sampler import _crowded_order_scores

    # Maximised: [2, 2] dominates all; then the front of [1, 0] and [0, 1]; then [0, 0].
    scores = _crowded_order_scores([[0.0, 0.0], [1.0, 0.0], [2.0, 2.0], [0.0, 1.0]])
    assert scores[2] > max(scores[1], scores[3])
    assert min(scores[1], scores[3]) > scores[0]
    assert len(set(scores)) == 4


def test_multi_objective_uses_pareto_selection() -> None:
    sampler = EvoSampler(population_size=8, seed=3)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", 0, 1)
        y = trial.suggest_float("y", 0, 1)
        return x + y * y, 1 - x + y

    study.optimize(objective, n_trials=80)
    front = study.best_trials
    assert len(front) >= 5
    # Selection pushes y (which only hurts both objectives) towards 0.
    late = [t.params["y"] for t in study.trials[-20:]]
    early = [t.params["y"] for t in study.trials[:8]]
    assert sum(late) / len(late) < sum(early) / len(early)


def test_more_workers_than_population_threads() -> None:
    study = optuna.create_study(direction="maximize", sampler=EvoSampler(population_size=2, seed=0))
    study.optimize(genome_objective, n_trials=24, n_jobs=4)
    assert len(study.trials) == 24
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert any(r["origin"] == "bred" for r in lineages(study))


_RUN_SCRIPT = textwrap.dedent(
    """
    import math, sys, optuna
    from evohpo import EvoSampler, SearchSpace, suggest_genome
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, name, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    space = SearchSpace(max_layers=4, units=(4, 64))

    def objective(trial):
        g = suggest_genome(trial, space)
        return -abs(g.depth - 3) - abs(math.log10(g.learning_rate) + 2) - sum(
            abs(math.log2(layer.units / 32)) for layer in g.layers) / g.depth

    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                sampler=EvoSampler(population_size=4, seed=42),
                                load_if_exists=True)
    study.optimize(objective, n_trials=total - len(study.trials))
    """
)


def _run(storage: str, name: str, total: int) -> None:
    subprocess.run(
        [sys.executable, "-c", _RUN_SCRIPT, storage, name, str(total)],
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_resume_in_separate_processes_equals_one_run(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'resume.db'}"
    _run(storage, "whole", 20)
    _run(storage, "split", 10)
    _run(storage, "split", 20)
    whole = optuna.load_study(study_name="whole", storage=storage)
    split = optuna.load_study(study_name="split", storage=storage)
    assert [t.params for t in whole.trials] == [t.params for t in split.trials]
    assert lineages(whole) == lineages(split)
    assert len(split.trials) == 20


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_several_worker_processes_share_one_storage(tmp_path: Path, kind: str) -> None:
    if kind == "sqlite":
        storage_url = f"sqlite:///{tmp_path / 'workers.db'}"
    else:
        storage_url = str(tmp_path / "journal.log")
    script = textwrap.dedent(
        f"""
        import math, sys, optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        from evohpo import EvoSampler, SearchSpace, suggest_genome
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        url = {storage_url!r}
        storage = url if url.startswith("sqlite") else JournalStorage(JournalFileBackend(url))
        space = SearchSpace(max_layers=4, units=(4, 64))
        def objective(trial):
            g = suggest_genome(trial, space)
            return -abs(g.depth - 3) - abs(math.log10(g.learning_rate) + 2)
        study = optuna.create_study(storage=storage, study_name="shared", direction="maximize",
                                    sampler=EvoSampler(population_size=3, seed=0),
                                    load_if_exists=True)
        study.optimize(objective, n_trials=15)
        """
    )
    # Create the study first so that workers do not race on its creation.
    subprocess.run(
        [sys.executable, "-c", script.replace("n_trials=15", "n_trials=0")], check=True, cwd=REPO
    )
    workers = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO) for _ in range(3)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0, 0]
    if kind == "sqlite":
        study = optuna.load_study(study_name="shared", storage=storage_url)
    else:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        study = optuna.load_study(
            study_name="shared", storage=JournalStorage(JournalFileBackend(storage_url))
        )
    trials = study.trials
    assert len(trials) == 45
    assert sorted(t.number for t in trials) == list(range(45))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    records = lineages(study)
    assert sum(r["origin"] == "bred" for r in records) >= 30
    assert max(r["generation"] for r in records) >= 2


def test_sampler_pickles_and_copies_with_its_settings() -> None:
    import copy
    import pickle

    sampler = EvoSampler(population_size=3, seed=12, crossover_prob=0.4)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=6)
    for clone_ in (pickle.loads(pickle.dumps(sampler)), copy.deepcopy(sampler)):
        assert clone_._seed == 12
        assert clone_._crossover_prob == 0.4
        assert len(clone_._caches) == 0


def test_one_sampler_serves_two_in_memory_studies() -> None:
    # In-memory storages number trials from 0 each: caches must not mix them up.
    sampler = EvoSampler(population_size=3, seed=1)
    first = optuna.create_study(sampler=sampler)
    first.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=8)
    second = optuna.create_study(sampler=sampler)
    second.optimize(lambda t: t.suggest_float("y", 0, 1), n_trials=8)
    for trial in second.trials:
        assert list(trial.params) == ["y"]
        assert set(trial.user_attrs[LINEAGE_ATTR]["params"]) <= {"y"}


def test_caches_go_with_their_storage() -> None:
    # Caches are keyed by the storage object itself, weakly: a new storage (even at
    # a dead one's address) starts empty, and a dropped study leaves nothing behind.
    sampler = EvoSampler(population_size=3, seed=0)
    for _ in range(20):
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)
        study.ask().suggest_float("x", 0, 1)  # asked, never told
    del study
    gc.collect()
    assert len(sampler._caches) == 0


def _running_ids(sampler: EvoSampler, study: optuna.Study) -> set[int]:
    return set(sampler._caches[study._storage][study._study_id].running)


def test_records_of_trials_that_ended_elsewhere_are_dropped_and_running_ones_kept() -> None:
    sampler = EvoSampler(population_size=3, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=6)
    abandoned = [study.ask() for _ in range(5)]
    for trial in abandoned:
        trial.suggest_float("x", 0, 1)
    still_running = study.ask()
    first = still_running.suggest_float("x", 0, 1)
    record = _stored_record(study, still_running)
    assert record["origin"] == "bred"
    assert first == record["params"]["x"]
    # Another process fails the abandoned trials: no after_trial here.
    for trial in abandoned:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    assert {t._trial_id for t in abandoned} <= _running_ids(sampler, study)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert _running_ids(sampler, study) == {still_running._trial_id}
    # The trial still running keeps its record in memory: a later suggest answers
    # from it instead of breeding it again from a population that has moved on.
    still_running.suggest_float("y", 0, 1)
    assert _stored_record(study, still_running) == record
    study.tell(still_running, 0.5)
    assert _running_ids(sampler, study) == set()


def _stored_record(study: optuna.Study, trial: optuna.Trial) -> dict:  # type: ignore[type-arg]
    return study._storage.get_trial_user_attrs(trial._trial_id)[LINEAGE_ATTR]


def test_a_retried_trial_keeps_its_record_and_origin() -> None:
    # Optuna's retry callbacks re-enqueue a failed trial with its parameters and
    # attributes: the retry is the same child, "retried" is no origin of its own.
    assert "retried" not in ORIGINS
    study = optuna.create_study(direction="maximize", sampler=EvoSampler(population_size=3, seed=1))
    study.optimize(genome_objective, n_trials=8)

    def fails(trial: optuna.Trial) -> float:
        suggest_genome(trial, SMALL_SPACE)
        raise RuntimeError("worker lost")

    study.optimize(fails, n_trials=1, catch=(RuntimeError,))
    failed = study.trials[-1]
    assert failed.user_attrs[LINEAGE_ATTR]["origin"] == "bred"
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, failed)
    study.optimize(genome_objective, n_trials=1)
    retry = study.trials[-1]
    assert retry.system_attrs["failed_trial"] == failed.number
    assert retry.params == failed.params
    assert retry.user_attrs[LINEAGE_ATTR] == failed.user_attrs[LINEAGE_ATTR]


def test_a_new_storage_gets_a_view_of_its_own() -> None:
    sampler = EvoSampler(population_size=3, seed=0)
    first = optuna.create_study(sampler=sampler, direction="maximize")
    first.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=10)
    second = optuna.create_study(sampler=sampler, direction="maximize")
    y = optuna.distributions.FloatDistribution(0, 1)
    second.add_trials(
        [
            optuna.trial.create_trial(params={"y": v / 12}, distributions={"y": y}, value=v / 12)
            for v in range(12)
        ]
    )
    second.optimize(lambda t: t.suggest_float("y", 0, 1), n_trials=1)
    child = second.trials[-1].user_attrs["evohpo"]
    # The first trial after the start repeats the best trial of this study.
    assert child["origin"] == "repeat"
    assert child["parents"] == [11]
    assert child["params"] == {"y": 11 / 12}


BODY_SPACE = SearchSpace(
    input_shape=(1, 16),
    max_layers=2,
    units=(4, 32),
    max_blocks=3,
    channels=(4, 32),
    pools=("none", "max"),
)


def body_objective(trial: optuna.Trial) -> float:
    genome = suggest_genome(trial, BODY_SPACE)
    epochs = trial.suggest_int("epochs", 1, 10)
    assert BODY_SPACE.violations(genome) == []
    trial.set_user_attr("genome", genome.to_json())
    # Best: two max-pooling blocks of 16 channels, lr near 1e-2, 7 epochs.
    blocks = genome.blocks or ()
    score = -3 * abs(len(blocks) - 2) - sum(block.pool != "max" for block in blocks)
    score -= sum(abs(math.log2(block.channels / 16)) for block in blocks) / max(1, len(blocks))
    return score - abs(math.log10(genome.learning_rate) + 2) - abs(epochs - 7) / 10


@pytest.mark.parametrize("given_space", [True, False])
def test_body_genomes_breed_valid_children(given_space: bool) -> None:
    sampler = EvoSampler(
        population_size=5, seed=2, search_space=BODY_SPACE if given_space else None
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(body_objective, n_trials=30)
    records = lineages(study)
    bred = [(t, r) for t, r in zip(study.trials, records, strict=True) if r["origin"] == "bred"]
    assert len(bred) >= 20
    shared = 0
    for trial, record in bred:
        # Bred as a genome (not as loose parameters), inside the space: nothing to repair.
        assert record["genome"] is not None
        child = evohpo.Genome.from_json(record["genome"])
        assert BODY_SPACE.violations(child) == []
        assert "repaired" not in trial.user_attrs
        assert trial.params == {**child.to_params(), "epochs": trial.params["epochs"]}
        # The objective got the child with the block and layer ids the sampler bred.
        assert evohpo.Genome.from_json(trial.user_attrs["genome"]).to_json() == child.to_json()
        parent = study.trials[record["parents"][0]]
        parent_genome = evohpo.Genome.from_json(parent.user_attrs["genome"])
        parent_ids = {block.id for block in parent_genome.blocks or ()}
        shared += len({block.id for block in child.blocks or ()} & parent_ids)
    assert shared > 0, "children keep the ids of unchanged parent blocks"
    depths = {t.params["n_blocks"] for t, _ in bred}
    assert len(depths) > 1
    assert max(t.value for t, _ in bred) > max(t.value for t in study.trials[:5])  # type: ignore[operator]


@pytest.mark.parametrize("given_space", [True, False], ids=["search_space", "from_trials"])
def test_residual_layers_evolve_through_the_sampler_with_their_ids(given_space: bool) -> None:
    space = SearchSpace(max_layers=3, units=(4, 32), dense_residual=(False, True))

    def objective(trial: optuna.Trial) -> float:
        genome = suggest_genome(trial, space)
        trial.set_user_attr("ids", [layer.id for layer in genome.layers])
        return float(sum(layer.residual for layer in genome.layers)) - genome.depth / 10

    sampler = EvoSampler(population_size=4, seed=3, search_space=space if given_space else None)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=24)
    bred = [t for t in study.trials if t.user_attrs[LINEAGE_ATTR]["origin"] == "bred"]
    assert len(bred) > 10
    for trial in study.trials:
        depth = trial.params["n_layers"]
        assert all(f"layer{i}.residual" in trial.params for i in range(depth))
    for trial in bred:
        # The sampler answered every parameter (none drawn independently), so the
        # suggested genome is the bred one and carries its gene ids.
        record = evohpo.Genome.from_json(trial.user_attrs[LINEAGE_ATTR]["genome"])
        assert trial.user_attrs["ids"] == [layer.id for layer in record.layers]
    assert any(p.endswith(".residual") and v for t in bred for p, v in t.params.items())


def _mixed_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5, 5)
    y = trial.suggest_int("y", -5, 5)
    c = trial.suggest_categorical("c", ["a", "b"])
    return (x - 1) ** 2 + (y - 2) ** 2 + (c == "b")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_children_do_not_repeat_parameters_evaluated_before(seed: int) -> None:
    # One mutated gene of an int or a categorical often lands on a point tried
    # before; such a child is bred again (every evaluated trial counts, not only
    # the breeding pool). Before, 16-24 of these 60 trials were such repeats.
    study = optuna.create_study(sampler=EvoSampler(seed=seed, population_size=5))
    study.optimize(_mixed_objective, n_trials=60)
    keys = [tuple(sorted(t.params.items())) for t in study.trials]
    probes = sum(r["origin"] == "repeat" for r in lineages(study))
    assert len(keys) - len(set(keys)) - probes <= 1


def _repeated_sets(study: optuna.Study) -> int:
    """Trials whose parameters an earlier trial had, less the sampler's noise probes."""
    keys = [tuple(sorted(t.params.items())) for t in study.trials]
    probes = sum(r["origin"] == "repeat" for r in lineages(study))
    return len(keys) - len(set(keys)) - probes


@pytest.mark.parametrize("seed", [0, 1])
def test_children_of_a_conditional_objective_do_not_repeat_trials(seed: int) -> None:
    # A child record holds the parameters of both branches; it repeats a trial when
    # it agrees on those the trial used. Before, 41 of these 100 trials were repeats.
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -5, 5)
        if trial.suggest_categorical("c", ["a", "b"]) == "a":
            return x * x + trial.suggest_float("z", 0, 1)
        return x * x + trial.suggest_int("w", 0, 3)

    study = optuna.create_study(sampler=EvoSampler(seed=seed))
    study.optimize(objective, n_trials=100)
    assert _repeated_sets(study) <= 2


def test_children_do_not_repeat_pruned_trials() -> None:
    # Before, 35 of these 150 trials re-ran the parameters of a pruned trial.
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -5, 5)
        y = trial.suggest_int("y", -3, 3)
        c = trial.suggest_categorical("c", [0, 1, 2])
        for step in range(9):
            value = x * x + y * y + c + 10 / (step + 1)
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    study = optuna.create_study(
        sampler=EvoSampler(seed=0), pruner=optuna.pruners.SuccessiveHalvingPruner()
    )
    study.optimize(objective, n_trials=150)
    pruned: dict[tuple[Any, ...], int] = {}  # parameters -> the first pruned trial
    for t in study.trials:
        if t.state == optuna.trial.TrialState.PRUNED:
            pruned.setdefault(tuple(sorted(t.params.items())), t.number)
    again = [
        t.number
        for t in study.trials
        if pruned.get(tuple(sorted(t.params.items())), t.number) < t.number
    ]
    assert len(again) <= 1


def test_trials_open_at_once_get_different_parameters() -> None:
    study = optuna.create_study(sampler=EvoSampler(seed=0, population_size=5, tournament_size=3))
    for _ in range(10):  # the random start, then batches of 8 open trials
        trial = study.ask()
        study.tell(trial, _mixed_objective(trial))
    for _ in range(5):
        batch = [study.ask() for _ in range(8)]
        values = [_mixed_objective(trial) for trial in batch]
        keys = {tuple(sorted(trial.params.items())) for trial in batch}
        assert len(keys) == len(batch)
        for trial, value in zip(batch, values, strict=True):
            study.tell(trial, value)


def test_a_mutation_a_wrapper_overrides_is_not_in_the_lineage() -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -5, 5)
        return (x - 1) ** 2 + (trial.suggest_categorical("c", ["a", "b"]) == "b")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.PartialFixedSampler(
            {"c": "b"}, EvoSampler(seed=0, population_size=5)
        )
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=30)
    records = lineages(study)
    assert all("mutate:c" not in r["operators"] for r in records)
    assert all(t.params["c"] == "b" for t in study.trials)


def test_children_under_partial_fixed_sampler_do_not_repeat_trials() -> None:
    # A child whose only change is to the fixed parameter equals its parent once
    # fixed: it is bred again. Before, 27 of these 100 trials were repeats.
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -5, 5)
        y = trial.suggest_int("y", -5, 5)
        return x * x + y * y + trial.suggest_float("z", -5, 5) ** 2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.PartialFixedSampler({"y": 0}, EvoSampler(seed=0))
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=100)
    assert _repeated_sets(study) <= 1


def test_a_sampler_space_other_than_the_objectives_is_named_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sampler_space = SearchSpace(max_layers=4, units=(4, 64))
    objective_space = SearchSpace(max_layers=2, units=(100, 200))

    def objective(trial: optuna.Trial) -> float:
        genome = suggest_genome(trial, objective_space)
        return -abs(genome.depth - 2) + genome.layers[0].units / 1000

    study = optuna.create_study(
        direction="maximize",
        sampler=EvoSampler(seed=0, population_size=4, search_space=sampler_space),
    )
    with caplog.at_level("WARNING", logger="evohpo"):
        study.optimize(objective, n_trials=12)
    warned = [r.getMessage() for r in caplog.records if "outside the distribution" in r.message]
    assert warned, "a bred value outside the objective's space was drawn silently"
    # Once per parameter, however many trials hit it.
    names = [message.split("'")[1] for message in warned]
    assert len(names) == len(set(names))
    assert "layer0.units" in names
