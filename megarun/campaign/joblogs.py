"""`job logs`: a job's step logs read in constant memory, on this machine or on its SSH site.

A log is never read whole: the text output copies the selected lines (all, `--head N`,
`--tail N`) in 64 KiB chunks, and `--json` carries at most a bounded excerpt of each file with
its size and path. An SSH site slices its logs itself (megarun.transport.logslice runs there)
and streams the bytes back.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from peewee import SqliteDatabase

from megarun.campaign.query import JobDetail, get_job
from megarun.config.area import Area
from megarun.errors import EnvironmentProblem, UsageError
from megarun.sites import registry as site_service
from megarun.sites.connect import site_transport
from megarun.sites.registry import SiteInfo
from megarun.transport import logslice

#: The message of the event `clean` leaves on each job whose run path it removed (a job's
#: logs then read "removed by clean", not "none yet").
CLEANED = "run path removed by clean"

#: `job logs --json` carries at most this much of each log (its end; its start for --head).
LOG_EXCERPT_BYTES = 64 << 10


@dataclass(frozen=True)
class LogFile:
    """One step log of a job: its name, its path on the job's site, and its size in bytes."""

    name: str
    path: str
    size: int


@dataclass(frozen=True)
class LogExcerpt:
    """A bounded part of one log (`job logs --json`): `truncated` when it is not the whole file."""

    log: LogFile
    truncated: bool
    text: str


class JobLogs(Protocol):
    """Where a job's logs are, read in constant memory (megarun.transport.logslice)."""

    def write(self, out: BinaryIO, head: int | None, tail: int | None,
              announce: Callable[[LogFile], None]) -> int:
        """Write each log's selected lines to `out` in chunks, calling `announce` before each
        (step by step: its .out, then its .err); a log not ending in a newline gets one.
        Returns how many logs there were."""
        ...

    def excerpts(self, head: int | None, tail: int | None, limit: int) -> list[LogExcerpt]:
        """Every log's selected lines, at most `limit` bytes of each."""
        ...


@dataclass(frozen=True)
class StepOrder:
    """Which logs of a job dir, in which order: the job's steps in turn (each one's .out,
    then its .err) and then any other log; with `only`, those steps' logs alone."""

    steps: tuple[str, ...] = ()
    only: bool = False

    def args(self) -> list[str]:
        """The ORDER and ONLY arguments of megarun.transport.logslice's requests."""
        return [json.dumps(list(self.steps)), "1" if self.only else "0"]


class LocalJobLogs:
    """The logs of a job whose work dir is on this machine."""

    def __init__(self, folder: str, order: StepOrder = StepOrder()) -> None:
        self.folder = folder
        self.order = order

    def write(self, out: BinaryIO, head: int | None, tail: int | None,
              announce: Callable[[LogFile], None]) -> int:
        frames = LogFrames(out, announce)
        logslice.stream(self.folder, cast(BinaryIO, frames), head, tail,
                        list(self.order.steps), self.order.only)
        return frames.logs

    def excerpts(self, head: int | None, tail: int | None, limit: int) -> list[LogExcerpt]:
        return [LogExcerpt(LogFile(name, path, size), cut, text)
                for name, path, size, cut, text in logslice.excerpts(
                    self.folder, head, tail, limit, list(self.order.steps), self.order.only)]


class LogFrames:
    """Takes the framed bytes of logslice.stream (header line, then that many bytes of log)
    in chunks of any size: announces each log and passes its bytes on to `out`."""

    def __init__(self, out: BinaryIO, announce: Callable[[LogFile], None]) -> None:
        self.out = out
        self.announce = announce
        self.header = bytearray()
        self.left = 0  # bytes of the current log still to come
        self.last = -1  # the last byte of the current log passed on
        self.logs = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self.left:
                part = view[:self.left]
                self.out.write(part)
                self.last, self.left, view = part[-1], self.left - len(part), view[len(part):]
                if not self.left:
                    self._log_ended()
                continue
            end = bytes(view[:logslice.CHUNK]).find(b"\n")
            if end < 0:
                self.header += view
                break
            self.header += view[:end]
            view = view[end + 1:]
            self._start(json.loads(bytes(self.header).decode("utf-8")))
        return len(data)

    def _start(self, header: list[Any]) -> None:
        name, path, size, length = header
        self.header.clear()
        self.logs += 1
        self.last, self.left = -1, int(length)
        self.announce(LogFile(str(name), str(path), int(size)))
        if not self.left:
            self._log_ended()

    def _log_ended(self) -> None:
        if self.last not in (-1, NEWLINE):
            self.out.write(b"\n")  # the next header starts on its own line

    def flush(self) -> None:
        self.out.flush()


NEWLINE = ord("\n")


def _site_of(db: SqliteDatabase, area: Area, job: JobDetail) -> SiteInfo | None:
    name = job["site"]
    return site_service.get_site(site_service.OpenArea(area, db), name) if name else None


def open_job_logs(db: SqliteDatabase, area: Area, job_id: int,
                  step: str | None = None) -> JobLogs:
    """A reader of a job's step logs in step order (only those of `step` when given), local or
    on its SSH site (nothing is read yet)."""
    job = get_job(db, job_id)
    order = _step_order(job, step)
    if not job["workdir"]:
        raise UsageError(f"job {job_id} has not been dispatched yet (state {job['state']})")
    site = _site_of(db, area, job)
    if site is not None and site.is_remote:
        return RemoteJobLogs(site, str(job["workdir"]), order)
    return LocalJobLogs(str(job["workdir"]), order)


def _step_order(job: JobDetail, step: str | None) -> StepOrder:
    """The job's steps in order; an unknown `step` is refused naming the job's steps."""
    names = tuple(str(s["name"]) for s in job["steps"])
    if step is None:
        return StepOrder(names)
    if step not in names:
        raise UsageError(f"job {job['id']} has no step {step!r}; its steps: {', '.join(names)}")
    return StepOrder((step,), only=True)


def no_logs(db: SqliteDatabase, area: Area, job_id: int) -> UsageError:
    """The error for a job whose work dir holds no log: not yet, or no more after a `clean`."""
    job = get_job(db, job_id)
    site = _site_of(db, area, job)
    where = f"{job['workdir']}" + (f" on {site.host}" if site and site.host else "")
    last = job["events"][-1] if job["events"] else None
    if last is not None and last["message"] == CLEANED:  # nothing ran since the clean
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(last["time"])))
        return UsageError(f"job {job_id}'s logs in {where} were removed by `megarun clean` at "
                          f"{when} (rerun the job to make new ones)")
    return UsageError(f"job {job_id} has no logs in {where} yet (state {job['state']})")


def write_job_logs(db: SqliteDatabase, area: Area, job_id: int, out: BinaryIO, head: int | None,
                   tail: int | None, announce: Callable[[LogFile], None],
                   step: str | None = None) -> None:
    """Stream a job's logs to `out` (see JobLogs.write); UsageError when there are none."""
    if not open_job_logs(db, area, job_id, step).write(out, head, tail, announce):
        raise no_logs(db, area, job_id)


def job_log_excerpts(db: SqliteDatabase, area: Area, job_id: int, head: int | None = None,
                     tail: int | None = None, limit: int = LOG_EXCERPT_BYTES,
                     step: str | None = None) -> list[LogExcerpt]:
    """Every log of a job (or of one step), each cut to at most `limit` bytes of its selected
    lines."""
    found = open_job_logs(db, area, job_id, step).excerpts(head, tail, limit)
    if not found:
        raise no_logs(db, area, job_id)
    return found


def _logslice_source() -> str:
    """The log-slicing module's own source: the site runs it as `python3 -c SOURCE ...`."""
    return Path(logslice.__file__).read_text(encoding="utf-8")


def _lines_arg(value: int | None) -> str:
    return "-1" if value is None else str(value)


def site_read_failed(site: SiteInfo, what: str, stderr: str, code: int) -> EnvironmentProblem:
    """The error for logs an SSH site could not read: its last line of stderr."""
    lines = stderr.strip().splitlines()
    return EnvironmentProblem(f"site {site.name!r}: cannot read {what}: "
                              f"{lines[-1] if lines else f'exit code {code}'}")


class RemoteJobLogs:
    """The logs of a job on an SSH site, sliced there and streamed back in chunks: one round
    trip for the text of every log (its bytes flow to `out` as they come, never whole in
    memory), one for the excerpts."""

    def __init__(self, site: SiteInfo, folder: str,
                 order: StepOrder = StepOrder()) -> None:
        self.site = site
        self.folder = folder
        self.order = order

    def _failed(self, stderr: str, code: int) -> EnvironmentProblem:
        return site_read_failed(self.site, self.folder, stderr, code)

    def write(self, out: BinaryIO, head: int | None, tail: int | None,
              announce: Callable[[LogFile], None]) -> int:
        from megarun.transport.ssh.transport import SshTransport  # paramiko: only for a remote site

        transport = site_transport(self.site)
        if not isinstance(transport, SshTransport):
            raise EnvironmentProblem(f"site {self.site.name!r}: no SSH connection to stream from")
        frames = LogFrames(out, announce)
        errors = io.BytesIO()
        argv = [self.site.spec.interpreter, "-c", _logslice_source(), "stream", self.folder,
                _lines_arg(head), _lines_arg(tail), *self.order.args()]
        code = transport.stream(argv, cast(BinaryIO, frames), errors)
        if code != 0:
            raise self._failed(errors.getvalue().decode("utf-8", "replace"), code)
        return frames.logs

    def excerpts(self, head: int | None, tail: int | None, limit: int) -> list[LogExcerpt]:
        result = site_transport(self.site).run(
            [self.site.spec.interpreter, "-c", _logslice_source(), "excerpts", self.folder,
             _lines_arg(head), _lines_arg(tail), str(limit), *self.order.args()], timeout=60)
        if result.code != 0:
            raise self._failed(result.stderr_text, result.code)
        return [LogExcerpt(LogFile(str(n), str(p), int(s)), bool(cut), str(text))
                for n, p, s, cut, text in json.loads(result.stdout_text)]


def log_tails(site: SiteInfo | None, paths: list[str], lines: int,
              limit: int) -> dict[str, str]:
    """The last `lines` lines (at most `limit` bytes each) of the given logs of one site's
    jobs, read in one round trip on an SSH site; a log that is not there is left out."""
    if not paths:
        return {}
    if site is None or not site.is_remote:
        found = logslice.tails(paths, lines, limit)
    else:
        result = site_transport(site).run(
            [site.spec.interpreter, "-c", _logslice_source(), "tails", json.dumps(paths), str(lines),
             str(limit)], timeout=120)
        if result.code != 0:
            raise site_read_failed(site, f"the logs of {len(paths)} job step(s)",
                                   result.stderr_text, result.code)
        found = json.loads(result.stdout_text)
    return {path: str(text) for path, text in zip(paths, found, strict=True) if text is not None}
