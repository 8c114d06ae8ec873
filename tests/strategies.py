"""Hypothesis strategies shared by the tests: search spaces, genomes, distributions, seeds."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from evohpo.evolution.genome import ACTIVATIONS, OPTIMIZERS, Genome, LayerGene
from evohpo.evolution.space import SearchSpace

#: Seeds of ``random.Random``.
seeds = st.integers(0, 2**32 - 1)

#: Bounds of :func:`spaces` that reach further (deeper, wider, larger batches).
WIDE = {
    "max_depth": 6,
    "max_units": 2048,
    "max_dropout": 0.99,
    "max_weight_decay": 1.0,
    "max_batch_size": 4096,
}


@st.composite
def spaces(
    draw: st.DrawFn,
    *,
    max_depth: int = 5,
    max_units: int = 512,
    max_dropout: float = 0.95,
    max_weight_decay: float = 0.1,
    max_batch_size: int = 1024,
) -> SearchSpace:
    """Valid search spaces, each bound drawn below the given maximum."""
    min_layers = draw(st.integers(1, 3))
    units_low = draw(st.integers(1, 64))
    dropout_low = draw(st.floats(0.0, 0.9))
    lr_low = draw(st.floats(1e-6, 1.0))
    wd_low = draw(st.floats(1e-9, 1e-2))
    return SearchSpace(
        min_layers=min_layers,
        max_layers=draw(st.integers(min_layers, max_depth)),
        units=(units_low, draw(st.integers(units_low, max_units))),
        activations=tuple(draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=1, unique=True))),
        dropout=(dropout_low, draw(st.floats(dropout_low, max_dropout))),
        optimizers=tuple(draw(st.lists(st.sampled_from(OPTIMIZERS), min_size=1, unique=True))),
        learning_rate=(lr_low, draw(st.floats(lr_low, 10.0))),
        weight_decay=(wd_low, draw(st.floats(wd_low, max_weight_decay))),
        batch_sizes=tuple(
            draw(st.lists(st.integers(1, max_batch_size), min_size=1, max_size=5, unique=True))
        ),
    )


@st.composite
def genomes(draw: st.DrawFn, **bounds: Any) -> Genome:
    """Genomes sampled from a space of :func:`spaces` (``bounds`` as there)."""
    return draw(spaces(**bounds)).sample(random.Random(draw(seeds)))


@st.composite
def any_genomes(draw: st.DrawFn) -> Genome:
    """Valid genomes with no regard to any space."""
    layers = draw(
        st.lists(
            st.builds(
                LayerGene,
                units=st.integers(1, 5000),
                activation=st.sampled_from(ACTIVATIONS),
                dropout=st.floats(0.0, 0.99),
                id=st.text("0123456789abcdef", max_size=12),
            ),
            min_size=1,
            max_size=8,
            # Non-empty ids are unique within a genome; "" (no id) may repeat.
            unique_by=lambda layer: layer.id or id(layer),
        )
    )
    return Genome(
        layers=tuple(layers),
        optimizer=draw(st.sampled_from(OPTIMIZERS)),
        learning_rate=draw(st.floats(1e-9, 100.0)),
        weight_decay=draw(st.floats(0.0, 1.0)),
        batch_size=draw(st.integers(1, 4096)),
    )


@st.composite
def distributions(draw: st.DrawFn) -> BaseDistribution:
    """Optuna distributions of every kind: float, log, stepped, int, categorical."""
    kind = draw(
        st.sampled_from(["float", "float_log", "float_step", "int", "int_log", "int_step", "cat"])
    )
    if kind == "cat":
        choices = draw(
            st.lists(
                st.sampled_from(["a", "b", "c", 1, 2.5, None]),
                min_size=1,
                max_size=4,
                unique_by=repr,
            )
        )
        return CategoricalDistribution(choices)
    if kind.startswith("int"):
        low = draw(st.integers(1 if kind == "int_log" else -50, 50))
        step = draw(st.integers(1, 7)) if kind == "int_step" else 1
        high = low + step * draw(st.integers(0, 60))
        return IntDistribution(low, high, log=kind == "int_log", step=step)
    if kind == "float_step":
        # Bounds on the grid: Optuna warns about (and moves) a misaligned high.
        step_size = draw(st.sampled_from([0.125, 0.25, 0.5, 1.0]))
        low = step_size * draw(st.integers(-40, 40))
        return FloatDistribution(low, low + step_size * draw(st.integers(0, 40)), step=step_size)
    low = draw(st.floats(1e-6 if kind == "float_log" else -10.0, 10.0))
    high = draw(st.floats(low, 20.0))
    return FloatDistribution(low, high, log=kind == "float_log")
