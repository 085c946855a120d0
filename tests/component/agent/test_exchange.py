"""The agent's exchange, run from the shipped zipapp under this Python and the oldest (3.6)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from megarun.sites.agentzip import agent_zipapp
from tests.component.agent.harness import Site


def zipapp(tmp_path: Path) -> Path:
    app = agent_zipapp()
    path = tmp_path / app.name
    path.write_bytes(app.data)
    return path


def ask(python: str, app: Path, request: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([python, str(app), "exchange"], input=json.dumps(request).encode(),
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_zipapp_is_the_same_bytes_every_time() -> None:
    agent_zipapp.cache_clear()
    first = agent_zipapp()
    agent_zipapp.cache_clear()
    assert agent_zipapp() == first and first.name.startswith("megarun-agent-")


def test_exchange_publishes_starts_an_agent_and_returns_its_events(site: Site, tmp_path: Path) -> None:
    app = zipapp(tmp_path)
    bundle = "\n".join(json.dumps(site.job(n, "true")) for n in (1, 2)) + "\n"
    request: dict[str, Any] = {
        "workdir": str(site.workdir), "publish": [{"name": "0001-1-0.jsonl", "data": bundle}],
        "kill": [], "stop": {}, "offsets": {},
        "start_agent": {"args": ["--cpus", "2", "--idle-exit", "1", "--heartbeat", "0.2"],
                        "dead_after": 5}}
    first = ask(site.python, app, request)
    assert first["started_agent"] and first["version"]
    agent = first["started_agent"]
    seen: dict[str, str] = {}
    offsets: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = ask(site.python, app, {"workdir": str(site.workdir), "offsets": offsets,
                                        "kill": [], "stop": {}})
        for name, chunk in answer["events"].items():
            assert chunk["offset"] == offsets.get(name, 0)  # nothing skipped, nothing twice
            seen[name] = seen.get(name, "") + chunk["data"]
            offsets[name] = chunk["offset"] + len(chunk["data"].encode())
        finished = [e for e in map(json.loads, seen.get(agent, "").splitlines())
                    if e["ev"] == "finished"]
        if len(finished) == 2:
            break
        time.sleep(0.2)
    assert sorted(e["job"] for e in finished) == [1, 2]
    beats = {b["agent"]: b for b in answer["heartbeats"]}
    assert beats[agent]["process"] in (True, False)  # judged on the site itself
    assert answer["disk_free"] > 0


def test_exchange_matches_controls_and_takes_work_back(site: Site, tmp_path: Path) -> None:
    app = zipapp(tmp_path)
    (site.spool / "control" / "kill" / "99").write_text("")
    answer = ask(site.python, app, {
        "workdir": str(site.workdir), "kill": [5, 6], "stop": {"all": "drain"},
        "publish": [{"name": "b.jsonl", "data": json.dumps(site.job(7, "true")) + "\n"}],
        "take_back": False})
    assert sorted(p.name for p in (site.spool / "control" / "kill").iterdir()) == ["5", "6"]
    assert (site.spool / "control" / "stop" / "all").read_text() == "drain"
    assert answer["queue"] == ["b.jsonl"]
    back = ask(site.python, app, {"workdir": str(site.workdir), "kill": [], "stop": {},
                                  "take_back": True})
    assert [b["name"] for b in back["taken_back"]] == ["b.jsonl"]
    assert json.loads(back["taken_back"][0]["data"])["id"] == 7
    assert back["queue"] == [] and not list((site.spool / "control" / "kill").iterdir())
    assert not (site.spool / "control" / "stop" / "all").exists()


def test_a_bad_request_is_a_clear_error(site: Site, tmp_path: Path) -> None:
    app = zipapp(tmp_path)
    done = subprocess.run([site.python, str(app), "exchange"], input=b"{not json",
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"].startswith("bad request")


def test_exchange_forgets_an_ended_agent_read_to_the_end(site: Site, tmp_path: Path) -> None:
    """Housekeeping on an SSH site: the files of an ended agent go only when the home host
    holds its whole event log, and a repeated request (answer lost) is answered again."""
    app = zipapp(tmp_path)
    site.queue(site.job(1, "true"))
    site.run(agent_id="a1")
    events = site.spool / "events" / "a1.jsonl"
    size = events.stat().st_size
    logs = site.workdir / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "agent-a1.log").write_text("a1 said goodbye\n")
    base = {"workdir": str(site.workdir), "kill": [], "stop": {}, "offsets": {"a1": size}}
    short = ask(site.python, app, {**base, "forget": {"a1": size - 1}})
    assert short["forgotten"] == [] and events.exists()  # the home host lacks the last bytes
    answer = ask(site.python, app, {**base, "forget": {"a1": size}})
    assert answer["forgotten"] == ["a1"]
    assert not events.exists() and not (site.spool / "agents" / "a1.json").exists()
    assert not (logs / "agent-a1.log").exists()
    assert "a1 said goodbye" in (logs / "ended-agents.log").read_text()
    assert [b["agent"] for b in answer["heartbeats"]] == [] and answer["events"] == {}
    again = ask(site.python, app, {**base, "forget": {"a1": size}})
    assert again["forgotten"] == ["a1"]  # nothing left: still forgotten
    assert (logs / "ended-agents.log").read_text().count("a1 said goodbye") == 1


def test_exchange_never_forgets_an_agent_whose_process_lives(site: Site, tmp_path: Path) -> None:
    app = zipapp(tmp_path)
    living = subprocess.Popen([site.python, "-c", "import time; time.sleep(60)", "megarun"])
    try:
        (site.spool / "events" / "a2.jsonl").write_text('{"seq": 1, "ev": "agent_started"}\n')
        beat = {"agent": "a2", "host": socket.gethostname(), "pid": living.pid,
                "state": "running", "time": time.time()}
        (site.spool / "agents" / "a2.json").write_text(json.dumps(beat))
        size = (site.spool / "events" / "a2.jsonl").stat().st_size
        answer = ask(site.python, app, {"workdir": str(site.workdir), "kill": [], "stop": {},
                                        "offsets": {"a2": size}, "forget": {"a2": size}})
        assert answer["forgotten"] == [] and (site.spool / "events" / "a2.jsonl").exists()
    finally:
        living.kill()
        living.wait()
