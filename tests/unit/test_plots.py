"""megarun.report.plots: SVG with no script, no comment and no URL but the SVG namespace,
the same bytes for the same data, hostile text escaped (markup, quotes, lone surrogates of
non-UTF-8 names, control characters)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

from megarun.report import plots
from megarun.report.metrics import Bin, SlotSample

T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)
HOSTILE = "<script>alert(\"x\")</script>'\udcff\x01&"


def all_three(title: str = "") -> list[str]:
    points = [(T0 + timedelta(minutes=k), float(k % 3)) for k in range(50)]
    samples = [SlotSample(T0 + timedelta(seconds=k), k / 2, 4.0) for k in range(10)]
    bins = [Bin(k * 10.0, (k + 1) * 10.0, k) for k in range(5)]
    return [plots.throughput_svg(points, 60, title=title),
            plots.utilization_svg(samples, title=title or "slots"),
            plots.durations_svg(bins, title=title or "durations")]


def test_plots_are_svg_with_no_script_and_no_url() -> None:
    for svg in all_three():
        root = ET.fromstring(svg)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert not [e for e in root.iter() if e.tag.endswith("script")]
        assert "<!--" not in svg and "<script" not in svg
        assert set(re.findall(r"https?://[^\"'\s<>)]+", svg)) <= {"http://www.w3.org/2000/svg"}


def test_the_same_data_draws_the_same_bytes() -> None:
    assert all_three() == all_three()


def test_hostile_titles_are_escaped_and_xml_stays_valid() -> None:
    for svg in all_three(HOSTILE):
        assert "<script>" not in svg and "&lt;script&gt;" in svg
        titles = [e.text for e in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}title")]
        assert "<script>alert(\"x\")</script>'\ufffd\ufffd&" in titles
        svg.encode("utf-8")  # no lone surrogate left


def test_no_data_draws_an_empty_chart() -> None:
    assert ET.fromstring(plots.throughput_svg([], 60)) is not None
    assert "No job ended yet" in plots.durations_svg([])
