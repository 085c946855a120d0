"""The agent runs only bundles that are its user's and that nobody else may rewrite."""

from __future__ import annotations

import os
import pwd
import stat

import pytest

from tests.component.agent.harness import Site, of
from tests.users import other_user


@pytest.fixture(scope="module")
def other() -> pwd.struct_passwd:
    return other_user()


def test_a_bundle_of_another_user_is_moved_aside_and_not_run(site: Site,
                                                             other: pwd.struct_passwd) -> None:
    foreign_marker, mine = site.workdir / "foreign-ran", site.workdir / "mine-ran"
    foreign = site.queue(site.job(1, f"touch {foreign_marker}"))
    os.chown(foreign, other.pw_uid, other.pw_gid)
    writable = site.queue(site.job(2, f"touch {foreign_marker}-2"))
    os.chmod(writable, 0o666)
    site.queue(site.job(3, f"touch {mine}"))
    events = site.run()
    assert not foreign_marker.exists() and not (site.workdir / "foreign-ran-2").exists()
    assert mine.exists()
    assert set(of(events, "claimed")) == {3}
    assert of(events, "finished")[3]["reason"] == "exit"
    rejected = site.spool / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == [foreign.name, writable.name]
    assert stat.S_IMODE(rejected.stat().st_mode) == 0o700
    assert list((site.spool / "queue").iterdir()) == []


def test_a_foreign_bundle_left_in_claimed_is_not_resumed(site: Site,
                                                         other: pwd.struct_passwd) -> None:
    marker = site.workdir / "ran"
    claimed = site.spool / "claimed" / "a1"
    claimed.mkdir(mode=0o700)
    bundle = site.queue(site.job(1, f"touch {marker}"))
    os.rename(bundle, claimed / bundle.name)
    os.chown(claimed / bundle.name, other.pw_uid, other.pw_gid)
    events = site.run()
    assert not marker.exists()
    assert of(events, "started") == {} and of(events, "finished") == {}
    assert (site.spool / "rejected" / bundle.name).exists()
