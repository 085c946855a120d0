"""megarun.report.metrics on jobs at known times: exact throughput buckets, durations and
their histogram, busy/allocated slots of a batch job and of the local site."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from megarun.core.states import JobState
from megarun.errors import UsageError
from megarun.homehost.context import Context
from megarun.report import metrics
from megarun.report.html import grouped, jobscan
from megarun.report.html.campaign_data import CampaignData
from megarun.report.metrics import Bin, JobFilter, SlotSample
from tests.component.report.campaign_area import populate


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


@pytest.fixture
def db(cli: Any, ctx: Context) -> Any:
    populate(cli, ctx.db)
    return ctx.db


def test_throughput_counts_finished_jobs_per_bucket_with_empty_buckets_as_zero(db: Any) -> None:
    # ended: 1010, 1070, 1130 (plain), 2050, 2060 (batch job 1); job 4 still runs
    plain = JobFilter(plain=True, batch_job=None, tags=())
    got = metrics.throughput(db, 30, JobFilter(app="noop", tags=(("c", "a"),)))
    assert got == [(at(990), 1.0), (at(1020), 0.0), (at(1050), 1.0)]
    assert metrics.throughput(db, 1000, plain) == [(at(1000), 3.0), (at(2000), 2.0)]
    assert all(t.tzinfo is timezone.utc for t, _ in metrics.throughput(db, 60))


def test_throughput_refuses_a_useless_interval(db: Any) -> None:
    with pytest.raises(UsageError, match="more than 0"):
        metrics.throughput(db, 0)
    with pytest.raises(UsageError, match="buckets"):
        metrics.throughput(db, 0.0001)


def test_durations_and_their_histogram(db: Any) -> None:
    assert metrics.durations(db) == [10.0, 65.0, 70.0, 40.0, 40.0]
    assert metrics.durations(db, JobFilter(state="killed")) == [70.0]
    assert metrics.duration_histogram(db, 2, JobFilter(batch_job=None, app="noop")) == [
        Bin(10.0, 40.0, 1), Bin(40.0, 70.0, 4)]
    assert metrics.duration_histogram(db, 3, JobFilter(site="no-such-site")) == []


def test_slots_of_one_batch_job(db: Any) -> None:
    # 2 nodes 2000-2100; job 5 holds a node 2010-2050, job 6 half a node 2020-2060
    assert metrics.slot_usage(db, batch_job=1) == [
        SlotSample(at(2000), 0.0, 2.0), SlotSample(at(2010), 1.0, 2.0),
        SlotSample(at(2020), 1.5, 2.0), SlotSample(at(2050), 0.5, 2.0),
        SlotSample(at(2060), 0.0, 2.0), SlotSample(at(2100), 0.0, 0.0)]
    assert [u for _, u in metrics.utilization(db, batch_job=1)] == [0, 0.5, 0.75, 0.25, 0, 0]


def test_jobs_outside_batch_jobs_use_the_sites_slots(db: Any) -> None:
    # jobs 1-4 ran in no batch job on the local site, whose slots are 2 (max_jobs)
    got = metrics.utilization(db, None, JobFilter(plain=True, tags=(("c", "a"),)))
    assert got == [(at(1000), 0.5), (at(1005), 1.0), (at(1010), 0.5), (at(1070), 0.0)]
    busy = [s.busy for s in metrics.slot_usage(db, None, JobFilter(batch_job=None, app="noop",
                                                                      state="running"))]
    assert busy == [1.0]


def test_a_bad_state_is_a_usage_error(db: Any) -> None:
    with pytest.raises(UsageError):
        metrics.durations(db, JobFilter(state="SLEEPING"))


def test_the_one_pass_holds_every_slot_second_in_the_right_spans(db: Any) -> None:
    data = CampaignData(db)
    ax = data.axes
    assert (ax.start, ax.end) == (1000.0, 2060.0)  # job 4 still runs: to the last known time
    scan = data.scan()
    batch = scan.batches[1].series(ax)
    assert sum(batch.busy_s) == pytest.approx(40 * 1 + 40 * 0.5)
    first_busy = min(k for k, s in enumerate(batch.busy_s) if s)
    assert ax.start + first_busy * ax.span <= 2010 < ax.start + (first_busy + 1) * ax.span
    plain = scan.plain[("all", "all")].series(ax)
    assert sum(plain.busy_s) == pytest.approx(10 + 65 + 70 + (2060 - 1100) + 60)
    assert sum(plain.done) == 5 and sum(plain.durations) == 5
    tagged = {name: t for (kind, name), t in scan.plain.items() if kind == "tag"}
    assert set(tagged) == {"c=a", "c=<script>alert('x')</script>"}
    assert sum(tagged["c=a"].series(ax).busy_s) == pytest.approx(75)
    alloc = [0.0] * grouped.SPANS
    grouped.allocate(alloc, ax, grouped.batch_periods(db, ax).values())
    assert sum(alloc) == pytest.approx(2 * (2060 - 2000))  # 2 nodes, up to the axes' end


def test_a_job_spanning_many_spans_is_busy_in_each_of_them(db: Any) -> None:
    # job 4 runs from 1100 to the axes' end (2060), alone between 1130 and 2010: one busy
    # slot in every span wholly between
    ax = CampaignData(db).axes
    scan = jobscan.scan(db, ax, ())
    busy = scan.plain[("site", "local")].series(ax).busy_s
    alone = [k for k in range(grouped.SPANS)
             if ax.start + k * ax.span > 1130 and ax.start + (k + 1) * ax.span < 2010]
    assert len(alone) > 70 and all(busy[k] == pytest.approx(ax.span) for k in alone)


def test_views_split_the_same_jobs_and_memory_stays_bounded(
        db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    data = CampaignData(db)
    whole = data.scan()
    monkeypatch.setattr(jobscan, "MAX_GROUPS", 1)  # groups added into views after every job
    monkeypatch.setattr(jobscan, "MAX_TAG_SETS", 1)
    bit_by_bit = jobscan.scan(db, data.axes, data.tag_views())
    assert set(bit_by_bit.plain) == set(whole.plain)
    for view, tally in whole.plain.items():
        assert bit_by_bit.plain[view].counts == tally.counts, view
        assert bit_by_bit.plain[view].series(data.axes).busy_s == pytest.approx(
            tally.series(data.axes).busy_s)
    assert whole.plain[("app", "noop")].done == whole.plain[("all", "all")].done
    batches = whole.all_batches().series(data.axes)
    assert sum(batches.busy_s) == pytest.approx(60) and sum(batches.durations) == 2
    assert whole.site_first == bit_by_bit.site_first and list(whole.site_first.values()) == [1000]


def test_running_jobs_with_none_ended_still_draw_their_slots(cli: Any, ctx: Context) -> None:
    assert cli("app", "add", "noop", "--command", "true").code == 0
    assert cli("job", "create", "--app", "noop", "--count", "2").code == 0
    ctx.db.execute_sql("UPDATE job SET state = ?, started = 100 + id * 10",
                       (JobState.RUNNING.value,))
    campaign = CampaignData(ctx.db)
    ax = campaign.axes
    data = campaign.scan().plain[("all", "all")].series(ax)
    assert ax.buckets == 0 and data.throughput(ax) == []
    slots = data.slots(ax)
    assert len(slots) == grouped.SPANS and max(s.busy for s in slots) > 0
