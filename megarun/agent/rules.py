"""A job's pass/fail rules, applied by the agent where the logs are (docs/spool-protocol.md).

`rules` in a job spec: {"exit": {"<code>": STATUS}, "patterns": [{"regex", "status", "step"}]}.
The exit code gives a status (the `exit` map, else PASS for 0 and FAIL otherwise); every pattern
found in a step's .out or .err gives its status too; the worst of them is the job's status.
"""

import os
import re
from typing import Any, Dict, List, Optional

from megarun.agent.states import FAIL, JOB_STATUSES, NA, PASS

#: Best to worst, as megarun's STATUS order ("n/a" is no outcome a rule gives).
ORDER = [status for status in JOB_STATUSES if status != NA]
_RANK = {name: rank for rank, name in enumerate(ORDER)}
#: Log bytes scanned per file for patterns (the end of a huge log is what matters least).
SCAN_LIMIT = 64 << 20


def worst(statuses: List[str]) -> str:
    return max(statuses, key=lambda s: _RANK.get(s, 0))


def kept_steps(spec: Dict[str, Any]) -> List[str]:
    """The steps a `rerun --step` kept from an earlier attempt (spec `kept_steps`): not run
    again, but their logs still count for the rules."""
    kept = spec.get("kept_steps") or []
    return [str(name) for name in kept] if isinstance(kept, list) else []


def judge(rules: Dict[str, Any], rc: int, workdir: str, steps_run: List[str]) -> Optional[str]:
    """The status the rules give a job that exited with `rc`; None when there are no rules."""
    if not rules:
        return None
    exit_map = rules.get("exit") or {}
    found = [str(exit_map.get(str(rc)) or (PASS if rc == 0 else FAIL))]
    for pattern in rules.get("patterns") or []:
        step = pattern.get("step")
        names = [step] if step else steps_run
        if step and step not in steps_run:
            continue
        if _any_log_matches(re.compile(str(pattern["regex"])), workdir, names):
            found.append(str(pattern["status"]))
    return worst(found)


def _any_log_matches(regex: "re.Pattern[str]", workdir: str, steps: List[str]) -> bool:
    for step in steps:
        for suffix in (".out", ".err"):
            if _file_matches(regex, os.path.join(workdir, step + suffix)):
                return True
    return False


def _file_matches(regex: "re.Pattern[str]", path: str) -> bool:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            read = 0
            for line in handle:
                if regex.search(line):
                    return True
                read += len(line)
                if read > SCAN_LIMIT:
                    return False
    except OSError:
        return False
    return False
