"""`megarun report` over real runs: the run page (matrix with glyphs, root-cause headline, new
failures and fixed since the previous run), item pages (steps, logs, attempts), the history
strip with flaky items, FAIL, PREQ_FAIL, STALE, KILLED and a rerun shown as such, refresh by
`sync`, every link resolving, and no secret of the jobs' env on any page.

The area is made once for the module (five real runs on the local site: they take a while).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from megarun.report.html import urls
from tests.component.report.suites import broken_links, links_of, new_suite, ok, text_of, write_test
from tests.component.workflows.test_run_semantics import hold_until, wait_for
from tests.conftest import megarun_process, spawn_megarun

SECRET = "hunter2-s3cr3t-value"
TARGET = "linux"


def run(area: Path, runname: str) -> None:
    ok(area, "run", "--target", TARGET, "--runname", runname, "--quiet", codes=(0, 1))


def status(area: Path, runname: str) -> dict[str, tuple[str, str, int]]:
    data = ok(area, "status", "--target", TARGET, "--runname", runname, "--json", codes=(0, 1))
    return {f"{i['test']}/{i['item'] or '-'}": (i["state"], i["status"]) for i in data["items"]}


def set_results(control: Path, failing: set[int]) -> None:
    """Which items of the `flip` test fail in the next run."""
    for n in (1, 2, 3):
        (control / f"fail-{n}").unlink(missing_ok=True)
        if n in failing:
            (control / f"fail-{n}").touch()


def running(area: Path, runname: str, test: str) -> bool:
    result = megarun_process(area, "status", "--target", TARGET, "--runname", runname, "--json")
    if not result.stdout:
        return False
    return any(i["test"] == test and i["state"] == "RUNNING"
               for i in json.loads(result.stdout)["items"])


@pytest.fixture(scope="module")
def runs_area(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs r1..r4 of target linux; flip/1 PASS FAIL PASS FAIL (flaky), flip/2 PASS PASS FAIL
    FAIL (failing since r3), flip/3 FAIL FAIL FAIL PASS (fixed in r4); in r4 also broken (FAIL,
    rerun: attempt 2), child (PREQ_FAIL), waiter (KILLED while waiting), ok (STALE)."""
    base = tmp_path_factory.mktemp("report-runs")
    control, flag = base / "control", base / "go"
    control.mkdir()
    area = new_suite(base / "area", {
        "flip": f"steps = [\"sh -c 'echo item $N; test ! -e {control}/fail-$N'\"]\n"
                "[items]\nN = [1, 2, 3]\n",
        "ok": "steps = [\"sh -c 'echo fine'\"]\n"}, f'\n[default]\nAPI_TOKEN = "{SECRET}"\n')
    for runname, failing in (("r1", {3}), ("r2", {1, 3}), ("r3", {2, 3})):
        set_results(control, failing)
        run(area, runname)
    set_results(control, {1, 2})
    write_test(area, "broken", "steps = [{ name = \"build\", cmd = \"sh -c 'echo "
               "compiling; echo cannot link >&2; exit 3'\" }]\n")
    write_test(area, "child", 'waiton = ["broken"]\nsteps = ["true"]\n')
    write_test(area, "hold", f'steps = ["{hold_until(flag)}"]\n')
    write_test(area, "waiter", 'waiton = ["hold"]\nsteps = ["true"]\n')
    process = spawn_megarun(area, "run", "--target", TARGET, "--runname", "r4", "--quiet")
    wait_for(lambda: running(area, "r4", "hold"), "hold running")
    ok(area, "kill", "--target", TARGET, "--runname", "r4", "--testpatt", "waiter")
    flag.touch()
    process.communicate(timeout=120)
    ok(area, "rerun", "--target", TARGET, "--runname", "r4", "--testpatt", "broken", "--quiet",
       codes=(1,))
    write_test(area, "ok", "steps = [\"sh -c 'echo changed'\"]\n")
    ok(area, "run", "--target", TARGET, "--runname", "r4", "--testpatt", "hold", "--quiet",
       codes=(0, 1))
    return area


def report(area: Path, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = ok(area, "report", "--json", *args)
    return data


def test_the_runs_end_as_the_pages_will_show_them(runs_area: Path) -> None:
    r4 = status(runs_area, "r4")
    assert r4["broken/-"] == ("COMPLETED", "FAIL") and r4["child/-"] == ("COMPLETED", "PREQ_FAIL")
    assert r4["waiter/-"][0] == "KILLED" and r4["ok/-"][0] == "STALE"
    assert r4["flip/1"][1] == "FAIL" and r4["flip/3"][1] == "PASS"


def run_ids(site: Path) -> dict[str, int]:
    """Run name -> id, from the index's links."""
    found = {}
    for href, text in links_of(site / "index.html"):
        matched = re.fullmatch(r"runs/(\d+)/index\.html", href)
        if matched:
            found[text.strip()] = int(matched.group(1))
    return found


@pytest.fixture(scope="module")
def site(runs_area: Path) -> Path:
    report(runs_area)
    return runs_area / "report"


def page_text(site: Path, path: str) -> str:
    return text_of((site / path).read_text(encoding="utf-8"))


def test_index_is_a_tree_of_targets_and_runs_newest_first(site: Path) -> None:
    ids = run_ids(site)
    assert list(ids) == ["r4", "r3", "r2", "r1"]
    text = page_text(site, "index.html")
    assert f"target {TARGET}" in text
    # KILLED counts as ABORT, the worst status; the ok test changed since: STALE
    assert re.search(r"r4 ⊗ ABORT 1 ABORT 3 FAIL 1 PREQ_FAIL 3 PASS 1 STALE 8 ", text), text
    assert re.search(r"r3 ✗ FAIL 2 FAIL 2 PASS 1 STALE 4 ", text), text  # ok changed since
    hrefs = [href for href, _ in links_of(site / "index.html")]
    assert urls.history_page(TARGET) in hrefs


def test_run_page_marks_every_cell_by_glyph_and_word_and_names_the_root_cause(site: Path) -> None:
    page = site / urls.run_page(run_ids(site)["r4"])
    html = page.read_text(encoding="utf-8")
    text = text_of(html)
    assert "FAIL (" in text and "1 FAIL" in text.split("New failures")[0]
    cells = {text.strip(): href for href, text in links_of(page) if href.startswith("items/")}
    words = " | ".join(cells)
    for expected in ("✗ FAIL", "⊘ PREQ_FAIL", "⊗ KILLED", "~ STALE (was PASS)"):
        assert expected in words, words
    assert re.search(r'class="cell FAIL"[^>]*>[^<]*<a[^>]*><span class="g">✗</span>', html)
    assert "attempt 2" in text  # the rerun


def test_new_failures_and_fixed_against_the_previous_run(site: Path) -> None:
    ids = run_ids(site)
    text = page_text(site, urls.run_page(ids["r4"]))
    new = text.split("New failures since the previous run")[1].split("Fixed since")[0]
    fixed = text.split("Fixed since the previous run")[1]
    assert "flip/1" in new and "broken/-" in new and "child/-" in new
    assert "flip/2" not in new  # it failed in r3 already
    assert "flip/3" in fixed and "flip/1" not in fixed
    first = page_text(site, urls.run_page(ids["r1"]))
    assert "No earlier run of linux" in first


def test_item_page_shows_steps_log_tails_with_links_attempts_and_events(site: Path,
                                                                         runs_area: Path) -> None:
    page = site / urls.run_page(run_ids(site)["r4"])
    broken = next(href for href, text in links_of(page)
                  if href.startswith("items/") and "FAIL" in text and "PREQ" not in text
                  and "broken" in (page.parent / href).read_text())
    item = page.parent / broken
    text = text_of(item.read_text(encoding="utf-8"))
    assert "build COMPLETED ✗ FAIL 3" in text  # the step, its status and exit code
    assert "compiling" in text and "cannot link" in text  # both logs' tails
    assert "attempt 2 rerun" in text
    assert re.search(r"Attempts .* 1 .* FAIL .* 2 .* FAIL", text)
    assert "RUNNING COMPLETED FAIL" in text  # the event trail
    logs = [href for href, _ in links_of(item) if href.endswith((".out", ".err"))]
    assert sorted(Path(h).name for h in logs) == ["build.err", "build.out"]
    for href in logs:
        assert (item.parent / unquote(href)).resolve().read_text() in ("compiling\n",
                                                                       "cannot link\n")


def test_history_strip_flaky_items_and_failing_since(site: Path) -> None:
    text = page_text(site, urls.history_page(TARGET))
    assert "flip/1: 3 flips" in text
    assert "flip/2: 1 flips" not in text and "flip/3" not in text.split("Flaky items")[1] \
        .split("Failing now")[0]
    failing = text.split("Failing now, since")[1]
    assert "flip/2: failing since r3" in failing and "flip/1: failing since r4" in failing
    html = (site / urls.history_page(TARGET)).read_text(encoding="utf-8")
    strip = re.search(r"<td>1</td>(.*?)</tr>", html)
    assert strip is not None
    glyphs = re.findall(r'class="cell (\w+)"', strip.group(1))
    assert glyphs == ["PASS", "FAIL", "PASS", "FAIL"]


def test_history_takes_the_last_n_runs(runs_area: Path, tmp_path: Path) -> None:
    out = tmp_path / "short"
    report(runs_area, "--out", str(out), "--history", "2")
    text = page_text(out, urls.history_page(TARGET))
    assert "The last 2 run(s)" in text and "flip/1: 3 flips" not in text
    bad = megarun_process(runs_area, "report", "--out", str(tmp_path / "x"), "--history", "0")
    assert bad.returncode == 2 and "--history" in bad.stderr


def test_every_link_resolves_to_a_file(site: Path) -> None:
    assert len(list(site.rglob("*.html"))) > 20
    assert sum(len(links_of(page)) for page in site.rglob("*.html")) > 100
    assert broken_links(site) == []


def test_no_page_holds_a_secret_of_the_jobs_env(site: Path) -> None:
    for page in site.rglob("*"):
        if page.is_file():
            assert SECRET not in page.read_text(encoding="utf-8", errors="replace"), page
