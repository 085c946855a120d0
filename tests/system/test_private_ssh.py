"""An SSH site's work dir that another user made is refused on the site, in the exchange's
own round trip, before the agent zipapp found there is run (a real second user, real sshd)."""

from __future__ import annotations

import pwd
import sys
from pathlib import Path

import pytest

from megarun.sites.agentzip import agent_zipapp
from tests.sshd import SshServer
from tests.system.test_remote_jobs import add_ssh_site, cli, new_area, ok
from tests.users import as_user, other_user, plant_work_dir, shared_folder

#: What a planted "agent" does if it is ever run: leave a mark.
_PLANT_AGENT = """
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("__main__.py", "open(%r, 'w').close()" % sys.argv[2])
"""


@pytest.fixture(scope="module")
def other() -> pwd.struct_passwd:
    return other_user()


def test_a_work_dir_of_another_user_is_refused_on_the_site(
        tmp_path: Path, sshd: SshServer, home: Path, known_hosts: Path,
        other: pwd.struct_passwd) -> None:
    with shared_folder() as shared:
        workdir, marker, agent_ran = shared / "site", shared / "marker", shared / "agent-ran"
        plant_work_dir(other, workdir, marker)
        agent = workdir / "agent" / agent_zipapp().name
        as_user(other, "mkdir", "-m", "0777", str(agent.parent))
        as_user(other, sys.executable, "-c", _PLANT_AGENT, str(agent), str(agent_ran))
        area = new_area(tmp_path)
        add_ssh_site(area, home, "remote", sshd, workdir, known_hosts)
        ok(area, home, "app", "add", "mine", "--command", f"touch {shared}/mine")
        ok(area, home, "job", "create", "--app", "mine", "--site", "remote")
        result = cli(area, home, "launch", "--site", "remote", timeout=120)
        assert not agent_ran.exists()  # the zipapp found there never ran
        assert result.returncode == 3, result.stderr
        assert f"{workdir}: belongs to user {other.pw_name}" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not marker.exists() and not (shared / "mine").exists()
