"""`megarun.plot`: matplotlib Figures of a campaign's throughput, slot utilization and run
durations, for notebooks (the HTML report draws the same as SVG without matplotlib).

Each function takes anything with the metrics methods of the Python API's Area (`MetricSource`)
and returns a `matplotlib.figure.Figure` built without pyplot (no global state, no display
needed). matplotlib is the optional extra `megarun[plots]`: imported only when a figure is
asked for, and its absence is a clear ImportError naming the install command.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INSTALL = "pip install 'megarun[plots]'"


class MetricSource(Protocol):
    """What the figures read: the metrics methods of the Python API's Area."""

    def throughput(self, interval: Any = ...) -> Sequence[tuple[datetime, float]]: ...

    def utilization(self, batch_job: int | None = None) -> Sequence[tuple[datetime, float]]: ...

    def durations(self) -> Sequence[float]: ...


def _new_figure(title: str) -> tuple[Figure, Any]:
    try:
        figure_module = importlib.import_module("matplotlib.figure")
    except ImportError as exc:
        raise ImportError(f"megarun.plot needs matplotlib: {INSTALL}") from exc
    figure = figure_module.Figure(figsize=(8, 3.5), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    return figure, axes


def throughput(source: MetricSource, interval: Any = "1m") -> Figure:
    """Bars of jobs finished per interval (`interval` as the source takes it: "1m", 60)."""
    points = list(source.throughput(interval=interval))
    figure, axes = _new_figure(f"Jobs finished per {interval}")
    if len(points) > 1:
        width = (points[1][0] - points[0][0]) * 0.9
        axes.bar([t for t, _ in points], [v for _, v in points], width=width, align="edge")
    else:
        axes.bar([t for t, _ in points], [v for _, v in points])
    axes.set_ylabel("jobs")
    figure.autofmt_xdate()
    return figure


def utilization(source: MetricSource, batch_job: int | None = None) -> Figure:
    """Busy / allocated slots over time as a step line in [0, 1] (of one batch job if given)."""
    points = list(source.utilization(batch_job=batch_job))
    which = f"batch job {batch_job}" if batch_job is not None else "all batch jobs"
    figure, axes = _new_figure(f"Slot utilization, {which}")
    axes.step([t for t, _ in points], [v for _, v in points], where="post")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("busy / allocated")
    figure.autofmt_xdate()
    return figure


def durations(source: MetricSource, bins: int = 20) -> Figure:
    """A histogram of run durations in seconds."""
    values = list(source.durations())
    figure, axes = _new_figure("Run durations")
    axes.hist(values, bins=bins)
    axes.set_xlabel("seconds")
    axes.set_ylabel("jobs")
    return figure
