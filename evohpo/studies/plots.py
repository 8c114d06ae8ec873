"""The comparison of a study file as a plot of its optimisation histories."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from evohpo._paths import folder_problem
from evohpo.exceptions import InvalidParameterError
from evohpo.studies.compare import Comparison
from evohpo.studies.config import StudyConfig

__all__ = [
    "PLOT_SUFFIXES",
    "check_plot_path",
    "default_plot_path",
    "history_figure",
    "plot_histories",
]

#: The file types :func:`plot_histories` writes, by file name ending.
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def check_plot_path(
    path: str | Path, what: str = "--plot", suffixes: tuple[str, ...] = PLOT_SUFFIXES
) -> Path:
    """``path`` if :func:`plot_histories` can write there; otherwise why not.

    Called before a comparison runs, so that a figure that could not be
    written does not fail a run of many minutes at its end.

    Raises
    ------
    InvalidParameterError
        Naming ``what``: an unknown file type, a directory, or a folder that
        cannot be made or written.
    """
    target = Path(path)
    problem = None
    if target.suffix.lower() not in suffixes:
        problem = f"the file name must end in {', '.join(suffixes)}"
    elif target.is_dir():
        problem = "it is a directory"
    elif target.exists() and not os.access(target, os.W_OK):
        problem = "this process may not write it"
    else:
        problem = folder_problem(target.parent)
    if problem is not None:
        raise InvalidParameterError(f"Cannot write the figure {what} {str(target)!r}: {problem}.")
    return target


def plot_histories(comparison: Comparison, path: str | Path) -> Path:
    """Write a figure (PNG, SVG or PDF, by ``path``'s ending) of the best validation
    accuracy (R2) so far against the trial count.

    One line per sampler (the mean over seeds) with a band from the lowest to
    the highest seed. Uses matplotlib's Agg canvas; pyplot's global state is
    not touched.
    """
    target = check_plot_path(path, "path")
    target.parent.mkdir(parents=True, exist_ok=True)
    history_figure(comparison).savefig(target, format=target.suffix.lower()[1:])
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
