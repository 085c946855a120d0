"""Starting one step of a job: its work dir, log files, environment and process group."""

import errno
import os
import re
import shlex
import signal
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from megarun.agent.private import make_private_dirs

#: A command made only of these characters is split on whitespace and executed directly;
#: anything else (quotes, $, ;, |, &, <, >, *, ~, newlines, ...) runs under /bin/sh -c.
_PLAIN_COMMAND = re.compile(r"[A-Za-z0-9_./=:,+@%\- \t-]*\Z")
_SPAWN = getattr(os, "posix_spawn", None)
_SIGNALS_TO_RESET = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ")
                          if hasattr(signal, name))


class StepFailedToStart(Exception):
    """A step that could not be started; `rc` is the exit code a shell would have given."""

    def __init__(self, message: str, rc: Optional[int]) -> None:
        Exception.__init__(self, message)
        self.message = message
        self.rc = rc


_INT_FIELDS = ("attempt", "nodes", "cpus", "gpus", "threads", "ranks_per_node", "gpus_per_rank",
               "packing")


def spec_problem(spec: Dict[str, Any], has_nul: bool = True) -> str:
    """Why a job spec cannot be run ('' when it can): checked before the job is taken on.

    Whatever a bundle holds (a NUL byte that no exec accepts, a field of the wrong type), the
    job it names ends with the reason, and the agent goes on with the others. `has_nul`
    False (its JSON line holds no "\\u0000") spares the walk over its text.
    """
    for name in _INT_FIELDS:
        value = spec.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return "{} is not an integer: {!r}".format(name, value)
    timeout = spec.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 <= timeout < float("inf")):
        return "timeout is not a number of seconds: {!r}".format(timeout)
    workdir = spec.get("workdir")
    if not isinstance(workdir, str) or not workdir:
        return "workdir is not a path: {!r}".format(workdir)
    steps = spec.get("steps")
    if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
        return "steps is not a list of steps"
    kept = spec.get("kept_steps")
    if kept is not None and (not isinstance(kept, list)
                             or not all(isinstance(name, str) for name in kept)):
        return "kept_steps is not a list of step names"
    env = spec.get("env") or {}
    if not isinstance(env, dict):
        return "env is not a table of variables"
    if spec.get("rules") is not None and not isinstance(spec.get("rules"), dict):
        return "rules is not a table"
    for key in env:
        if not isinstance(key, str) or not key or "=" in key:
            return "env holds a bad variable name: {!r}".format(key)
    return _text_problem(workdir, steps, env) if has_nul else ""


def _text_problem(workdir: str, steps: List[Dict[str, Any]], env: Dict[Any, Any]) -> str:
    """Text the job hands to exec must hold no NUL byte (exec and chdir refuse one)."""
    if "\0" in workdir:
        return "workdir holds a NUL byte"
    for index, step in enumerate(steps):
        for field in ("name", "cmd"):
            value = step.get(field, "")
            if not isinstance(value, str):
                return "step {} {} is not text: {!r}".format(index + 1, field, value)
            if "\0" in value:
                return "step {} {} holds a NUL byte".format(index + 1, field)
    for key, value in env.items():
        if "\0" in key:
            return "env holds a bad variable name: {!r}".format(key)
        if "\0" in str(value):
            return "env value of {} holds a NUL byte".format(key)
    return ""


def command_argv(cmd: str) -> List[str]:
    """The argv that runs a step command (see _PLAIN_COMMAND)."""
    if cmd.strip() and _PLAIN_COMMAND.match(cmd):
        return cmd.split()
    return ["/bin/sh", "-c", cmd]


def job_environment(base: Dict[str, str], spec: Dict[str, Any],
                    gpu_ids: Optional[List[str]]) -> Dict[str, str]:
    """The environment of a job: the agent's, the spec's `env`, then megarun's own variables."""
    env = dict(base)
    for key, value in (spec.get("env") or {}).items():
        env[str(key)] = str(value)
    env["MEGARUN_JOB_ID"] = str(spec["id"])
    env["MEGARUN_ATTEMPT"] = str(spec.get("attempt", 0))
    env["MEGARUN_WORKDIR"] = str(spec["workdir"])
    env["OMP_NUM_THREADS"] = str(spec.get("threads") or 1)
    if gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    return env


def job_variables(spec: Dict[str, Any], gpu_ids: Optional[List[str]]) -> List[str]:
    """The names job_environment sets for the job (what a launcher must pass on)."""
    names = [str(key) for key in (spec.get("env") or {})]
    names += ["MEGARUN_JOB_ID", "MEGARUN_ATTEMPT", "MEGARUN_WORKDIR", "OMP_NUM_THREADS"]
    if gpu_ids is not None:
        names.append("CUDA_VISIBLE_DEVICES")
    return names


def open_logs(workdir: str, step: str) -> List[int]:
    """Create the work dir and the step's .out/.err files; return their descriptors."""
    make_private_dirs(workdir)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    out = os.open(os.path.join(workdir, step + ".out"), flags, 0o600)
    try:
        err = os.open(os.path.join(workdir, step + ".err"), flags, 0o600)
    except OSError:
        os.close(out)
        raise
    return [out, err]


def spawn(argv: List[str], workdir: str, env: Dict[str, str], out: int, err: int,
          home: str) -> int:
    """Start `argv` in `workdir` as the leader of a new session; return its pid.

    Raises StepFailedToStart when the program does not exist or cannot be executed.
    """
    try:
        if _SPAWN is not None:
            return _posix_spawn(argv, workdir, env, out, err, home)
        return _popen(argv, workdir, env, out, err)
    except FileNotFoundError:
        raise StepFailedToStart("command not found: " + shlex.quote(argv[0]), 127) from None
    except PermissionError:
        raise StepFailedToStart("command not executable: " + shlex.quote(argv[0]), 126) from None
    except OSError as exc:
        if exc.errno == errno.ENOEXEC:
            raise StepFailedToStart("not an executable file: " + shlex.quote(argv[0]),
                                    126) from None
        raise


#: Programs found on PATH, by name and PATH value: a PATH search in every child costs one
#: failed exec per PATH entry before the right one.
_FOUND: Dict[Tuple[str, str], str] = {}


def resolve(program: str, path: str) -> str:
    """The file `program` names, searched on `path` like execvp does (cached)."""
    if "/" in program:
        return program
    key = (program, path)
    found = _FOUND.get(key)
    if found is not None:
        return found
    for folder in path.split(os.pathsep):
        candidate = os.path.join(folder or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            if folder and os.path.isabs(folder):
                _FOUND[key] = candidate
            return candidate
    raise FileNotFoundError(errno.ENOENT, "not found on PATH", program)


def _posix_spawn(argv: List[str], workdir: str, env: Dict[str, str], out: int, err: int,
                 home: str) -> int:
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_DUP2, out, 1),
               (os.POSIX_SPAWN_DUP2, err, 2)]
    search = env.get("PATH", os.defpath)
    os.chdir(workdir)  # the agent is single-threaded: the child inherits this cwd
    try:
        try:
            return _spawn_file(resolve(argv[0], search), argv, env, actions)
        except FileNotFoundError:
            if _FOUND.pop((argv[0], search), None) is None:
                raise
            return _spawn_file(resolve(argv[0], search), argv, env, actions)  # it moved
    finally:
        os.chdir(home)


def _spawn_file(program: str, argv: List[str], env: Dict[str, str], actions: List[Any]) -> int:
    assert _SPAWN is not None
    return int(_SPAWN(program, argv, env, file_actions=actions, setsid=True,
                      setsigdef=_SIGNALS_TO_RESET))


#: Popen objects of running steps on Pythons without posix_spawn, so that they are not
#: garbage-collected while running (the agent reaps them itself with waitpid).
_POPENS: Dict[int, subprocess.Popen] = {}  # type: ignore[type-arg]


def _popen(argv: List[str], workdir: str, env: Dict[str, str], out: int, err: int) -> int:
    process = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                               stdout=out, stderr=err, start_new_session=True,
                               preexec_fn=_parent_death_signal(os.getpid()))
    _POPENS[process.pid] = process
    return process.pid


def _parent_death_signal(parent: int) -> Optional[Callable[[], None]]:
    """On Linux, a preexec hook that makes the step die (SIGKILL) when the agent dies.

    Only the Popen fallback (Pythons without os.posix_spawn, such as 3.6 and 3.7) can run code
    in the child; posix_spawn cannot set it. It reaches the step leader only: its children are
    found and killed by whoever settles the dead agent (megarun/agent/orphans.py).
    """
    if _PRCTL is None:
        return None
    prctl = _PRCTL

    def set_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the agent died before the prctl: act as if it came after
            os.kill(os.getpid(), signal.SIGKILL)

    return set_signal


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Optional[Callable[..., int]]:
    """libc's prctl, looked up once in the agent (not in every child); None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None
    return function


_PRCTL = _load_prctl() if _SPAWN is None else None


def reaped(pid: int, rc: int) -> None:
    """Tell the Popen fallback that the agent reaped `pid` itself."""
    process = _POPENS.pop(pid, None)
    if process is not None:
        process.returncode = rc


def exit_code(status: int) -> int:
    """A waitpid status as a shell-like code: the exit code, or minus the signal number."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def signal_group(pid: int, signum: int) -> None:
    """Send a signal to a step's whole process group; a group already gone is fine."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return
    except PermissionError:
        return  # the group leader's pid was reused by a process of someone else


def write_exit_file(workdir: str, rc: Optional[int]) -> None:
    """Write megarun.exit with a single write() of a few bytes.

    One create and one write instead of a temporary file and a rename: on slow file systems
    the job's metadata operations are the agent's main cost. A reader that finds the file
    empty (between the create and the write) treats it as not written yet.
    """
    fd = os.open(os.path.join(workdir, "megarun.exit"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                 0o600)
    try:
        os.write(fd, "{}\n".format(rc).encode())
    finally:
        os.close(fd)


def remove_exit_file(workdir: str) -> None:
    """Remove an earlier attempt's megarun.exit before a new attempt starts in the same dir.

    Whoever settles a dead agent reads megarun.exit as the end of the attempt that was running:
    it must never find the one a previous attempt left.
    """
    try:
        os.unlink(os.path.join(workdir, "megarun.exit"))
    except FileNotFoundError:
        return


def read_exit_file(workdir: str) -> Tuple[bool, Optional[int]]:
    """(found, rc) from megarun.exit; rc None when the job could not be run at all."""
    try:
        with open(os.path.join(workdir, "megarun.exit"), "rb") as handle:
            text = handle.read(64).decode("ascii", "replace").strip()
    except OSError:
        return False, None
    if text == "None":
        return True, None
    try:
        return True, int(text)
    except ValueError:
        return False, None  # empty: created but not written yet (see write_exit_file)


def process_start(pid: int) -> Optional[int]:
    """When a process started (field 22 of /proc/<pid>/stat, clock ticks since boot).

    With the pid it names one process for good: a later process that reuses the pid starts
    later. None where there is no /proc, or when the process is gone.
    """
    try:  # os.open/os.read: a third of the cost of open() here, once per step started
        fd = os.open("/proc/%d/stat" % pid, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = data.rsplit(b")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def last_line(path: str, limit: int = 200) -> str:
    """The last non-empty line of a (log) file, shortened; '' if there is none."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            tail = handle.read()
    except OSError:
        return ""
    lines = [line for line in tail.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1].strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


def disk_full(path: str) -> bool:
    """True when the file system holding `path` has no block or no inode left for us."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return False
    return stats.f_bavail == 0 or (stats.f_files > 0 and stats.f_favail == 0)


def describe_signal(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal {}".format(signum)
