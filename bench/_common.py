"""Helpers shared by the benchmarks: table printing and CSV output."""

from __future__ import annotations

import csv
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Where tables and run files go; EVOHPO_BENCH_RESULTS moves them (the tests do).
RESULTS = Path(
    os.environ.get("EVOHPO_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)


def mean_std(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {spread:.4f}"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(row[h]) for h in headers) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
