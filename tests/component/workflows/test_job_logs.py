"""`job logs` in constant memory: a big log is streamed, --head/--tail pick lines, --json is
bounded; measured on the real CLI process (its peak RSS from the kernel's accounting)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, megarun_process

MB = 1 << 20
LINE = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxy\n"  # 72 bytes


def run_ok(area: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = megarun_process(area, *args)
    assert result.returncode == 0, result.stderr
    return result


def peak_rss(area: Path, *args: str) -> float:
    """Peak RSS in MB of one `megarun ARGS` process (its stdout goes to stdout.bin).

    A fresh parent runs it, so RUSAGE_CHILDREN holds that one process only: its ru_maxrss is
    the kernel's high-water mark of the CLI's resident memory.
    """
    code = ("import resource, subprocess, sys\n"
            "out = open(sys.argv[1], 'wb')\n"
            "rc = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.DEVNULL).returncode\n"
            "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    target = area.parent / "stdout.bin"
    argv = [sys.executable, "-c", code, str(target), sys.executable, "-m", "megarun",
            "--area", str(area), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    rc, kilobytes = (int(x) for x in result.stdout.split())
    assert rc == 0
    return kilobytes / 1024


def big_log_job(area: Path, lines: int) -> Path:
    """Run a job whose stdout is `lines` numbered lines, then one line of non-UTF-8 bytes."""
    script = area.parent / "big.sh"
    script.write_text(f"seq -f '%09g {LINE[10:-1].decode()}' 1 {lines}\n"
                      "printf 'bad \\377\\376 bytes\\n'\necho done >&2\n")
    run_ok(area, "app", "add", "big", "--command", f"sh {script}")
    run_ok(area, "job", "create", "--app", "big")
    run_ok(area, "launch", "--quiet")
    workdir = Path(json.loads(run_ok(area, "job", "show", "1", "--json").stdout)["workdir"])
    return workdir / "job.out"


def test_a_big_log_streams_in_constant_memory(area: Path) -> None:
    log = big_log_job(area, 64 * MB // 72)  # 64 MB of output
    size = log.stat().st_size
    assert size > 60 * MB
    small_peak = peak_rss(area, "job", "logs", "1", "--tail", "1")
    peak = peak_rss(area, "job", "logs", "1")
    # Reading it whole took ~3x its size; streaming costs a few buffers over the process's own
    # start-up size (which grows with megarun's imports, so it is measured, not assumed).
    assert peak - small_peak < size / MB / 8, (peak, small_peak)
    copied = area.parent / "stdout.bin"
    first, second = b"==> job.out <==\n", b"\n==> job.err <==\n"
    # job.out whole, then job.err, each after its header
    assert copied.stat().st_size == len(first) + size + len(second) + len(b"done\n")
    with open(copied, "rb") as handle:
        assert handle.read(len(first)) == first
        handle.seek(len(first) + size - 30)
        # bytes passed as they are
        assert handle.read().endswith(b"bad \xff\xfe bytes\n" + second + b"done\n")
    json_peak = peak_rss(area, "job", "logs", "1", "--json")
    assert json_peak < small_peak + 16, (json_peak, small_peak)


def test_json_is_a_bounded_excerpt_with_size_and_path(area: Path) -> None:
    log = big_log_job(area, 4000)  # 288 KB: more than the 64 KiB excerpt
    data = json.loads(run_ok(area, "job", "logs", "1", "--json").stdout)
    out = data["job.out"]
    assert out["path"] == str(log) and out["size"] == log.stat().st_size
    assert out["truncated"] is True
    assert len(out["text"]) <= 64 * 1024  # characters: at most one per byte read
    assert out["text"].endswith("bad \ufffd\ufffd bytes\n")  # undecodable bytes replaced
    assert out["text"].startswith("0000")  # whole lines: the cut falls on a line start
    assert data["job.err"] == {"path": str(log.with_name("job.err")), "size": 5,
                               "truncated": False, "text": "done\n"}
    head = json.loads(run_ok(area, "job", "logs", "1", "--json", "--head", "2").stdout)
    assert head["job.out"]["text"].splitlines() == [
        f"{n:09d} {LINE[10:-1].decode()}" for n in (1, 2)]
    assert head["job.out"]["truncated"] is True


def logs_bytes(area: Path, *args: str) -> tuple[list[bytes], list[str]]:
    """(stdout lines as bytes without the `==> name <==` headers and the blank line before
    each, the headers) of `megarun job logs 1 ARGS`; stderr must stay empty."""
    result = subprocess.run([sys.executable, "-m", "megarun", "--area", str(area), "job", "logs",
                             "1", *args], capture_output=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.stderr == b""
    lines = result.stdout.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith(b"==> ")]
    assert all(lines[i - 1] == b"" for i in headers[1:])  # a blank line before each but the first
    skip = set(headers) | {i - 1 for i in headers[1:]}
    return ([line for i, line in enumerate(lines) if i not in skip],
            [lines[i].decode() for i in headers])


def numbered(*numbers: int) -> list[bytes]:
    return [b"%09d " % n + LINE[10:-1] for n in numbers]


def test_head_and_tail_pick_lines(area: Path) -> None:
    big_log_job(area, 1000)
    lines, headers = logs_bytes(area, "--tail", "2")
    assert lines == [*numbered(1000), b"bad \xff\xfe bytes", b"done"]  # job.err has one line
    assert headers == ["==> job.out <==", "==> job.err <=="]
    assert logs_bytes(area, "--head", "3")[0] == [*numbered(1, 2, 3), b"done"]
    assert logs_bytes(area, "--head", "10", "--tail", "2")[0] == [*numbered(9, 10), b"done"]
    assert logs_bytes(area, "--tail", "0")[0] == []


def test_tail_and_head_of_a_log_without_final_newline(tmp_path: Path) -> None:
    from megarun.transport import logslice

    path = tmp_path / "x.out"
    path.write_bytes(b"a\nb\nc")
    with open(path, "rb") as handle:
        assert logslice.select(handle, 5, None, 1) == (4, 5)
        assert logslice.select(handle, 5, None, 2) == (2, 5)
        assert logslice.select(handle, 5, None, 9) == (0, 5)
        assert logslice.select(handle, 5, 1, None) == (0, 2)
        assert logslice.select(handle, 5, 9, None) == (0, 5)
    lines = b"".join(b"%06d\n" % n for n in range(100_000))  # many chunks
    path.write_bytes(lines)
    with open(path, "rb") as handle:
        start, end = logslice.select(handle, len(lines), None, 70_000)
        assert lines[start:end] == b"".join(b"%06d\n" % n for n in range(30_000, 100_000))
        start, end = logslice.select(handle, len(lines), 50_001, None)
        assert lines[start:end].count(b"\n") == 50_001


def multi_step_job(area: Path) -> None:
    """A suite job of three steps run in a local run: `venv` and `install` pass, `check`
    fails; names chosen so that alphabetical order (install, check, venv) is not step order."""
    folder = area / "tests" / "multi"
    folder.mkdir(parents=True)
    (folder / "test.toml").write_text(
        'steps = [{name = "venv", cmd = "sh -c \'echo v-out; echo v-err >&2\'"},\n'
        '         {name = "install", cmd = "sh -c \'echo i-out; echo i-err >&2\'"},\n'
        '         {name = "check", cmd = "sh -c \'echo c-out; echo c-err >&2; exit 1\'"}]\n')
    result = megarun_process(area, "run", "--target", "linux/x86_64", "--runname", "r",
                             "--quiet")
    assert result.returncode == 1, result.stderr


def test_logs_of_a_multi_step_job_come_in_step_order_with_headers_on_stdout(area: Path) -> None:
    multi_step_job(area)
    result = run_ok(area, "job", "logs", "1")
    assert result.stderr == ""  # headers are on stdout: a redirected log keeps them
    assert result.stdout == (
        "==> venv.out <==\nv-out\n\n==> venv.err <==\nv-err\n\n"
        "==> install.out <==\ni-out\n\n==> install.err <==\ni-err\n\n"
        "==> check.out <==\nc-out\n\n==> check.err <==\nc-err\n")
    one = run_ok(area, "job", "logs", "1", "--step", "install")
    assert one.stdout == "==> install.out <==\ni-out\n\n==> install.err <==\ni-err\n"
    data = json.loads(run_ok(area, "job", "logs", "1", "--json").stdout)
    assert list(data) == ["venv.out", "venv.err", "install.out", "install.err", "check.out",
                          "check.err"]
    only = json.loads(run_ok(area, "job", "logs", "1", "--json", "--step", "check").stdout)
    assert {name: log["text"] for name, log in only.items()} == {"check.out": "c-out\n",
                                                                 "check.err": "c-err\n"}


def test_logs_of_an_unknown_step_exit_2_naming_the_steps(area: Path) -> None:
    multi_step_job(area)
    result = megarun_process(area, "job", "logs", "1", "--step", "nosuch")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "megarun: error: job 1 has no step 'nosuch'; its steps: venv, install, check"]
    assert result.stdout == ""
