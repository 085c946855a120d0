"""megarun.plot: matplotlib Figures from the metrics of a real area (through a small adapter
shaped like the Python API's Area), and a clear ImportError without matplotlib."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from megarun import plot
from megarun.homehost.context import Context
from megarun.report import metrics
from tests.component.report.campaign_area import populate


@dataclass
class MetricsOf:
    """The metrics methods of an Area, over one database."""

    db: Any

    def throughput(self, interval: Any = 60.0) -> Sequence[tuple[datetime, float]]:
        return metrics.throughput(self.db, float(interval))

    def utilization(self, batch_job: int | None = None) -> Sequence[tuple[datetime, float]]:
        return metrics.utilization(self.db, batch_job)

    def durations(self) -> Sequence[float]:
        return metrics.durations(self.db)


@pytest.fixture
def source(cli: Any, ctx: Context) -> MetricsOf:
    populate(cli, ctx.db)
    return MetricsOf(ctx.db)


def test_figures_hold_the_metrics(source: MetricsOf) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: the megarun[plots] "
                        "extra (pip install '.[dev,plots]') is needed to test megarun.plot")
    bars = plot.throughput(source, interval=1000).axes[0].patches
    assert [p.get_height() for p in bars] == [3.0, 2.0]
    line = plot.utilization(source, batch_job=1).axes[0].lines[0]
    assert list(line.get_ydata()) == [0, 0.5, 0.75, 0.25, 0, 0]
    counts = [p.get_height() for p in plot.durations(source, bins=2).axes[0].patches]
    assert counts == [1.0, 4.0]  # 10 s; 40, 40, 65, 70 s


def test_without_matplotlib_the_error_names_the_extra(source: MetricsOf,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package imports as
    with pytest.raises(ImportError, match=r"pip install 'megarun\[plots\]'"):
        plot.durations(source)
