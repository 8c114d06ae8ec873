"""Every benchmark runs end to end in its fast mode and writes its tables."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

pytestmark = pytest.mark.slow


def run_bench(script: str, *args: str, results: Path) -> str:
    env = {**os.environ, "EVOHPO_BENCH_RESULTS": str(results), "EVOHPO_NO_PROGRESS": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_peers_fast_mode_runs_every_method(tmp_path: Path) -> None:
    out = run_bench("peers.py", "--fast", results=tmp_path)
    rows = read_rows(tmp_path / "peers_fast.csv")
    assert [r["method"] for r in rows] == [
        "evohpo GA",
        "evohpo TPE",
        "evohpo random",
        "GASearchCV",
        "OptunaSearchCV",
        "MLPClassifier",
    ]
    runs = read_rows(tmp_path / "peers_runs_fast.csv")
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in runs)
    assert all(int(r["trials"]) >= 1 for r in runs)
    assert "wine: evohpo GA median" in out


def test_peers_resume_skips_runs_already_done(tmp_path: Path) -> None:
    args = ("--fast", "--methods", "MLPClassifier", "--seeds")
    run_bench("peers.py", *args, "0", "1", results=tmp_path)
    first = read_rows(tmp_path / "peers_runs_fast.csv")
    out = run_bench("peers.py", *args, "0", "1", "2", "--resume", results=tmp_path)
    runs = read_rows(tmp_path / "peers_runs_fast.csv")
    assert runs[:2] == first
    assert [r["seed"] for r in runs] == ["0", "1", "2"]
    assert out.count("MLPClassifier   seed") == 1  # only seed 2 ran again


def test_throughput_fast_mode_reports_rates_and_the_trial_split(tmp_path: Path) -> None:
    out = run_bench("throughput.py", "--fast", results=tmp_path)
    for name in ("matmul", "training", "trial", "storage", "stacked"):
        assert read_rows(tmp_path / f"throughput_{name}.csv"), name
    assert "time per trial" in out
    training = read_rows(tmp_path / "throughput_training.csv")
    assert all(float(r["trainer GFLOP/s"]) > 0 for r in training)
    # The trial split of a study trained one trial at a time and one trained two at a time.
    trial = read_rows(tmp_path / "throughput_trial.csv")
    assert {"ms/trial (1)", "ms/trial (2)"} <= set(trial[0])
    assert trial[0]["part"].startswith("training")
    assert float(trial[0]["ms/trial (2)"]) > 0
    assert "2 of 2 trials trained in stacks (1 stack of 2)" in out  # batch_trials=2
    # Section 4: every population at every k, stacked against one genome at a time.
    columns = [
        "population",
        "k",
        "stacks",
        "solo trials/s",
        "stacked trials/s",
        "speed-up",
        "stacked GFLOP/s",
        "% of peak (stacked)",
        "useful % of peak",
        "solo % of peak",
    ]
    assert "| " + " | ".join(columns) + " |" in out
    stacked = read_rows(tmp_path / "throughput_stacked.csv")
    assert list(stacked[0]) == columns
    populations = ("1x64, batch 32", "2x256, batch 128", "mixed")
    assert [(r["population"], r["k"]) for r in stacked] == [
        (population, k) for population in populations for k in ("1", "4")
    ]
    for row in stacked:
        for column in ("solo trials/s", "stacked trials/s", "stacked GFLOP/s"):
            assert float(row[column]) > 0, row
        assert sum(int(size) for size in row["stacks"].split("+")) == int(row["k"]), row
    # 1x64 stacks; on the CPU, 2x256 (arithmetic-bound) trains one by one.
    assert [r["stacks"] for r in stacked[:4]] == ["1", "4", "1", "1+1+1+1"]


def test_sampler_overhead_fast(tmp_path: Path) -> None:
    run_bench("sampler_overhead.py", "--checkpoints", "5", "10", "--measure", "3", results=tmp_path)
    rows = read_rows(tmp_path / "sampler_overhead.csv")
    assert [r["sampler"] for r in rows] == ["EvoSampler", "TPESampler"]
    assert set(rows[0]) == {"sampler", "ms/trial at 5", "ms/trial at 10"}


def test_sampler_quality_fast(tmp_path: Path) -> None:
    run_bench("sampler_quality.py", "--seeds", "1", "--trials", "12", results=tmp_path)
    rows = read_rows(tmp_path / "sampler_quality.csv")
    assert len(rows) == 5
    assert "best after 12 (mean ± sd)" in rows[0]


def test_sampler_quality_with_noise_reports_true_scores(tmp_path: Path) -> None:
    # Noise of sd 2 puts the best observed value of 12 trials far above the
    # maximum true score (1.0): a table of observed values would show it.
    out = run_bench(
        "sampler_quality.py", "--seeds", "2", "--trials", "12", "--noise", "2", results=tmp_path
    )
    assert "noise sd 2" in out
    rows = read_rows(tmp_path / "sampler_quality_noise2.csv")
    assert len(rows) == 5
    for row in rows:
        for column in ("best after 6 (mean ± sd)", "best after 12 (mean ± sd)"):
            assert 0.0 <= float(row[column].split(" ± ")[0]) <= 1.0, row


def test_sampler_settings_fast(tmp_path: Path) -> None:
    args = ("--seeds", "1", "--trials", "8", "--jobs", "1", "--settings", "defaults", "aging")
    run_bench("sampler_settings.py", *args, results=tmp_path)
    rows = read_rows(tmp_path / "sampler_settings.csv")
    assert [r["setting"] for r in rows] == ["defaults", "aging"]
    objectives = ("layerwise", "second target", "define-by-run", "layerwise + noise")
    assert set(rows[0]) == {"setting", *objectives}
    for row in rows:
        after_4, after_8 = (float(v) for v in row["layerwise"].split(" / "))
        assert 0.0 <= after_4 <= after_8 <= 1.0, row


def test_sampler_settings_runs_only_the_objectives_asked_for(tmp_path: Path) -> None:
    args = ("--seeds", "1", "--trials", "4", "--jobs", "1", "--settings", "defaults")
    run_bench("sampler_settings.py", *args, "--objectives", "define-by-run", results=tmp_path)
    rows = read_rows(tmp_path / "sampler_settings.csv")
    assert set(rows[0]) == {"setting", "define-by-run"}


def test_estimator_quality_fast(tmp_path: Path) -> None:
    args = ("--fast", "--datasets", "digits", "--seeds", "0", "--samplers", "ga")
    run_bench("estimator_quality.py", *args, results=tmp_path)
    rows = read_rows(tmp_path / "estimator_quality_fast.csv")
    assert [r["method"] for r in rows] == ["EvoSearchClassifier(ga)", "MLPClassifier()"]


def test_estimator_quality_conv_rows_and_reference_cnn(tmp_path: Path) -> None:
    args = ("--fast", "--datasets", "digits", "--seeds", "0", "--samplers", "ga")
    flags = ("--conv", "--reference-cnn", "--no-dense", "--no-mlp")
    run_bench("estimator_quality.py", *args, *flags, results=tmp_path)
    rows = read_rows(tmp_path / "estimator_quality_fast.csv")
    assert [r["method"] for r in rows] == [
        "EvoSearchClassifier(ga, input_shape=(1, 8, 8))",
        "reference CNN (MNIST-1D paper)",
    ]
    runs = read_rows(tmp_path / "estimator_quality_runs.csv")
    assert '"blocks"' in runs[0]["detail"]  # the best genome has a convolutional body
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in runs)


def test_scaling_fast_on_sqlite(tmp_path: Path) -> None:
    args = ("--trials", "2", "--epochs", "1", "--storages", "sqlite")
    run_bench("scaling.py", *args, results=tmp_path)
    rows = read_rows(tmp_path / "scaling.csv")
    assert [r["workers"] for r in rows] == ["1", "2"]


def test_ensemble_fast_mode_scores_every_size(tmp_path: Path) -> None:
    out = run_bench(
        "ensemble.py", "--fast", "--datasets", "wine", "--sizes", "1", "3", results=tmp_path
    )
    rows = read_rows(tmp_path / "ensemble_fast.csv")
    assert [(r["data"], r["ensemble_size"]) for r in rows] == [("wine", "1"), ("wine", "3")]
    assert rows[0]["gain over 1 (mean, min, max)"].startswith("+0.0000")
    runs = read_rows(tmp_path / "ensemble_runs_fast.csv")
    assert [len(r["members"].split()) for r in runs] == [1, 3]
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in runs)
    assert "ensemble_size" in out
    summary = run_bench(
        "ensemble.py", "--summarize", str(tmp_path / "ensemble_runs_fast.csv"), results=tmp_path
    )
    assert "| wine | 3 | 1 |" in summary


def test_inheritance_quick_mode_compares_both_arms(tmp_path: Path) -> None:
    out = run_bench("inheritance.py", "--quick", results=tmp_path)
    rows = read_rows(tmp_path / "inheritance_quick.csv")
    assert [(r["data"], r["arm"]) for r in rows] == [("digits", "scratch"), ("digits", "inherit")]
    scratch, inherit = read_rows(tmp_path / "inheritance_runs_quick.csv")
    for run in (scratch, inherit):
        assert 0.0 <= float(run["test"]) <= 1.0, run
        assert int(run["steps"]) > 0, run
    # Both arms breed; only the inheriting one starts its bred trials from weights.
    assert int(scratch["bred"]) >= 1
    assert int(scratch["inherited_starts"]) == 0
    assert int(inherit["inherited_starts"]) == int(inherit["bred"]) >= 1
    assert int(inherit["warnings"]) == 0
    assert float(scratch["steps_to_match"]) <= 1.0  # the scratch arm reaches its own best
    assert "Median over seeds" in out
    assert "Per seed" in out


def test_threads_fast_mode_times_every_network_both_ways(tmp_path: Path) -> None:
    out = run_bench("threads.py", "--fast", "--repeats", "1", results=tmp_path)
    rows = read_rows(tmp_path / "threads.csv")
    assert [r["network"] for r in rows] == [
        "dense 64, batch 32",
        "dense 128, batch 64",
        "dense 512x512x512, batch 64",
        "conv (1, 8, 8) #0",
        "conv (1, 64) #0",
    ]
    assert [r["gets the budget"] for r in rows] == ["False", "False", "True", "True", "True"]
    assert all(float(r["1 thread s"]) > 0 and float(r["2 threads s"]) > 0 for r in rows)
    assert "dense: total" in out


def test_solo_step_fast_mode_times_both_optimizers(tmp_path: Path) -> None:
    out = run_bench("solo_step.py", "--fast", "--repeats", "1", results=tmp_path)
    steps = read_rows(tmp_path / "solo_step.csv")
    assert [(r["network"], r["optimizer"]) for r in steps][:4] == [
        ("32", "sgd"),
        ("32", "adam"),
        ("32", "adamw"),
        ("32", "rmsprop"),
    ]
    assert all(float(r["torch.optim us"]) > 0 and float(r["flat us"]) > 0 for r in steps)
    stacks = read_rows(tmp_path / "solo_step_stacks.csv")
    assert [(r["k"], r["optimizer"]) for r in stacks] == [
        (k, o) for k in ("4", "16") for o in ("sgd", "adam", "rmsprop")
    ]
    trainings = read_rows(tmp_path / "solo_step_training.csv")
    assert len(trainings) == 3
    assert all((int(r["parameters"]) <= 50_000) == (r["flat"] == "True") for r in trainings)
    assert "all networks:" in out


def test_batched_search_reports_every_setting(tmp_path: Path) -> None:
    out = run_bench(
        "batched_search.py",
        *("--seeds", "0", "--batches", "1", "2", "--trials", "2", "--threads", "1", "2"),
        *("--space", "small"),
        results=tmp_path,
    )
    rows = read_rows(tmp_path / "batched_search_small.csv")
    assert [(r["batch_trials"], r["threads"]) for r in rows] == [
        ("1", "1"),
        ("2", "1"),
        ("1", "2"),
        ("2", "2"),
    ]
    assert rows[0]["wall time vs first"] == "1.0"
    runs = read_rows(tmp_path / "batched_search_small_runs.csv")
    assert {r["trials"] for r in runs} == {"2"}
    assert "| batch_trials | n_jobs | threads |" in out


def test_training_pass_fast_mode_times_both_ways(tmp_path: Path) -> None:
    out = run_bench("training_pass.py", "--fast", results=tmp_path)
    passes = read_rows(tmp_path / "training_pass_fast.csv")
    assert len(passes) == 2
    assert all(float(r["autograd ms"]) > 0 and float(r["hand-written ms"]) > 0 for r in passes)
    lone = read_rows(tmp_path / "training_pass_lone_fast.csv")
    assert [r["network"] for r in lone] == ["1x64 relu, b32", "2x64 tanh, dropout 0.2, b32"]
    assert all(float(r["ratio"]) > 0 for r in lone)
    assert "a stack of one against train_classifier" in out
