"""The job state and status names, as the agent spells them in its events.

The agent's own copy of megarun/core/states.py (the agent imports nothing of megarun outside
itself); tests/unit/test_no_state_literals.py checks that the two agree, name for name and in
the same order. Stdlib only, Python 3.6.
"""

#: Every job state, as JobState.
JOB_STATES = ("CREATED", "AWAITING_PARENTS", "READY", "QUEUED", "LAUNCHED", "RUNNING",
              "COMPLETED", "KILLREQ", "KILLED", "DEAD", "STALE", "DELETED", "ARCHIVED")
#: Every job status, best to worst, as JobStatus.
JOB_STATUSES = ("n/a", "PASS", "SKIP", "WAIVED", "WARN", "CHECK", "FAIL", "TIMEOUT",
                "PREQ_FAIL", "DEAD", "ABORT")

NA, PASS, FAIL = JOB_STATUSES[0], JOB_STATUSES[1], JOB_STATUSES[6]
