"""Site matching through the CLI: requirements, capabilities, `job match`, then a real launch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import megarun_process


def setup_sites(cli: Any) -> None:
    ok = cli("site", "add", "alpha", "--preset", "local", "--capability", "os=linux",
             "--capability", "python=3.9")
    assert ok.code == 0, ok.err
    ok = cli("site", "add", "beta", "--preset", "local", "--capability", "os=linux",
             "--capability", "python=3.12.1", "--capability", "gpu=false")
    assert ok.code == 0, ok.err
    shown = cli("site", "show", "beta", "--json").json()
    assert shown["settings"]["capabilities"] == {"os": "linux", "python": "3.12.1", "gpu": False}


def test_match_assign_explain_and_run(cli: Any, area: Path) -> None:
    setup_sites(cli)
    assert cli("app", "add", "sim", "--command", "echo {{ n }}", "--param", "n=1",
               "--require", "os=linux", "--require", "python>=3.10").code == 0
    assert cli("app", "add", "cuda", "--command", "echo gpu", "--require", "gpu=true").code == 0
    app = cli("app", "show", "sim", "--json").json()
    assert app["requirements"] == {"os": "linux", "python": ">=3.10"}

    created = cli("job", "create", "--app", "sim", "--count", "3", "--json")
    assert created.code == 0 and created.json()["unmatched"] == 3
    assert cli("job", "create", "--app", "cuda").code == 0
    listed = cli("job", "ls", "--json").json()
    assert [job["site"] for job in listed] == [None, None, None, None]
    table = cli("job", "ls")
    assert table.out.count("(unmatched)") == 4

    matched = cli("job", "match", "--json")
    assert matched.code == 0
    assert matched.json()["assigned"] == {"beta": 3} and matched.json()["unmatched"] == 1
    assert {job["id"]: job["site"] for job in cli("job", "ls", "--json").json()} == {
        1: "beta", 2: "beta", 3: "beta", 4: None}

    shown = cli("job", "show", "4")
    assert "(unmatched)" in shown.out
    assert ("no site satisfies app 'cuda': needs gpu=true; site alpha has no 'gpu' capability | "
            "needs gpu=true; site beta has gpu=false") in shown.out
    assert cli("job", "show", "4", "--json").json()["state"] == "READY"

    again = cli("job", "match")
    assert again.code == 0 and "(unmatched)" in again.out and "needs gpu=true" in again.out

    result = megarun_process(area, "launch", "--site", "beta", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["done"] == 3 and summary["by_status"] == {"PASS": 3}
    final = {job["id"]: (job["state"], job["status"]) for job in cli("job", "ls", "--json").json()}
    assert final == {1: ("COMPLETED", "PASS"), 2: ("COMPLETED", "PASS"),
                     3: ("COMPLETED", "PASS"), 4: ("READY", "n/a")}


def test_create_on_a_site_that_cannot_run_the_app(cli: Any) -> None:
    setup_sites(cli)
    assert cli("app", "add", "sim", "--command", "true", "--require", "python>=3.10").code == 0
    refused = cli("job", "create", "--app", "sim", "--site", "alpha", "--count", "5")
    assert refused.code == 2
    assert "site 'alpha' cannot run app 'sim': needs python>=3.10; site alpha has python=3.9" in (
        refused.err)
    assert len(refused.err.strip().splitlines()) == 1
    assert cli("job", "ls", "--json").json() == []
    assert cli("job", "create", "--app", "sim", "--site", "beta").code == 0
    assert cli("job", "ls", "--json").json()[0]["site"] == "beta"


def test_apps_without_requirements_keep_the_default_site(cli: Any) -> None:
    assert cli("app", "add", "plain", "--command", "true").code == 0
    created = cli("job", "create", "--app", "plain", "--json").json()
    assert created["unmatched"] == 0
    assert cli("job", "ls", "--json").json()[0]["site"] == "local"
    assert cli("job", "match", "--json").json()["assigned"] == {}


def test_bad_requirements_and_capabilities_are_usage_errors(cli: Any, area: Path) -> None:
    bad = cli("app", "add", "sim", "--command", "true", "--require", "python>=three")
    assert bad.code == 2 and "bad version constraint '>=three'" in bad.err
    bad = cli("site", "add", "x", "--preset", "local", "--capability", "gpu")
    assert bad.code == 2 and "--capability 'gpu': expected key=value" in bad.err
    bad = cli("site", "add", "x", "--preset", "local", "--set", "capabilities.my key=1")
    assert bad.code == 2 and "[capabilities] name 'my key'" in bad.err
    (area / "apps" / "train.toml").write_text(
        'command = "true"\n[requirements]\npython = ">= 3.10,<=x"\n')
    synced = cli("app", "sync")
    assert synced.code == 2 and "train.toml" in synced.err and "'<=x'" in synced.err


def test_policy_from_megarun_toml(cli: Any, area: Path) -> None:
    setup_sites(cli)
    config = area / "megarun.toml"
    config.write_text(config.read_text() + '\n[matching]\npolicy = "round-robin"\n')
    assert cli("site", "add", "gamma", "--preset", "local", "--capability", "os=linux").code == 0
    assert cli("app", "add", "any", "--command", "true", "--require", "os=linux").code == 0
    assert cli("job", "create", "--app", "any", "--count", "4").code == 0
    matched = cli("job", "match", "--json").json()
    assert matched["policy"] == "round-robin"
    assert matched["assigned"] == {"alpha": 2, "beta": 1, "gamma": 1}
    config.write_text(config.read_text().replace("round-robin", "fastest"))
    bad = cli("job", "match")
    assert bad.code == 2 and "valid policies: first, round-robin, least-loaded" in bad.err


def test_launch_and_sync_match_waiting_jobs_themselves(cli: Any, area: Path) -> None:
    setup_sites(cli)
    assert cli("app", "add", "sim", "--command", "echo hi", "--require", "python>=3.10").code == 0
    assert cli("job", "create", "--app", "sim", "--count", "2").code == 0
    result = megarun_process(area, "launch", "--site", "beta", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["by_status"] == {"PASS": 2}
    assert cli("job", "create", "--app", "sim").code == 0
    synced = megarun_process(area, "sync", "--json")
    assert synced.returncode == 0, synced.stderr
    assert [job["site"] for job in cli("job", "ls", "--json").json()] == ["beta"] * 3


def test_a_local_site_knows_its_os_arch_and_python(cli: Any) -> None:
    import platform

    assert cli("site", "add", "here", "--preset", "local").code == 0
    detected = cli("site", "show", "here", "--json").json()["settings"]["detected"]
    assert detected == {"os": platform.system().lower(), "arch": platform.machine(),
                        "python": platform.python_version()}
    assert cli("app", "add", "py", "--command", "true", "--require", "os=" + detected["os"],
               "--require", "python>=3.6").code == 0
    assert cli("job", "create", "--app", "py").code == 0
    matched = cli("job", "match", "--json").json()
    assert matched["assigned"] == {"here": 1} and matched["unmatched"] == 0
