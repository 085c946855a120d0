"""Site matching: requirements against capabilities, policies, and bulk passes on a real area."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from megarun.campaign import app_registry as app_service
from megarun.campaign.create import JobRequest, create_jobs
from megarun.campaign.query import JobFilter, get_job, list_jobs
from megarun.cli.job_cmd import match_json
from megarun.config.apps import parse_constraints, validate_app
from megarun.config.area import load_area_config
from megarun.config.presets import validate_preset
from megarun.config.requirements import (
    compare_versions,
    parse_tag_pairs,
    parse_version,
    satisfies,
)
from megarun.engine.matching import Candidate, LeastLoadedPolicy, RoundRobinPolicy, match_jobs
from megarun.errors import ConfigError, UsageError
from megarun.homehost.context import Context
from megarun.sites import registry as site_service
from tests.conftest import megarun_process

# -- satisfies ---------------------------------------------------------------------------------


def test_everything_met_is_none() -> None:
    needs = {"os": "linux", "gpu": True, "python": ">=3.10", "gpu_model": "a100", "cores": 64}
    have = {"os": "Linux", "gpu": True, "python": "3.11.4", "gpu_model": "A100", "cores": 64}
    assert satisfies(needs, have, "a") is None
    assert satisfies({}, {}, "a") is None


def test_reason_names_requirement_site_and_value() -> None:
    assert satisfies({"gpu": True}, {"gpu": False}, "a") == "needs gpu=true; site a has gpu=false"
    assert satisfies({"os": "linux"}, {"os": "darwin"}, "b") == (
        "needs os=linux; site b has os=darwin")
    assert satisfies({"python": ">=3.10"}, {"python": "3.9.18"}, "c") == (
        "needs python>=3.10; site c has python=3.9.18")


def test_missing_capability_is_not_met_and_never_crashes() -> None:
    assert satisfies({"os": "linux"}, {}, "a") == "needs os=linux; site a has no 'os' capability"
    assert satisfies({"python": ">=3.10"}, {}, "a") == (
        "needs python>=3.10; site a has no 'python' capability")
    assert satisfies({"gpu": True}, {}, "a") == "needs gpu=true; site a has no 'gpu' capability"


def test_false_is_met_by_false_or_absent_only() -> None:
    assert satisfies({"gpu": False}, {}, "a") is None
    assert satisfies({"gpu": False}, {"gpu": False}, "a") is None
    assert satisfies({"gpu": False}, {"gpu": "a100"}, "a") == "needs gpu=false; site a has gpu=a100"


def test_true_is_met_by_any_set_value() -> None:
    assert satisfies({"gpu": True}, {"gpu": "a100"}, "a") is None
    assert satisfies({"gpu": True}, {"gpu": "false"}, "a") is not None
    assert satisfies({"gpu": True}, {"gpu": 0}, "a") is not None


def test_numbers_compare_as_numbers() -> None:
    assert satisfies({"cores": 64}, {"cores": "64"}, "a") is None
    assert satisfies({"cores": 64}, {"cores": 64.0}, "a") is None
    assert satisfies({"cores": 64}, {"cores": 32}, "a") == "needs cores=64; site a has cores=32"
    assert satisfies({"cores": 1}, {"cores": True}, "a") is not None


def test_version_constraints() -> None:
    assert satisfies({"python": ">=3.10,<3.13"}, {"python": "3.12.1"}, "a") is None
    assert satisfies({"python": ">=3.10,<3.13"}, {"python": "3.13"}, "a") is not None
    assert satisfies({"cuda": "==12"}, {"cuda": "12.0.0"}, "a") is None
    assert satisfies({"cuda": "!=12"}, {"cuda": "12.0"}, "a") is not None
    assert satisfies({"python": ">=3.10"}, {"python": "not-a-version"}, "a") is not None
    assert satisfies({"python": ">=3"}, {"python": 3}, "a") is None


@pytest.mark.parametrize(("have", "operator", "bound", "expected"), [
    ((3, 10), ">=", (3, 9), True),    # 10 > 9 as numbers, not as text
    ((3, 10), "<", (3, 9), False),
    ((3, 10), "==", (3, 10, 0), True),
    ((3, 10, 1), ">", (3, 10), True),
    ((3, 10), "<=", (3, 10), True),
    ((3, 10), "!=", (3, 10), False),
    ((2,), "<", (10,), True),
])
def test_compare_versions(have: tuple[int, ...], operator: str, bound: tuple[int, ...],
                          expected: bool) -> None:
    assert compare_versions(have, operator, bound) is expected


def test_parse_version_reads_the_leading_dotted_number() -> None:
    assert parse_version("3.11.4") == (3, 11, 4)
    assert parse_version("v12.2") == (12, 2)
    assert parse_version("3.12.0rc1") == (3, 12, 0)
    assert parse_version("linux") is None
    assert parse_version(True) is None


# -- validation -------------------------------------------------------------------------------


def test_app_requirements_are_validated() -> None:
    spec = validate_app({"command": "x", "requirements": {"os": "linux", "gpu": True,
                                                          "python": ">=3.10", "n": 4}},
                        "apps/a.toml", "a")
    assert spec.requirements == {"os": "linux", "gpu": True, "python": ">=3.10", "n": 4}
    with pytest.raises(ConfigError, match=r"apps/a.toml: key 'requirements.python': bad version "
                                          r"constraint '>=three'"):
        validate_app({"command": "x", "requirements": {"python": ">=three"}}, "apps/a.toml", "a")
    with pytest.raises(ConfigError, match=r"'requirements.os' must be a non-empty string"):
        validate_app({"command": "x", "requirements": {"os": ["linux"]}}, "apps/a.toml", "a")
    with pytest.raises(ConfigError, match=r"\[requirements\] name 'bad key'"):
        validate_app({"command": "x", "requirements": {"bad key": "x"}}, "apps/a.toml", "a")
    with pytest.raises(ConfigError, match="must be a table"):
        validate_app({"command": "x", "requirements": "linux"}, "apps/a.toml", "a")


def test_constraint_syntax() -> None:
    assert parse_constraints(">=3.10, <3.13", "x") == [(">=", (3, 10)), ("<", (3, 13))]
    for bad in ("=3.10", ">=", ">=3.x", ">=3.10,"):
        with pytest.raises(ConfigError, match="bad version constraint"):
            parse_constraints(bad, "x")


def test_site_capabilities_are_validated() -> None:
    preset = validate_preset("p", {"capabilities": {"os": "linux", "gpu": True}}, "p.toml")
    assert preset.settings["capabilities"] == {"os": "linux", "gpu": True}
    with pytest.raises(ConfigError, match=r"'capabilities.gpus' must be a non-empty string"):
        validate_preset("p", {"capabilities": {"gpus": {"a": 1}}}, "p.toml")
    with pytest.raises(ConfigError, match=r"'capabilities' must be a table"):
        validate_preset("p", {"capabilities": "gpu"}, "p.toml")


def test_tag_pairs_keep_versions_as_strings() -> None:
    assert parse_tag_pairs(["os=linux", "gpu=true", "cores=64", "python=3.10",
                            "python_req>=3.10", "cuda=>=12", "v==1.2"]) == {
        "os": "linux", "gpu": True, "cores": 64, "python": "3.10", "python_req": ">=3.10",
        "cuda": ">=12", "v": "==1.2"}
    with pytest.raises(UsageError, match="expected key=value"):
        parse_tag_pairs(["gpu"], "--capability")


def test_matching_policy_in_area_config(area: Path) -> None:
    path = area / "megarun.toml"
    assert load_area_config(path).matching.policy == "first"
    path.write_text(path.read_text() + '\n[matching]\npolicy = "least-loaded"\n')
    assert load_area_config(path).matching.policy == "least-loaded"
    path.write_text(path.read_text().replace("least-loaded", "random"))
    with pytest.raises(ConfigError, match="valid policies: first, round-robin, least-loaded"):
        load_area_config(path)


# -- policies (pure) --------------------------------------------------------------------------

A, B, C = Candidate(1, "a", {}), Candidate(2, "b", {}), Candidate(3, "c", {})


def test_round_robin_rotates_and_remembers(tmp_path: Path) -> None:
    state = tmp_path / "rotation.json"
    first = RoundRobinPolicy(state)
    assert [s.name for s in first.pick([A, B, C], 4)] == ["a", "b", "c", "a"]
    first.save()
    again = RoundRobinPolicy(state)  # as a new process would
    assert [s.name for s in again.pick([A, B, C], 2)] == ["b", "c"]
    assert [s.name for s in again.pick([A, C], 1)] == ["a"]  # after c, wrapping round


def test_least_loaded_balances_with_existing_load() -> None:
    policy = LeastLoadedPolicy({1: 3, 2: 0})
    picks = [s.name for s in policy.pick([A, B], 5)]
    assert picks.count("a") == 1 and picks.count("b") == 4
    assert policy.loads == {1: 4, 2: 4}


# -- matching passes on a real area -----------------------------------------------------------


def use_policy(ctx: Context, policy: str) -> Context:
    path = ctx.area.root / "megarun.toml"
    path.write_text(path.read_text() + f'\n[matching]\npolicy = "{policy}"\n')
    fresh = Context(area_override=str(ctx.area.root))
    return fresh


def make_sites(ctx: Context, **capabilities: dict[str, Any]) -> None:
    for name, table in capabilities.items():
        site_service.add_site(ctx, name, "local", capabilities=table)


def sites_of(ctx: Context) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for job in list_jobs(ctx.db, ctx.area, JobFilter()):
        counts[job["site"]] = counts.get(job["site"], 0) + 1
    return counts


@pytest.fixture
def linux_app(ctx: Context) -> str:
    app_service.add_app(ctx.db, "sim", "echo {{ n }}", {"n": "1"},
                        requirements={"os": "linux", "python": ">=3.10"})
    return "sim"


def test_create_leaves_jobs_of_apps_with_requirements_unmatched(ctx: Context,
                                                                linux_app: str) -> None:
    app_service.add_app(ctx.db, "plain", "true", {})
    created = create_jobs(ctx.db, ctx.area, [JobRequest(app=linux_app, count=3),
                                            JobRequest(app="plain")])
    assert created.unmatched == 3
    assert sites_of(ctx) == {None: 3, "local": 1}
    shown = get_job(ctx.db, 1)
    assert shown["site"] is None and shown["state"] == "READY"


def test_create_with_a_site_that_does_not_satisfy_is_refused(ctx: Context,
                                                             linux_app: str) -> None:
    make_sites(ctx, old={"os": "linux", "python": "3.9"}, new={"os": "linux", "python": "3.12"})
    with pytest.raises(UsageError, match=r"site 'old' cannot run app 'sim': needs python>=3.10; "
                                         r"site old has python=3.9"):
        create_jobs(ctx.db, ctx.area, [JobRequest(app=linux_app, site="new"),
                                      JobRequest(app=linux_app, site="old")])
    assert list_jobs(ctx.db, ctx.area, JobFilter()) == []  # nothing half-created
    create_jobs(ctx.db, ctx.area, [JobRequest(app=linux_app, site="new")])
    assert sites_of(ctx) == {"new": 1}


def test_first_policy_assigns_and_explains_unmatched(ctx: Context, linux_app: str) -> None:
    make_sites(ctx, b={"os": "linux", "python": "3.11"}, a={"os": "darwin", "python": "3.12"},
               c={"os": "linux", "python": "3.12"})
    app_service.add_app(ctx.db, "cuda", "true", {}, requirements={"gpu": True})
    create_jobs(ctx.db, ctx.area, [JobRequest(app=linux_app, count=4), JobRequest(app="cuda")])
    result = match_jobs(ctx.db, ctx.area)
    assert result.assigned == {"b": 4} and result.unmatched == 1
    assert match_json(result)["unmatched_apps"][0]["app"] == "cuda"
    reason = get_job(ctx.db, 5)["message"]
    assert reason == ("no site satisfies app 'cuda': needs gpu=true; site a has no 'gpu' "
                      "capability | needs gpu=true; site b has no 'gpu' capability | needs "
                      "gpu=true; site c has no 'gpu' capability")
    assert sites_of(ctx) == {"b": 4, None: 1}
    again = match_jobs(ctx.db, ctx.area)  # nothing new: the unmatched job stays READY, nothing rewritten
    assert again.assigned == {} and again.unmatched == 1
    assert get_job(ctx.db, 5)["state"] == "READY"


def test_a_fixed_app_matches_at_the_next_pass(ctx: Context) -> None:
    make_sites(ctx, a={"os": "linux"})
    app_service.add_app(ctx.db, "sim", "true", {}, requirements={"os": "windows"})
    create_jobs(ctx.db, ctx.area, [JobRequest(app="sim")])
    assert match_jobs(ctx.db, ctx.area).unmatched == 1
    assert "needs os=windows" in get_job(ctx.db, 1)["message"]
    app_service.add_app(ctx.db, "sim", "true", {}, requirements={"os": "linux"}, replace=True)
    assert match_jobs(ctx.db, ctx.area).assigned == {"a": 1}
    shown = get_job(ctx.db, 1)
    assert shown["site"] == "a" and shown["message"] == ""


def test_no_sites_at_all_says_how_to_add_one(ctx: Context, linux_app: str) -> None:
    create_jobs(ctx.db, ctx.area, [JobRequest(app=linux_app)])
    assert match_jobs(ctx.db, ctx.area).unmatched == 1
    assert "megarun site add" in get_job(ctx.db, 1)["message"]


def test_only_ready_jobs_are_matched(ctx: Context, linux_app: str) -> None:
    make_sites(ctx, a={"os": "linux", "python": "3.12"})
    app_service.add_app(ctx.db, "parent", "true", {})
    create_jobs(ctx.db, ctx.area, [JobRequest(app="parent")])
    create_jobs(ctx.db, ctx.area, [JobRequest(app=linux_app, after=[1])])
    assert get_job(ctx.db, 2)["state"] == "AWAITING_PARENTS"
    assert match_jobs(ctx.db, ctx.area).assigned == {}
    assert get_job(ctx.db, 2)["site"] is None


def test_round_robin_across_passes_and_contexts(ctx: Context, linux_app: str) -> None:
    make_sites(ctx, a={"os": "linux", "python": "3.12"}, b={"os": "linux", "python": "3.11"},
               x={"os": "darwin", "python": "3.12"})
    rr = use_policy(ctx, "round-robin")
    create_jobs(rr.db, rr.area, [JobRequest(app=linux_app, count=3)])
    assert match_jobs(rr.db, rr.area).assigned == {"a": 2, "b": 1}
    rr.close()
    other = Context(area_override=str(ctx.area.root))  # a second process's view
    create_jobs(other.db, other.area, [JobRequest(app=linux_app)])
    assert match_jobs(other.db, other.area).assigned == {"b": 1}  # goes on after a, not from the start
    create_jobs(other.db, other.area, [JobRequest(app=linux_app)])
    assert match_jobs(other.db, other.area).assigned == {"a": 1}
    other.close()


def test_round_robin_rotation_survives_a_real_second_process(ctx: Context,
                                                             linux_app: str) -> None:
    make_sites(ctx, a={"os": "linux", "python": "3.12"}, b={"os": "linux", "python": "3.12"})
    rr = use_policy(ctx, "round-robin")
    create_jobs(rr.db, rr.area, [JobRequest(app=linux_app, count=2)])
    assert match_jobs(rr.db, rr.area).assigned == {"a": 1, "b": 1}
    create_jobs(rr.db, rr.area, [JobRequest(app=linux_app)])
    rr.close()
    result = megarun_process(ctx.area.root, "job", "match", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["assigned"] == {"a": 1}  # after b comes a again
    assert (ctx.area.state_dir / "matching-rotation.json").is_file()


def test_least_loaded_counts_live_jobs_per_site(ctx: Context, linux_app: str) -> None:
    make_sites(ctx, a={"os": "linux", "python": "3.12"}, b={"os": "linux", "python": "3.12"},
               c={"os": "linux", "python": "3.12"})
    app_service.add_app(ctx.db, "plain", "true", {})
    create_jobs(ctx.db, ctx.area, [JobRequest(app="plain", site="a", count=4),
                                  JobRequest(app="plain", site="b", count=1)])
    ctx.db.execute_sql("UPDATE job SET state = 'RUNNING' WHERE id <= 2")  # still load on a
    done = create_jobs(ctx.db, ctx.area, [JobRequest(app="plain", site="c", count=5)])
    ctx.db.execute_sql("UPDATE job SET state = 'COMPLETED', status = 'PASS' "
                       "WHERE id BETWEEN ? AND ?", (done.first_id, done.last_id))  # no load
    ll = use_policy(ctx, "least-loaded")
    create_jobs(ll.db, ll.area, [JobRequest(app=linux_app, count=6)])
    result = match_jobs(ll.db, ll.area)
    # loads before: a 4, b 1, c 0 (its 5 jobs are done): c, b, c, b, c, b (ties by name)
    assert result.assigned == {"c": 3, "b": 3}
    assert sites_of(ll) == {"a": 4, "b": 4, "c": 8}
    ll.close()


def test_ten_thousand_jobs_match_quickly(ctx: Context, linux_app: str) -> None:
    make_sites(ctx, a={"os": "linux", "python": "3.12"}, b={"os": "linux", "python": "3.12"})
    rr = use_policy(ctx, "round-robin")
    create_jobs(rr.db, rr.area, [JobRequest(app=linux_app, count=10_000)])
    start = time.perf_counter()
    result = match_jobs(rr.db, rr.area)
    elapsed = time.perf_counter() - start
    assert result.assigned == {"a": 5_000, "b": 5_000}
    assert elapsed < 5, f"matching 10,000 jobs took {elapsed:.1f} s"
    assert match_jobs(rr.db, rr.area).total_assigned == 0
    rr.close()
