"""The report's plots as inline SVG: throughput, slot utilization, durations. Data in, SVG
string out (no database here: metrics.py computes, this draws).

Drawn by pygal (a base dependency: pure Python, no dependencies of its own), then cleaned for a
page whose Content-Security-Policy forbids scripts and that fetches nothing: pygal's inline
`<script>` (its tooltips' config) and its comments (pygal.org links and the day's date) are
removed, no external script is named (`js=[]`), and every chart gets a fixed id so the same
data draws the same bytes (an unchanged page stays unchanged). Text reaches the SVG through
ElementTree, which escapes it; characters XML cannot hold (controls, lone surrogates of
non-UTF-8 names) are replaced first.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pygal
from pygal.style import Style

from megarun.report.metrics import Bin, SlotSample

#: At most this many labels along the x axis (the rest are drawn as unlabelled ticks).
MAX_LABELS = 12

_STYLE = Style(background="white", plot_background="white", foreground="#1b1f24",
               foreground_strong="#1b1f24", foreground_subtle="#57606a",
               colors=("#1f6feb", "#8250df", "#bf3989", "#2da44e"), font_family="sans-serif")
_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def text(value: str) -> str:
    """`value` as text XML can hold (ElementTree escapes the markup characters itself)."""
    return _XML_UNSAFE.sub("\ufffd", value)


def _config(title: str) -> dict[str, Any]:
    return {"js": [], "disable_xml_declaration": True, "title": text(title), "style": _STYLE,
            "width": 800, "height": 320, "show_minor_x_labels": False,
            "x_label_rotation": 20, "truncate_label": -1}


def _chart(kind: Any, chart_id: str, title: str, **extra: Any) -> Any:
    chart = kind(**_config(title), **extra)
    chart.uuid = chart_id  # pygal's default is a random uuid4: the same data, other bytes
    return chart


def _labels(chart: Any, labels: Sequence[str]) -> None:
    chart.x_labels = [text(label) for label in labels]
    every = max(1, len(labels) // MAX_LABELS)
    chart.x_labels_major = [text(label) for label in labels[::every]]


def _svg(chart: Any) -> str:
    tree = chart.render_tree()
    for parent in list(tree.iter()):
        for child in list(parent):
            if not isinstance(child.tag, str) or child.tag.rsplit("}", 1)[-1] == "script":
                parent.remove(child)  # comments (their tag is the Comment factory) and scripts
    return ET.tostring(tree, encoding="unicode")


def _when(time: datetime) -> str:
    return time.strftime("%Y-%m-%d %H:%M")


def throughput_svg(points: Sequence[tuple[datetime, float]], interval_s: float,
                   chart_id: str = "throughput", title: str = "") -> str:
    """Bars of jobs finished per interval (bucket start as the label)."""
    chart = _chart(pygal.Bar, chart_id, title or f"Jobs finished per {_span(interval_s)}",
                   show_legend=False, no_data_text="No job finished yet")
    chart.add("jobs finished", [value for _, value in points])
    _labels(chart, [_when(start) for start, _ in points])
    return _svg(chart)


def utilization_svg(samples: Sequence[SlotSample], chart_id: str = "utilization",
                    title: str = "Slots: busy and allocated") -> str:
    """Two lines over time: slots busy with jobs and slots allocated."""
    chart = _chart(pygal.Line, chart_id, title, show_dots=False, fill=False,
                   no_data_text="No job ran yet")
    chart.add("busy", [round(sample.busy, 3) for sample in samples])
    chart.add("allocated", [round(sample.allocated, 3) for sample in samples])
    _labels(chart, [_when(sample.time) for sample in samples])
    return _svg(chart)


def durations_svg(bins: Sequence[Bin], chart_id: str = "durations",
                  title: str = "Run durations") -> str:
    """A histogram of run durations (bars labelled by their lower bound)."""
    chart = _chart(pygal.Bar, chart_id, title, show_legend=False,
                   no_data_text="No job ended yet")
    chart.add("jobs", [b.count for b in bins])
    _labels(chart, [_span(b.low) for b in bins])
    return _svg(chart)


def _span(seconds: float) -> str:
    """A duration as people read it: 45 s, 2.5 min, 3 h, 2 d."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"
