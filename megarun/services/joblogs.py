"""`job logs`: a job's step logs read in constant memory, on this machine or on its SSH site.

A log is never read whole: the text output copies the selected lines (all, `--head N`,
`--tail N`) in 64 KiB chunks, and `--json` carries at most a bounded excerpt of each file with
its size and path. An SSH site slices its logs itself (megarun.executors.logslice runs there)
and streams the bytes back.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from megarun.errors import EnvironmentProblem, UsageError
from megarun.executors import logslice
from megarun.services import sites as site_service
from megarun.services.context import Context
from megarun.services.jobs import get_job
from megarun.services.remote import site_executor
from megarun.services.sites import SiteInfo

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

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.log.path, "size": self.log.size, "truncated": self.truncated,
                "text": self.text}


class JobLogs(Protocol):
    """Where a job's logs are, read in constant memory (megarun.executors.logslice)."""

    def files(self) -> list[LogFile]:
        """The step logs: every .out, then every .err."""
        ...

    def copy(self, log: LogFile, out: BinaryIO, head: int | None, tail: int | None) -> int:
        """Write the selected lines of `log` to `out` in chunks; the last byte written (-1: none)."""
        ...

    def excerpts(self, head: int | None, tail: int | None, limit: int) -> list[LogExcerpt]:
        """Every log's selected lines, at most `limit` bytes of each."""
        ...


class LocalJobLogs:
    """The logs of a job whose work dir is on this machine."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def files(self) -> list[LogFile]:
        return [LogFile(*found) for found in logslice.step_logs(self.folder)]

    def copy(self, log: LogFile, out: BinaryIO, head: int | None, tail: int | None) -> int:
        with open(log.path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            start, end = logslice.select(handle, size, head, tail)
            return logslice.copy_range(handle, out, start, end)

    def excerpts(self, head: int | None, tail: int | None, limit: int) -> list[LogExcerpt]:
        return [LogExcerpt(LogFile(name, path, size), cut, text)
                for name, path, size, cut, text in logslice.excerpts(self.folder, head, tail,
                                                                     limit)]


def open_job_logs(ctx: Context, job_id: int) -> JobLogs:
    """A reader of a job's step logs, local or on its SSH site (nothing is read yet)."""
    job = get_job(ctx, job_id)
    if not job["workdir"]:
        raise UsageError(f"job {job_id} has not been dispatched yet (state {job['state']})")
    site = site_service.get_site(ctx, str(job["site"])) if job.get("site") else None
    if site is not None and site.is_remote:
        return RemoteJobLogs(site, str(job["workdir"]))
    return LocalJobLogs(str(job["workdir"]))


def no_logs(ctx: Context, job_id: int) -> UsageError:
    """The error for a job whose work dir holds no log yet."""
    job = get_job(ctx, job_id)
    site = site_service.get_site(ctx, str(job["site"])) if job.get("site") else None
    where = f"{job['workdir']}" + (f" on {site.host}" if site and site.host else "")
    return UsageError(f"job {job_id} has no logs in {where} yet (state {job['state']})")


def job_log_files(ctx: Context, job_id: int) -> tuple[JobLogs, list[LogFile]]:
    """A job's log reader and its logs (.out before .err); UsageError when there are none."""
    logs = open_job_logs(ctx, job_id)
    files = logs.files()
    if not files:
        raise no_logs(ctx, job_id)
    return logs, files


def job_log_excerpts(ctx: Context, job_id: int, head: int | None = None,
                     tail: int | None = None,
                     limit: int = LOG_EXCERPT_BYTES) -> list[LogExcerpt]:
    """Every log of a job, each cut to at most `limit` bytes of its selected lines."""
    found = open_job_logs(ctx, job_id).excerpts(head, tail, limit)
    if not found:
        raise no_logs(ctx, job_id)
    return found


def _logslice_source() -> str:
    """The log-slicing module's own source: the site runs it as `python3 -c SOURCE ...`."""
    return Path(logslice.__file__).read_text(encoding="utf-8")


def _lines_arg(value: int | None) -> str:
    return "-1" if value is None else str(value)


class RemoteJobLogs:
    """The logs of a job on an SSH site, sliced there and streamed back in chunks.

    `files` and `excerpts` are one round trip each; `copy` is one round trip per log, whose
    bytes flow from the site's stdout to `out` as they come (never whole in memory).
    """

    def __init__(self, site: SiteInfo, folder: str) -> None:
        self.site = site
        self.folder = folder

    def _run(self, *args: str) -> str:
        result = site_executor(self.site).run([self.site.python, "-c", _logslice_source(),
                                               *args], timeout=60)
        if result.code != 0:
            raise self._failed(result.stderr_text, result.code)
        return result.stdout_text

    def _failed(self, stderr: str, code: int) -> EnvironmentProblem:
        lines = stderr.strip().splitlines()
        return EnvironmentProblem(f"site {self.site.name!r}: cannot read {self.folder}: "
                                  f"{lines[-1] if lines else f'exit code {code}'}")

    def files(self) -> list[LogFile]:
        return [LogFile(str(n), str(p), int(s)) for n, p, s in json.loads(self._run(
            "list", self.folder))]

    def copy(self, log: LogFile, out: BinaryIO, head: int | None, tail: int | None) -> int:
        from megarun.executors.ssh import SshExecutor

        executor = site_executor(self.site)
        argv = [self.site.python, "-c", _logslice_source(), "copy", log.path, _lines_arg(head),
                _lines_arg(tail)]
        if not isinstance(executor, SshExecutor):
            raise EnvironmentProblem(f"site {self.site.name!r}: no SSH connection to stream from")
        tracker = _LastByte(out)
        errors = io.BytesIO()
        code = executor.stream(argv, cast(BinaryIO, tracker), errors)
        if code != 0:
            raise self._failed(errors.getvalue().decode("utf-8", "replace"), code)
        return tracker.last

    def excerpts(self, head: int | None, tail: int | None, limit: int) -> list[LogExcerpt]:
        found = json.loads(self._run("excerpts", self.folder, _lines_arg(head), _lines_arg(tail),
                                     str(limit)))
        return [LogExcerpt(LogFile(str(n), str(p), int(s)), bool(cut), str(text))
                for n, p, s, cut, text in found]


class _LastByte:
    """A binary writer that passes bytes on and remembers the last one."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.last = -1

    def write(self, data: bytes) -> int:
        if data:
            self.last = data[-1]
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()
