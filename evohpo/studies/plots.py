"""The comparison of a study file as a plot of its optimisation histories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evohpo.studies.compare import Comparison
from evohpo.studies.config import StudyConfig

__all__ = ["default_plot_path", "history_figure", "plot_histories"]


def plot_histories(comparison: Comparison, path: str | Path) -> Path:
    """Write a PNG of the best validation accuracy (R2) so far against the trial count.

    One line per sampler (the mean over seeds) with a band from the lowest to
    the highest seed. Uses matplotlib's Agg canvas; pyplot's global state is
    not touched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    history_figure(comparison).savefig(target, format="png")
    return target


def _legend_label(sampler: str, n_seeds: int) -> str:
    """``ga (mean of 3 seeds)``; ``ga (1 seed)``."""
    return f"{sampler} (1 seed)" if n_seeds == 1 else f"{sampler} (mean of {n_seeds} seeds)"


def history_figure(comparison: Comparison) -> Any:
    """The matplotlib ``Figure`` that :func:`plot_histories` writes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(7.5, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for sampler, results in comparison.results.items():
        curves = [np.asarray(r.history, dtype=float) for r in results if r.history]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        # A study that stopped early keeps its last value (its best so far).
        padded = np.vstack([np.pad(c, (0, length - len(c)), mode="edge") for c in curves])
        x = np.arange(1, length + 1)
        with np.errstate(all="ignore"):
            mean = np.nanmean(padded, axis=0) if np.isfinite(padded).any() else padded[0]
            low = np.nanmin(padded, axis=0)
            high = np.nanmax(padded, axis=0)
        (line,) = axes.plot(
            x,
            mean,
            label=_legend_label(sampler, len(curves)),
            linewidth=2,
            drawstyle="steps-post",
        )
        if len(curves) > 1:
            axes.fill_between(
                x, low, high, color=line.get_color(), alpha=0.2, linewidth=0, step="post"
            )
    if comparison.config.target is not None:
        axes.axhline(comparison.config.target, color="grey", linestyle="--", linewidth=1)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("finished trials")
    axes.set_ylabel(f"best validation {comparison.config.score_label} so far")
    axes.set_title(f"{comparison.config.name}: optimisation histories (band: min-max over seeds)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


def default_plot_path(config: StudyConfig) -> Path:
    """``<study dir>/runs/<name>/history.png``."""
    return config.output_dir / "history.png"
