"""A pilot submitted without --queue to a site of a centre preset goes to a queue that takes it
(issue 18): Aurora's `prod` takes 256 nodes at least, so a 1-node pilot asks for `debug` or
`capacity`. Submitted through megarun's CLI to the fake PBS of tests/fakes, which keeps a real
queue in a file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from megarun.homehost.areas import init_area
from tests.conftest import megarun_process

FAKES = Path(__file__).resolve().parents[2] / "fakes" / "bin"


def fake_pbs_area(tmp_path: Path) -> Callable[..., tuple[int, str, str]]:
    """A new area whose CLI runs against the fake PBS Pro of tests/fakes (jobs stay queued)."""
    root = tmp_path / "area"
    init_area(root, keys=["os"])
    env = {"PATH": os.pathsep.join((str(FAKES), os.environ["PATH"])),
           "MEGARUN_FAKE_QUEUE": str(tmp_path / "queue.json"),
           "MEGARUN_FAKE_FLAVOR": "pbspro", "MEGARUN_FAKE_START_DELAY": "3600"}

    def cli(*args: str) -> tuple[int, str, str]:
        done = megarun_process(root, *args, env=env, timeout=120)
        return done.returncode, done.stdout, done.stderr

    return cli


def test_a_small_aurora_pilot_never_asks_for_prod(tmp_path: Path) -> None:
    cli = fake_pbs_area(tmp_path)
    code, out, err = cli("site", "add", "aur", "--preset", "aurora", "--set", "account=proj1")
    assert code == 0, err
    asked = {}
    for walltime in ("30", "3h", "168h"):
        code, out, err = cli("queue", "submit", "--site", "aur", "--nodes", "1", "--walltime",
                             walltime, "--json")
        assert code == 0, (out, err)
        [row] = json.loads(out)
        asked[walltime] = row["queue"]
    assert asked == {"30": "debug", "3h": "capacity", "168h": "capacity"}
    # 20 nodes for 2 h: no queue takes it; the default's check names its minimum.
    code, out, err = cli("queue", "submit", "--site", "aur", "--nodes", "20", "--walltime", "2h")
    assert code == 2 and "queue 'prod' of site 'aur' takes at least 256 nodes" in err, err
    code, out, err = cli("queue", "submit", "--site", "aur", "--nodes", "1", "--walltime",
                         "169h")
    assert code == 2 and "takes at least 256 nodes" in err, err
    # The scheduler got what megarun recorded: the queue read from each script's #PBS -q line.
    queued = json.loads((tmp_path / "queue.json").read_text())
    jobs = queued["jobs"].values() if isinstance(queued.get("jobs"), dict) else queued["jobs"]
    assert sorted(job["queue"] for job in jobs) == ["capacity", "capacity", "debug"]


def test_direct_jobs_are_held_to_the_walltime_bins_each(tmp_path: Path) -> None:
    """Direct mode checks each job as a pilot is checked: a job no queue takes stays READY with
    a submit_failed batch job saying which bin refuses it; the others go to a queue that takes
    them (Polaris: `prod` takes 10 nodes at least, 3 h up to 24 nodes)."""
    cli = fake_pbs_area(tmp_path)
    assert cli("site", "add", "pol", "--preset", "polaris", "--set", "account=proj1")[0] == 0
    assert cli("app", "add", "sim", "--command", "true")[0] == 0
    for nodes, walltime in (("1", "30m"), ("12", "2h"), ("12", "5h")):
        code, _, err = cli("job", "create", "--app", "sim", "--site", "pol", "--nodes", nodes,
                           "--walltime", walltime)
        assert code == 0, err
    code, out, err = cli("queue", "submit", "--site", "pol", "--mode", "direct")
    assert code == 3 and "1 of 3 batch job(s) not submitted" in err, err
    assert "allows at most 180 minutes (3 h) for 10-24 nodes, asked for 301 minutes" in err
    code, out, _ = cli("queue", "ls", "--history", "--json")
    rows = sorted(json.loads(out), key=lambda row: row["id"])
    assert [(row["nodes"], row["queue"], row["state"]) for row in rows] == [
        (1, "debug", "queued"), (12, "prod", "queued"), (12, "prod", "submit_failed")]
    assert "allows at most 180 minutes (3 h) for 10-24 nodes" in rows[2]["message"]
    code, out, _ = cli("job", "ls", "--json")
    assert [job["state"] for job in json.loads(out)][2] == "READY"  # never sent to the scheduler
    # Asked again with only the job no queue takes: a clear one-line refusal, nothing recorded.
    code, out, err = cli("queue", "submit", "--site", "pol", "--mode", "direct")
    assert code == 2 and "job 3: queue 'prod' of site 'pol' allows at most 180 minutes" in err
    code, out, _ = cli("queue", "ls", "--history", "--json")
    assert len(json.loads(out)) == 3
