"""megarun.plot: matplotlib Figures from the metrics of a real area read through the Python
API's Area (the same numbers as megarun.report.metrics), and a clear ImportError without
matplotlib."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from megarun import plot
from megarun.api.area import Area, open_area
from megarun.errors import UsageError
from megarun.homehost.context import Context
from megarun.report import metrics
from tests.component.report.campaign_area import populate


@pytest.fixture
def source(cli: Any, ctx: Context, area: Path) -> Iterator[Area]:
    populate(cli, ctx.db)
    with open_area(area) as opened:
        yield opened


def test_the_area_gives_the_report_s_metrics(source: Area, ctx: Context) -> None:
    assert source.throughput(1000) == metrics.throughput(ctx.db, 1000.0)
    assert source.throughput("1000s") == source.throughput(1000.0)
    assert [count for _, count in source.throughput(1000)] == [3.0, 2.0]
    assert all(when.tzinfo is not None for when, _ in source.throughput(1000))
    assert source.utilization(batch_job=1) == metrics.utilization(ctx.db, 1)
    assert [value for _, value in source.utilization(batch_job=1)] == [0, 0.5, 0.75, 0.25, 0, 0]
    assert sorted(source.durations()) == [10.0, 40.0, 40.0, 65.0, 70.0]
    with pytest.raises(UsageError, match="interval"):
        source.throughput("soon")


def test_figures_hold_the_metrics(source: Area) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: the megarun[plots] "
                        "extra (pip install '.[dev,plots]') is needed to test megarun.plot")
    bars = plot.throughput(source, interval=1000).axes[0].patches
    assert [p.get_height() for p in bars] == [3.0, 2.0]
    line = plot.utilization(source, batch_job=1).axes[0].lines[0]
    assert list(line.get_ydata()) == [0, 0.5, 0.75, 0.25, 0, 0]
    counts = [p.get_height() for p in plot.durations(source, bins=2).axes[0].patches]
    assert counts == [1.0, 4.0]  # 10 s; 40, 40, 65, 70 s


def test_without_matplotlib_the_error_names_the_extra(source: Area,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package imports as
    with pytest.raises(ImportError, match=r"pip install 'megarun\[plots\]'"):
        plot.durations(source)
