"""The home host: the one host that writes an area's working database.

`<area>/.megarun/homehost` (JSON, written to a temp file and renamed into place) names the
home host, where its working database is, how other hosts reach it over SSH, and the command
that runs megarun there. The working database lives on the home host's local disk, never on a
network file system; every other host reads the mirror and forwards writes (docs/concepts.md,
"Home host and mirror").

The first command that opens an area's database on a host with no homehost file makes that
host the home. An area made before the file existed keeps its `.megarun/work.db`.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from megarun.agent.private import make_private_dirs
from megarun.config.area import Area
from megarun.core.filelocks import hold_or_refuse
from megarun.core.files import write_private
from megarun.errors import ConfigError, MegarunError
from megarun.transport.ssh.hostspec import parse_host_spec

HOSTNAME_ENV = "MEGARUN_HOSTNAME"
DB_DIR_ENV = "MEGARUN_DB_DIR"
#: File systems a working database must never live on (SQLite locking is unsafe there).
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs",
    "fuse.glusterfs", "fuse.sshfs", "fuse.cephfs", "afs", "panfs", "wekafs", "9p", "fuse.s3fs",
    "fuse.gcsfuse", "vboxsf", "virtiofs",
})
_SSH_KEYS = ("identity", "known_hosts", "jump")


class NotHomeHost(MegarunError):
    """This host does not hold the area's working database."""

    exit_code = 3


@dataclass(frozen=True)
class HomeHost:
    """What the homehost file says."""

    host: str
    db: Path
    address: str  # [user@]host[:port] or an ssh config alias: how other hosts reach it
    megarun: tuple[str, ...]  # the command that runs megarun there
    since: float
    area: Path  # the area's root as the home host sees it (mount points may differ)
    ssh: dict[str, str] = field(default_factory=dict)  # identity, known_hosts, jump
    moving_to: str | None = None  # set while `homehost migrate` hands the database over

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["db"], data["area"] = str(self.db), str(self.area)
        data["megarun"] = list(self.megarun)
        return data


def this_host() -> str:
    """This machine's name as the homehost file records it ($MEGARUN_HOSTNAME overrides)."""
    return os.environ.get(HOSTNAME_ENV) or socket.gethostname()


def default_address() -> str:
    """How other hosts reach this one unless told otherwise: user@fully-qualified-name."""
    name = socket.getfqdn()
    if name.startswith("localhost"):
        name = socket.gethostname()
    return f"{getpass.getuser()}@{name}"


#: How a forwarded command starts megarun: this interpreter, with the current directory (the
#: SSH login's home, which may hold anything called "megarun") taken off the import path.
_LAUNCH = ("import sys; del sys.path[0]; from megarun.cli.entry import console_main; "
           "console_main()")


def megarun_command() -> tuple[str, ...]:
    """The command that runs this very megarun (recorded for forwarded commands)."""
    return (sys.executable, "-c", _LAUNCH)


def read_homehost(area: Area) -> HomeHost | None:
    """The homehost file, or None when the area has none yet; a damaged one is an error."""
    try:
        text = area.homehost_path.read_text()
    except FileNotFoundError:
        return None
    try:
        return home_from_dict(json.loads(text), area.root)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{area.homehost_path}: not a valid homehost file ({exc})",
                          "fix it by hand, or remove it on the home host to make that host "
                          "the home again") from None


def home_from_dict(data: dict[str, Any], area_root: Path) -> HomeHost:
    """A HomeHost from its JSON form (KeyError, TypeError or ValueError when malformed)."""
    ssh = {k: str(v) for k, v in dict(data.get("ssh") or {}).items() if k in _SSH_KEYS}
    return HomeHost(str(data["host"]), Path(data["db"]), str(data["address"]),
                    tuple(str(a) for a in data["megarun"]), float(data["since"]),
                    Path(data.get("area") or area_root), ssh, data.get("moving_to") or None)


def write_homehost(area: Area, home: HomeHost, create_only: bool = False) -> bool:
    """Replace the homehost file atomically (temp file, fsync, rename), owner-only.

    With `create_only`, write it only if there is none (hard link: atomic, also on NFS);
    False when another process got there first.
    """
    path = area.homehost_path
    make_private_dirs(str(path.parent))
    text = json.dumps(home.as_dict(), indent=2) + "\n"
    return write_private(path, text, durable=True, create_only=create_only)


def establish(area: Area) -> HomeHost:
    """The area's home host, making this host the home when no host is yet."""
    home = read_homehost(area)
    if home is not None:
        return home
    legacy = area.db_path
    db = legacy if legacy.exists() else choose_db_path(area)
    home = HomeHost(this_host(), db, default_address(), megarun_command(), time.time(),
                    area.root)
    if write_homehost(area, home, create_only=True):
        return home
    return read_homehost(area) or home  # another process won the race: its file stands


def working_db_path(area: Area) -> Path:
    """The working database of `area`, which must have this host as its home."""
    home = establish(area)
    if home.host != this_host():
        raise not_home(area, home)
    return home.db


def not_home(area: Area, home: HomeHost) -> NotHomeHost:
    """The refusal of a write on a host that is not `home` (the CLI's and the Python API's)."""
    return NotHomeHost(f"the area {area.root} has its working database on {home.host}, not "
                       f"on this host ({this_host()})",
                       f"run the command on {home.host}, or move the database here with "
                       "'megarun homehost migrate'")


def update_address(area: Area, address: str, ssh: dict[str, str]) -> HomeHost:
    """Record how other hosts reach the home host (run on the home host); a malformed
    address is refused before anything is recorded."""
    parse_host_spec(address)
    home = establish(area)
    if home.host != this_host():
        raise NotHomeHost(f"only the home host ({home.host}) can change its address")
    updated = replace(home, address=address, ssh={k: v for k, v in ssh.items() if v},
                      megarun=megarun_command(), area=area.root)
    write_homehost(area, updated)
    return updated


# -- where a working database may live ---------------------------------------------------------
def choose_db_path(area: Area, host: str | None = None) -> Path:
    """A working-database path on this host's local disk.

    $MEGARUN_DB_DIR first; then the area's own .megarun when the area is on a local file
    system; then the user's state directory, then /var/tmp, whichever is local first.
    """
    explicit = os.environ.get(DB_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser() / _area_key(area) / "work.db"
    if not is_network_fs(area.state_dir):
        return area.db_path if host is None else area.state_dir / f"work-{host}.db"
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    for base in (state / "megarun" / "areas", Path("/var/tmp") / f"megarun-{os.getuid()}"):
        if not is_network_fs(base):
            return base / _area_key(area) / "work.db"
    raise ConfigError("no local disk for the working database: the area, the state directory "
                      "and /var/tmp are all on network file systems",
                      f"set {DB_DIR_ENV} to a directory on a local disk")


def _area_key(area: Area) -> str:
    digest = hashlib.sha256(str(area.root).encode()).hexdigest()[:12]
    return f"{area.config.name}-{digest}"


def is_network_fs(path: Path, mountinfo: str | None = None) -> bool:
    """Whether `path` (or its nearest existing parent) is on a network file system."""
    fstype = filesystem_type(path, mountinfo)
    return fstype is not None and (fstype in NETWORK_FS or fstype.startswith("nfs"))


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the file system holding `path`, from /proc/self/mountinfo (None elsewhere)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target = _existing(path)
    best, best_type = -1, None
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        point = _unescape(fields[4])
        fstype = line.split(" - ", 1)[1].split()[0]
        if _under(target, point) and len(point) > best:
            best, best_type = len(point), fstype
    return best_type


def _existing(path: Path) -> str:
    """`path` with its existing part resolved (symlinks followed), the rest appended."""
    current = path.expanduser().absolute()
    rest: list[str] = []
    while not current.exists() and current != current.parent:
        rest.insert(0, current.name)
        current = current.parent
    return str(current.resolve().joinpath(*rest))


def _under(path: str, point: str) -> bool:
    return point == "/" or path == point or path.startswith(point.rstrip("/") + "/")


def _unescape(text: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    return (text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def handoff_lock_path(home: HomeHost) -> Path:
    """Held by `homehost release` on the home host for the whole hand-over."""
    return home.db.with_name(home.db.name + ".handoff.lock")


def check_not_moving(area: Area, home: HomeHost) -> None:
    """Refuse to open the working database while it is being handed to another host; clear
    the mark a crashed hand-over left (its lock is free: nobody is moving it)."""
    if not home.moving_to:
        return
    busy = NotHomeHost(f"the working database is being moved to {home.moving_to}",
                       "try again in a moment")
    with hold_or_refuse(handoff_lock_path(home), busy):
        current = read_homehost(area)
        if current is not None and current.host == home.host and current.moving_to:
            write_homehost(area, replace(current, moving_to=None))
