"""Selecting tests and expanding them into a graph of item jobs.

A test with items becomes one job per item combination; a test without items becomes one job
with an empty itempath. `waiton` makes every job of a test depend on the jobs of the tests it
names (modes `normal` and `toplevel`), or, in mode `itemmatch`, on the job with the same itempath
when the prerequisite has one.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from megarun.errors import ConfigError, UsageError
from megarun.suites.definition import TestDef, item_rows, itempath
from megarun.suites.targets import pattern_matches


@dataclass(frozen=True)
class ItemJob:
    """One item of one test: the unit a run schedules."""

    test: str
    itempath: str  # "" for a test without items; else the safe item values joined by "/"
    variables: dict[str, str]  # item variable -> raw value


@dataclass(frozen=True)
class Plan:
    """The jobs of a run and the dependencies between them."""

    jobs: tuple[ItemJob, ...]  # tests in dependency order (prerequisites first, ties by name)
    edges: tuple[tuple[int, int], ...]  # (parent index, child index) into jobs
    tests: tuple[str, ...]  # the tests of the plan in the same order


def items_of(test: TestDef) -> list[ItemJob]:
    """The test's jobs in product (or table) order; one job with itempath "" when it has no items."""
    return [ItemJob(test.name, itempath(row), row) for row in item_rows(test)]


def select_tests(tests: dict[str, TestDef], testpatt: str | None) -> list[str]:
    """The names of the tests `testpatt` selects plus every test they wait on, sorted by name.

    `testpatt` is a comma-separated list of `%` patterns matched against test names; None or "%"
    selects every test. A pattern may be written `test/itempattern`, but in this version only the
    part before the first "/" is used: item patterns select whole tests, not single items.
    """
    if testpatt is None or testpatt.strip() == "%":
        chosen = list(tests)
    else:
        patterns = [part.strip() for part in testpatt.split(",") if part.strip()]
        if not patterns:
            raise UsageError("empty test pattern", "use % to select every test")
        chosen = []
        for pattern in patterns:
            test_pattern = pattern.split("/", 1)[0]
            matched = [name for name in tests if pattern_matches(test_pattern, name)]
            if not matched:
                valid = ", ".join(sorted(tests)) or "none: the area has no tests"
                raise UsageError(f"test pattern {pattern!r} matches no test (valid tests: {valid})")
            chosen.extend(matched)
    return sorted(_close_over_waiton(tests, chosen))


def expand(tests: dict[str, TestDef], selected: Sequence[str]) -> Plan:
    """Expand `selected` (and the tests they wait on) into jobs and dependency edges.

    A waiton cycle is refused before anything else is done.
    """
    unknown = [name for name in selected if name not in tests]
    if unknown:
        valid = ", ".join(sorted(tests)) or "none: the area has no tests"
        raise UsageError(f"unknown test {unknown[0]!r} (valid tests: {valid})")
    names = _close_over_waiton(tests, selected)
    _refuse_cycles(tests, names)
    order = _dependency_order(tests, names)

    jobs: list[ItemJob] = []
    ranges: dict[str, range] = {}
    for name in order:
        start = len(jobs)
        jobs.extend(items_of(tests[name]))
        ranges[name] = range(start, len(jobs))

    edges: list[tuple[int, int]] = []
    for name in order:
        test = tests[name]
        children = ranges[name]
        for prerequisite in test.waiton:
            parents = ranges[prerequisite]
            if test.waiton_mode == "itemmatch":
                by_path = {jobs[index].itempath: index for index in parents}
                for child in children:
                    match = by_path.get(jobs[child].itempath)
                    if match is None:
                        edges.extend((parent, child) for parent in parents)
                    else:
                        edges.append((match, child))
            else:
                edges.extend((parent, child) for child in children for parent in parents)
    return Plan(tuple(jobs), tuple(edges), tuple(order))


def _close_over_waiton(tests: dict[str, TestDef], names: Iterable[str]) -> set[str]:
    """`names` plus every test they wait on, directly or not; an unknown waiton is a ConfigError."""
    result: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in result:
            continue
        result.add(name)
        test = tests[name]
        for prerequisite in test.waiton:
            if prerequisite not in tests:
                raise ConfigError(f"{test.path}: key 'waiton' names unknown test {prerequisite!r}")
            pending.append(prerequisite)
    return result


def _refuse_cycles(tests: dict[str, TestDef], names: set[str]) -> None:
    """Depth-first search from each test in name order; a back edge is a cycle."""
    done: set[str] = set()
    for root in sorted(names):
        if root in done:
            continue
        path: list[str] = [root]
        on_path: set[str] = {root}
        stack = [iter(tests[root].waiton)]
        while stack:
            prerequisite = next(stack[-1], None)
            if prerequisite is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif prerequisite in on_path:
                cycle = path[path.index(prerequisite):]
                first = cycle.index(min(cycle))
                cycle = cycle[first:] + cycle[:first]
                raise ConfigError(f"waiton cycle: {' -> '.join([*cycle, cycle[0]])}")
            elif prerequisite not in done:
                path.append(prerequisite)
                on_path.add(prerequisite)
                stack.append(iter(tests[prerequisite].waiton))


def _dependency_order(tests: dict[str, TestDef], names: set[str]) -> list[str]:
    """Prerequisites first; among the tests ready at a time, the smallest name first."""
    waiting = {name: len(tests[name].waiton) for name in names}
    dependents: dict[str, list[str]] = {name: [] for name in names}
    for name in names:
        for prerequisite in tests[name].waiton:
            dependents[prerequisite].append(name)
    ready = [name for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for dependent in dependents[name]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, dependent)
    return order
