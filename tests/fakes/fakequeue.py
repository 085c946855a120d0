"""A tiny batch queue on this host, behind fake qsub/qstat/qdel and bsub/bjobs/bkill commands.

The queue is one JSON file named by $MEGARUN_FAKE_QUEUE, changed under an fcntl lock. Submitted
scripts run for real, detached (a new session), with the node-list variables of the scheduler
pointing at this host; the commands print the real formats megarun's parsers read:

  MEGARUN_FAKE_QUEUE        the queue file (required)
  MEGARUN_FAKE_FLAVOR       pbspro (default) | torque | cobalt: the qsub/qstat/qdel dialect
  MEGARUN_FAKE_START_DELAY  seconds a job stays queued before it starts (default 0); a queued
                            job starts when any fake command runs after that
  MEGARUN_FAKE_HOLD         a path: while that file exists, queued jobs stay queued
  MEGARUN_FAKE_MAX_NODES    jobs asking for more nodes stay queued for ever, with the reason
                            the real scheduler gives ("Can Never Run: ..." on PBS Pro)
  MEGARUN_FAKE_LIMITS       a file printed by `qstat -Qf`, Cobalt's `qstat -Q` and `bqueues -l`
                            (default: the flavor's golden capture in tests/component/schedulers)

Each job runs under a small runner process (`fakequeue.py _run QUEUE ID`) that waits for the
script and records its exit status, as a scheduler's job starter would.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

Job = dict[str, Any]
State = dict[str, Any]

PBS_UNKNOWN_RC = 153
LSF_ERROR_RC = 255


# -- the queue file -----------------------------------------------------------------------------

def queue_path() -> str:
    path = os.environ.get("MEGARUN_FAKE_QUEUE")
    if not path:
        sys.stderr.write("fake scheduler: set MEGARUN_FAKE_QUEUE to a queue file\n")
        raise SystemExit(2)
    return path


@contextmanager
def locked_queue(path: str) -> Iterator[State]:
    """The queue's state, written back when the block ends (one process at a time)."""
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = _read(path)
            yield state
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as handle:
                json.dump(state, handle, indent=1)
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: str) -> State:
    try:
        with open(path) as handle:
            return dict(json.load(handle))
    except FileNotFoundError:
        return {"next_id": 1000, "jobs": {}}


def flavor() -> str:
    return os.environ.get("MEGARUN_FAKE_FLAVOR", "pbspro")


# -- the "scheduler": start queued jobs, notice lost ones -----------------------------------------

def schedule(state: State, path: str) -> None:
    delay = float(os.environ.get("MEGARUN_FAKE_START_DELAY", "0"))
    hold = os.environ.get("MEGARUN_FAKE_HOLD")
    held = bool(hold) and os.path.exists(str(hold))
    for job_id, job in state["jobs"].items():
        if job["state"] == "queued" and not job["never_runs"] and not held and \
                time.time() - job["submitted"] >= delay:
            start(job_id, job, path)
        elif job["state"] == "running" and not _alive(job["pid"]):
            # The runner died without recording an exit status (killed hard).
            job.update(state="finished", status=None, ended=time.time())


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def start(job_id: str, job: Job, path: str) -> None:
    host = socket.gethostname()
    env = dict(os.environ)
    env.update(job["env"])
    if job["kind"] == "lsf":
        env.update(LSB_JOBID=job_id, LSB_HOSTS=host, LSB_MCPU_HOSTS=f"{host} 1",
                   LSB_JOBNAME=job["name"])
    elif job["kind"] == "cobalt":
        env.update(COBALT_JOBID=job_id, COBALT_PARTNAME="0", COBALT_PARTSIZE="1",
                   COBALT_JOBSIZE="1")
    else:
        nodefile = f"{path}.{job_id}.nodes"
        with open(nodefile, "w") as handle:
            handle.write(host + "\n")
        env.update(PBS_JOBID=job_id, PBS_NODEFILE=nodefile, PBS_JOBNAME=job["name"],
                   PBS_O_WORKDIR=job["submit_dir"])
    output = open(job["output"], "ab")
    try:
        runner = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "_run", path, job_id, job["script"]],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            cwd=job["cwd"], env=env, start_new_session=True)
    finally:
        output.close()
    job.update(state="running", pid=runner.pid, started=time.time())


def run_job(path: str, job_id: str, script: str) -> int:
    """The runner: run the script, wait, record how it ended (even when signalled itself)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    child = subprocess.Popen(["/bin/sh", script])
    while True:
        try:
            status = child.wait()
            break
        except InterruptedError:
            continue
    with locked_queue(path) as state:
        job = state["jobs"][job_id]
        job.update(state="finished", status=status, ended=time.time())
    return 0


# -- submitting ---------------------------------------------------------------------------------

def directives(text: str, prefix: str) -> list[list[str]]:
    """The option words of each directive line before the first command."""
    import shlex

    found = []
    for line in text.splitlines()[1:]:
        if line.startswith(prefix + " "):
            found.append(shlex.split(line[len(prefix):]))
        elif line.strip() and not line.startswith("#"):
            break
    return found


def new_job(state: State, kind: str, script: str, options: dict[str, str]) -> tuple[str, Job]:
    number = state["next_id"]
    state["next_id"] = number + 1
    job_id = str(number) if kind in ("lsf", "cobalt") else f"{number}.fakepbs"
    nodes = int(options.get("nodes", "1"))
    limit = os.environ.get("MEGARUN_FAKE_MAX_NODES")
    job = {
        "kind": kind, "name": options.get("name", "job"), "script": script,
        "output": options.get("output") or os.path.join(os.getcwd(), f"{kind}.{number}.out"),
        "cwd": options.get("cwd") or os.getcwd(), "submit_dir": os.getcwd(),
        "queue": options.get("queue", "normal"), "nodes": nodes, "owner": getpass.getuser(),
        "walltime": options.get("walltime", "01:00:00"), "state": "queued", "pid": 0,
        "status": None, "deleted": False, "submitted": time.time(), "started": None,
        "ended": None, "never_runs": bool(limit) and nodes > int(limit or 0),
        "env": {},
    }
    state["jobs"][job_id] = job
    return job_id, job


def pbs_options(words: list[list[str]]) -> dict[str, str]:
    options: dict[str, str] = {}
    for option in words:
        if option[:1] == ["-N"]:
            options["name"] = option[1]
        elif option[:1] == ["-o"]:
            options["output"] = option[1]
        elif option[:1] == ["-q"]:
            options["queue"] = option[1]
        elif option[:1] == ["-l"]:
            key, _, value = option[1].partition("=")
            if key in ("select", "nodes"):
                options["nodes"] = value.split(":", 1)[0]
            elif key == "walltime":
                options["walltime"] = value
    return options


def cobalt_options(words: list[list[str]]) -> dict[str, str]:
    names = {"-n": "nodes", "-o": "output", "--cwd": "cwd", "-q": "queue", "--jobname": "name",
             "-t": "walltime"}
    return {names[option[0]]: option[1] for option in words
            if len(option) == 2 and option[0] in names}


def lsf_options(words: list[list[str]]) -> dict[str, str]:
    names = {"-J": "name", "-o": "output", "-cwd": "cwd", "-q": "queue", "-n": "nodes",
             "-nnodes": "nodes", "-W": "walltime"}
    return {names[option[0]]: option[1] for option in words
            if len(option) == 2 and option[0] in names}


def qsub(args: list[str]) -> int:
    if flavor() == "cobalt":
        args = [arg for arg in args if arg not in ("--mode", "script")]
    if len(args) != 1 or not os.path.isfile(args[0]):
        sys.stderr.write("qsub: script file cannot be loaded - No such file or directory\n")
        return 2
    script = os.path.abspath(args[0])
    with open(script) as handle:
        text = handle.read()
    path = queue_path()
    with locked_queue(path) as state:
        if flavor() == "cobalt":
            if not os.access(script, os.X_OK):
                sys.stderr.write(f"{script} is not executable\n")
                return 1
            job_id, job = new_job(state, "cobalt", script, cobalt_options(directives(text, "#COBALT")))
        else:
            job_id, job = new_job(state, "pbs", script, pbs_options(directives(text, "#PBS")))
        schedule(state, path)
    if flavor() == "cobalt":
        print(f'Job routed to queue "{job["queue"]}".')
    print(job_id)
    return 0


def bsub(args: list[str]) -> int:
    if args == ["-V"]:
        return lsf_version()
    text = sys.stdin.read()
    path = queue_path()
    with locked_queue(path) as state:
        job_id, job = new_job(state, "lsf", "", lsf_options(directives(text, "#BSUB")))
        # LSF keeps the job file in its spool; the fake keeps it next to the queue file.
        script = f"{path}.{job_id}.lsf.sh"
        with open(script, "w") as handle:
            handle.write(text)
        job["script"] = script
        schedule(state, path)
    print(f"Job <{job_id}> is submitted to queue <{job['queue']}>.")
    return 0


# -- status -------------------------------------------------------------------------------------

def exit_status(job: Job, signal_base: int) -> int | None:
    status = job["status"]
    if status is None:
        return None
    return signal_base - status if status < 0 else int(status)


def wrap_pbs(key: str, value: str) -> list[str]:
    """A `key = value` line as PBS prints it: wrapped at 79 columns, continuations tab-led."""
    line = f"    {key} = {value}"
    lines = [line[:79]]
    rest = line[79:]
    while rest:
        lines.append("\t" + rest[:71])
        rest = rest[71:]
    return lines


def pbs_attributes(job_id: str, job: Job) -> list[tuple[str, str]]:
    native = pbs_native(job)
    attrs = [("Job_Name", job["name"]), ("Job_Owner", f"{job['owner']}@{socket.gethostname()}"),
             ("job_state", native), ("queue", job["queue"]), ("server", "fakepbs"),
             ("Output_Path", f"{socket.gethostname()}:{job['output']}"),
             ("Resource_List.nodect", str(job["nodes"])),
             ("Resource_List.walltime", job["walltime"])]
    if flavor() == "pbspro":
        attrs.append(("substate", {"Q": "10", "R": "42", "F": "91" if job["deleted"] else "92"}
                      [native]))
    if job["never_runs"]:
        attrs.append(("comment", "Can Never Run: Insufficient amount of resource: nodect "
                                 f"(R: {job['nodes']} A: {os.environ.get('MEGARUN_FAKE_MAX_NODES')}"
                                 f" T: {os.environ.get('MEGARUN_FAKE_MAX_NODES')})"))
    elif native == "Q":
        attrs.append(("comment", "Not Running: Insufficient amount of resource: ncpus"))
    elif job["started"]:
        attrs.append(("comment", f"Job run at {time.ctime(job['started'])} on "
                                 f"({socket.gethostname()}:ncpus=1)"))
    code = exit_status(job, 256)
    if native in ("F", "C") and code is not None:
        attrs.append(("Exit_status" if flavor() == "pbspro" else "exit_status", str(code)))
    return attrs


def pbs_native(job: Job) -> str:
    if job["state"] == "queued":
        return "Q"
    if job["state"] == "running":
        return "R"
    return "F" if flavor() == "pbspro" else "C"


GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "component",
                      "schedulers", "golden")
LIMITS = {"pbspro": "pbspro_qstat_qf.txt", "torque": "torque_qstat_qf.txt",
          "cobalt": "cobalt_qstat_q.txt", "lsf": "lsf_bqueues_l.txt"}


def queue_limits(dialect: str) -> int:
    """The queues and their limits, as `qstat -Qf`, `qstat -Q` (Cobalt), `bqueues -l` print
    them: a capture of the real output."""
    path = os.environ.get("MEGARUN_FAKE_LIMITS") or os.path.join(GOLDEN, LIMITS[dialect])
    with open(path) as handle:
        sys.stdout.write(handle.read())
    return 0


def qstat(args: list[str]) -> int:
    if args in (["-Qf"], ["-Q"]):
        return queue_limits(flavor())
    if "--version" in args:
        print({"pbspro": "pbs_version = 22.05.11", "torque": "Version: 6.1.3",
               "cobalt": "version: 1.0.27"}[flavor()])
        return 0
    path = queue_path()
    with locked_queue(path) as state:
        schedule(state, path)
        jobs = dict(state["jobs"])
    header = args[args.index("--header") + 1] if "--header" in args else "JobID:State"
    user = args[args.index("-u") + 1] if "-u" in args else None
    ids = [arg for arg in args if not arg.startswith("-") and arg not in (header, user)]
    if flavor() == "cobalt":
        return cobalt_qstat(jobs, ids, header, user)
    history = "-x" in args
    if not ids:  # every current job, as `qstat -f` prints them without ids
        ids = [job_id for job_id, job in jobs.items() if job["state"] in ("queued", "running")]
    found, code = [], 0
    for job_id in ids:
        job = jobs.get(job_id)
        if job is None:
            sys.stderr.write(f"qstat: Unknown Job Id {'Error ' if flavor() == 'torque' else ''}"
                             f"{job_id}\n")
            code = PBS_UNKNOWN_RC
        elif flavor() == "pbspro" and job["state"] in ("finished", "cancelled") and not history:
            sys.stderr.write(f"qstat: {job_id} Job has finished, use -x or -H to obtain "
                             "historical job information\n")
            code = 35
        else:
            found.append((job_id, job))
    if flavor() == "torque" and history:
        print_torque_xml(found)
    else:
        for job_id, job in found:
            print(f"Job Id: {job_id}")
            for key, value in pbs_attributes(job_id, job):
                print("\n".join(wrap_pbs(key, value)))
            print()
    return code


def print_torque_xml(found: list[tuple[str, Job]]) -> None:
    from xml.sax.saxutils import escape

    parts = ["<Data>"]
    for job_id, job in found:
        fields = "".join(f"<{key}>{escape(value)}</{key}>"
                         for key, value in pbs_attributes(job_id, job) if "." not in key)
        parts.append(f"<Job><Job_Id>{escape(job_id)}</Job_Id>{fields}</Job>")
    parts.append("</Data>")
    print('<?xml version="1.0"?>')
    print("".join(parts))


def cobalt_qstat(jobs: dict[str, Job], ids: list[str], header: str, user: str | None) -> int:
    rows = []
    for job_id in ids or [j for j, job in jobs.items() if user in (None, job["owner"])]:
        job = jobs.get(job_id)
        if job is None or job["state"] in ("finished", "cancelled"):
            continue  # Cobalt forgets a job as soon as it ends
        native = "queued" if job["state"] == "queued" else "running"
        values = {"JobID": job_id, "State": native, "JobName": job["name"],
                  "User": job["owner"], "Queue": job["queue"]}
        rows.append([values.get(field, "-") for field in header.split(":")])
    if not rows:
        return 1 if ids else 0
    print(" ".join(f"{field:<7}" for field in header.split(":")))
    print("=" * 15)
    for row in rows:
        print(" ".join(f"{value:<7}" for value in row))
    return 0


def lsf_native(job: Job) -> str:
    if job["state"] == "queued":
        return "PEND"
    if job["state"] == "running":
        return "RUN"
    if job["state"] == "cancelled":
        return "EXIT"
    return "DONE" if job["status"] == 0 else "EXIT"


def bjobs(args: list[str]) -> int:
    if args == ["-V"]:
        return lsf_version()
    path = queue_path()
    with locked_queue(path) as state:
        schedule(state, path)
        jobs = dict(state["jobs"])
    fields, delimiter, ids, user, show_all = parse_bjobs(args)
    selected, code = [], 0
    for job_id in ids or [j for j, job in jobs.items() if job["owner"] == user]:
        job = jobs.get(job_id)
        if job is None:
            sys.stderr.write(f"Job <{job_id}> is not found\n")
            code = LSF_ERROR_RC
        elif show_all or job["state"] in ("queued", "running"):
            selected.append((job_id, job))
    if not selected and code == 0:
        sys.stderr.write("No job found\n" if show_all else "No unfinished job found\n")
    for job_id, job in selected:
        print(delimiter.join(lsf_field(name, job_id, job) for name in fields))
    return code


def parse_bjobs(args: list[str]) -> tuple[list[str], str, list[str], str, bool]:
    fields, delimiter, ids, user, show_all = ["jobid", "stat"], " ", [], getpass.getuser(), False
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "-o":
            index += 1
            words = args[index].split()
            fields = [word for word in words if not word.startswith("delimiter=")]
            for word in words:
                if word.startswith("delimiter="):
                    delimiter = word.split("=", 1)[1].strip("'\"")
        elif arg == "-u":
            index += 1
            user = args[index]
        elif arg == "-a":
            show_all = True
        elif not arg.startswith("-"):
            ids.append(arg)
        index += 1
    return fields, delimiter, ids, user, show_all


def lsf_field(name: str, job_id: str, job: Job) -> str:
    if name == "jobid":
        return job_id
    if name == "stat":
        return lsf_native(job)
    if name == "job_name":
        return str(job["name"])
    if name == "exit_code":
        code = exit_status(job, 128)
        return str(code) if code and lsf_native(job) == "EXIT" else "-"
    if name == "pend_reason":
        if job["never_runs"]:
            return "Job's requirement of nodes exceeds the limit of the queue;"
        return "New job is waiting for scheduling;" if job["state"] == "queued" else "-"
    return "-"


def lsf_version() -> int:
    sys.stderr.write("IBM Spectrum LSF 10.1.0.13, Apr 15 2022\nbinary type: linux3.10-glibc2.17-x86_64\n")
    return 0


# -- cancel -------------------------------------------------------------------------------------

def cancel(args: list[str], lsf: bool) -> int:
    path = queue_path()
    code = 0
    with locked_queue(path) as state:
        for job_id in [arg for arg in args if not arg.startswith("-")]:
            job = state["jobs"].get(job_id)
            if job is None:
                sys.stderr.write(f"Job <{job_id}>: No matching job found\n" if lsf
                                 else f"qdel: Unknown Job Id {job_id}\n")
                code = LSF_ERROR_RC if lsf else PBS_UNKNOWN_RC
            elif job["state"] == "queued":
                job.update(state="cancelled", deleted=True, ended=time.time())
                if lsf:
                    print(f"Job <{job_id}> is being terminated")
            elif job["state"] == "running":
                job["deleted"] = True
                try:
                    os.killpg(job["pid"], signal.SIGTERM)
                except ProcessLookupError:
                    job.update(state="finished", ended=time.time())
                if lsf:
                    print(f"Job <{job_id}> is being terminated")
            elif lsf:
                sys.stderr.write(f"Job <{job_id}>: Job has already finished\n")
                code = LSF_ERROR_RC
    return code


COMMANDS = {
    "qsub": qsub, "qstat": qstat, "bsub": bsub, "bjobs": bjobs,
    "qdel": lambda args: cancel(args, lsf=False), "bkill": lambda args: cancel(args, lsf=True),
    "bqueues": lambda args: queue_limits("lsf"),
}


def main(command: str, args: list[str]) -> int:
    return int(COMMANDS[command](args))


if __name__ == "__main__":
    if sys.argv[1:2] == ["_run"]:
        sys.exit(run_job(sys.argv[2], sys.argv[3], sys.argv[4]))
    sys.exit(main(os.path.basename(sys.argv[1]), sys.argv[2:]))
