"""A GA study's family tree: trials by generation and value, joined to their parents.

Every trial :class:`~evohpo.EvoSampler` breeds records its
:class:`~evohpo.evolution.lineage.Lineage` (origin, generation, parents,
variation operators) as the user attribute ``evohpo``. :func:`lineage_graph`
turns those records into nodes and edges; :func:`lineage_figure` draws them
with matplotlib (PNG, SVG, PDF, as :mod:`evohpo.studies.plots` draws the
histories) and :func:`lineage_plotly` as an interactive plotly figure whose
hover text gives each trial's parents and operators. :func:`write_lineage`
picks one from the file name.

The best trial and its ancestors (parents, their parents, ...) are
highlighted: the path by which the search reached its best value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from evohpo.evolution.lineage import LINEAGE_ATTR, Lineage
from evohpo.exceptions import InvalidParameterError
from evohpo.studies.config import StudyConfig

__all__ = [
    "LINEAGE_SUFFIXES",
    "ORIGIN_STYLES",
    "LineageEdge",
    "LineageGraph",
    "LineageNode",
    "default_lineage_path",
    "lineage_figure",
    "lineage_graph",
    "lineage_plotly",
    "study_lineage",
    "write_lineage",
]

#: Marker and colour of each origin (matplotlib marker codes; plotly names differ).
ORIGIN_STYLES: dict[str, tuple[str, str]] = {
    "random": ("o", "#7f7f7f"),
    "bred": ("o", "#1f77b4"),
    "repeat": ("D", "#ff7f0e"),
    "enqueued": ("s", "#2ca02c"),
}
_PLOTLY_SYMBOLS = {"o": "circle", "D": "diamond", "s": "square"}
_HIGHLIGHT = "#d62728"
#: Half the width of a generation's column that its trials spread over.
_SPREAD = 0.35
#: Below these sizes every edge has its operator label and every node its number.
_LABEL_ALL_EDGES = 20
_NUMBER_ALL_NODES = 60
#: File name endings :func:`write_lineage` writes with matplotlib or plotly.
_MATPLOTLIB_SUFFIXES = (".png", ".svg", ".pdf")
_PLOTLY_SUFFIXES = (".html",)
#: The file types :func:`write_lineage` writes, by file name ending.
LINEAGE_SUFFIXES = _MATPLOTLIB_SUFFIXES + _PLOTLY_SUFFIXES


@dataclass(frozen=True)
class LineageNode:
    """One trial of the tree.

    Attributes
    ----------
    number : int
        The trial number.
    generation : int
        From the trial's lineage record.
    value : float or None
        The objective value; ``None`` for a failed, pruned or running trial.
    origin : str
        ``"random"``, ``"bred"``, ``"repeat"`` or ``"enqueued"``.
    state : str
        The trial state's name, e.g. ``"COMPLETE"``.
    parents, operators : tuple
        From the lineage record.
    x, y : float
        Where it is drawn: its generation, spread over the generation's column
        by trial number, and its value (trials without one lie below the
        lowest value).
    """

    number: int
    generation: int
    value: float | None
    origin: str
    state: str
    parents: tuple[int, ...]
    operators: tuple[str, ...]
    x: float
    y: float


@dataclass(frozen=True)
class LineageEdge:
    """A child joined to one of its parents; ``label`` names the child's operators."""

    child: int
    parent: int
    label: str


@dataclass(frozen=True)
class LineageGraph:
    """The family tree of a study.

    Attributes
    ----------
    study_name : str
    direction : str
        ``"maximize"`` or ``"minimize"``: which value is best.
    nodes : dict of int to LineageNode
        By trial number, in trial order.
    edges : tuple of LineageEdge
        From each child to each of its parents found in the study.
    best : int or None
        The best completed trial's number.
    ancestry : frozenset of int
        The best trial and all its ancestors; empty when there is no best.
    """

    study_name: str
    direction: str
    nodes: dict[int, LineageNode]
    edges: tuple[LineageEdge, ...]
    best: int | None
    ancestry: frozenset[int]

    @property
    def highlighted_edges(self) -> frozenset[tuple[int, int]]:
        """``(child, parent)`` of the edges on the best trial's ancestry."""
        return frozenset((e.child, e.parent) for e in self.edges if e.child in self.ancestry)

    @property
    def generations(self) -> int:
        """Number of generations drawn (the highest generation plus one)."""
        return 1 + max((n.generation for n in self.nodes.values()), default=-1)


def _edge_label(lineage: Lineage) -> str:
    if lineage.origin == "repeat":
        return "repeat"
    return ", ".join(lineage.operators)


def lineage_graph(
    trials: Iterable[FrozenTrial],
    *,
    study_name: str = "",
    direction: str | StudyDirection = "maximize",
) -> LineageGraph:
    """The tree of the ``trials`` that carry a lineage record.

    Raises
    ------
    InvalidParameterError
        If no trial carries one (the study was not run by EvoSampler, or
        has no trial yet); the message names the study.
    """
    if isinstance(direction, StudyDirection):
        direction = "minimize" if direction == StudyDirection.MINIMIZE else "maximize"
    records: list[tuple[FrozenTrial, Lineage]] = []
    for trial in sorted(trials, key=lambda t: t.number):
        lineage = Lineage.from_attr(trial.user_attrs.get(LINEAGE_ATTR))
        if lineage is not None:
            records.append((trial, lineage))
    if not records:
        raise InvalidParameterError(
            f"The study {study_name!r} holds no trial with a lineage (user attribute "
            f"{LINEAGE_ATTR!r}): only trials sampled by EvoSampler (the 'ga' sampler) "
            "have parents to draw."
        )

    def value_of(trial: FrozenTrial) -> float | None:
        if trial.state != TrialState.COMPLETE or trial.values is None or len(trial.values) != 1:
            return None
        value = float(trial.values[0])
        return value if math.isfinite(value) else None

    values = [v for v in (value_of(t) for t, _ in records) if v is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    floor = low - 0.08 * ((high - low) or 1.0)

    columns: dict[int, list[int]] = {}
    for trial, lineage in records:
        columns.setdefault(lineage.generation, []).append(trial.number)
    offsets: dict[int, float] = {}
    for numbers in columns.values():
        for i, number in enumerate(numbers):
            offsets[number] = (
                0.0 if len(numbers) == 1 else _SPREAD * (2 * i / (len(numbers) - 1) - 1)
            )

    nodes: dict[int, LineageNode] = {}
    for trial, lineage in records:
        value = value_of(trial)
        nodes[trial.number] = LineageNode(
            number=trial.number,
            generation=lineage.generation,
            value=value,
            origin=lineage.origin,
            state=trial.state.name,
            parents=lineage.parents,
            operators=lineage.operators,
            x=lineage.generation + offsets[trial.number],
            y=floor if value is None else value,
        )
    edges = tuple(
        LineageEdge(child=trial.number, parent=parent, label=_edge_label(lineage))
        for trial, lineage in records
        for parent in dict.fromkeys(lineage.parents)
        if parent in nodes
    )

    scored = [n for n in nodes.values() if n.value is not None]
    best: int | None = None
    if scored:
        sign = -1.0 if direction == "minimize" else 1.0
        # Ties go to the earliest trial, as Optuna's best_trial does.
        best = max(scored, key=lambda n: (sign * (n.value or 0.0), -n.number)).number
    ancestry: set[int] = set()
    todo = [best] if best is not None else []
    while todo:
        number = todo.pop()
        if number in ancestry or number not in nodes:
            continue
        ancestry.add(number)
        todo.extend(nodes[number].parents)
    return LineageGraph(
        study_name=study_name,
        direction=direction,
        nodes=nodes,
        edges=edges,
        best=best,
        ancestry=frozenset(ancestry),
    )


def study_lineage(study: optuna.Study) -> LineageGraph:
    """:func:`lineage_graph` of every trial of ``study``."""
    if len(study.directions) != 1:
        raise InvalidParameterError(
            f"The study {study.study_name!r} has {len(study.directions)} objectives: "
            "a lineage is drawn against one objective value."
        )
    return lineage_graph(
        study.get_trials(deepcopy=False),
        study_name=study.study_name,
        direction=study.direction,
    )


# -- drawing ----------------------------------------------------------------------------------
def _title(graph: LineageGraph) -> str:
    head = (
        f"{graph.study_name}: lineage of {len(graph.nodes)} trials"
        if graph.study_name
        else (f"lineage of {len(graph.nodes)} trials")
    )
    if graph.best is None:
        return head
    return f"{head} (red: best trial #{graph.best} and its ancestors)"


def _short(label: str, most: int = 3) -> str:
    """One operator a line, at most ``most`` lines: a label stays narrow."""
    parts = label.split(", ")
    if len(parts) > most:
        parts = [*parts[: most - 1], f"+{len(parts) - most + 1} more"]
    return "\n".join(parts)


def lineage_figure(graph: LineageGraph, *, value_label: str = "objective value") -> Any:
    """The matplotlib ``Figure`` of ``graph`` (Agg canvas; pyplot's state is not touched).

    Edges run from each child to its parents, grey, and red along the best
    trial's ancestry, where they carry the child's operators (every edge does
    in small trees). Markers tell the origins apart; a hollow marker is a trial
    without a value (failed, pruned or running), drawn below the lowest value.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    n_nodes = len(graph.nodes)
    width = min(24.0, max(7.5, 0.9 * graph.generations + 3.0))
    figure = Figure(figsize=(width, 5.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    nodes = graph.nodes
    highlighted = graph.highlighted_edges

    def segment(edge: LineageEdge) -> list[tuple[float, float]]:
        child, parent = nodes[edge.child], nodes[edge.parent]
        return [(parent.x, parent.y), (child.x, child.y)]

    plain = [segment(e) for e in graph.edges if (e.child, e.parent) not in highlighted]
    # Many edges drawn at full strength hide the nodes: thin them with the count.
    faint = 0.45 if len(plain) < 200 else 0.2
    axes.add_collection(
        LineCollection(plain, colors="#9a9a9a", linewidths=0.7, alpha=faint, zorder=1)
    )
    axes.add_collection(
        LineCollection(
            [segment(e) for e in graph.edges if (e.child, e.parent) in highlighted],
            colors=_HIGHLIGHT,
            linewidths=2.0,
            alpha=0.9,
            zorder=2,
        )
    )

    size = 36 if n_nodes <= 150 else 18
    legend: list[Any] = []
    for origin, (marker, colour) in ORIGIN_STYLES.items():
        members = [n for n in nodes.values() if n.origin == origin]
        if not members:
            continue
        valued = [n for n in members if n.value is not None]
        empty = [n for n in members if n.value is None]
        if valued:
            axes.scatter(
                [n.x for n in valued],
                [n.y for n in valued],
                s=size,
                marker=marker,
                c=colour,
                edgecolors="white",
                linewidths=0.5,
                zorder=3,
            )
        if empty:
            axes.scatter(
                [n.x for n in empty],
                [n.y for n in empty],
                s=size,
                marker=marker,
                facecolors="none",
                edgecolors=colour,
                linewidths=1.0,
                zorder=3,
            )
        legend.append(
            Line2D(
                [],
                [],
                linestyle="",
                marker=marker,
                color=colour,
                label=f"{origin} ({len(members)})",
            )
        )
    if any(n.value is None for n in nodes.values()):
        legend.append(
            Line2D(
                [],
                [],
                linestyle="",
                marker="o",
                markerfacecolor="none",
                markeredgecolor="#555555",
                label="no value (failed, pruned)",
            )
        )

    ancestors = [nodes[i] for i in sorted(graph.ancestry) if i != graph.best]
    if ancestors:
        axes.scatter(
            [n.x for n in ancestors],
            [n.y for n in ancestors],
            s=size * 2.2,
            marker="o",
            facecolors="none",
            edgecolors=_HIGHLIGHT,
            linewidths=1.4,
            zorder=4,
        )
    if graph.best is not None:
        best = nodes[graph.best]
        axes.scatter(
            [best.x],
            [best.y],
            s=size * 5,
            marker="*",
            c="#ffd700",
            edgecolors=_HIGHLIGHT,
            linewidths=1.2,
            zorder=5,
        )
        legend.append(
            Line2D(
                [],
                [],
                linestyle="",
                marker="*",
                markersize=12,
                markerfacecolor="#ffd700",
                markeredgecolor=_HIGHLIGHT,
                label=f"best: trial {best.number} ({best.value:.4f})",
            )
        )
        legend.append(Line2D([], [], color=_HIGHLIGHT, linewidth=2, label="its ancestry"))

    label_all = len(graph.edges) <= _LABEL_ALL_EDGES
    labelled: set[int] = set()
    for edge in graph.edges:
        on_path = (edge.child, edge.parent) in highlighted
        # The operators belong to the child: one label per child, on its first edge.
        if not edge.label or edge.child in labelled or not (on_path or label_all):
            continue
        labelled.add(edge.child)
        (x0, y0), (x1, y1) = segment(edge)
        axes.annotate(
            _short(edge.label),
            ((x0 + x1) / 2, (y0 + y1) / 2),
            fontsize=6.5 if on_path else 5.5,
            color="#8b1a1a" if on_path else "#555555",
            ha="center",
            va="bottom",
            zorder=6,
        )
    number_all = n_nodes <= _NUMBER_ALL_NODES
    for node in nodes.values():
        if number_all or node.number in graph.ancestry:
            axes.annotate(
                str(node.number),
                (node.x, node.y),
                xytext=(3, 3),
                textcoords="offset points",
                fontsize=6,
                color="#333333",
                zorder=6,
            )

    axes.autoscale_view()
    axes.margins(x=0.04, y=0.08)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("generation")
    axes.set_ylabel(value_label)
    axes.set_title(_title(graph), fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(handles=legend, loc="best", fontsize=7, framealpha=0.85)
    figure.tight_layout()
    return figure


def _hover(node: LineageNode, value_label: str) -> str:
    value = "none" if node.value is None else f"{node.value:.4f}"
    lines = [
        f"trial {node.number}",
        f"{value_label}: {value}"
        + ("" if node.state == "COMPLETE" else f" ({node.state.lower()})"),
        f"generation {node.generation}, {node.origin}",
    ]
    if node.parents:
        lines.append("parents: " + ", ".join(map(str, node.parents)))
    if node.operators:
        lines.append("operators: " + ", ".join(node.operators))
    return "<br>".join(lines)


def _polyline(graph: LineageGraph, edges: Sequence[LineageEdge]) -> tuple[list[Any], list[Any]]:
    xs: list[Any] = []
    ys: list[Any] = []
    for edge in edges:
        child, parent = graph.nodes[edge.child], graph.nodes[edge.parent]
        xs += [parent.x, child.x, None]
        ys += [parent.y, child.y, None]
    return xs, ys


def lineage_plotly(graph: LineageGraph, *, value_label: str = "objective value") -> Any:
    """An interactive plotly ``Figure`` of ``graph``; hovering a trial shows its record."""
    try:
        import plotly.graph_objects as go  # type: ignore[import-untyped]
    except ImportError:
        raise InvalidParameterError(
            "An interactive (.html) lineage needs plotly: pip install 'evohpo[dashboard]'."
        ) from None

    highlighted = graph.highlighted_edges
    figure = go.Figure()
    for edges, colour, width, name in (
        (
            [e for e in graph.edges if (e.child, e.parent) not in highlighted],
            "#b0b0b0",
            0.8,
            "edges",
        ),
        (
            [e for e in graph.edges if (e.child, e.parent) in highlighted],
            _HIGHLIGHT,
            2.5,
            "ancestry",
        ),
    ):
        if edges:
            xs, ys = _polyline(graph, edges)
            figure.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    line={"color": colour, "width": width},
                    hoverinfo="skip",
                    name=name,
                )
            )
    for origin, (marker, colour) in ORIGIN_STYLES.items():
        members = [n for n in graph.nodes.values() if n.origin == origin]
        if not members:
            continue
        figure.add_trace(
            go.Scatter(
                x=[n.x for n in members],
                y=[n.y for n in members],
                mode="markers",
                name=f"{origin} ({len(members)})",
                marker={
                    "symbol": [
                        _PLOTLY_SYMBOLS[marker] + ("" if n.value is not None else "-open")
                        for n in members
                    ],
                    "color": colour,
                    "size": 8,
                    "line": {
                        "color": [
                            _HIGHLIGHT if n.number in graph.ancestry else "white" for n in members
                        ],
                        "width": [2 if n.number in graph.ancestry else 0.5 for n in members],
                    },
                },
                text=[_hover(n, value_label) for n in members],
                hoverinfo="text",
            )
        )
    if graph.best is not None:
        best = graph.nodes[graph.best]
        figure.add_trace(
            go.Scatter(
                x=[best.x],
                y=[best.y],
                mode="markers",
                name=f"best: trial {best.number}",
                marker={
                    "symbol": "star",
                    "size": 16,
                    "color": "#ffd700",
                    "line": {"color": _HIGHLIGHT, "width": 1.5},
                },
                text=[_hover(best, value_label)],
                hoverinfo="text",
            )
        )
        for edge in graph.edges:
            if (edge.child, edge.parent) in highlighted and edge.label:
                child, parent = graph.nodes[edge.child], graph.nodes[edge.parent]
                figure.add_annotation(
                    x=(child.x + parent.x) / 2,
                    y=(child.y + parent.y) / 2,
                    text=edge.label,
                    showarrow=False,
                    font={"size": 9, "color": "#8b1a1a"},
                    yshift=8,
                )
    figure.update_layout(
        title=_title(graph),
        xaxis={"title": "generation", "dtick": 1},
        yaxis={"title": value_label},
        template="plotly_white",
        hovermode="closest",
    )
    return figure


def write_lineage(
    graph: LineageGraph, path: str | Path, *, value_label: str = "objective value"
) -> Path:
    """Write ``graph`` to ``path``: PNG, SVG or PDF (matplotlib), or HTML (plotly).

    The HTML file carries plotly's JavaScript, so it opens without a network.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in _MATPLOTLIB_SUFFIXES + _PLOTLY_SUFFIXES:
        raise InvalidParameterError(
            f"Cannot tell how to write {str(target)!r}: the file name must end in "
            f"{', '.join(_MATPLOTLIB_SUFFIXES)} or {', '.join(_PLOTLY_SUFFIXES)}."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix in _PLOTLY_SUFFIXES:
        lineage_plotly(graph, value_label=value_label).write_html(
            target, include_plotlyjs=True, full_html=True
        )
    else:
        lineage_figure(graph, value_label=value_label).savefig(target, format=suffix[1:])
    return target


def default_lineage_path(config: StudyConfig, seed: int) -> Path:
    """``<study dir>/runs/<name>/lineage-seed<seed>.png``."""
    return config.output_dir / f"lineage-seed{seed}.png"
